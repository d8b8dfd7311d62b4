"""HTTP sources that misbehave: each failure becomes one specific error, fast, never a hang.

A small aiohttp server on 127.0.0.1:0 serves bad pages, 5xx-then-200, stalls, truncated bodies
and servers that ignore ``Range``.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from fluidcache.common import errors
from fluidcache.ufs.base import FileRegion
from fluidcache.ufs.http import HttpUfs
from tests.integration.ufs.conftest import free_port
from tests.pki import make_pki

BLOB = bytes(range(256)) * 40  # 10,240 bytes
BIG_INDEX = 30_000  # entries of /big/, an nginx page with exact sizes: about 2 MB
FAST = {"retries": "2", "backoff": "0.01", "backoff_max": "0.05", "timeout": "0.5"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def index(*names: str) -> str:
    links = "\n".join(f'<a href="{n}">{n}</a>' for n in names)
    return f'<html><body><a href="../">../</a>\n{links}\n<a href="?C=N;O=D">Name</a></body></html>'


def ranged(request: web.Request, body: bytes) -> web.Response:
    """``body`` answered the way a Range-aware server does."""
    headers = {"ETag": '"v1"', "Accept-Ranges": "bytes"}
    spec = request.headers.get("Range", "")
    if not spec.startswith("bytes="):
        return web.Response(body=body, headers=headers)
    first, _, last = spec[len("bytes=") :].partition("-")
    start, end = int(first), min(int(last or len(body) - 1), len(body) - 1)
    if start >= len(body):
        return web.Response(status=416, headers={"Content-Range": f"bytes */{len(body)}"})
    headers["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
    return web.Response(status=206, body=body[start : end + 1], headers=headers)


async def in_pieces(
    request: web.Request, size: int, gap: float = 0.0, chunked: bool = False
) -> web.StreamResponse:
    """``BLOB`` answered as :func:`ranged` does, its body written ``size`` bytes at a time,
    ``gap`` seconds apart; with ``chunked``, in chunked encoding (no length)."""
    full = ranged(request, BLOB)
    if request.method == "HEAD":
        return full
    resp = web.StreamResponse(status=full.status, headers=full.headers)
    assert isinstance(full.body, bytes)
    if chunked:
        resp.enable_chunked_encoding()
    else:
        resp.content_length = len(full.body)
    await resp.prepare(request)
    for i in range(0, len(full.body), size):
        await resp.write(full.body[i : i + size])
        await asyncio.sleep(gap)
    return resp


@dataclass
class Faults:
    """The test server: requests per path, and an event that releases stalled handlers."""

    url: str = ""
    hits: Counter[str] = field(default_factory=Counter)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    accept_auth: tuple[str, ...] = ("Basic dXNlcjpwIHc9cmQ=", "Bearer t0ken")  # user:p w=rd
    leaked: list[str] = field(default_factory=list)

    def ufs(self, path: str = "", **options: str) -> HttpUfs:
        return HttpUfs(f"{self.url}{path}", {**FAST, **options})


def make_app(faults: Faults) -> web.Application:
    routes = web.RouteTableDef()

    def counted(handler: Handler) -> Handler:
        async def wrapper(request: web.Request) -> web.StreamResponse:
            faults.hits[f"{request.method} {request.path}"] += 1
            return await handler(request)

        return wrapper

    def route(path: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            routes.route("*", path)(counted(handler))
            return handler

        return register

    @route("/files/")
    async def files_index(request: web.Request) -> web.StreamResponse:
        return web.Response(text=index("blob.bin"), content_type="text/html")

    @route("/files/blob.bin")
    async def files_blob(request: web.Request) -> web.StreamResponse:
        return ranged(request, BLOB)

    @route("/norange/blob.bin")
    async def norange(request: web.Request) -> web.StreamResponse:
        return web.Response(body=BLOB)  # Range ignored: always the whole body

    @route("/flaky/")
    async def flaky_index(request: web.Request) -> web.StreamResponse:
        if faults.hits[f"GET {request.path}"] <= 2:
            return web.Response(status=503)
        return web.Response(text=index("blob.bin"), content_type="text/html")

    @route("/flaky/blob.bin")
    async def flaky(request: web.Request) -> web.StreamResponse:
        if faults.hits[f"{request.method} {request.path}"] <= 2:
            return web.Response(status=502 if request.method == "HEAD" else 503)
        return ranged(request, BLOB)

    @route("/down/{tail:.*}")
    async def down(request: web.Request) -> web.StreamResponse:
        return web.Response(status=500)

    @route("/slow/{tail:.*}")
    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.wait_for(faults.release.wait(), 30)
        return ranged(request, BLOB)

    @route("/stall/blob.bin")
    async def stall(request: web.Request) -> web.StreamResponse:
        if request.method == "HEAD":
            return ranged(request, BLOB)
        resp = web.StreamResponse(status=200)
        resp.content_length = len(BLOB)
        await resp.prepare(request)
        await resp.write(BLOB[:1000])
        await asyncio.wait_for(faults.release.wait(), 30)
        return resp

    @route("/trickle/blob.bin")
    async def trickle(request: web.Request) -> web.StreamResponse:
        return await in_pieces(request, 2048, gap=0.1)  # slower than the reader waits for

    @route("/trunc/blob.bin")
    async def trunc(request: web.Request) -> web.StreamResponse:
        if request.method == "HEAD" or faults.hits[f"GET {request.path}"] > 1:
            return ranged(request, BLOB)
        full = ranged(request, BLOB)
        resp = web.StreamResponse(status=full.status, headers=full.headers)
        assert full.body is not None and isinstance(full.body, bytes)
        resp.content_length = len(full.body)
        await resp.prepare(request)
        await resp.write(full.body[: len(full.body) // 2])
        assert request.transport is not None
        request.transport.close()  # the connection drops mid-body, once
        return resp

    @route("/big/")
    async def big_index(request: web.Request) -> web.StreamResponse:
        rows = (
            f'<a href="f{i:06}.bin">f{i:06}.bin</a>  02-Dec-2026 20:32  {i}'
            for i in range(BIG_INDEX)
        )
        page = "<html><body><pre>\n" + "\n".join(rows) + "\n</pre></body></html>"
        return web.Response(text=page, content_type="text/html")

    @route("/droplist/")
    async def droplist(request: web.Request) -> web.StreamResponse:
        page = index(*(f"f{i}/" for i in range(20))).encode()
        if faults.hits[f"GET {request.path}"] > 1:
            return web.Response(body=page, content_type="text/html")
        resp = web.StreamResponse(headers={"Content-Type": "text/html"})
        resp.content_length = len(page)
        await resp.prepare(request)
        await resp.write(page[: len(page) // 2])
        assert request.transport is not None
        request.transport.close()
        return resp

    @route("/badrange/blob.bin")
    async def badrange(request: web.Request) -> web.StreamResponse:
        headers = {"Content-Range": f"bytes 0-9/{len(BLOB)}"}
        return web.Response(status=206, body=BLOB[:10], headers=headers)

    @route("/forbidden/{tail:.*}")
    async def forbidden(request: web.Request) -> web.StreamResponse:
        return web.Response(status=403)

    @route("/auth/{tail:.*}")
    async def auth(request: web.Request) -> web.StreamResponse:
        return web.Response(status=401, headers={"WWW-Authenticate": "Basic"})

    @route("/teapot/{tail:.*}")
    async def teapot(request: web.Request) -> web.StreamResponse:
        return web.Response(status=418)

    @route("/redirect/blob.bin")
    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/files/blob.bin")

    @route("/loop/blob.bin")
    async def loop(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/loop/blob.bin")

    @route("/json/")
    async def json_page(request: web.Request) -> web.StreamResponse:
        return web.json_response({"files": ["a", "b"]})

    @route("/badutf8/")
    async def bad_utf8(request: web.Request) -> web.StreamResponse:
        body = b'<html><a href="ok.txt">ok</a>\xff\xfe\xfa<a href="x">x</a></html>'
        return web.Response(body=body, headers={"Content-Type": "text/html; charset=utf-8"})

    @route("/huge/")
    async def huge(request: web.Request) -> web.StreamResponse:
        return web.Response(
            text=index(*(f"file-{i}" for i in range(500))), content_type="text/html"
        )

    @route("/gone/")
    async def gone_index(request: web.Request) -> web.StreamResponse:
        return web.Response(text=index("present.txt", "missing.txt"), content_type="text/html")

    @route("/gone/present.txt")
    async def present(request: web.Request) -> web.StreamResponse:
        return ranged(request, b"here")

    @route("/nohead/blob.bin")
    async def nohead(request: web.Request) -> web.StreamResponse:
        if request.method == "HEAD":
            return web.Response(status=405)
        return ranged(request, BLOB)

    @route("/nolength/blob.bin")
    async def nolength(request: web.Request) -> web.StreamResponse:
        if request.method == "HEAD":
            resp = web.StreamResponse(headers={"Last-Modified": "Wed, 21 Oct 2015 07:28:00 GMT"})
            resp.enable_chunked_encoding()
            return resp
        return ranged(request, BLOB)

    @route("/chunked/blob.bin")
    async def chunked(request: web.Request) -> web.StreamResponse:
        return await in_pieces(request, 3000, chunked=True)  # no length: never spliced

    @route("/private/{name}")
    async def private(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") not in faults.accept_auth:
            return web.Response(status=401, headers={"WWW-Authenticate": "Basic"})
        if request.match_info["name"] == "away.bin":  # a redirect to another origin
            raise web.HTTPFound(f"http://localhost:{request.url.port}/leak/blob.bin")
        return ranged(request, BLOB)

    @route("/leak/blob.bin")
    async def leak(request: web.Request) -> web.StreamResponse:
        faults.leaked.append(request.headers.get("Authorization", ""))
        return ranged(request, BLOB)

    app = web.Application()
    app.add_routes(routes)
    return app


@pytest.fixture
async def faults() -> AsyncIterator[Faults]:
    async with serving() as state:
        yield state


@pytest.fixture
async def tls_faults(tmp_path: Path) -> AsyncIterator[tuple[Faults, Path]]:
    """The same server on HTTPS (a throwaway CA's certificate), and the CA's file."""
    pki = make_pki(tmp_path / "pki")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki["chain"], pki["key"])
    async with serving(ctx) as state:
        yield state, pki["ca"]


@contextmanager
def descriptors_taken(n: int) -> Iterator[None]:
    """``n`` more descriptors open meanwhile, so the next one opened is numbered past them."""
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(n)]
    try:
        yield
    finally:
        for fd in fds:
            os.close(fd)


@asynccontextmanager
async def serving(tls: ssl.SSLContext | None = None) -> AsyncIterator[Faults]:
    state = Faults()
    runner = web.AppRunner(make_app(state), shutdown_timeout=1)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
        await site.start()
        port = runner.addresses[0][1]
        state.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/"
        yield state
    finally:
        state.release.set()
        await runner.cleanup()


async def entries(ufs: HttpUfs, path: str = "") -> list[str]:
    async with aclosing(ufs.list(path)) as it:
        return [e.name async for e in it]


async def test_server_ignoring_range_is_sliced(faults: Faults) -> None:
    async with faults.ufs("norange/") as ufs:
        assert await ufs.read("blob.bin", 1000, 50) == BLOB[1000:1050]
        assert await ufs.read("blob.bin", len(BLOB) - 5, 50) == BLOB[-5:]
        assert await ufs.read("blob.bin", len(BLOB) + 5, 50) == b""
        async with aclosing(ufs.read_stream("blob.bin", 3000, 5000, 1024)) as chunks:
            got = [c async for c in chunks]
        assert b"".join(got) == BLOB[3000:8000] and max(map(len, got)) <= 1024


async def test_5xx_then_200_is_retried(faults: Faults) -> None:
    async with faults.ufs("flaky/") as ufs:
        assert await entries(ufs) == ["blob.bin"]
        assert faults.hits["GET /flaky/"] == 3
        assert faults.hits["HEAD /flaky/blob.bin"] == 3
        assert await ufs.read("blob.bin", 10, 20) == BLOB[10:30]


async def test_persistent_5xx_gives_up_after_bounded_attempts(faults: Faults) -> None:
    async with faults.ufs("down/") as ufs:
        t0 = time.monotonic()
        with pytest.raises(errors.SourceUnavailable, match=r"HTTP 500.*3 attempts"):
            await ufs.stat("blob.bin")
        with pytest.raises(errors.SourceUnavailable):
            await ufs.read("blob.bin", 0, 10)
        with pytest.raises(errors.SourceUnavailable):
            await entries(ufs)
        assert time.monotonic() - t0 < 3
    assert faults.hits["HEAD /down/blob.bin"] == 3
    assert faults.hits["GET /down/blob.bin"] == 3
    assert faults.hits["GET /down/"] == 3


async def test_slow_answer_times_out(faults: Faults) -> None:
    async with faults.ufs("slow/", timeout="0.2", retries="1") as ufs:
        t0 = time.monotonic()
        with pytest.raises(errors.SourceUnavailable, match="timed out"):
            await ufs.stat("blob.bin")
        with pytest.raises(errors.SourceUnavailable, match="timed out"):
            await ufs.read("blob.bin", 0, 10)
        with pytest.raises(errors.SourceUnavailable, match="timed out"):
            await entries(ufs)
        assert time.monotonic() - t0 < 3


async def test_body_that_stalls_times_out(faults: Faults) -> None:
    async with faults.ufs("stall/", timeout="0.2", retries="1") as ufs:
        assert (await ufs.stat("blob.bin")).size == len(BLOB)
        with pytest.raises(errors.SourceUnavailable, match="timed out"):
            await ufs.read("blob.bin", 0, len(BLOB))


async def test_truncated_body_resumes(faults: Faults) -> None:
    async with faults.ufs("trunc/") as ufs:
        assert await ufs.read("blob.bin", 100, 8000) == BLOB[100:8100]
    assert faults.hits["GET /trunc/blob.bin"] == 2


@pytest.mark.parametrize("where", ["files/", "norange/", "trunc/", "chunked/", "stall/"])
async def test_a_file_region_gets_what_memory_would_or_the_same_error(
    faults: Faults, block_fd: int, where: str
) -> None:
    """Into a block's file: a plain answer, a server without Range, a body cut short (read
    again), a chunked one (read through a buffer) or a stalled one (an error; the next read,
    by the same one thread, is whole: nothing of the stalled answer is left in its pipe)."""
    os.ftruncate(block_fd, len(BLOB))
    region = FileRegion(block_fd, 0, len(BLOB))
    opts = {"timeout": "0.3", "retries": "1", "read_threads": "1", "loop_read_max": "0"}
    async with faults.ufs("", **opts) as ufs:  # every read by the one thread
        if where == "stall/":
            # Its connection's descriptor past 1023 (where select() fails): the wait is polled.
            with (
                descriptors_taken(1100),
                pytest.raises(errors.SourceUnavailable, match="timed out"),
            ):
                await ufs.read_into("stall/blob.bin", 0, region)
            faults.release.set()
            where = "files/"
        assert await ufs.read_into(f"{where}blob.bin", 100, region[:8000]) == 8000
        assert os.pread(block_fd, 8000, 0) == BLOB[100:8100]
    assert faults.hits[f"GET /{where}blob.bin"] == (2 if where == "trunc/" else 1)


async def test_a_file_region_takes_a_body_that_trickles_and_the_next_answer_at_once(
    faults: Faults, block_fd: int
) -> None:
    """A thread splicing into a block's file is woken once much of the body is queued, not for
    every piece; a body coming in pieces slower than that is still taken, the wait's timeout
    counting only time with no byte at all, and the next answer on the kept-alive connection
    (a small one) comes at once: each read went through the thread, none again by the
    streaming path."""
    os.ftruncate(block_fd, len(BLOB))
    region = FileRegion(block_fd, 0, len(BLOB))
    opts = {"timeout": "0.3", "retries": "1", "read_threads": "1", "loop_read_max": "0"}
    async with faults.ufs("", **opts) as ufs:
        assert await ufs.read_into("trickle/blob.bin", 0, region) == len(BLOB)
        assert os.pread(block_fd, len(BLOB), 0) == BLOB
        assert await ufs.read_into("files/blob.bin", 5, region[:100]) == 100
        assert os.pread(block_fd, 100, 0) == BLOB[5:105]
    assert faults.hits["GET /trickle/blob.bin"] == 1 and faults.hits["GET /files/blob.bin"] == 1


async def test_a_file_region_over_tls_gets_the_bytes(
    tls_faults: tuple[Faults, Path], block_fd: int
) -> None:
    """TLS bytes cannot be spliced: they go into the block's file through a buffer."""
    faults, ca = tls_faults
    os.ftruncate(block_fd, len(BLOB))
    region = FileRegion(block_fd, 0, len(BLOB))
    async with faults.ufs("files/", ca_file=str(ca), loop_read_max="0") as ufs:
        assert await ufs.read_into("blob.bin", 10, region) == len(BLOB) - 10
        assert os.pread(block_fd, len(BLOB), 0) == BLOB[10:] + bytes(10)
    assert faults.hits["GET /files/blob.bin"] == 1


async def test_listing_dropped_midway_yields_each_entry_once(faults: Faults) -> None:
    async with faults.ufs("droplist/") as ufs:
        assert await entries(ufs) == [f"f{i}" for i in range(20)]
    assert faults.hits["GET /droplist/"] == 2


async def test_a_big_index_page_is_parsed_in_pieces_that_let_other_tasks_run(
    faults: Faults,
) -> None:
    """A page of 100,000 entries takes seconds to parse: in one piece, every other request of
    the master (opens, block locations) would wait that long."""
    turns = 0

    async def other_task() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(other_task())
    try:
        async with faults.ufs("big/") as ufs, aclosing(ufs.list("")) as listed:
            got = [(e.name, e.size) async for e in listed]
    finally:
        other.cancel()
    assert got == [(f"f{i:06}.bin", i) for i in range(BIG_INDEX)]
    page_bytes = BIG_INDEX * 50
    assert turns >= page_bytes // (32 * 1024), turns  # a turn at least every 32 KiB parsed


async def test_refused_connection(faults: Faults) -> None:
    async with HttpUfs(f"http://127.0.0.1:{free_port()}/", FAST) as ufs:
        with pytest.raises(errors.SourceUnavailable, match="3 attempts"):
            await ufs.stat("x")


@pytest.mark.parametrize("where", ["forbidden/", "auth/"])
async def test_access_refused(faults: Faults, where: str) -> None:
    async with faults.ufs(where) as ufs:
        with pytest.raises(errors.PermissionDenied):
            await ufs.stat("blob.bin")
        with pytest.raises(errors.PermissionDenied):
            await ufs.read("blob.bin", 0, 1)
        with pytest.raises(errors.PermissionDenied):
            await entries(ufs)
    assert faults.hits[f"HEAD /{where}blob.bin"] == 1  # not retried


async def test_other_4xx_is_a_source_error(faults: Faults) -> None:
    async with faults.ufs("teapot/") as ufs:
        with pytest.raises(errors.SourceError, match="418"):
            await ufs.stat("x")


async def test_redirects(faults: Faults) -> None:
    async with faults.ufs("redirect/") as ufs:
        s = await ufs.stat("blob.bin")
        assert (s.size, s.version) == (len(BLOB), '"v1"')
        assert await ufs.read("blob.bin", 5, 5) == BLOB[5:10]
    async with faults.ufs("loop/") as ufs:
        with pytest.raises(errors.SourceError, match="redirects"):
            await ufs.stat("blob.bin")


async def test_wrong_content_range_is_refused(faults: Faults) -> None:
    async with faults.ufs("badrange/") as ufs:
        assert await ufs.read("blob.bin", 0, 10) == BLOB[:10]
        with pytest.raises(errors.SourceError, match="Content-Range"):
            await ufs.read("blob.bin", 100, 10)


@pytest.mark.parametrize(
    ("where", "options", "match"),
    [
        ("json/", {}, "not an HTML directory index"),
        ("badutf8/", {}, "malformed index page"),
        ("huge/", {"max_listing_bytes": "1Ki"}, "larger than 1024 bytes"),
    ],
)
async def test_malformed_listings(
    faults: Faults, where: str, options: dict[str, str], match: str
) -> None:
    async with faults.ufs(where, **options) as ufs:
        with pytest.raises(errors.SourceError, match=match):
            await entries(ufs)


async def test_listed_entry_that_is_gone(faults: Faults) -> None:
    async with faults.ufs("gone/") as ufs:
        with pytest.raises(errors.NotFound, match=r"missing\.txt"):
            await entries(ufs)
    async with faults.ufs("gone/", skip_missing_entries="true") as ufs:
        assert await entries(ufs) == ["present.txt"]


async def test_missing_directory(faults: Faults) -> None:
    async with faults.ufs("files/") as ufs:
        with pytest.raises(errors.NotFound):
            await entries(ufs, "nodir")


@pytest.mark.parametrize("where", ["nohead/", "nolength/"])
async def test_size_without_head(faults: Faults, where: str) -> None:
    async with faults.ufs(where) as ufs:
        s = await ufs.stat("blob.bin")
        assert s.size == len(BLOB) and not s.is_dir and s.version


async def test_closed_adapter_refuses_work(faults: Faults) -> None:
    ufs = faults.ufs("files/")
    assert (await ufs.stat("blob.bin")).size == len(BLOB)
    await ufs.close()
    with pytest.raises(errors.FluidcacheError, match="closed"):
        await ufs.stat("blob.bin")


@pytest.mark.parametrize("lines", ["username=user\npassword=p w=rd\n", "# bearer\ntoken = t0ken\n"])
async def test_credentials_file(faults: Faults, tmp_path: Path, lines: str) -> None:
    creds = tmp_path / "creds"
    creds.write_text(lines)
    async with faults.ufs("private/") as anonymous:
        with pytest.raises(errors.PermissionDenied):
            await anonymous.stat("blob.bin")
    async with faults.ufs("private/", credentials_file=str(creds)) as ufs:
        assert (await ufs.stat("blob.bin")).size == len(BLOB)
        assert await ufs.read("blob.bin", 7, 3) == BLOB[7:10]
        assert await ufs.read("away.bin", 0, 4) == BLOB[:4]
        assert "p w=rd" not in repr(ufs) and "t0ken" not in repr(ufs)
    assert faults.leaked == [""]  # the redirect to another origin went without credentials
