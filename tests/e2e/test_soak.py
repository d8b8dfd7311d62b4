"""A bounded soak: 64 readers (large sequential and small random reads, mixed) through the mount
of a 3-worker cluster whose cache is smaller than the dataset (eviction active), for
``--soak-seconds`` (60 by default; ``make test-slow``). Zero errors, zero wrong bytes, and the
open descriptors and memory of every process flat."""

from __future__ import annotations

import asyncio
import os
import random
import re
import threading
import time
from pathlib import Path

import aiohttp
import pytest

from fluidcache.client import AsyncClient
from fluidcache.client.blocks import FD_CACHE_BYTES, FD_CACHE_FILES
from tests.e2e.faults import child_pids, drop_caches, rss_and_fds, up
from tests.reliability import Scenario

pytestmark = [pytest.mark.timeout(900), pytest.mark.reliability]

READERS = 64
LARGE_READERS = 16
LARGE, LARGE_FILES, SMALL_FILES = 32 * 2**20, 4, 300
MB = 2**20
POOL_IDLE = 17.0  # s after the readers stop: aiohttp closes a pooled connection idle for 15 s


def make_source(root: Path) -> None:
    rng = random.Random(21)
    (root / "large").mkdir(parents=True)
    for i in range(LARGE_FILES):
        (root / "large" / f"l{i}.bin").write_bytes(rng.randbytes(LARGE))
    for i in range(SMALL_FILES):
        d = root / "small" / f"d{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"s{i:03d}.bin").write_bytes(rng.randbytes(rng.randint(1, 256 * 1024)))


class Soak:
    def __init__(self, src: Path, mnt: Path) -> None:
        self.src, self.mnt = src, mnt
        self.files = sorted(str(p.relative_to(src)) for p in src.rglob("*.bin"))
        self.large = [f for f in self.files if f.startswith("large/")]
        self.small = [f for f in self.files if f.startswith("small/")]
        self.reads = self.bytes = 0
        self.wrong: list[str] = []
        self.errors: list[str] = []
        self.slowest = 0.0
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def check(self, name: str, offset: int, data: bytes, took: float) -> None:
        with open(self.src / name, "rb") as f:
            want = os.pread(f.fileno(), len(data) or 1, offset)
        with self.lock:
            self.reads += 1
            self.bytes += len(data)
            self.slowest = max(self.slowest, took)
            if data != want[: len(data)] or (not data and want):
                self.wrong.append(f"{name}@{offset}")

    def sequential(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            name = rng.choice(self.large)
            offset = rng.randrange(0, LARGE, MB)
            try:
                with open(self.mnt / name, "rb", buffering=0) as f:
                    f.seek(offset)
                    for _ in range(16):
                        if self.stop.is_set() or offset >= LARGE:
                            break
                        started = time.monotonic()
                        data = f.read(MB)
                        self.check(name, offset, data, time.monotonic() - started)
                        offset += len(data)
            except OSError as e:
                with self.lock:
                    self.errors.append(f"{name}: {e}")

    def random_small(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                if rng.random() < 0.7:
                    name, offset = rng.choice(self.small), 0
                    with open(self.mnt / name, "rb") as f:
                        data = f.read()
                else:
                    name = rng.choice(self.large)
                    offset = rng.randrange(LARGE - 65536)
                    with open(self.mnt / name, "rb", buffering=0) as f:
                        data = os.pread(f.fileno(), rng.randint(1, 65536), offset)
            except OSError as e:
                with self.lock:
                    self.errors.append(f"{name}: {e}")
                continue
            self.check(name, offset, data, time.monotonic() - started)


def descriptors(blocks: dict[str, tuple[int, int]]) -> int:
    """Open descriptors of the block files of :func:`rss_and_fds`."""
    return sum(n for n, _ in blocks.values())


async def worker_metric(addresses: list[str], token: str, name: str) -> float:
    total = 0.0
    async with aiohttp.ClientSession() as session:
        for address in addresses:
            async with session.get(
                f"{address}/metrics", headers={"Authorization": f"Bearer {token}"}
            ) as resp:
                text = await resp.text()
            total += sum(
                float(m) for m in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
            )
    return total


def test_soak_64_readers_with_eviction(
    workdir: Path, scenario: Scenario, request: pytest.FixtureRequest
) -> None:
    seconds = float(request.config.getoption("--soak-seconds"))
    scenario.title = f"soak: {READERS} readers for {seconds:.0f} s, eviction active"
    src = workdir / "src"
    make_source(src)
    size = sum(p.stat().st_size for p in src.rglob("*.bin"))
    scenario.injected = (
        f"{LARGE_READERS} large sequential readers (1 MiB reads, 16 MiB runs from random "
        f"offsets) and {READERS - LARGE_READERS} small random readers (whole small files, "
        f"1 B-64 KiB ranges of large files) through the mount of 3 workers; dataset "
        f"{size / 1e6:.0f} MB in {len(list(src.rglob('*.bin')))} files, cache 3 x (MEM 8 MiB + "
        "SSD 24 MiB) = 96 MiB; the kernel's page cache dropped every 5 s"
    )
    with up(workdir, f"local://{src}", "--workers", "3", mem="8Mi", ssd="24Mi") as cl:
        proc, master, token = cl.proc, cl.master, cl.token
        pids = {"up": proc.popen.pid, **child_pids(proc.popen.pid)}
        soak = Soak(src, cl.mnt)
        threads = [
            threading.Thread(
                target=soak.sequential if i < LARGE_READERS else soak.random_small,
                args=(i,),
                daemon=True,
            )
            for i in range(READERS)
        ]

        def drop_caches_now_and_then() -> None:
            while not soak.stop.wait(5):
                drop_caches()  # so that reads reach fluidcache, not the kernel's page cache

        threads.append(threading.Thread(target=drop_caches_now_and_then, daemon=True))
        started = time.monotonic()
        for t in threads:
            t.start()
        warm = max(5.0, seconds * 0.2)
        time.sleep(warm)
        first = {name: rss_and_fds(pid) for name, pid in pids.items()}
        reads0 = soak.reads
        time.sleep(max(0.0, seconds - warm))
        soak.stop.set()
        for t in threads:
            t.join(60)
        hung = sum(t.is_alive() for t in threads)
        elapsed = time.monotonic() - started
        # Connections the clients pool close once idle for aiohttp's keep-alive: counted after
        # that, what is still open is held, not pooled (a pool's size follows the load's peaks).
        time.sleep(POOL_IDLE)
        last = {name: rss_and_fds(pid) for name, pid in pids.items()}

        async def addresses() -> list[str]:
            async with AsyncClient(master, token) as c:
                return [w.address for w in await c.blocks.workers(refresh=True)]

        workers = asyncio.run(addresses())
        evictions = asyncio.run(worker_metric(workers, token, "fluidcache_evictions_total"))
        assert set(child_pids(proc.popen.pid)) == set(pids) - {"up"}, "a process was restarted"
        assert not [x for x in proc.lines if "exited with status" in x]

    scenario.figure("reads", f"{soak.reads} ({soak.reads / elapsed:.0f}/s)")
    scenario.figure(
        "bytes read", f"{soak.bytes / 1e9:.2f} GB ({soak.bytes / elapsed / 1e6:.0f} MB/s)"
    )
    scenario.figure(
        "errors / wrong bytes / hung readers", f"{len(soak.errors)} / {len(soak.wrong)} / {hung}"
    )
    scenario.figure("slowest read", f"{soak.slowest:.2f} s")
    scenario.figure("evictions (all workers)", f"{evictions:.0f}")
    for name in pids:
        (r0, b0, o0), (r1, b1, o1) = first[name], last[name]
        scenario.figure(
            f"{name}: RSS / open fds (of block files + others), at {warm:.0f} s -> "
            f"{POOL_IDLE:.0f} s after the end",
            f"{r0 / 1e6:.0f} -> {r1 / 1e6:.0f} MB / {descriptors(b0)} + {o0} -> "
            f"{descriptors(b1)} + {o1}",
        )
    scenario.note(f"{soak.reads - reads0} reads between the two measurements")
    assert hung == 0
    assert not soak.errors, soak.errors[:5]
    assert not soak.wrong, soak.wrong[:5]
    assert evictions > 0, "the cache never evicted: the soak did not exercise eviction"
    for name in pids:
        (r0, b0, o0), (r1, b1, o1) = first[name], last[name]
        f0, f1 = descriptors(b0) + o0, descriptors(b1) + o1
        if name == "mount":
            # The client keeps block files open by design (FdCache): bounded, not flat (their
            # count swings by dozens as evicted blocks give way to held ones). Its bounds: files
            # and bytes (one block past them), each file by one descriptor and its mapping's.
            sizes = [size for _, size in b1.values()]
            assert len(b1) <= FD_CACHE_FILES, f"mount: {len(b1)} block files open"
            assert sum(sizes) <= FD_CACHE_BYTES + max(sizes, default=0), (
                f"mount: {sum(sizes)} bytes of block files open"
            )
            twice = [path for path, (n, _) in b1.items() if n > 2]
            assert not twice, f"mount: block files open more than twice: {twice[:3]}"
            f0, f1 = o0, o1
        assert f1 <= f0 + 32, f"{name}: open fds grew from {f0} to {f1}"
        assert r1 <= r0 * 1.3 + 48e6, f"{name}: RSS grew from {r0 / 1e6:.0f} to {r1 / 1e6:.0f} MB"
    scenario.note("no process restarted; errors, wrong bytes and hung readers all zero")
