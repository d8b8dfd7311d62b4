"""Short-circuit reads under descriptor churn: many readers, a tiny descriptor budget."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from fluidcache.client import AsyncClient
from tests.cluster import cluster

MIB = 2**20


async def test_concurrent_readers_never_read_a_closed_or_reused_descriptor(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(12)
    files = {f"/f{i:02d}": rng.randbytes(MIB + i) for i in range(24)}
    for name, data in files.items():
        (src / name.lstrip("/")).write_bytes(data)
    with cluster(tmp_path / "c") as c:
        c.start_master(f"local://{src}", extra=("--block-size", "1Mi"))
        c.start_worker("w1")
        async with AsyncClient(c.master_url, c.token) as client:
            # Every new descriptor closes an older one, while other reads are in flight.
            client.blocks.fds.max_bytes = 2 * MIB
            for name in files:  # cold pass: the worker keeps every block
                assert await (await client.open(name)).read() == files[name]

            async def reader(name: str, seed: int) -> None:
                f = await client.open(name)
                offsets = list(range(0, len(files[name]), 64 * 1024))
                random.Random(seed).shuffle(offsets)
                for off in offsets:
                    got = await f.pread(off, 64 * 1024)
                    assert got == files[name][off : off + 64 * 1024], (name, off)
                    await asyncio.sleep(0)

            await asyncio.gather(*(reader(n, i) for i, n in enumerate(files)))
            assert client.blocks.fds.bytes <= 2 * MIB + MIB + 64
