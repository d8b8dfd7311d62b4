"""A worker that dies is skipped: reads go to the next worker, a bounded number of times."""

from __future__ import annotations

import random
from pathlib import Path

from fluidcache.client import AsyncClient
from tests.cluster import cluster


async def test_reads_survive_a_dead_worker(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    blob = random.Random(4).randbytes(12 * 2**20 + 3)
    (src / "f.bin").write_bytes(blob)
    with cluster(tmp_path / "c") as c:
        c.start_master(f"local://{src}", extra=("--block-size", "1Mi"))
        c.start_worker("w1")
        c.start_worker("w2")
        async with AsyncClient(c.master_url, c.token) as client:
            f = await client.open("/f.bin")
            assert await f.read() == blob
        c.kill("w1")  # still "live" at the master until its heartbeats are missed
        for short_circuit in (True, False):
            async with AsyncClient(c.master_url, c.token, short_circuit=short_circuit) as client:
                f = await client.open("/f.bin")
                assert await f.read() == blob
