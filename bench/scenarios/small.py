"""Scenario 2: many small files, one reader and N concurrent readers, a full epoch twice.

An epoch reads every file once, in a shuffled order that is the same for every system. The
cold epoch starts with nothing cached; the warm epoch follows it (kernel page cache dropped in
between), as a training job's second epoch would. Readers are threads on a mount, tasks on the
async clients. The direct reads have no cache: one epoch per repetition is their baseline.

With one reader, an epoch is bound by the source's per-request latency (2,000 requests of
5 ms and more each), so only the HTTP source and the fluidcache mount run it; with many readers
every system does. With 16 readers the direct read is also the "direct, parallel" baseline (16
GETs in flight); the per-connection source (``conn``) is read with 16 readers, directly and
through the mount.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

from bench import readers as rd
from bench.config import KiB
from bench.context import Bench
from bench.results import Result
from fluidcache.client import AsyncClient

NAME = "small"
TITLE = "2. Small files, full epochs"
Record = Callable[[str, str, int, float, str | None], None]


def run(b: Bench) -> Result:
    s = b.sizes
    r = Result(NAME, TITLE)
    r.extra["headline_metric"] = "files/s"
    files = [str(p.relative_to(b.data.root)) for p in b.data.files("small")]
    random.Random(7).shuffle(files)
    size = s.small_kib * KiB
    total = size * len(files)
    r.params = {
        "files": len(files),
        "file_bytes": size,
        "readers": list(s.small_readers),
        "order": "shuffled (seed 7), same for every system",
        "workers": 2,
        "repetitions": b.reps,
    }
    systems = ["http-direct", "fc-fuse-http", "fc-client-http"]
    systems += b.conn_systems("conn-direct", "fc-fuse-conn")
    systems += b.s3_systems(r, "s3-direct", "fc-fuse-s3") + b.peer_systems(r)
    views = {n: b.view("small", f"client-small-{n}") for n in s.small_readers}
    fuse_views = {n: b.view("small", f"fuse-small-{n}") for n in s.small_readers}
    quota = max(64, 3 * len(s.small_readers) * total // 2**20 + 64)

    def record(case: str, system: str, n: int, seconds: float, vs: str | None) -> None:
        rd.expect(n, total, f"{NAME} {system} {case}")
        r.add(case, system, "files/s", len(files) / seconds, vs_case=vs)
        r.add(case, system, "MB/s", n / seconds / 1e6, vs_case=vs)

    def epochs(system: str, readers: int, read: Callable[[], tuple[int, float]]) -> None:
        for epoch in ("cold", "warm"):
            rd.drop_caches()
            n, t = read()
            record(f"{epoch} epoch, {_r(readers)}", system, n, t, _r(readers))

    for rep in range(b.reps):
        b.log(f" {NAME}: repetition {rep + 1}/{b.reps}")
        with b.cluster(f"{NAME}-{rep}", mem_quota_mib=quota) as c:
            assert c.mountpoint is not None
            mnt = c.mountpoint
            for readers in s.small_readers:
                here = systems if readers > 1 else ["http-direct", "fc-fuse-http"]
                for system in b.order(here, rep):
                    if system in ("http-direct", "conn-direct"):
                        rd.drop_caches()
                        urls = [(b.http if system == "http-direct" else b.conn)(f) for f in files]
                        n, t = asyncio.run(rd.atimed(rd.http_read(urls, readers)))
                        record(_r(readers), system, n, t, None)
                    elif system == "s3-direct":
                        assert b.s3 is not None
                        rd.drop_caches()
                        n, t = asyncio.run(rd.atimed(rd.s3_read(b.s3, files, readers)))
                        record(_r(readers), system, n, t, None)
                    elif system == "fc-fuse-http":
                        paths = _under(mnt / "web" / fuse_views[readers], files)
                        epochs(system, readers, lambda p=paths, k=readers: _read_paths(p, k))
                    elif system in ("fc-fuse-s3", "fc-fuse-conn"):
                        top = "s3" if system == "fc-fuse-s3" else "conn"
                        paths = _under(mnt / top / fuse_views[readers], files)
                        epochs(system, readers, lambda p=paths, k=readers: _read_paths(p, k))
                    elif system == "fc-client-http":
                        paths_c = [
                            f"/web/{views[readers]}/{f.removeprefix('small/')}" for f in files
                        ]
                        _client_epochs(r, c.master_url, c.token, paths_c, readers, record)
                    else:
                        with b.peer(system) as peer_mnt:
                            paths = [peer_mnt / f for f in files]
                            epochs(system, readers, lambda p=paths, k=readers: _read_paths(p, k))
    return r


def _r(readers: int) -> str:
    return "1 reader" if readers == 1 else f"{readers} readers"


def _under(root: Path, files: list[str]) -> list[Path]:
    return [root / f.removeprefix("small/") for f in files]


def _read_paths(paths: list[Path], readers: int) -> tuple[int, float]:
    return rd.timed(lambda: rd.read_files(paths, readers))


def _client_epochs(
    r: Result, master: str, token: str, paths: list[str], readers: int, record: Record
) -> None:
    async def go() -> None:
        async with AsyncClient(master, token, dataset="default") as fc:
            for epoch in ("cold", "warm"):
                rd.drop_caches()
                n, t = await rd.atimed(rd.fc_read(fc, paths, readers))
                record(f"{epoch} epoch, {_r(readers)}", "fc-client-http", n, t, _r(readers))

    asyncio.run(go())
