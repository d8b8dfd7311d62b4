"""Scenario 6: scaling — throughput as concurrent readers go 1 to 64, and workers 1 to 3.

Readers: the file set (``scale/``) is cached first (one unmeasured cold pass through the
mount), then read whole by N readers at once (threads on the mount, tasks on one client), kernel
page cache dropped before each pass; the direct read from the source with N connections is the
baseline.

Workers: for each count, a fresh cluster; the set is read cold through the mount by 16 readers
(workers fetch from the source in parallel), then warm by a client that does not short-circuit
(``short_circuit=False``), so every block goes through a worker's HTTP server — the path a
client on another node takes. All processes share this machine's cores, which bounds scaling.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench import readers as rd
from bench.config import MiB
from bench.context import Bench
from bench.results import Result
from fluidcache.client import AsyncClient

NAME = "scaling"
TITLE = "6. Scaling: readers and workers"
WORKER_READERS = 16


def run(b: Bench) -> Result:
    s = b.sizes
    r = Result(NAME, TITLE)
    files = [str(p.relative_to(b.data.root)) for p in b.data.files("scale")]
    total = s.scale_files * s.scale_file_mib * MiB
    r.params = {
        "files": len(files),
        "file_bytes": s.scale_file_mib * MiB,
        "readers": list(s.scale_readers),
        "workers": list(s.scale_workers),
        "readers_with_workers": WORKER_READERS,
        "repetitions": b.reps,
    }
    quota = total // MiB + 64

    def mbps(n: int, seconds: float) -> float:
        rd.expect(n, total, NAME)
        return n / seconds / 1e6

    def direct(readers: int) -> float:
        rd.drop_caches()
        n, t = asyncio.run(rd.atimed(rd.http_read([b.http(f) for f in files], readers)))
        return mbps(n, t)

    for rep in range(b.reps):
        b.log(f" {NAME}: repetition {rep + 1}/{b.reps} (readers)")
        with b.cluster(f"{NAME}-readers-{rep}", mem_quota_mib=quota, with_s3=False) as c:
            assert c.mountpoint is not None
            paths = [c.mountpoint / "web" / f for f in files]
            rd.read_files(paths, WORKER_READERS)  # cache it
            for n_readers in s.scale_readers:
                case = "1 reader" if n_readers == 1 else f"{n_readers} readers"
                x = float(n_readers)
                for system in b.order(["http-direct", "fc-fuse-http", "fc-client-http"], rep):
                    if system == "http-direct":
                        r.add(case, system, "MB/s", direct(n_readers), x=x, group="readers")
                    elif system == "fc-fuse-http":
                        rd.drop_caches()
                        n, t = rd.timed(lambda k=n_readers, p=paths: rd.read_files(p, k))
                        r.add(case, system, "MB/s", mbps(n, t), vs_case=case, x=x, group="readers")
                    else:
                        rd.drop_caches()
                        n, t = asyncio.run(
                            _client_read(c.master_url, c.token, files, n_readers, True)
                        )
                        r.add(case, system, "MB/s", mbps(n, t), vs_case=case, x=x, group="readers")
        b.log(f" {NAME}: repetition {rep + 1}/{b.reps} (workers)")
        for workers in s.scale_workers:
            with b.cluster(
                f"{NAME}-workers-{workers}-{rep}",
                workers=workers,
                mem_quota_mib=quota,
                with_s3=False,
            ) as c:
                assert c.mountpoint is not None
                mnt: Path = c.mountpoint
                label = "1 worker" if workers == 1 else f"{workers} workers"
                base = f"{label}: source, {WORKER_READERS} readers"
                for system in b.order(["http-direct", "fluidcache"], rep):
                    if system == "http-direct":
                        r.add(
                            base, system, "MB/s", direct(WORKER_READERS), x=workers, group="workers"
                        )
                        continue
                    rd.drop_caches()
                    paths = [mnt / "web" / f for f in files]
                    n, t = rd.timed(lambda p=paths: rd.read_files(p, WORKER_READERS))
                    r.add(
                        f"{label}: cold (FUSE)",
                        "fc-fuse-http",
                        "MB/s",
                        mbps(n, t),
                        vs_case=base,
                        x=workers,
                        group="workers",
                    )
                    rd.drop_caches()
                    n, t = asyncio.run(
                        _client_read(c.master_url, c.token, files, WORKER_READERS, False)
                    )
                    r.add(
                        f"{label}: warm, no short-circuit",
                        "fc-client-http",
                        "MB/s",
                        mbps(n, t),
                        vs_case=base,
                        x=workers,
                        group="workers",
                    )
    return r


async def _client_read(
    master: str, token: str, files: list[str], readers: int, short_circuit: bool
) -> tuple[int, float]:
    async with AsyncClient(master, token, dataset="default", short_circuit=short_circuit) as fc:
        paths = [f"/web/{f}" for f in files]
        return await rd.atimed(rd.fc_read(fc, paths, readers))
