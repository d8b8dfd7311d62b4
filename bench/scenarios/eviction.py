"""Scenario 7: eviction under pressure — a working set twice the cache; LRU; hit ratios.

One worker with a MEM tier of ``C`` (default watermarks: evict above 95 % down to 70 %), a
working set of ``2C`` in files. The client reads whole blocks with no client-side buffer, no
read-ahead and no short-circuit, so every block read is one request to the worker, which counts
it as a hit or a miss (``fluidcache_block_hits_total`` / ``fluidcache_block_misses_total``).
Phases, in order, on a fresh cluster:

- scan 1: every file once (cold);
- scan 2: every file again, same order — a cyclic scan larger than the cache, LRU's worst case;
- hot + stream: a hot set of C/4 is read, then the next C/4 of the other files, and so on
  until those are all read once — under LRU the hot set stays cached, the stream does not.

Each phase's hit ratio is shown next to what an exact LRU with the same quota and watermarks
predicts for the same sequence of block reads (``lru_model``). The direct read of the whole
working set is the baseline for throughput. Finally (first repetition only) the working set is
read twice through the FUSE mount, and the bytes of block files that the mount still holds open
after the worker evicted them are counted (``/proc/PID/fd``).
"""

from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from pathlib import Path

from bench import readers as rd
from bench.cluster import Cluster, scrape, sum_metrics
from bench.config import MiB
from bench.context import Bench
from bench.results import Result
from fluidcache.client import AsyncClient

NAME = "eviction"
TITLE = "7. Eviction under pressure (working set = 2x cache)"
HIGH, LOW = 0.95, 0.7  # the worker's default watermarks
HITS = "fluidcache_block_hits_total{"
MISSES = "fluidcache_block_misses_total{"


def lru_model(reads: list[str], block: int, quota: int) -> list[bool]:
    """Hit (True) or miss of each block read under exact LRU with the worker's watermarks."""
    cache: OrderedDict[str, None] = OrderedDict()
    out = []
    for b in reads:
        if b in cache:
            cache.move_to_end(b)
            out.append(True)
            continue
        out.append(False)
        cache[b] = None
        if len(cache) * block > HIGH * quota:
            while len(cache) * block > LOW * quota:
                cache.popitem(last=False)
    return out


def run(b: Bench) -> Result:
    s = b.sizes
    r = Result(NAME, TITLE)
    r.extra["headline_metric"] = "hit %"
    block = s.http_block_bytes()
    quota = s.evict_cache_mib * MiB
    files = [str(p.relative_to(b.data.root)) for p in b.data.files("evict")]
    file_bytes = s.evict_file_mib * MiB
    per_file = max(1, file_bytes // block)
    hot_n = max(1, quota // 4 // file_bytes)
    hot, rest = files[:hot_n], files[hot_n:]
    # (phase, what is counted, files): reads in order; hot-set reads of the first round of the
    # last phase are counted apart, as those blocks were evicted by the scans before.
    steps: list[tuple[str, str, list[str]]] = [
        ("scan 1 (cold)", "scan 1 (cold)", files),
        ("scan 2 (same order)", "scan 2 (same order)", files),
    ]
    for i in range(0, len(rest), hot_n):
        label = "hot set, first round" if i == 0 else "hot set, later rounds"
        steps.append(("hot + stream", label, hot))
        steps.append(("hot + stream", "stream", rest[i : i + hot_n]))
    phases = list(dict.fromkeys(p for p, _, _ in steps))
    counted = ["scan 1 (cold)", "scan 2 (same order)", "hot set, later rounds", "stream"]
    r.params = {
        "cache_bytes": quota,
        "working_set_bytes": len(files) * file_bytes,
        "file_bytes": file_bytes,
        "block_bytes": block,
        "watermarks": f"high {HIGH}, low {LOW}",
        "hot_set_files": hot_n,
        "client": "short_circuit=False, buffer_bytes=0, readahead_blocks=0, block-sized reads",
        "repetitions": b.reps,
    }
    # What an exact LRU predicts for the same reads.
    seq = [(label, f"{f}#{i}") for _, label, fs in steps for f in fs for i in range(per_file)]
    model = lru_model([blk for _, blk in seq], block, quota)
    expected: dict[str, float] = {}
    for label in counted:
        got = [hit for (lab, _), hit in zip(seq, model, strict=True) if lab == label]
        if got:
            expected[label] = 100 * sum(got) / len(got)
    r.extra["lru_model_hit_percent"] = expected
    r.extra["expected"] = {"hit %": {"label": "exact LRU model (computed)", "values": expected}}
    tier_used: list[float] = []
    evictions: list[float] = []
    held: list[dict[str, float]] = []

    for rep in range(b.reps):
        b.log(f" {NAME}: repetition {rep + 1}/{b.reps}")
        with b.cluster(
            f"{NAME}-{rep}", workers=1, mem_quota_mib=s.evict_cache_mib, with_s3=False
        ) as c:
            for system in b.order(["http-direct", "fluidcache"], rep):
                if system == "http-direct":
                    rd.drop_caches()
                    n, t = asyncio.run(rd.atimed(rd.http_read([b.http(f) for f in files])))
                    rd.expect(n, len(files) * file_bytes, NAME)
                    r.add("working set, once", system, "MB/s", n / t / 1e6)
                    continue
                counts = asyncio.run(_run_steps(c, steps, block))
                for label in counted:
                    hits, misses, _, _ = counts.get(label, (0, 0, 0, 0.0))
                    if hits + misses:
                        r.add(label, "fc-client-http", "hit %", 100 * hits / (hits + misses))
                for phase in phases:
                    nbytes = sum(v[2] for k, v in counts.items() if _phase_of(k, steps) == phase)
                    secs = sum(v[3] for k, v in counts.items() if _phase_of(k, steps) == phase)
                    r.add(
                        phase,
                        "fc-client-http",
                        "MB/s",
                        nbytes / secs / 1e6,
                        vs_case="working set, once",
                    )
                m = c.metrics()
                tier_used.append(m.get('fluidcache_tier_used_bytes{tier="MEM"}', 0.0))
                evictions.append(_sum(m, "fluidcache_evictions_total"))
                if rep == 0:
                    held.append(_fuse_pass(c, files))
    r.extra["tier_used_bytes_at_end"] = tier_used
    r.extra["tier_quota_bytes"] = quota
    r.extra["evictions_per_rep"] = evictions
    for label, pct in expected.items():
        r.notes.append(
            f"exact LRU model with the same quota and watermarks, {label}: {pct:.0f} % hits"
        )
    if held:
        r.extra["fuse_pass"] = held
        h = held[0]
        r.notes.append(
            f"After two FUSE passes over the working set, the mount held "
            f"{h['held_bytes'] / MiB:.0f} MiB of evicted block files open "
            f"({h['held_files']:.0f} files) while the MEM tier used "
            f"{h['tier_used_bytes'] / MiB:.0f} MiB of its {quota / MiB:.0f} MiB quota "
            "(short-circuit descriptors keep evicted blocks' memory in /dev/shm)."
        )
    return r


def _phase_of(label: str, steps: list[tuple[str, str, list[str]]]) -> str:
    return next(p for p, lab, _ in steps if lab == label)


def _sum(metrics: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in metrics.items() if k.startswith(prefix))


async def _run_steps(
    c: Cluster, steps: list[tuple[str, str, list[str]]], block: int
) -> dict[str, tuple[float, float, int, float]]:
    """Run the reads; per counted label: (hits, misses, bytes, seconds reading)."""

    async def counters() -> tuple[float, float]:
        m = sum_metrics(await scrape(list(c.workers.values()), c.token))
        return _sum(m, HITS), _sum(m, MISSES)

    out: dict[str, tuple[float, float, int, float]] = {}
    async with AsyncClient(
        c.master_url,
        c.token,
        dataset="default",
        short_circuit=False,
        buffer_bytes=0,
        readahead_blocks=0,
    ) as fc:
        for _, label, files in steps:
            h0, m0 = await counters()
            n, t = await rd.atimed(_read_blocks(fc, files, block))
            h1, m1 = await counters()
            h, m, nb, sec = out.get(label, (0.0, 0.0, 0, 0.0))
            out[label] = (h + h1 - h0, m + m1 - m0, nb + n, sec + t)
    return out


async def _read_blocks(fc: AsyncClient, files: list[str], block: int) -> int:
    """Every file, one whole block per read."""
    total = 0
    for f in files:
        info = await fc.stat(f"/web/{f}")
        for i in range(info.block_count):
            total += len(await fc.pread(info, i * block, block))
    return total


def _fuse_pass(c: Cluster, files: list[str]) -> dict[str, float]:
    """Read the set twice through the mount; bytes of deleted block files the mount holds."""
    assert c.mountpoint is not None
    paths = [c.mountpoint / "web" / f for f in files]
    for _ in range(2):
        rd.drop_caches()
        rd.read_files(paths, 1)
    pid = c.mount_pid()
    held_bytes, held_files = 0, 0
    if pid is not None:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
                if target.startswith("/dev/shm/") and target.endswith("(deleted)"):
                    held_bytes += os.stat(fd).st_size
                    held_files += 1
            except OSError:
                continue
    m = c.metrics()
    return {
        "held_bytes": float(held_bytes),
        "held_files": float(held_files),
        "tier_used_bytes": m.get('fluidcache_tier_used_bytes{tier="MEM"}', 0.0),
        "mount_pid_found": float(pid is not None),
    }
