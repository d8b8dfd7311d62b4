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

It runs as its own process (so its pacing does not compete with the reader's event loop),
prints ``ready: PORT`` and serves until SIGINT or SIGTERM. ``shaped()`` starts and stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from bench.config import Shaping

CHUNK = 256 * 1024
BURST = 0.004  # seconds of bandwidth that may go out at once


class Link:
    """A shared token bucket: ``send(n)`` returns once ``n`` bytes may go out."""

    def __init__(self, bandwidth: float) -> None:
        self.bandwidth = bandwidth
        self._free_at = time.monotonic()

    def reserve(self, n: int, now: float) -> float:
        """Book ``n`` bytes on the link; the time at which they may go out."""
        if self.bandwidth <= 0:
            return now
        # Reserve the next slot on the link; a reservation in the past is idle time, not credit.
        self._free_at = max(self._free_at, now - BURST) + n / self.bandwidth
        return self._free_at

    async def send(self, n: int, *more: Link) -> None:
        """Return once ``n`` bytes may go out on this link and on every one of ``more``."""
        now = time.monotonic()
        wait = max(link.reserve(n, now) for link in (self, *more)) - now
        if wait > 0:
            await asyncio.sleep(wait)


async def _requests(src: asyncio.StreamReader, dst: asyncio.StreamWriter, latency: float) -> None:
    """Client to upstream: each chunk is delivered ``latency`` after it arrived."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            dst.write(data)
            await dst.drain()

    sender = asyncio.ensure_future(deliver())
    try:
        while data := await src.read(CHUNK):
            await queue.put((time.monotonic() + latency, data))
        await queue.put((0.0, b""))
        await sender
        if dst.can_write_eof():
            dst.write_eof()
    finally:
        sender.cancel()


async def _responses(
    src: asyncio.StreamReader, dst: asyncio.StreamWriter, link: Link, per_conn: float
) -> None:
    """Upstream to client, paced by the shared link and by the connection's own cap."""
    own = Link(per_conn)
    while data := await src.read(CHUNK):
        await link.send(len(data), own)
        dst.write(data)
        await dst.drain()
    if dst.can_write_eof():
        dst.write_eof()


async def serve(
    upstream: tuple[str, int], bandwidth: float, latency: float, port: int, per_conn: float = 0.0
) -> None:
    link = Link(bandwidth)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if latency > 0:
                await asyncio.sleep(latency)  # the connection set-up crosses the "network" too
            up_reader, up_writer = await asyncio.open_connection(*upstream, limit=4 * CHUNK)
        except OSError:
            writer.close()
            return
        tasks = [
            asyncio.ensure_future(_requests(reader, up_writer, latency)),
            asyncio.ensure_future(_responses(up_reader, writer, link, per_conn)),
        ]
        try:
            # A connection is over when the upstream has answered everything and closed, or
            # either side failed.
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            if tasks[1] not in done:
                await asyncio.wait([tasks[1]])
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, limit=4 * CHUNK, backlog=1024)
    print(f"ready: {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.shaper", description=__doc__)
    ap.add_argument("--upstream", required=True, help="HOST:PORT of the real server")
    ap.add_argument("--bandwidth", type=float, default=0.0, help="bytes/s, 0 for no limit")
    ap.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    ap.add_argument("--per-conn", type=float, default=0.0, help="bytes/s of each connection")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve((host, int(port)), args.bandwidth, args.latency, args.port, args.per_conn))
    return 0


@contextlib.contextmanager
def shaped(
    url: str, bandwidth: float, latency: float, log: Path, per_conn: float = 0.0
) -> Iterator[str]:
    """``url`` seen through a shaper (the same URL with the proxy's port); ``url`` if no limits."""
    from bench.procs import Proc

    if bandwidth <= 0 and latency <= 0 and per_conn <= 0:
        yield url
        return
    parts = urlsplit(url)
    upstream = f"{parts.hostname}:{parts.port}"
    argv = [sys.executable, "-m", "bench.shaper", "--upstream", upstream]
    argv += ["--bandwidth", str(bandwidth), "--latency", str(latency), "--per-conn", str(per_conn)]
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
