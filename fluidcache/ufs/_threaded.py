"""Ranged GETs received straight into the caller's buffer by threads (``http.client``): the
socket's bytes land in the buffer with no Python per piece, the GIL released meanwhile. Into a
:class:`FileRegion` (a block's file in memory), a plain connection's bytes are spliced from the
socket into the file through a pipe: no copy through this process, no page zeroed before it is
written (receiving into a fresh mapping of the file cost twice the CPU).

The HTTP adapter reads blocks this way, and so do the S3 adapter (through presigned URLs) and
the Hub's (its CDN URLs). A small read (``loop_max``, 256 KiB) is received by aiohttp on the
event loop instead: for 128 KiB a thread's hand-off and ``http.client``'s header parsing cost
twice the CPU (340 against 170 us per GET, 16 at once from nginx on loopback); from 1 MiB up the
threads cost less. Anything but a plain answer for the range asked (redirects, errors, a cut
body) gives None: the adapter then takes its streaming path, with its retries and its errors.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import http.client
import logging
import os
import select
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from fluidcache.ufs.base import FileRegion, Into

log = logging.getLogger(__name__)

READ_THREADS = 32
"""An adapter's threads by default, and how many blocks a worker reads from a source at once
(:class:`fluidcache.worker.config.WorkerConfig`; fewer for an adapter given fewer threads, see
:attr:`fluidcache.ufs.UnderFileSystem.read_pool`)."""
LOOP_READ_MAX = 256 * 1024  # reads this size or smaller: on the event loop, no thread
DRAIN_MAX = 256 * 1024  # bytes left in an answer worth reading to keep its connection
PIPE_BYTES = 1 << 20  # each thread's pipe for splicing (Linux's default limit for a pipe)
SPLICE_MIN = 512 * 1024  # bytes queued on the socket before a receiving thread is woken
BOUNCE_BYTES = 256 * 1024  # a TLS or chunked answer into a file region: through this buffer
_MOVE = os.SPLICE_F_MOVE


@dataclass(frozen=True, slots=True)
class Answer:
    """What a ranged GET told: bytes received, the file's whole size, its validators."""

    got: int
    total: int
    etag: str | None
    last_modified: str | None


def content_range(value: str | None) -> tuple[int, int | None] | None:
    """``(start, total)`` of a ``Content-Range: bytes a-b/total`` header (total may be ``*``)."""
    if not value:
        return None
    unit, _, spec = value.strip().partition(" ")
    rng, _, total = spec.partition("/")
    start, _, _end = rng.partition("-")
    if unit.lower() != "bytes":
        return None
    try:
        return int(start), None if total.strip() == "*" else int(total)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class _Get:
    """One ranged GET to make: bytes from ``offset`` of ``url`` into ``buf``."""

    url: str
    offset: int
    buf: Into
    headers: dict[str, str]  # the Range among them
    check: Callable[[Answer], None] | None


class _Fallback(Exception):
    """The thread's read cannot be used for this request: the caller's streaming path can."""


class ThreadedReader:
    """A pool of ``threads`` threads, each with kept-alive connections per origin; reads of
    ``loop_max`` bytes or fewer go through an aiohttp session of as many connections."""

    def __init__(
        self,
        threads: int,
        timeout: float,
        tls: ssl.SSLContext | bool,
        loop_max: int = LOOP_READ_MAX,
    ) -> None:
        self.threads = threads
        self.timeout = timeout
        self.loop_max = loop_max
        self._tls = tls
        self._session: aiohttp.ClientSession | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._conns: list[http.client.HTTPConnection] = []
        self._pipes: list[int] = []
        self._warned_no_range = False

    async def get_into(
        self,
        url: str,
        offset: int,
        buf: Into,
        headers: Mapping[str, str],
        check: Callable[[Answer], None] | None = None,
    ) -> Answer | None:
        """Bytes ``[offset, offset + len(buf))`` of ``url`` (%-encoded) into ``buf``; None when
        the answer is not a plain 206 for that range (or a 200 with a length). ``check`` sees
        the answer's validators before its body is read, and may raise (a changed file)."""
        if not len(buf):
            return None
        ranged = {
            **headers,
            "Range": f"bytes={offset}-{offset + len(buf) - 1}",
            "Accept-Encoding": "identity",
            "User-Agent": "fluidcache",
        }
        get = _Get(url, offset, buf, ranged, check)
        if len(buf) <= self.loop_max:
            return await self._get_on_loop(get)
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                self.threads, thread_name_prefix="ranged-get"
            )
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, self._get_into, get)
        except _Fallback:
            return None

    async def _get_on_loop(self, get: _Get) -> Answer | None:
        """:meth:`get_into` by aiohttp on the event loop (the same answers taken, the same
        None for the others)."""
        url, offset, buf, check = get.url, get.offset, get.buf, get.check
        if url.startswith("https:") and self._tls is False:
            return None  # as the threads: no TLS without verification here
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.threads, ssl=self._tls),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.timeout, sock_read=self.timeout
                ),
                auto_decompress=False,
            )
        try:
            async with self._session.get(
                URL(url, encoded=True), headers=get.headers, allow_redirects=False
            ) as resp:
                cr = content_range(resp.headers.get("Content-Range"))
                if resp.status != 206 or cr is None or cr[0] != offset or cr[1] is None:
                    return None  # a server without Range, too: the streaming path skips
                etag, modified = resp.headers.get("ETag"), resp.headers.get("Last-Modified")
                total = cr[1]
                if check is not None:
                    check(Answer(0, total, etag, modified))
                want, got = max(0, min(len(buf), total - offset)), 0
                async for data in resp.content.iter_any():
                    n = min(len(data), want - got)
                    buf[got : got + n] = data[:n]
                    got += n
                    if got >= want:
                        break
                if got < want:
                    return None  # cut short: the streaming path retries from the start
                return Answer(got, total, etag, modified)
        except (aiohttp.ClientError, OSError, TimeoutError):
            return None

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        for conn in self._conns:
            conn.close()
        self._conns.clear()
        for fd in self._pipes:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._pipes.clear()

    def _connection(self, url: str) -> http.client.HTTPConnection:
        """This thread's kept-alive connection to ``url``'s origin."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        conns: dict[tuple[str, str], http.client.HTTPConnection] = getattr(self._local, "conns", {})
        self._local.conns = conns
        conn = conns.get(key)
        if conn is None:
            if parts.scheme == "https":
                if not isinstance(self._tls, ssl.SSLContext) and self._tls is not True:
                    raise _Fallback()
                ctx = self._tls if isinstance(self._tls, ssl.SSLContext) else None
                conn = http.client.HTTPSConnection(parts.netloc, timeout=self.timeout, context=ctx)
            else:
                conn = http.client.HTTPConnection(parts.netloc, timeout=self.timeout)
            conns[key] = conn
            self._conns.append(conn)  # closed by close(), whichever thread made it
        return conn

    def _get_into(self, get: _Get) -> Answer | None:
        url, offset, buf, check = get.url, get.offset, get.buf, get.check
        target = urlsplit(url)
        request_path = target.path + (f"?{target.query}" if target.query else "")
        for attempt in range(2):  # a kept-alive connection the server closed: once more
            conn = self._connection(url)
            try:
                conn.request("GET", request_path, headers=get.headers)
                resp = conn.getresponse()
                break
            except (OSError, http.client.HTTPException):
                conn.close()
                if attempt:
                    raise _Fallback() from None
        try:
            if resp.status == 206:
                cr = content_range(resp.getheader("Content-Range"))
                if cr is None or cr[0] != offset:
                    return None
                skip, total = 0, cr[1]
            elif resp.status == 200 and resp.length is not None:
                if not self._warned_no_range:
                    self._warned_no_range = True
                    log.warning("%s ignores Range; reads download from the file start", url)
                skip, total = offset, resp.length
            else:
                return None
            if total is None:
                return None
            answer = Answer(0, total, resp.getheader("ETag"), resp.getheader("Last-Modified"))
            if check is not None:
                check(answer)
            while skip > 0:
                dropped = len(resp.read(min(skip, 1 << 20)))
                if not dropped:
                    return None
                skip -= dropped
            want = max(0, min(len(buf), total - offset))
            if isinstance(buf, FileRegion):
                got = self._into_file(resp, conn, buf[:want])
            else:
                got = 0
                while got < want and (n := resp.readinto(buf[got:want])):
                    got += n
            if got < want:
                return None  # cut short: the streaming path retries from the start
            return Answer(got, total, answer.etag, answer.last_modified)
        except (OSError, http.client.HTTPException):
            conn.close()
            return None
        finally:
            if not resp.isclosed():
                if resp.length is not None and resp.length <= DRAIN_MAX:
                    try:
                        resp.read()  # drain what is left, so the connection can be reused
                    except (OSError, http.client.HTTPException):
                        conn.close()
                else:
                    conn.close()  # much left (a server without Range): not worth reading

    def _into_file(
        self, resp: http.client.HTTPResponse, conn: http.client.HTTPConnection, region: FileRegion
    ) -> int:
        """Receive the answer's body into ``region``: what ``http.client`` has buffered already
        written, the rest spliced from the socket through this thread's pipe (TLS or a chunked
        body: read through a buffer); how many bytes (fewer: the answer was cut short)."""
        sock = conn.sock
        plain = isinstance(sock, socket.socket) and not isinstance(sock, ssl.SSLSocket)
        if not plain or resp.chunked or resp.length is None or resp.fp is None:
            bounce = memoryview(bytearray(min(BOUNCE_BYTES, region.length)))
            got = 0
            while got < region.length and (n := resp.readinto(bounce[: region.length - got])):
                region[got : got + n] = bounce[:n]
                got += n
            return got
        head = resp.read(min(len(resp.fp.peek(1)), region.length))
        region[: len(head)] = head
        got = len(head)
        pipe = self._pipe()
        ready = select.poll()  # not select(): descriptors past 1023 are common here
        ready.register(sock, select.POLLIN)
        try:
            while got < region.length:
                n = self._splice(sock, pipe, region[got:], ready)
                if not n:
                    break  # the server closed the connection
                resp.length -= n
                got += n
        except BaseException:
            self._drop_pipe()  # it may hold bytes of this answer
            raise
        finally:
            with contextlib.suppress(OSError):  # the connection's next answer: as it comes
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
        return got

    def _splice(
        self, sock: socket.socket, pipe: tuple[int, int], region: FileRegion, ready: select.poll
    ) -> int:
        """Move what the socket has (up to a pipe's worth) into the start of ``region``; how
        many bytes (0: end of stream). The thread is woken once :data:`SPLICE_MIN` bytes (or
        the rest of the body) are queued, not for every segment: a source writing 64 KiB at a
        time cost 55 splices a 4 MiB block, each a hand-off of the GIL among the threads. Only
        a wait with no byte at all for the timeout is one."""
        want = min(PIPE_BYTES, region.length)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, min(SPLICE_MIN, want))
        timed_out = False
        while True:
            try:
                n = os.splice(sock.fileno(), pipe[1], want, flags=_MOVE | os.SPLICE_F_NONBLOCK)
                break
            except BlockingIOError:
                if timed_out:
                    raise TimeoutError(f"no bytes in {self.timeout} s") from None
                timed_out = not ready.poll(self.timeout * 1000)
        moved = 0
        while moved < n:
            moved += os.splice(pipe[0], region.fd, n - moved, offset_dst=region.offset + moved)
        return n

    def _pipe(self) -> tuple[int, int]:
        """This thread's pipe for splicing, as large as Linux lets it be."""
        pipe: tuple[int, int] | None = getattr(self._local, "pipe", None)
        if pipe is None:
            pipe = os.pipe2(os.O_CLOEXEC)
            with contextlib.suppress(OSError):
                fcntl.fcntl(pipe[1], fcntl.F_SETPIPE_SZ, PIPE_BYTES)
            self._local.pipe = pipe
            self._pipes.extend(pipe)
        return pipe

    def _drop_pipe(self) -> None:
        pipe: tuple[int, int] | None = getattr(self._local, "pipe", None)
        self._local.pipe = None
        for fd in pipe or ():
            with contextlib.suppress(OSError, ValueError):
                self._pipes.remove(fd)
                os.close(fd)
