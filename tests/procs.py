"""Helpers for tests that run real processes: start, wait for a line, always stop and unmount."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import bench.procs
from bench.procs import is_mounted, unmount

__all__ = ["Proc", "fluidcache", "is_mounted", "mounted", "running", "unmount"]


class Proc(bench.procs.Proc):
    """A child process in its own process group whose output lines are all kept; ``env`` is
    added to this process's environment. A line that never comes fails the test."""

    failure = AssertionError
    shown = None

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None):
        super().__init__(argv, env={**os.environ, **(env or {})}, cwd=cwd, keep_lines=None)


def fluidcache(*args: str, env: dict[str, str] | None = None) -> Proc:
    return Proc([sys.executable, "-m", "fluidcache", *args], env=env)


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
