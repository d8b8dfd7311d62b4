"""Child processes for the benchmarks: started in their own group, always stopped, output logged."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import TextIO

PORT_FLOOR = 20_000  # servers' ports are chosen from here up to the kernel's ephemeral range
_handed_out: set[int] = set()


def free_port() -> int:
    """A port free on 127.0.0.1 now, for a server started moments later (the Kubernetes test
    environment's too): below the kernel's ephemeral range, and never the same twice in this
    process.

    A port the kernel picks (``bind`` to port 0) is an ephemeral one: until the server binds
    it, any outgoing connection may be given it (the Kubernetes suite's scheduler once lost its
    port that way to a connection of etcd's). No connection is given a port below that range.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32_768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(PORT_FLOOR, max(low, PORT_FLOOR + 1_000))
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port on 127.0.0.1 between {PORT_FLOOR} and {low}")


class Proc:
    """A child in its own process group; its output lines are kept (the first ``keep_lines``,
    every one if None) and copied to ``log`` when one is given. ``env`` is its whole environment
    (this process's by default)."""

    failure: type[Exception] = RuntimeError
    """What :meth:`wait_for` raises when the line does not come."""
    shown: int | None = 20
    """Output lines (the last ones; None: all) that such an error shows."""

    def __init__(
        self,
        argv: list[str],
        *,
        log: Path | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        keep_lines: int | None = 10_000,
    ) -> None:
        self.argv = argv
        self.lines: list[str] = []
        self._keep = keep_lines
        self._log: TextIO | None = None
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(log, "a", buffering=1)  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env if env is not None else dict(os.environ),
            cwd=cwd,
            start_new_session=True,
            text=True,
            errors="replace",
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            line = line.rstrip("\n")
            if self._keep is None or len(self.lines) < self._keep:
                self.lines.append(line)
            if self._log is not None:
                with contextlib.suppress(ValueError):  # closed by stop() meanwhile
                    self._log.write(line + "\n")

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def tail(self, n: int | None = 20) -> str:
        """The last ``n`` output lines kept (all of them if None)."""
        return "\n".join(self.lines if n is None else self.lines[-n:])

    def wait_for(self, prefix: str, timeout: float = 60.0) -> str:
        """The first output line starting with ``prefix``; :attr:`failure` if it does not come."""
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
                raise self.failure(
                    f"{' '.join(self.argv[:4])} exited {self.popen.returncode}:\n"
                    + self.tail(self.shown)
                )
            time.sleep(0.05)
        raise self.failure(
            f"{' '.join(self.argv[:4])}: no {prefix!r} in {timeout} s:\n{self.tail(self.shown)}"
        )

    def wait(self, timeout: float = 30.0) -> int:
        """Its exit code, once it has exited and its output is read."""
        code = self.popen.wait(timeout)
        self._reader.join(2)
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Signal the group, wait, then kill whatever of the group is left."""
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
        if self.popen.stdout is not None and not self._reader.is_alive():
            self.popen.stdout.close()
        if self._log is not None:
            self._log.close()


def is_mounted(mountpoint: Path) -> bool:
    with open("/proc/mounts") as f:
        return any(line.split()[1] == str(mountpoint) for line in f)


def unmount(mountpoint: Path) -> None:
    """Lazy-unmount ``mountpoint`` if anything (even a dead FUSE server) is mounted there."""
    if is_mounted(mountpoint):
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)
    if is_mounted(mountpoint):
        subprocess.run(["umount", "-l", str(mountpoint)], check=False, capture_output=True)


def wait_mounted(mountpoint: Path, proc: Proc, timeout: float = 30.0) -> None:
    """Until a file system is mounted at ``mountpoint``; RuntimeError if ``proc`` dies first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_mounted(mountpoint):
            return
        if not proc.alive():
            raise RuntimeError(f"{proc.argv[0]} exited {proc.popen.returncode}:\n{proc.tail()}")
        time.sleep(0.1)
    raise RuntimeError(f"{mountpoint}: not mounted within {timeout} s:\n{proc.tail()}")
