"""Scenario 1: one large file read sequentially — cold, warm, hot; FUSE and client library.

cold: nothing cached anywhere (fresh cluster or peer cache, kernel page cache dropped);
warm: in the cache's tiers (fluidcache MEM, the peers' disk caches), kernel page cache dropped;
hot: read again at once, so the kernel page cache may serve it (for the client library: the same
client again, its block buffer and open block files). A direct read has no cache: it is measured
once per repetition and every case is compared with it, single-stream (``*-direct``) and with 16
concurrent ranged GETs (``*-parallel``). The per-connection source (``conn``: each connection
capped, as from S3 or a hub's CDN) is read the same ways.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from bench import readers as rd
from bench.config import MiB
from bench.context import Bench
from bench.results import Result
from fluidcache.client import AsyncClient

NAME = "large"
TITLE = "1. Large file, sequential read"
CASES = ("cold", "warm", "hot")
Rate = Callable[[int, float], float]


def run(b: Bench) -> Result:
    size = b.sizes.large_mib * MiB
    r = Result(NAME, TITLE)
    r.params = {
        "file_bytes": size,
        "read_size": rd.CHUNK,
        "workers": 2,
        "block_size": b.sizes.block_size or "the source's own (4Mi HTTP, 16Mi S3)",
        "repetitions": b.reps,
    }
    client_rel = b.view("large", "client-large") + "/big.bin"
    systems = ["http-direct", "http-parallel", "fc-fuse-http", "fc-client-http"]
    systems += b.conn_systems("conn-direct", "conn-parallel", "fc-fuse-conn", "fc-client-conn")
    systems += b.s3_systems(r, "s3-direct", "fc-fuse-s3") + b.peer_systems(r)
    copies = sum(1 for s in systems if s.startswith("fc-"))
    quota = copies * b.sizes.large_mib + 64  # any one worker could be placed every copy

    def mbps(nbytes: int, seconds: float) -> float:
        rd.expect(nbytes, size, NAME)
        return nbytes / seconds / 1e6

    for rep in range(b.reps):
        b.log(f" {NAME}: repetition {rep + 1}/{b.reps}")
        with b.cluster(f"{NAME}-{rep}", mem_quota_mib=quota) as c:
            assert c.mountpoint is not None
            for system in b.order(systems, rep):
                if system == "http-direct":
                    rd.drop_caches()
                    n, t = asyncio.run(rd.atimed(rd.http_read([b.http("large/big.bin")])))
                    r.add("no cache", system, "MB/s", mbps(n, t))
                elif system in ("http-parallel", "conn-parallel"):
                    url = (b.http if system == "http-parallel" else b.conn)("large/big.bin")
                    rd.drop_caches()
                    n, t = asyncio.run(rd.atimed(rd.http_parallel([(url, size)], b.streams)))
                    r.add("no cache", system, "MB/s", mbps(n, t))
                elif system == "conn-direct":
                    rd.drop_caches()
                    n, t = asyncio.run(rd.atimed(rd.http_read([b.conn("large/big.bin")])))
                    r.add("no cache", system, "MB/s", mbps(n, t))
                elif system == "s3-direct":
                    assert b.s3 is not None
                    rd.drop_caches()
                    n, t = asyncio.run(rd.atimed(rd.s3_read(b.s3, ["large/big.bin"])))
                    r.add("no cache", system, "MB/s", mbps(n, t))
                elif system in ("fc-fuse-http", "fc-fuse-s3", "fc-fuse-conn"):
                    top = {"http": "web", "s3": "s3", "conn": "conn"}[system.rsplit("-", 1)[1]]
                    _read_mount(r, system, c.mountpoint / top / "large" / "big.bin", mbps)
                elif system in ("fc-client-http", "fc-client-conn"):
                    top = "web" if system.endswith("http") else "conn"
                    _read_client(r, system, c.master_url, c.token, f"/{top}/{client_rel}", mbps)
                else:
                    with b.peer(system) as mnt:
                        _read_mount(r, system, mnt / "large" / "big.bin", mbps)
    return r


def _read_mount(r: Result, system: str, path: Path, mbps: Rate) -> None:
    for case in CASES:
        if case != "hot":
            rd.drop_caches()
        n, t = rd.timed(lambda: rd.read_file(path))
        r.add(case, system, "MB/s", mbps(n, t), vs_case="no cache")


def _read_client(r: Result, system: str, master: str, token: str, path: str, mbps: Rate) -> None:
    async def go() -> None:
        for case in ("cold", "warm"):
            rd.drop_caches()
            async with AsyncClient(master, token, dataset="default") as fc:
                n, t = await rd.atimed(rd.fc_get(fc, path))
                r.add(case, system, "MB/s", mbps(n, t), vs_case="no cache")
                if case == "warm":
                    n, t = await rd.atimed(rd.fc_get(fc, path))
                    r.add("hot", system, "MB/s", mbps(n, t), vs_case="no cache")

    asyncio.run(go())
