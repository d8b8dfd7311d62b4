"""fluidcache clusters for the benchmarks, always stopped and unmounted on the way out.

``up()`` runs ``fluidcache up`` (master, workers, FUSE mount) as one child; ``Manual`` starts a
master and workers one by one (each worker on a named node), for the P2P scenario, which needs a
worker to join later and a client that is not on the data's node.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.procs import Proc, unmount
from fluidcache.cluster import log_tail
from fluidcache.common.config import TOKEN_FILE_ENV, write_token

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text into ``{'name{labels}': value}`` (labels as printed)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line.strip())
        if m and not line.startswith("#"):
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


async def scrape(addresses: list[str], token: str) -> list[dict[str, float]]:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as s:

        async def one(address: str) -> dict[str, float]:
            async with s.get(address.rstrip("/") + "/metrics", headers=headers) as r:
                r.raise_for_status()
                return parse_metrics(await r.text())

        return list(await asyncio.gather(*(one(a) for a in addresses)))


def sum_metrics(per_worker: list[dict[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for m in per_worker:
        for k, v in m.items():
            total[k] = total.get(k, 0.0) + v
    return total


@dataclass
class Cluster:
    """What a benchmark needs of a running cluster."""

    master_url: str
    token: str
    mountpoint: Path | None
    workers: dict[str, str] = field(default_factory=dict)  # id -> address
    proc: Proc | None = None

    def metrics(self) -> dict[str, float]:
        """Every worker's metrics, summed."""
        return sum_metrics(asyncio.run(scrape(list(self.workers.values()), self.token)))

    def mount_pid(self) -> int | None:
        """The FUSE server's pid (a child of ``fluidcache up``)."""
        if self.proc is None:
            return None
        for child in _children(self.proc.pid):
            try:
                cmd = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"mount" in cmd[:5]:
                return child
        return None


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


@contextlib.contextmanager
def up(
    sources: list[str],
    root: Path,
    *,
    workers: int = 2,
    mem_quota_mib: int = 1024,
    block_size: str = "",
    env: dict[str, str] | None = None,
) -> Iterator[Cluster]:
    """``fluidcache up SOURCES`` with a fresh data dir under ``root``; stopped with SIGINT.

    With ``--no-listing``: the whole-dataset listing ``up`` starts once mounted would share the
    cores with the first measurement and list, ahead of it, what a cold listing is to time.
    """
    shutil.rmtree(root, ignore_errors=True)
    mnt, data = root / "mnt", root / "data"
    mnt.mkdir(parents=True)
    argv = [sys.executable, "-m", "fluidcache", "up", *sources, "--mountpoint", str(mnt)]
    argv += ["--workers", str(workers), "--mem-quota", f"{mem_quota_mib}Mi"]
    # Every MEM level allocated before the cluster is up (to its low watermark): a cold read
    # then writes into pages that are there, as on a cache node that has been running a while.
    argv += ["--mem-prealloc", f"{mem_quota_mib}Mi"]
    argv += ["--ssd-quota", "0"]  # the scenarios size the cache by MEM alone, as measured so far
    argv += ["--data-dir", str(data), f"--block-size={block_size}", "--no-listing"]
    proc = Proc(argv, log=root / "up.log", env={**os.environ, **(env or {})})
    try:
        master = proc.wait_for("master:", timeout=90).split()[-1]
        proc.wait_for("mounted:", timeout=90)
        token = (data / "token").read_text().strip()
        addresses = {
            f"worker-{i}": (data / "run" / f"worker-{i}.ready").read_text().strip()
            for i in range(workers)
        }
        yield Cluster(master, token, mnt, addresses, proc)
    except Exception as e:
        e.add_note(_log_tails(root.name, [root / "up.log", *sorted((data / "logs").glob("*.log"))]))
        raise
    finally:
        proc.stop(signal.SIGINT, timeout=30)
        unmount(mnt)
        with contextlib.suppress(OSError):
            shutil.copy(root / "up.log", root.parent / f"{root.name}.log")
        shutil.rmtree(data / "master", ignore_errors=True)


def _log_tails(cluster: str, logs: list[Path]) -> str:
    """The last lines of each of a failed cluster's logs, for the scenario's error."""
    out = [f"cluster {cluster}: the end of its logs"]
    out += [f"--- {log.name}\n{log_tail(log)}" for log in logs]
    return "\n".join(out)


class Manual:
    """A master and workers started one at a time (``fluidcache master`` / ``worker``)."""

    def __init__(self, root: Path, env: dict[str, str] | None = None) -> None:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        self.root = root
        self.token_file = root / "token"
        self.token = write_token(self.token_file)
        self.env = {**os.environ, **(env or {}), TOKEN_FILE_ENV: str(self.token_file)}
        self.procs: dict[str, Proc] = {}
        self.cluster = Cluster("", self.token, None)

    def _start(self, name: str, args: list[str]) -> str:
        ready = self.root / f"{name}.ready"
        argv = [sys.executable, "-m", "fluidcache", *args, "--ready-file", str(ready)]
        proc = Proc(argv, log=self.root / f"{name}.log", env=self.env)
        self.procs[name] = proc
        deadline = time.monotonic() + 60
        while not ready.exists():
            if not proc.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start:\n{proc.tail()}")
            time.sleep(0.05)
        return ready.read_text().strip()

    def start_master(self, *sources: str, block_size: str = "") -> str:
        data_dir = str(self.root / "master")
        args = ["master", *sources, "--data-dir", data_dir, f"--block-size={block_size}"]
        self.cluster.master_url = self._start("master", [*args, "--heartbeat-interval", "0.5"])
        return self.cluster.master_url

    def start_worker(self, name: str, node: str, mem_quota_mib: int) -> str:
        mem = Path(f"/dev/shm/fluidcache-bench-{self.root.name}/{name}")
        shutil.rmtree(mem, ignore_errors=True)
        args = ["worker", "--master", self.cluster.master_url, "--id", name, "--node", node]
        address = self._start(name, [*args, "--tier", f"MEM:{mem}:{mem_quota_mib}Mi"])
        self.cluster.workers[name] = address
        return address

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            with contextlib.suppress(Exception):
                self.procs.pop(name).stop()
        shutil.rmtree(Path(f"/dev/shm/fluidcache-bench-{self.root.name}"), ignore_errors=True)


@contextlib.contextmanager
def manual(root: Path, env: dict[str, str] | None = None) -> Iterator[Manual]:
    m = Manual(root, env)
    try:
        yield m
    finally:
        m.stop()
