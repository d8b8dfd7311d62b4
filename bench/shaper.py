"""A TCP proxy that makes a loopback server look remote: added latency and a bandwidth cap.

    python -m bench.shaper --upstream 127.0.0.1:8080 --bandwidth 200e6 --latency 0.005
    python -m bench.shaper --upstream 127.0.0.1:8080 --per-conn 50e6 --latency 0.02 --bandwidth 1e9

How it shapes (this is what the benchmark report calls "shaping"):

- latency: every chunk a client sends (so every request, and the connection set-up) reaches the
  upstream ``latency`` seconds later than it arrived; chunks keep their order and their spacing,
  so the delay is added once per request, not per byte (a one-way delay, like half of a WAN
  round trip plus a server's time to first byte);
- bandwidth: every byte the upstream sends back goes through one token bucket shared by all
  connections (bytes per second), as if the store sat behind one network link of that speed;
  bursts are at most ``BURST`` seconds' worth;
- per connection (``--per-conn``, bytes per second; 0: none): each connection also has a token
  bucket of its own, so one stream gets at most that rate however idle the link is. This is the
  object-store / hub CDN model: a single GET of S3 or of a hub's CDN runs at some tens of MB/s,
  parallel ranged GETs add up to the aggregate cap (``--bandwidth``), and every request waits
  ``--latency`` before its first byte.

It stands in for a store on another machine, so it must not take the CPU that the system under
test needs: the answers (nearly all the bytes) move from the upstream socket to the client's
through a pipe with ``splice(2)``, never copied into the process, in chunks of up to ``CHUNK``
(a thread per direction of each connection, blocking; the GIL is free while they wait). It runs
as its own process, prints ``ready: PORT`` and serves until SIGINT or SIGTERM. ``shaped()``
starts and stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from bench.config import Shaping

CHUNK = 256 * 1024
PIPE = 1024 * 1024  # the splice pipe's capacity (Linux's default pipe-max-size)
BURST = 0.004  # seconds of bandwidth that may go out at once


class Link:
    """A token bucket, thread-safe: ``reserve(n, now)`` books ``n`` bytes on it. With
    ``traced``, every booking's slot on the link is kept (:attr:`slots`)."""

    def __init__(self, bandwidth: float, traced: bool = False) -> None:
        self.bandwidth = bandwidth
        self._free_at = time.monotonic()
        self._lock = threading.Lock()
        self.slots: list[tuple[float, float]] | None = [] if traced else None

    def reserve(self, n: int, now: float) -> float:
        """Book ``n`` bytes on the link; the time at which they may go out."""
        if self.bandwidth <= 0:
            return now
        with self._lock:
            # The next slot on the link; a reservation in the past is idle time, not credit.
            start = max(self._free_at, now - BURST)
            self._free_at = start + n / self.bandwidth
            if self.slots is not None:
                self.slots.append((start, self._free_at))
            return self._free_at

    def send(self, n: int, *more: Link) -> None:
        """Return once ``n`` bytes may go out on this link and on every one of ``more``."""
        now = time.monotonic()
        wait = max(link.reserve(n, now) for link in (self, *more)) - now
        if wait > 0:
            time.sleep(wait)


def _requests(src: socket.socket, dst: socket.socket, latency: float) -> None:
    """Client to upstream: each chunk is delivered ``latency`` after it arrived."""
    chunks: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()

    def deliver() -> None:
        with contextlib.suppress(OSError):
            while data := (item := chunks.get())[1]:
                delay = item[0] - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=deliver, daemon=True)
    sender.start()
    try:
        while data := src.recv(CHUNK):
            chunks.put((time.monotonic() + latency, data))
    except OSError:
        pass
    chunks.put((0.0, b""))


def _responses(src: socket.socket, dst: socket.socket, link: Link, per_conn: float) -> None:
    """Upstream to client, paced by the shared link and by the connection's own cap, spliced."""
    own = Link(per_conn)
    r, w = os.pipe()
    try:
        with contextlib.suppress(OSError):
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE)
        while n := os.splice(src.fileno(), w, CHUNK):
            link.send(n, own)
            while n:
                n -= os.splice(r, dst.fileno(), n)
        dst.shutdown(socket.SHUT_WR)
    finally:
        os.close(r)
        os.close(w)


def _connection(
    client: socket.socket, upstream: tuple[str, int], link: Link, latency: float, per_conn: float
) -> None:
    """One proxied connection; over when the upstream has answered everything, or on an error."""
    with client:
        if latency > 0:
            time.sleep(latency)  # the connection set-up crosses the "network" too
        try:
            up = socket.create_connection(upstream)
        except OSError:
            return
        with up:
            threading.Thread(target=_requests, args=(client, up, latency), daemon=True).start()
            with contextlib.suppress(OSError):
                _responses(up, client, link, per_conn)
            for s in (client, up):  # wakes the request thread's recv
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def serve(
    upstream: tuple[str, int],
    bandwidth: float,
    latency: float,
    port: int,
    per_conn: float = 0.0,
    trace: Path | None = None,
) -> None:
    link = Link(bandwidth, traced=trace is not None)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    with socket.create_server(("127.0.0.1", port), backlog=1024) as server:
        server.settimeout(0.2)
        print(f"ready: {server.getsockname()[1]}", flush=True)
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            client.settimeout(None)
            args = (client, upstream, link, latency, per_conn)
            threading.Thread(target=_connection, args=args, daemon=True).start()
    if trace is not None and link.slots is not None:
        trace.write_text("".join(f"{a:.6f} {b:.6f}\n" for a, b in list(link.slots)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.shaper", description=__doc__)
    ap.add_argument("--upstream", required=True, help="HOST:PORT of the real server")
    ap.add_argument("--bandwidth", type=float, default=0.0, help="bytes/s, 0 for no limit")
    ap.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    ap.add_argument("--per-conn", type=float, default=0.0, help="bytes/s of each connection")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument(
        "--trace",
        type=Path,
        help="on exit, write the shared link's slots there: one line per booking, its start "
        "and end (time.monotonic(), the machine's clock): see link_use()",
    )
    args = ap.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    serve((host, int(port)), args.bandwidth, args.latency, args.port, args.per_conn, args.trace)
    return 0


@dataclass(frozen=True)
class LinkUse:
    """How a span of time used the shared link (from a ``--trace``)."""

    first: float  # s from the span's start to its first byte on the link
    idle: float  # s the link stood idle between the first and the last byte
    idle_early: float  # of which in the span's first EARLY seconds
    after: float  # s from the last byte on the link to the span's end


EARLY = 0.25


def link_use(trace: Path, start: float, end: float) -> LinkUse | None:
    """How the link was used from ``start`` to ``end`` (time.monotonic()), by the slots in
    ``trace``; None when no byte crossed it then."""
    slots = []
    for line in trace.read_text().splitlines():
        a, b = (float(x) for x in line.split())
        if a < end and b > start:
            slots.append((a, b))
    if not slots:
        return None
    slots.sort()
    gaps, busy_until = [], slots[0][0]
    for a, b in slots:
        if a > busy_until:
            gaps.append((busy_until, a))
        busy_until = max(busy_until, b)
    early = start + EARLY
    idle = sum(b - a for a, b in gaps)
    idle_early = sum(max(0.0, min(b, early) - max(a, start)) for a, b in gaps)
    first = max(0.0, slots[0][0] - start)
    return LinkUse(first, idle, idle_early, max(0.0, end - busy_until))


@contextlib.contextmanager
def shaped(
    url: str,
    bandwidth: float,
    latency: float,
    log: Path,
    per_conn: float = 0.0,
    trace: Path | None = None,
) -> Iterator[str]:
    """``url`` seen through a shaper (the same URL with the proxy's port); ``url`` if no limits.
    ``trace``: where the shaper writes its link's slots when it stops (``--trace``)."""
    from bench.procs import Proc

    if bandwidth <= 0 and latency <= 0 and per_conn <= 0:
        yield url
        return
    parts = urlsplit(url)
    upstream = f"{parts.hostname}:{parts.port}"
    argv = [sys.executable, "-m", "bench.shaper", "--upstream", upstream]
    argv += ["--bandwidth", str(bandwidth), "--latency", str(latency), "--per-conn", str(per_conn)]
    if trace is not None:
        argv += ["--trace", str(trace)]
    proc = Proc(argv, log=log)
    try:
        port = int(proc.wait_for("ready:", timeout=20).split()[-1])
        yield urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))
    finally:
        proc.stop()


def shaped_per_conn(
    url: str, shaping: Shaping, log: Path
) -> contextlib.AbstractContextManager[str]:
    """``url`` seen as ``shaping``'s per-connection source (the object-store / hub CDN model:
    each connection capped, every first byte late, an aggregate cap)."""
    return shaped(
        url, shaping.conn_aggregate, shaping.conn_latency, log, per_conn=shaping.conn_bandwidth
    )


if __name__ == "__main__":
    sys.exit(main())
