"""Scenario 5: P2P — data cached on worker A, read by a client next to worker B.

Nodes are named (``--node``) so that one machine plays two: worker A on node-a, worker B on
node-b, the reading client on node-b. Per repetition, with a fresh master (HTTP source):

1. only A runs; the client on node-b reads the file cold: A fetches it from the source;
2. B joins; a new client on node-b reads the file again: A holds every block, so the client
   reads them from A over the network (no short-circuit: A is not on its node);
3. B is asked to cache every block (``POST /v1/blocks/{id}/cache``, as a load would): B
   fetches each from its peer A, not from the source (B's ``misses{origin="peer"}`` counts them);
4. a new client on node-b reads the file: now from B's files on its own node (short-circuit).

The direct read from the source is the baseline. Traffic between the workers and the client
goes over loopback without shaping: a cluster's own network is taken to be faster than the
link to the remote store.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from bench import readers as rd
from bench.cluster import manual
from bench.config import MiB
from bench.context import Bench
from bench.results import Result
from fluidcache.client import AsyncClient
from fluidcache.common.protocol import BLOCK_CACHE

NAME = "p2p"
TITLE = "5. P2P: cached on worker A, read next to worker B"
FILE = "p2p/p2p.bin"
REPLICATE_CONCURRENCY = 4
BASE = "from the source"
WAIT_WORKERS = 20.0  # seconds


def run(b: Bench) -> Result:
    size = b.sizes.p2p_mib * MiB
    r = Result(NAME, TITLE)
    r.params = {
        "file_bytes": size,
        "block_bytes": b.sizes.http_block_bytes(),
        "replicate_concurrency": REPLICATE_CONCURRENCY,
        "workers": "A (node-a), then B (node-b)",
        "client_node": "node-b",
        "repetitions": b.reps,
    }
    quota = size // MiB + 64
    peer_blocks: list[float] = []

    def mbps(n: int, seconds: float) -> float:
        rd.expect(n, size, NAME)
        return n / seconds / 1e6

    for rep in range(b.reps):
        b.log(f" {NAME}: repetition {rep + 1}/{b.reps}")
        for system in b.order(["http-direct", "fluidcache"], rep):
            if system == "http-direct":
                rd.drop_caches()
                n, t = asyncio.run(rd.atimed(rd.http_read([b.http(FILE)])))
                r.add(BASE, "http-direct", "MB/s", mbps(n, t))
                continue
            with manual(b.work / "clusters" / f"{NAME}-{rep}") as m:
                master = m.start_master(f"web={b.http_url}", block_size=b.sizes.block_size)
                m.start_worker("worker-a", "node-a", quota)
                rd.drop_caches()
                n, t = asyncio.run(rd.atimed(_read(master, m.token)))
                r.add(
                    "cold: A fetches from the source",
                    "fc-client-http",
                    "MB/s",
                    mbps(n, t),
                    vs_case=BASE,
                )
                b_addr = m.start_worker("worker-b", "node-b", quota)
                asyncio.run(_wait_workers(master, m.token, 2))
                rd.drop_caches()
                n, t = asyncio.run(rd.atimed(_read(master, m.token)))
                r.add(
                    "cached on A, client on node-b",
                    "fc-client-http",
                    "MB/s",
                    mbps(n, t),
                    vs_case=BASE,
                )
                before = m.cluster.metrics()
                n, t = asyncio.run(rd.atimed(_replicate(master, m.token, b_addr)))
                r.add(
                    "B fetches from peer A (P2P)",
                    "fc-client-http",
                    "MB/s",
                    mbps(n, t),
                    vs_case=BASE,
                )
                after = m.cluster.metrics()
                key = 'fluidcache_block_misses_total{origin="peer"}'
                peer_blocks.append(after.get(key, 0.0) - before.get(key, 0.0))
                src_key = 'fluidcache_block_misses_total{origin="source"}'
                if after.get(src_key, 0.0) != before.get(src_key, 0.0):
                    r.notes.append(f"repetition {rep + 1}: B read some blocks from the source")
                rd.drop_caches()
                n, t = asyncio.run(rd.atimed(_read(master, m.token)))
                r.add(
                    "then local on B (short-circuit)",
                    "fc-client-http",
                    "MB/s",
                    mbps(n, t),
                    vs_case=BASE,
                )
    block = b.sizes.http_block_bytes()
    blocks = (size + block - 1) // block
    r.extra["blocks_per_file"] = blocks
    r.extra["blocks_B_fetched_from_peer_per_rep"] = peer_blocks
    return r


async def _read(master: str, token: str) -> int:
    async with AsyncClient(master, token, dataset="default", node="node-b") as fc:
        return await rd.fc_get(fc, f"/web/{FILE}")


async def _wait_workers(master: str, token: str, n: int) -> None:
    deadline = time.monotonic() + WAIT_WORKERS
    async with AsyncClient(master, token, dataset="default") as fc:
        while len(await fc.blocks.workers(refresh=True)) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than {n} workers registered after {WAIT_WORKERS} s")
            await asyncio.sleep(0.1)


async def _replicate(master: str, token: str, worker: str) -> int:
    """Ask ``worker`` to cache every block of the file; the bytes it now holds."""
    async with AsyncClient(master, token, dataset="default") as fc:
        info = await fc.stat(f"/web/{FILE}")
    refs = [info.block(i) for i in range(info.block_count)]
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as s:

        async def cache(i: int) -> int:
            ref = refs[i]
            url = worker.rstrip("/") + BLOCK_CACHE.format(block_id=ref.id)
            async with s.post(url, params=ref.to_query(), headers=headers) as resp:
                resp.raise_for_status()
            return ref.length

        return await rd.gather_bounded(list(range(len(refs))), REPLICATE_CONCURRENCY, cache)
