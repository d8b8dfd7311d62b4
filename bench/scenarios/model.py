"""Scenario 4: model cold start — load a sharded safetensors model (random weights).

Through a mount, each shard is loaded with ``safetensors.numpy.load_file`` (mmap, as
``from_pretrained`` does), shard after shard; from the source directly, each shard is fetched
into memory (aiohttp / aiobotocore) and parsed with ``safetensors.numpy.load``. cold: nothing
cached; warm: a second load with the kernel page cache dropped (the model is in the cache's
tiers). The time is until every tensor of every shard is in memory. The "direct, parallel"
baselines fetch each shard with 16 concurrent ranged GETs; ``conn`` is the per-connection source.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bench import readers as rd
from bench.config import MiB
from bench.context import Bench
from bench.results import Result

NAME = "model"
TITLE = "4. Model cold start (safetensors)"


def run(b: Bench) -> Result:
    s = b.sizes
    r = Result(NAME, TITLE)
    r.extra["headline_metric"] = "s"
    index = json.loads((b.data.root / "model" / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    tensor_bytes = int(index["metadata"]["total_size"])
    sizes = [(b.data.root / "model" / sh).stat().st_size for sh in shards]
    file_bytes = sum(sizes)
    r.params = {
        "shards": len(shards),
        "shard_mib": s.model_shard_mib,
        "tensors": len(index["weight_map"]),
        "dtype": "float16",
        "file_bytes": file_bytes,
        "loader": "safetensors.numpy.load_file (mmap) on mounts; load(bytes) directly",
        "repetitions": b.reps,
    }
    systems = ["http-direct", "http-parallel", "fc-fuse-http"]
    systems += b.conn_systems("conn-direct", "conn-parallel", "fc-fuse-conn")
    systems += b.s3_systems(r, "s3-direct", "fc-fuse-s3") + b.peer_systems(r)
    quota = sum(1 for x in systems if x.startswith("fc-")) * file_bytes // MiB + 64

    def record(case: str, system: str, n: int, seconds: float, vs: str | None) -> None:
        rd.expect(n, tensor_bytes, f"{NAME} {system}")
        r.add(case, system, "s", seconds, higher_is_better=False, vs_case=vs)
        r.add(case, system, "GB/s", file_bytes / seconds / 1e9, vs_case=vs)

    def mount_loads(system: str, root: Path) -> None:
        paths = [root / sh for sh in shards]
        for case in ("cold", "warm"):
            rd.drop_caches()
            n, t = rd.timed(lambda: rd.load_safetensors(paths))
            record(case, system, n, t, "from the source")

    for rep in range(b.reps):
        b.log(f" {NAME}: repetition {rep + 1}/{b.reps}")
        with b.cluster(f"{NAME}-{rep}", mem_quota_mib=quota) as c:
            assert c.mountpoint is not None
            for system in b.order(systems, rep):
                if system in ("http-direct", "conn-direct", "http-parallel", "conn-parallel"):
                    rd.drop_caches()
                    url = b.http if system.startswith("http") else b.conn
                    urls = [url(f"model/{sh}") for sh in shards]
                    streams = b.streams if system.endswith("parallel") else 1
                    n, t = asyncio.run(rd.atimed(_http_load(urls, sizes, streams)))
                    record("from the source", system, n, t, None)
                elif system == "s3-direct":
                    rd.drop_caches()
                    n, t = asyncio.run(rd.atimed(_s3_load(b, [f"model/{sh}" for sh in shards])))
                    record("from the source", system, n, t, None)
                elif system == "fc-fuse-http":
                    mount_loads(system, c.mountpoint / "web" / "model")
                elif system == "fc-fuse-s3":
                    mount_loads(system, c.mountpoint / "s3" / "model")
                elif system == "fc-fuse-conn":
                    mount_loads(system, c.mountpoint / "conn" / "model")
                else:
                    with b.peer(system) as mnt:
                        mount_loads(system, mnt / "model")
    return r


def _parse(data: bytes) -> int:
    from safetensors.numpy import load

    return sum(t.nbytes for t in load(data).values())


async def _http_load(urls: list[str], sizes: list[int], streams: int = 1) -> int:
    """Fetch each shard (with ``streams`` concurrent ranged GETs) and parse it."""
    total = 0
    async with rd.http_session(streams) as s:
        for url, size in zip(urls, sizes, strict=True):
            if streams == 1:
                async with s.get(url) as resp:
                    resp.raise_for_status()
                    total += _parse(await resp.read())
                continue
            buf = bytearray(size)

            async def part(rng: tuple[int, int], url: str = url, buf: bytearray = buf) -> int:
                start, end = rng
                async with s.get(url, headers={"Range": f"bytes={start}-{end - 1}"}) as resp:
                    resp.raise_for_status()
                    data = await resp.read()
                buf[start : start + len(data)] = data
                return len(data)

            got = await rd.gather_bounded(rd.ranges(size, streams), streams, part)
            rd.expect(got, size, url)
            total += _parse(bytes(buf))
    return total


async def _s3_load(b: Bench, keys: list[str]) -> int:
    assert b.s3 is not None
    total = 0
    async with rd.s3_client(b.s3, 1) as c:
        for key in keys:
            total += _parse(await rd.s3_get_bytes(c, b.s3.bucket, key))
    return total
