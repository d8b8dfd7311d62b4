"""Helpers for tests that run real processes: start, wait for a line, always stop and unmount."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path


class Proc:
    """A child process in its own process group whose output lines are collected."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None):
        self.argv = argv
        self.lines: list[str] = []
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, prefix: str, timeout: float = 60.0) -> str:
        """The first output line starting with ``prefix``; AssertionError if it never comes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if line.startswith(prefix):
                    return line
            if self.popen.poll() is not None:
                self._reader.join(2)
                for line in self.lines:
                    if line.startswith(prefix):
                        return line
                raise AssertionError(
                    f"{self.argv[:4]} exited {self.popen.returncode}:\n{self.output}"
                )
            time.sleep(0.05)
        raise AssertionError(f"no line {prefix!r} within {timeout} s:\n{self.output}")

    def wait(self, timeout: float = 30.0) -> int:
        code = self.popen.wait(timeout)
        self._reader.join(2)
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Signal the whole group, then kill it if it lingers."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)  # stragglers of the group
        self._reader.join(5)
        if not self._reader.is_alive() and self.popen.stdout is not None:
            self.popen.stdout.close()


def fluidcache(*args: str, env: dict[str, str] | None = None) -> Proc:
    return Proc([sys.executable, "-m", "fluidcache", *args], env=env)


def unmount(mountpoint: Path) -> None:
    """Lazy-unmount ``mountpoint`` if anything (even a dead FUSE server) is mounted there."""
    with open("/proc/mounts") as f:
        mounted = any(line.split()[1] == str(mountpoint) for line in f)
    if mounted:
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)
        subprocess.run(["umount", "-l", str(mountpoint)], check=False, capture_output=True)


def is_mounted(mountpoint: Path) -> bool:
    with open("/proc/mounts") as f:
        return any(line.split()[1] == str(mountpoint) for line in f)


@contextlib.contextmanager
def running(proc: Proc, mountpoint: Path | None = None) -> Iterator[Proc]:
    """Stop ``proc`` (and unmount) on the way out, whatever happened."""
    try:
        yield proc
    finally:
        proc.stop()
        if mountpoint is not None:
            unmount(mountpoint)


@contextlib.contextmanager
def mounted(master: str, mountpoint: Path, env: dict[str, str]) -> Iterator[Proc]:
    """``fluidcache mount default MOUNTPOINT`` (created here) until ready; stopped and unmounted
    on the way out, whatever happened."""
    mountpoint.mkdir()
    proc = fluidcache("mount", "default", str(mountpoint), "--master", master, env=env)
    with running(proc, mountpoint):
        proc.wait_for("ready:")
        yield proc
