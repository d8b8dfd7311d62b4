"""Helpers of the fault and soak scenarios: a supervised ``fluidcache up``, its children's pids,
readers through the mount that check every byte, and process figures (fds, RSS)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fluidcache.client import AsyncClient
from fluidcache.common.blockid import is_block_id
from tests.procs import Proc, fluidcache, running

READ_BOUND = 30.0  # seconds a read through the mount may take, even under a fault


@dataclass
class Up:
    """A running ``fluidcache up`` and where its pieces are."""

    proc: Proc
    mnt: Path
    data: Path
    master: str
    token: str

    def pids(self) -> dict[str, int]:
        """Its children by name (master, worker-N, mount) -> pid."""
        return child_pids(self.proc.popen.pid)

    def kill(self, name: str) -> int:
        """kill -9 one child; its pid."""
        pid = self.pids()[name]
        os.kill(pid, 9)
        return pid

    def wait_restarted(self, name: str, after: int, timeout: float = 60.0) -> float:
        """Seconds until up says ``name`` restarted (the ``after``-th such line or later)."""
        started = time.monotonic()
        line = f"fluidcache up: {name} restarted"
        while time.monotonic() - started < timeout:
            if sum(1 for x in list(self.proc.lines) if x.startswith(line)) >= after:
                return time.monotonic() - started
            assert self.proc.popen.poll() is None, f"up exited:\n{self.proc.output}"
            time.sleep(0.05)
        raise AssertionError(f"{name} not restarted within {timeout} s:\n{self.proc.output}")

    def client(self, **options: object) -> AsyncClient:
        return AsyncClient(self.master, self.token, **options)  # type: ignore[arg-type]


@contextlib.contextmanager
def up(root: Path, source: str, *args: str, mem: str = "1", ssd: str = "256Mi") -> Iterator[Up]:
    """``fluidcache up`` of ``source`` with 1 MiB blocks, stopped and unmounted whatever happens.
    By default every block goes to the SSD level (the MEM level is one byte)."""
    mnt, data = root / "mnt", root / "cluster"
    mnt.mkdir(parents=True)
    proc = fluidcache(
        "up", source, "--mountpoint", str(mnt), "--data-dir", str(data), "--block-size", "1Mi",
        "--mem-quota", mem, "--ssd-quota", ssd, *args,
    )  # fmt: skip
    with running(proc, mnt):
        master = proc.wait_for("master:").split()[-1]
        proc.wait_for("mounted:")
        yield Up(proc, mnt, data, master, (data / "token").read_text().strip())


def child_pids(parent: int) -> dict[str, int]:
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != parent:
            continue
        args = [a.decode() for a in argv]
        if "worker" in args and "--id" in args:
            out[args[args.index("--id") + 1]] = int(entry)
        elif "master" in args:
            out["master"] = int(entry)
        elif "mount" in args:
            out["mount"] = int(entry)
    return out


def drop_caches() -> None:
    subprocess.run(["sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches"], check=False)


def read_file(path: Path, chunk: int = 1 << 20) -> bytes:
    with open(path, "rb") as f:
        return b"".join(iter(lambda: f.read(chunk), b""))


def source_bytes(root: Path) -> dict[str, bytes]:
    """Relative path -> content of every file under ``root``."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


@dataclass
class ReadLog:
    """What readers saw: good reads, wrong bytes (never allowed), errors with their time."""

    good: int = 0
    wrong: list[str] = field(default_factory=list)
    errors: list[tuple[str, str, float]] = field(default_factory=list)  # path, errno, seconds
    slowest: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def summary(self) -> str:
        kinds = sorted({e[1] for e in self.errors})
        failed = f"{len(self.errors)} failed ({', '.join(kinds) or 'none'})"
        return (
            f"{self.good} reads with the source's bytes, {len(self.wrong)} with wrong bytes, "
            f"{failed}, slowest {self.slowest:.2f} s"
        )


class Readers:
    """Threads that read whole files through the mount again and again, checking every byte."""

    def __init__(self, mnt: Path, expected: dict[str, bytes], threads: int = 4) -> None:
        self.mnt, self.expected = mnt, expected
        self.log = ReadLog()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)
        ]

    def __enter__(self) -> Readers:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(READ_BOUND + 10)
            assert not t.is_alive(), "a reader hung"

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        names = sorted(self.expected)
        while not self._stop.is_set():
            name = rng.choice(names)
            started = time.monotonic()
            try:
                data = read_file(self.mnt / name)
            except OSError as e:
                took = time.monotonic() - started
                with self.log.lock:
                    self.log.errors.append((name, errno.errorcode.get(e.errno or 0, "?"), took))
                    self.log.slowest = max(self.log.slowest, took)
                time.sleep(0.05)
                continue
            took = time.monotonic() - started
            with self.log.lock:
                self.log.slowest = max(self.log.slowest, took)
                if data == self.expected[name]:
                    self.log.good += 1
                else:
                    self.log.wrong.append(name)


def is_block_file(target: str) -> bool:
    """Whether an open descriptor's target is a worker's block file (``BLOCKID.DIGEST``, as
    the store names them; evicted or not)."""
    block_id, _, digest = target.rpartition("/")[2].removesuffix(" (deleted)").partition(".")
    return is_block_id(block_id) and len(digest) == 16


def rss_and_fds(pid: int) -> tuple[int, dict[str, tuple[int, int]], int]:
    """(resident bytes, the block files open: path -> (descriptors, bytes), other open
    descriptors) of a process.

    Block files (``BLOCKID.DIGEST``, evicted or not) are told apart because a client keeps some
    open by design (:class:`fluidcache.client.cache.FdCache`)."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    blocks: dict[str, tuple[int, int]] = {}
    other = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        link = f"/proc/{pid}/fd/{fd}"
        try:
            target = os.readlink(link)
            if not is_block_file(target):
                other += 1
                continue
            size = os.stat(link).st_size
        except OSError:
            continue  # closed meanwhile
        blocks[target] = (blocks.get(target, (0, 0))[0] + 1, size)
    return rss, blocks, other


async def worker_blocks(client: AsyncClient) -> dict[str, int]:
    """Worker id -> blocks it holds, as the master knows it now."""
    workers = await client.blocks.workers(refresh=True)
    return {w.worker_id: sum(t.blocks for t in w.tiers) for w in workers}


def blocks_of(client_factory: Up) -> dict[str, int]:
    async def ask() -> dict[str, int]:
        async with client_factory.client() as c:
            return await worker_blocks(c)

    return asyncio.run(ask())
