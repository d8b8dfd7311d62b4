"""Read-ahead on sequential access only: random reads fetch exactly the blocks they touch."""

from __future__ import annotations

import asyncio
import random
import re
from pathlib import Path

import aiohttp

from fluidcache.client import AsyncClient
from fluidcache.common.http import auth_headers
from fluidcache.common.protocol import METRICS
from tests.cluster import Cluster, cluster

MIB = 2**20


async def source_fetches(c: Cluster) -> float:
    async with (
        aiohttp.ClientSession() as s,
        s.get(c.urls["w1"] + METRICS, headers=auth_headers(c.token)) as resp,
    ):
        text = await resp.text()
    m = re.search(r'^fluidcache_block_misses_total\{origin="source"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


async def test_random_reads_do_not_over_fetch_and_sequential_reads_ahead(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    blob = random.Random(8).randbytes(24 * MIB)
    (src / "r.bin").write_bytes(blob)
    (src / "s.bin").write_bytes(blob)
    with cluster(tmp_path / "c") as c:
        c.start_master(f"local://{src}", extra=("--block-size", "1Mi"))
        c.start_worker("w1")
        async with AsyncClient(c.master_url, c.token, short_circuit=False) as client:
            f = await client.open("/r.bin")
            for index in (17, 3, 11, 22, 6):  # far apart: never "sequential"
                offset = index * MIB + 1000
                assert await f.pread(offset, 4096) == blob[offset : offset + 4096]
            await asyncio.sleep(0.5)  # a stray read-ahead would have started by now
            assert await source_fetches(c) == 5

            f = await client.open("/s.bin")
            pos = 0
            while pos < 4 * MIB:  # 4 blocks read in 128 KiB steps, like the kernel does
                assert await f.pread(pos, 128 * 1024) == blob[pos : pos + 128 * 1024]
                pos += 128 * 1024
            await asyncio.sleep(0.5)
            fetched = await source_fetches(c) - 5
            assert 4 < fetched <= 4 + client.readahead_blocks  # read ahead, within the window
