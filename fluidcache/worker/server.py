"""The worker's HTTP server: block reads (sendfile from the tier), cache requests, stats, metrics.

Handlers are thin: each decodes its request and calls :class:`WorkerService`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from fluidcache.common import errors
from fluidcache.common.aio import retrieved
from fluidcache.common.http import (
    RpcClient,
    client_session,
    health,
    make_middlewares,
    read_message,
    reply,
    run_app,
)
from fluidcache.common.protocol import (
    AHEAD_PARAM,
    BLOCK,
    BLOCK_CACHE,
    BLOCKS_CACHE,
    BLOCKS_FREE,
    BLOCKS_LOCAL,
    BLOCKS_TOUCH,
    FILE_OPEN,
    HEALTH,
    METRICS,
    PEER_HEADER,
    READER_HEADER,
    WORKER_STATS,
    BlockRef,
    BlocksFreeReply,
    BlocksFreeRequest,
    CacheBlocksRequest,
    LocalBlocksReply,
    LocalBlocksRequest,
    OpenFilesReply,
    OpenFilesRequest,
    OpenReply,
    OpenRequest,
    TouchReply,
    TouchRequest,
    WorkerInfo,
    WorkerStats,
)
from fluidcache.worker.config import WorkerConfig
from fluidcache.worker.fetch import Fetcher, Inflight
from fluidcache.worker.metrics import Metrics
from fluidcache.worker.reporter import Reporter
from fluidcache.worker.sources import SourceMap
from fluidcache.worker.store import Block, BlockStore

log = logging.getLogger(__name__)
T = TypeVar("T")
OPEN_ANSWER_WAIT = 3.0  # seconds a call opening files waits for the slowest of them

REGISTER_TIMEOUT = 30.0
OCTETS = "application/octet-stream"


class WorkerService:
    """A worker's parts, wired together: store, sources, fetcher, reporter, metrics."""

    def __init__(self, config: WorkerConfig, session: aiohttp.ClientSession) -> None:
        self.config = config
        self.address = ""
        self.store = BlockStore(config.levels)
        self.store.open()
        self.sources = SourceMap()
        self.metrics = Metrics(self.store)
        self.master = RpcClient(config.master_url, config.token, session)
        self.reporter = Reporter(self.store, self.master, self.sources, self.info)
        self.fetcher = Fetcher(
            self.store,
            self.sources,
            self.metrics,
            self.master,
            session,
            config.token,
            config.worker_id,
            self.reporter.register,
            config.fetch_concurrency,
        )
        self._tasks: set[asyncio.Task[Any]] = set()

    def info(self) -> WorkerInfo:
        return WorkerInfo(
            worker_id=self.config.worker_id,
            address=self.address,
            node=self.config.node,
            tiers=self.store.usage(),
            reads=self.metrics.reads(),
        )

    async def start(self, address: str) -> None:
        """Register with the master (bounded retries) and start heartbeats."""
        self.address = self.config.advertise or address
        if self.config.mem_prealloc:
            made = await self.store.prefill(self.config.mem_prealloc)
            log.info("%d MiB of memory allocated ahead of need", made >> 20)
        await self.reporter.register_with_retry(REGISTER_TIMEOUT)
        self.spawn(self.reporter.run())

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``coro`` as a task of this worker (cancelled at close, not with a request)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.fetcher.close()
        await self.sources.close()
        self.store.drop_spares()

    def count_read(self, request: web.Request, size: int, origin: str = "") -> None:
        """Count bytes sent to a reader: ``origin`` peer/source for a fetch, "" from the store
        (local when the reader says it is on this node). Peers' fetches are not reads."""
        if PEER_HEADER in request.headers:
            return
        if origin == "source":
            self.metrics.read("source", size)
        elif origin == "" and request.headers.get(READER_HEADER) == self.config.node:
            self.metrics.read("local", size)
        else:
            self.metrics.read("remote", size)

    def touch(self, request: TouchRequest) -> TouchReply:
        """Short-circuit reads of this worker's block files: local hits, and LRU recency.

        The counts are the client's word, so each is bounded by what it could have read: the
        block's size, or a removed block's (an fd outlives eviction); other blocks count nothing.
        """
        held = 0
        for block_id, size in request.reads.items():
            block = self.store.touch(block_id)
            if block is not None:
                held += 1
                self.metrics.hit(self.store.levels[block.level].config.medium)
                self.after_read(block)
                bound = block.size
            else:
                bound = self.store.gone_size(block_id)
            self.metrics.read("local", min(size, bound))
        return TouchReply(held)

    def after_read(self, block: Block) -> None:
        if self.store.wants_promotion(block):
            self.spawn(self.store.promote(block))

    def stats(self) -> WorkerStats:
        m = self.metrics
        return WorkerStats(
            worker_id=self.config.worker_id,
            tiers=self.store.usage(),
            hits=int(
                sum(
                    m.value("fluidcache_block_hits_total", tier=lv.config.medium)
                    for lv in self.store.levels
                )
            ),
            misses=int(
                m.value("fluidcache_block_misses_total", origin="source")
                + m.value("fluidcache_block_misses_total", origin="peer")
            ),
            source_fetches=int(m.value("fluidcache_block_misses_total", origin="source")),
            source_bytes=int(m.value("fluidcache_fetched_bytes_total", origin="source")),
            served_bytes=int(m.value("fluidcache_served_bytes_total")),
        )


SERVICE = web.AppKey("service", WorkerService)


def _block_ref(request: web.Request) -> BlockRef:
    block_id = request.match_info["block_id"]
    ref = BlockRef.from_query(request.query)
    if ref.id != block_id:
        raise errors.InvalidArgument(f"block {block_id}: does not match its reference")
    return ref


def _peers_hint(request: web.Request) -> bool:
    """False when the reader says no worker held the block a moment ago (``?peers=0``)."""
    return request.query.get("peers") != "0"


def _urgent(request: web.Request) -> bool:
    """False for a read-ahead (``?ahead=1``): its source read waits behind readers'."""
    return request.query.get(AHEAD_PARAM) != "1"


async def get_block(request: web.Request) -> web.StreamResponse:
    """The bytes of a block (Range supported): sendfile from its tier, else pass-through."""
    svc = request.app[SERVICE]
    ref = _block_ref(request)
    if PEER_HEADER in request.headers:
        svc.metrics.peer_served.inc()
    for _ in range(3):
        got = await svc.fetcher.get(ref, _peers_hint(request), urgent=_urgent(request))
        if isinstance(got, Inflight):
            svc.metrics.served_bytes.inc(ref.length)
            resp = await _stream_response(request, got)
            svc.count_read(request, _sent(resp, ref.length), got.origin)
            return resp
        try:
            fd = os.open(got.path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # moved or evicted between lookup and open: look again
        try:
            # An open fd survives eviction: serve through it, not through the name.
            resp = web.FileResponse(f"/proc/self/fd/{fd}", headers={"Content-Type": OCTETS})
            await resp.prepare(request)
        finally:
            os.close(fd)
        svc.metrics.served_bytes.inc(got.size)
        svc.count_read(request, _sent(resp, got.size))
        svc.after_read(got)
        return resp
    raise errors.Unavailable(f"block {ref.id}: kept moving while being read")


def _sent(resp: web.StreamResponse, size: int) -> int:
    """Bytes of a block answer's body: its range's length, else the whole block."""
    return resp.content_length if resp.content_length is not None else size


async def _stream_response(request: web.Request, flight: Inflight) -> web.StreamResponse:
    """Follow a fetch under way: bytes go out as they arrive from the peer or source."""
    if request.http_range.start is not None or request.http_range.stop is not None:
        return _bytes_response(request, await flight.data())
    chunks = flight.chunks()
    first = await anext(chunks, b"")  # an early failure still gets a proper error answer
    resp = web.StreamResponse(headers={"Content-Type": OCTETS})
    resp.content_length = flight.ref.length
    await resp.prepare(request)
    await resp.write(first)
    async for chunk in chunks:
        await resp.write(chunk)
    await resp.write_eof()
    return resp


def _bytes_response(request: web.Request, data: bytes) -> web.Response:
    rng = request.http_range
    if rng.start is None and rng.stop is None:
        return web.Response(body=data, content_type=OCTETS)
    part = data[rng]
    start = rng.indices(len(data))[0]
    return web.Response(
        status=206,
        body=part,
        content_type=OCTETS,
        headers={"Content-Range": f"bytes {start}-{start + len(part) - 1}/{len(data)}"},
    )


async def cache_block(request: web.Request) -> web.Response:
    """Fetch a block into this worker's store (loads, peers, same-node clients).

    ``?peer=WORKER_ID`` names a worker to copy it from first (a load's fan-out); ``?pin=1`` keeps it
    from eviction until freed. The answer says where the block file is, when it was kept, for a
    short-circuit read; an empty answer means it could not be kept (no room).
    """
    svc = request.app[SERVICE]
    ref = _block_ref(request)
    origin = await svc.fetcher.ensure(
        ref, _peers_hint(request), request.query.get("peer", ""), _urgent(request)
    )
    block, fetched = await _ensured(request, ref.id, ref.length, origin)
    if block is not None and request.query.get("pin") == "1":
        block.kept = True
    paths = {ref.id: str(block.path)} if block is not None else {}
    stamps = {ref.id: list(block.stamp)} if block is not None else {}
    return reply(LocalBlocksReply(paths, [ref.id] if fetched else [], stamps))


async def cache_blocks(request: web.Request) -> web.Response:
    """Blocks fetched into this worker's store, several in one call (a same-node client's
    cold reads of small files, or its opens of them ahead of its readers): the answer names the
    files of those kept and the error of each that failed. It waits at most
    :data:`OPEN_ANSWER_WAIT` for the slowest; one still arriving then answers Unavailable and is
    kept when it arrives."""
    ask = await read_message(request, CacheBlocksRequest)
    svc = request.app[SERVICE]

    async def one(ref: BlockRef) -> tuple[Block | None, bool]:
        origin = await svc.fetcher.ensure(ref, peers=False, urgent=not ask.ahead)
        return await _ensured(request, ref.id, ref.length, origin)

    tasks = [svc.spawn(one(ref)) for ref in ask.blocks]
    await asyncio.wait(tasks, timeout=OPEN_ANSWER_WAIT)
    answer = LocalBlocksReply({})
    for ref, task in zip(ask.blocks, tasks, strict=True):
        got = _outcome(task, "caching")
        if isinstance(got, errors.FluidcacheError):
            answer.errors[ref.id] = [got.code, got.message]
            continue
        block, fetched = got
        if block is not None:
            answer.paths[ref.id] = str(block.path)
            answer.stamps[ref.id] = list(block.stamp)
        if fetched:
            answer.fetched.append(ref.id)
    return reply(answer)


async def open_files(request: web.Request) -> web.Response:
    """Files listed without their versions, opened: each one's status and first block from
    one source request, the block kept here (its path in the answer, for a same-node reader).
    A file that cannot be opened has its error in its own answer; the others are opened. The
    answer waits at most :data:`OPEN_ANSWER_WAIT` for the slowest: one still opening then
    answers Unavailable (its reader asks the master instead) and is kept when it arrives."""
    ask = await read_message(request, OpenFilesRequest)
    svc = request.app[SERVICE]
    tasks = [svc.spawn(_open_file(request, f)) for f in ask.files]
    await asyncio.wait(tasks, timeout=OPEN_ANSWER_WAIT)
    return reply(OpenFilesReply([_opened(t) for t in tasks]))


async def _open_file(request: web.Request, ask: OpenRequest) -> OpenReply:
    fetcher = request.app[SERVICE].fetcher
    status, origin = await fetcher.open(ask.uri, ask.block_size, ask.size_hint, not ask.ahead)
    ref = BlockRef(ask.uri, status.version, 0, ask.block_size, status.size)
    block, fetched = await _ensured(request, ref.id, ref.length, origin)
    path = str(block.path) if block is not None else ""
    stamp = list(block.stamp) if block is not None else []
    return OpenReply(status.size, status.mtime, status.version, path, fetched, stamp)


def _opened(task: asyncio.Task[OpenReply]) -> OpenReply:
    got = _outcome(task, "opening")
    if isinstance(got, errors.FluidcacheError):
        return OpenReply(0, 0.0, "", error=[got.code, got.message])
    return got


def _outcome(task: asyncio.Task[T], doing: str) -> T | errors.FluidcacheError:
    """The result of one task of a batched call, else the error its item answers with:
    Unavailable while it still runs (it goes on; what it keeps is kept), an unexpected
    exception as an internal error (logged)."""
    if not task.done():
        task.add_done_callback(retrieved)  # told: Unavailable
        return errors.Unavailable(f"still {doing} after {OPEN_ANSWER_WAIT:.0f} s")
    e = task.exception() if not task.cancelled() else errors.Unavailable("worker stopping")
    if e is None:
        return task.result()
    if not isinstance(e, errors.FluidcacheError):
        log.error("%s failed", doing, exc_info=e)
        e = errors.SourceError(f"internal error: {e}")
    return e


async def _ensured(
    request: web.Request, block_id: str, length: int, origin: str
) -> tuple[Block | None, bool]:
    """The block just ensured (None if it could not be kept), and whether it was fetched for
    a reader on this node: the bytes it now reads count as that fetch, counted here."""
    svc = request.app[SERVICE]
    fetched = bool(origin) and READER_HEADER in request.headers
    if fetched:
        svc.count_read(request, length, origin)
    return await svc.fetcher.lookup(block_id), fetched


async def free_blocks(request: web.Request) -> web.Response:
    """Remove blocks from this worker, kept (pinned) ones too: ``fluidcache free``."""
    svc = request.app[SERVICE]
    ask = await read_message(request, BlocksFreeRequest)
    removed = [b for b in [await svc.store.remove(i) for i in ask.block_ids] if b is not None]
    return reply(BlocksFreeReply(len(removed), sum(b.size for b in removed)))


async def local_blocks(request: web.Request) -> web.Response:
    """Where held block files are, for a client on this node (short-circuit reads)."""
    svc = request.app[SERVICE]
    ask = await read_message(request, LocalBlocksRequest)
    paths: dict[str, str] = {}
    stamps: dict[str, list[int]] = {}
    for block_id in ask.block_ids[:1024]:
        block = await svc.fetcher.lookup(block_id)
        if block is not None:
            paths[block_id] = str(block.path)  # hits are counted when reads are touched
            stamps[block_id] = list(block.stamp)
    return reply(LocalBlocksReply(paths, stamps=stamps))


async def touch_blocks(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    return reply(svc.touch(await read_message(request, TouchRequest)))


async def stats(request: web.Request) -> web.Response:
    return reply(request.app[SERVICE].stats())


async def metrics(request: web.Request) -> web.Response:
    body = request.app[SERVICE].metrics.render()
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


def make_app(config: WorkerConfig) -> web.Application:
    """The worker's application; the service is created on start-up and closed on clean-up."""
    app = web.Application(middlewares=make_middlewares(config.token))

    async def service_ctx(app: web.Application) -> AsyncIterator[None]:
        async with client_session() as session:
            app[SERVICE] = WorkerService(config, session)
            try:
                yield
            finally:
                await app[SERVICE].close()

    app.cleanup_ctx.append(service_ctx)
    app.router.add_get(BLOCK, get_block)
    app.router.add_post(BLOCK_CACHE, cache_block)
    app.router.add_post(FILE_OPEN, open_files)
    app.router.add_post(WORKER_STATS, stats)
    app.router.add_post(BLOCKS_LOCAL, local_blocks)
    app.router.add_post(BLOCKS_CACHE, cache_blocks)
    app.router.add_post(BLOCKS_FREE, free_blocks)
    app.router.add_post(BLOCKS_TOUCH, touch_blocks)
    app.router.add_get(METRICS, metrics)
    app.router.add_get(HEALTH, health)
    return app


async def serve(config: WorkerConfig, ready: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM; ``ready`` gets the base URL once registered."""
    app = make_app(config)

    async def started(address: str) -> None:
        await app[SERVICE].start(address)
        log.info("worker %s serving on %s", config.worker_id, address)
        if ready is not None:
            ready(address)

    await run_app(app, config.host, config.port, started)
