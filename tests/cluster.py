"""Real master and worker processes for integration tests, stopped even when a test fails."""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from fluidcache.common.config import TOKEN_FILE_ENV, write_token
from fluidcache.common.http import auth_headers
from fluidcache.common.protocol import METRICS
from tests.procs import Proc


def _wait_file(path: Path, proc: Proc, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text().strip()
        if proc.popen.poll() is not None:
            raise AssertionError(f"{proc.argv[3]} exited {proc.popen.returncode}:\n{proc.output}")
        time.sleep(0.05)
    raise AssertionError(f"{proc.argv[3]} not ready within {timeout} s:\n{proc.output}")


@dataclass
class Cluster:
    """A master and workers as separate processes, all on 127.0.0.1."""

    root: Path
    token: str = ""
    master_url: str = ""
    procs: dict[str, Proc] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    _master_args: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.token_file = self.root / "token"
        self.token = write_token(self.token_file)
        self.env = {TOKEN_FILE_ENV: str(self.token_file)}

    def _start(self, name: str, args: list[str]) -> str:
        ready = self.root / f"{name}.ready"
        ready.unlink(missing_ok=True)
        proc = Proc(
            [sys.executable, "-m", "fluidcache", *args, "--ready-file", str(ready)], env=self.env
        )
        self.procs[name] = proc
        self.urls[name] = _wait_file(ready, proc)
        return self.urls[name]

    async def metric(self, name: str, series: str) -> float:
        """The value of ``series`` (its name and labels as written there) on process
        ``name``'s metrics page; 0 if absent."""
        async with (
            aiohttp.ClientSession() as s,
            s.get(self.urls[name] + METRICS, headers=auth_headers(self.token)) as resp,
        ):
            m = re.search(rf"^{re.escape(series)} (\S+)$", await resp.text(), re.M)
        return float(m.group(1)) if m else 0.0

    def start_master(self, *sources: str, extra: tuple[str, ...] = ()) -> str:
        self._master_args = ["master", *sources, "--data-dir", str(self.root / "master"), *extra]
        self.master_url = self._start("master", self._master_args)
        return self.master_url

    def restart_master(self) -> str:
        """Start the master again as before, on the same port (workers find it again)."""
        port = self.master_url.rsplit(":", 1)[1]
        self.master_url = self._start("master", [*self._master_args, "--port", port])
        return self.master_url

    def start_worker(self, name: str, *tiers: str, node: str | None = None) -> str:
        tier_args = [a for t in tiers for a in ("--tier", t)] or [
            "--tier",
            f"MEM:{self.root / name / 'mem'}:256Mi",
        ]
        node_args = ["--node", node] if node else []
        return self._start(
            name,
            ["worker", "--master", self.master_url, "--id", name, *tier_args, *node_args],
        )

    def kill(self, name: str, sig: int = 9) -> None:
        self.procs.pop(name).stop(sig)

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            with contextlib.suppress(Exception):
                self.procs.pop(name).stop()


@contextlib.contextmanager
def cluster(root: Path) -> Iterator[Cluster]:
    c = Cluster(root)
    try:
        yield c
    finally:
        c.stop()
