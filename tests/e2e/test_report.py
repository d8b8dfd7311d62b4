"""`fluidcache report` and the master's /metrics on a real cluster: two workers on two nodes, a
reader on the first; cold reads count as misses, short-circuit reads as local hits, reads from
the other node's worker as remote hits, and the figures equal what the workers hold on disk."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fluidcache.client import AsyncClient
from fluidcache.common.protocol import METRICS, Report
from tests.cluster import Cluster, cluster

pytestmark = pytest.mark.timeout(120)

KIB, MIB = 1024, 1024 * 1024


def held_on_disk(c: Cluster, worker: str) -> int:
    """Bytes of the block files under a worker's tier directory (temp names excluded)."""
    mem = c.root / worker / "mem"
    return sum(p.stat().st_size for p in mem.rglob("*") if p.is_file() and "tmp" not in p.name)


async def report_when(
    client: AsyncClient, ok: Callable[[Report], bool], within: float = 15.0
) -> Report:
    """The report once ``ok`` holds (heartbeats carry the workers' figures); fails if never."""
    deadline = time.monotonic() + within
    while True:
        r = await client.report()
        if ok(r) or time.monotonic() > deadline:
            return r
        await asyncio.sleep(0.2)


async def read_all(c: Cluster, files: dict[str, bytes]) -> None:
    async with AsyncClient(c.master_url, c.token, node="n1") as client:
        for name, data in files.items():
            assert await (await client.open(name)).read() == data


def cli(c: Cluster, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "fluidcache", "report", "--master", c.master_url, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"FLUIDCACHE_TOKEN_FILE": str(c.token_file), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


async def scrape(url: str, token: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as s, s.get(url + METRICS, headers=headers) as resp:
        body = await resp.read()
        return resp.status, body.decode() if resp.status == 200 else ""


async def test_report_counts_hits_and_matches_the_workers(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(7)
    files = {f"/f{i}": rng.randbytes(MIB + 512 * KIB) for i in range(8)}  # 16 blocks of 1Mi/512Ki
    for name, data in files.items():
        (src / name[1:]).write_bytes(data)
    total = sum(map(len, files.values()))
    with cluster(tmp_path / "c") as c:
        c.start_master(
            f"local://{src}", extra=("--block-size", "1Mi", "--heartbeat-interval", "0.3")
        )
        c.start_worker("w1", node="n1")
        c.start_worker("w2", node="n2")
        async with AsyncClient(c.master_url, c.token) as admin:
            # Cold: every byte comes from the source, once; reading the blocks just fetched
            # into this node's worker is not counted again as a hit.
            await read_all(c, files)
            r = await report_when(admin, lambda r: r.reads.source >= total)
            assert (r.reads.source, r.reads.local, r.reads.remote) == (total, 0, 0)
            on_w1, on_w2 = held_on_disk(c, "w1"), held_on_disk(c, "w2")
            assert on_w1 > 0 and on_w2 > 0 and on_w1 + on_w2 == total

            # Warm, from node n1: w1's blocks by short-circuit (local), w2's over HTTP (remote).
            await read_all(c, files)
            r = await report_when(admin, lambda r: r.reads.local + r.reads.remote >= total)
            assert (r.reads.local, r.reads.remote, r.reads.source) == (on_w1, on_w2, total)
            assert r.cache_hit_ratio == 0.5
            assert r.local_hit_ratio == round(on_w1 / (2 * total), 4)
            assert r.remote_hit_ratio == round(on_w2 / (2 * total), 4)

            # The report's cached bytes are the block files on the workers' disks.
            assert r.cached_bytes == on_w1 + on_w2 == total
            [d] = r.datasets
            assert (d.name, d.ufs_total_bytes, d.file_count) == ("default", total, 8)
            assert (d.cached_bytes, d.cached_percent, d.shortfall) == (total, 100.0, None)
            assert d.cache_capacity == 2 * 256 * MIB
            assert {w.worker_id: sum(t.used for t in w.tiers) for w in r.workers} == {
                "w1": on_w1,
                "w2": on_w2,
            }

            # The CLI prints the same figures, as JSON with Fluid's keys and as text.
            doc = json.loads(cli(c, "--json"))
            assert doc == json.loads(json.dumps(r.fluid()))
            assert doc["datasets"][0]["cacheHitRatio"] == 0.5
            text = cli(c)
            for heading in ("UFS TOTAL SIZE", "CACHE CAPACITY", "CACHE HIT RATIO", "WORKER"):
                assert heading in text
            assert "50.0%" in text and "w1" in text and "w2" in text

            # /metrics on the master: the report's values, and only with the token.
            status, body = await scrape(c.master_url, c.token)
            assert status == 200
            got = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(body)
                for s in fam.samples
            }
            ds = (("dataset", "default"),)
            assert got["fluidcache_dataset_ufs_bytes", ds] == total
            assert got["fluidcache_dataset_files", ds] == 8
            assert got["fluidcache_dataset_cached_bytes", ds] == total
            assert got["fluidcache_dataset_cached_percent", ds] == 100.0
            assert got["fluidcache_workers", (("state", "live"),)] == 2
            assert got["fluidcache_workers", (("state", "lost"),)] == 0
            assert got["fluidcache_cache_capacity_bytes", ()] == 2 * 256 * MIB
            assert got["fluidcache_hit_ratio", (("kind", "cache"),)] == 0.5
            assert got["fluidcache_hit_ratio", (("kind", "local"),)] == r.local_hit_ratio
            assert got["fluidcache_read_bytes_total", (("origin", "remote"),)] == on_w2
            assert (await scrape(c.master_url, None))[0] == 401
            assert (await scrape(c.master_url, "wrong"))[0] == 401
