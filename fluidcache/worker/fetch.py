"""The miss path: a block not held is fetched once, from a peer that holds it, else the source.

Concurrent requests for one missing block share one :class:`Inflight` fetch (single-flight). The
fetch runs in a task of its own, so a reader that goes away does not cancel it; its bytes stream
to every waiting reader as they arrive (stream-through) and are committed to the store at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp

from fluidcache.common import errors
from fluidcache.common.aio import retrieved
from fluidcache.common.http import RpcClient, auth_headers
from fluidcache.common.protocol import (
    BLOCK,
    BLOCK_LOCATIONS,
    PEER_HEADER,
    WORKERS,
    BlockRef,
    LocationsReply,
    LocationsRequest,
    WorkersReply,
)
from fluidcache.ufs import ReadPool, UfsStatus, UnderFileSystem
from fluidcache.worker.metrics import Metrics
from fluidcache.worker.sources import SourceMap
from fluidcache.worker.store import Block, BlockStore, BlockWriter

log = logging.getLogger(__name__)

STREAM_CHUNK = 1 << 20
PEER_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=2, sock_read=5)
PEERS_TTL = 5.0


class Slots:
    """A bound on the source reads under way at once, where a reader waiting goes first.

    A fetch waits for a slot as urgent (someone reads the block now) or as a read-ahead
    (a prefetch of a sequential reader or of a model); a freed slot goes to the oldest urgent
    waiter, else to the oldest read-ahead. A read-ahead becomes urgent while it waits when a
    reader asks for its block (``urgent`` is asked again at every hand-out). So one reader's
    deep read-ahead never queues another reader's demand reads behind it.
    """

    def __init__(self, n: int) -> None:
        self._free = n
        self._waiting: list[tuple[asyncio.Future[None], Callable[[], bool]]] = []

    @contextlib.asynccontextmanager
    async def held(self, urgent: Callable[[], bool]) -> AsyncIterator[None]:
        await self._acquire(urgent)
        try:
            yield
        finally:
            self._free += 1
            self._hand_out()

    async def _acquire(self, urgent: Callable[[], bool]) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        entry = (asyncio.get_running_loop().create_future(), urgent)
        self._waiting.append(entry)
        try:
            await entry[0]
        except asyncio.CancelledError:
            if entry in self._waiting:
                self._waiting.remove(entry)
            elif not entry[0].cancelled():  # handed a slot, then cancelled: give it on
                self._free += 1
                self._hand_out()
            raise

    def _hand_out(self) -> None:
        while self._free > 0 and self._waiting:
            first = next((e for e in self._waiting if e[1]()), self._waiting[0])
            self._waiting.remove(first)
            if not first[0].done():
                self._free -= 1
                first[0].set_result(None)


class Inflight:
    """One block on its way in: readers follow its chunks while they arrive (never copied)."""

    def __init__(self, ref: BlockRef, urgent: bool = True) -> None:
        self.ref = ref
        self.urgent = urgent  # a reader waits for it (else a read-ahead, until one does)
        self.parts: list[bytes | memoryview] = []
        self.size = 0
        self.error: BaseException | None = None
        self.origin = ""  # peer | source, once known
        self.done = False
        self._changed = asyncio.Event()
        self.sink: Callable[[bytes | memoryview], None] | None = None  # gets every chunk too

    def append(self, chunk: bytes | memoryview) -> None:
        self.parts.append(chunk)
        self.size += len(chunk)
        if self.sink is not None:
            self.sink(chunk)
        self._wake()

    def finish(self, error: BaseException | None = None) -> None:
        self.error, self.done = error, True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def chunks(self) -> AsyncIterator[bytes | memoryview]:
        """The block's bytes in order, as they arrive; raises the fetch's error."""
        index = 0
        while True:
            changed = self._changed
            if index < len(self.parts):
                index += 1
                yield self.parts[index - 1]
            elif self.done:
                if self.error is not None:
                    raise self.error
                return
            else:
                await changed.wait()

    async def wait(self) -> None:
        """Return once fetched (and committed); raises the fetch's error."""
        while not self.done:
            await self._changed.wait()
        if self.error is not None:
            raise self.error

    async def data(self) -> bytes:
        """All the bytes, once fetched (joined: a copy)."""
        await self.wait()
        return b"".join(self.parts)


def _tell(known: asyncio.Future[UfsStatus], status: UfsStatus) -> None:
    if not known.done():
        known.set_result(status)


class Fetcher:
    """Serves block references from the store, else through one :class:`Inflight` each."""

    def __init__(
        self,
        store: BlockStore,
        sources: SourceMap,
        metrics: Metrics,
        master: RpcClient,
        session: aiohttp.ClientSession,
        token: str,
        self_id: str,
        refresh_mounts: Callable[[], Awaitable[None]],
        concurrency: int = 16,
    ) -> None:
        self.store = store
        self.sources = sources
        self.metrics = metrics
        self.master = master
        self.session = session
        self.token = token
        self.self_id = self_id
        self._refresh_mounts = refresh_mounts
        self._inflight: dict[str, Inflight] = {}
        self._concurrency = concurrency
        self._slots = Slots(concurrency)  # reads of the sources without threads of their own
        self._pool_slots: weakref.WeakKeyDictionary[ReadPool, Slots] = weakref.WeakKeyDictionary()
        self._tasks: set[asyncio.Task[object]] = set()
        self._peers: dict[str, str] = {}
        self._peers_at = -PEERS_TTL

    async def lookup(self, block_id: str) -> Block | None:
        """The held, verified block, or None."""
        block = self.store.get(block_id)
        if block is not None and not await self.store.verify(block):
            return None
        return block

    async def get(
        self,
        ref: BlockRef,
        peers: bool = True,
        peer: str = "",
        data: Awaitable[memoryview] | None = None,
        urgent: bool = True,
    ) -> Block | Inflight:
        """The block ``ref`` from the store, or the one fetch of it under way.

        ``peers`` False skips asking the master for holders (the caller just learnt there are
        none); ``peer`` is the id of a worker said to hold it, tried first (a load's
        fan-out). A stale hint costs a source read, never wrong bytes. ``data``: the block's
        bytes, being read from the source already (:meth:`open`), kept instead of fetching them.
        ``urgent`` False: a read-ahead, which waits for a source slot behind urgent fetches
        (:class:`Slots`) until an urgent ``get`` of the same block comes.
        """
        block = await self.lookup(ref.id)
        if block is not None:
            self.metrics.hit(self.store.levels[block.level].config.medium)
            return block
        flight = self._inflight.get(ref.id)
        if flight is None:
            flight = self._inflight[ref.id] = Inflight(ref, urgent)
            task = asyncio.ensure_future(self._run(flight, peers, peer, data))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif urgent:
            flight.urgent = True
        return flight

    async def open(
        self, uri: str, block_size: int, size_hint: int = -1, urgent: bool = True
    ) -> tuple[UfsStatus, str]:
        """The file ``uri`` as its source has it now, its first block read in the same request
        and kept (one source request where a ``stat`` and a read took two). Returns the
        status and, as :meth:`ensure` does, where that block came from ("" if held).
        ``size_hint``: the size it was listed with (the first read's buffer; a file grown
        since has the rest of its block read after, naming the version). ``urgent`` False: a
        client's prefetch, which waits for a source slot behind readers (:class:`Slots`).

        A reader's open of a file of several blocks answers as soon as the source has told
        the status, the first block still arriving (as a fetch under way, which reads of it
        follow): the reader's read-ahead starts meanwhile instead of after that block.
        """
        ufs, path = await self._resolve(uri)
        known: asyncio.Future[UfsStatus] = asyncio.get_running_loop().create_future()
        reading = asyncio.ensure_future(
            self._read_first(ufs, path, block_size, size_hint, urgent, known)
        )
        self._tasks.add(reading)
        reading.add_done_callback(self._tasks.discard)
        reading.add_done_callback(retrieved)  # its bytes may go unused (the block was held)
        await asyncio.wait((known, reading), return_when=asyncio.FIRST_COMPLETED)
        if not known.done():
            await reading  # failed before the source told the status: its error
        status = known.result()
        ref = BlockRef(uri, status.version, 0, block_size, status.size)
        early = urgent and status.size > block_size and not reading.done()
        if not early and not len(await reading):
            return status, ""
        got = await self.get(ref, False, data=reading)
        if early:
            return status, "" if isinstance(got, Block) else "source"
        return status, await self._settle(got)

    async def _read_first(
        self,
        ufs: UnderFileSystem,
        path: str,
        block_size: int,
        size_hint: int,
        urgent: bool,
        known: asyncio.Future[UfsStatus],
    ) -> memoryview:
        """The first block of ``path`` with the version the source has now, told to
        ``known`` as soon as the source tells it (before the bytes, where it can)."""
        loop, here = asyncio.get_running_loop(), threading.get_ident()
        first = block_size if size_hint < 0 else max(1, min(block_size, size_hint))
        async with self._slots_for(ufs).held(lambda: urgent):
            buf = memoryview(bytearray(first))

            def told(status: UfsStatus) -> None:
                if threading.get_ident() == here:
                    _tell(known, status)  # a small read, answered on the loop: no wake-up
                else:
                    loop.call_soon_threadsafe(_tell, known, status)

            status, got = await ufs.read_head(path, buf, told)
            if known.done() and known.result().version != status.version:
                raise errors.SourceChanged(
                    f"{ufs.uri(path)}: changed while its first block was read"
                )
            _tell(known, status)
            length = min(block_size, status.size)  # the first block's
            if got == len(buf) < length:
                whole = memoryview(bytearray(length))
                whole[:got] = buf
                buf = whole
                got += await ufs.read_into(path, got, buf[got:], status.version)
        if got != length:
            raise errors.SourceError(
                f"{ufs.uri(path)}: got {got} bytes of its first block, not {length}"
            )
        return buf[:got]

    async def ensure(
        self, ref: BlockRef, peers: bool = True, peer: str = "", urgent: bool = True
    ) -> str:
        """Return once the block is held (or was fetched, if it could not be kept): with ""
        when it was held already, else where the fetch got it (peer, source)."""
        return await self._settle(await self.get(ref, peers, peer, urgent=urgent))

    @staticmethod
    async def _settle(got: Block | Inflight) -> str:
        if isinstance(got, Inflight):
            await got.wait()
            return got.origin
        return ""

    def _slots_for(self, ufs: UnderFileSystem) -> Slots:
        """The slots of ``ufs``'s reads: ``concurrency`` per source, at most its threads (so a
        read holding a slot never waits for a thread), shared by adapters sharing threads."""
        pool = ufs.read_pool
        if pool is None:
            return self._slots
        slots = self._pool_slots.get(pool)
        if slots is None:
            slots = self._pool_slots[pool] = Slots(min(self._concurrency, pool.threads))
        return slots

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(
        self, flight: Inflight, peers: bool, peer: str, data: Awaitable[memoryview] | None = None
    ) -> None:
        ref = flight.ref
        writer = None
        try:
            # The block is written to its tier as it arrives (no second pass over its bytes).
            writer = await self.store.writer(ref.id, ref.length)
            if writer is not None:
                flight.sink = writer.write
            origin = None
            if data is not None:
                flight.append(await data)
                origin = "source"
            if origin is None and peer and await self._from_peer(peer, flight):
                origin = "peer"
            if origin is None and peers:
                origin = await self._from_peers(flight)
            if origin is None:
                origin = await self._from_source(flight, writer)
            if flight.size != ref.length:
                raise errors.SourceError(
                    f"{ref.uri}: got {flight.size} bytes for block {ref.index}, expected "
                    f"{ref.length} (the file changed at the source?)"
                )
            flight.origin = origin
            self.metrics.miss(origin, ref.length)
            if writer is not None:
                await writer.commit()
                writer = None
            flight.finish()
        except Exception as e:
            flight.finish(
                e if isinstance(e, errors.FluidcacheError) else errors.SourceError(str(e))
            )
        finally:
            if writer is not None:
                writer.abort()  # failed or cancelled: give its room back
            self._inflight.pop(ref.id, None)

    async def _resolve(self, uri: str) -> tuple[UnderFileSystem, str]:
        try:
            return self.sources.resolve(uri)
        except errors.InvalidArgument:
            await self._refresh_mounts()  # a dataset may have been added since we registered
            return self.sources.resolve(uri)

    async def _from_source(self, flight: Inflight, writer: BlockWriter | None = None) -> str:
        ref = flight.ref
        ufs, path = await self._resolve(ref.uri)
        async with self._slots_for(ufs).held(lambda: flight.urgent):
            # The block's version goes with the read: bytes of a newer version never land
            # under this version's id (SourceChanged instead).
            if ufs.reads_into:
                # Received straight into the block's file when it goes to MEM (else into one
                # buffer): no Python per piece, no second copy; readers following get it whole.
                if writer is not None and (region := writer.region()) is not None:
                    got = await ufs.read_into(path, ref.offset, region, ref.version)
                    flight.sink = None  # already in the file
                    flight.append(writer.received(got))
                else:
                    buf = memoryview(bytearray(ref.length))
                    got = await ufs.read_into(path, ref.offset, buf, ref.version)
                    flight.append(buf[:got])
                return "source"
            chunks = ufs.read_stream(path, ref.offset, ref.length, STREAM_CHUNK, ref.version)
            async for chunk in chunks:
                flight.append(chunk)
        return "source"

    async def _from_peers(self, flight: Inflight) -> str | None:
        """Stream the block from a worker that holds it; None (nothing sent) if none can."""
        ref = flight.ref
        try:
            reply = await self.master.call(
                BLOCK_LOCATIONS, LocationsRequest([ref.id]), LocationsReply
            )
            holders = [w for w in reply.locations.get(ref.id, []) if w != self.self_id]
            if not holders:
                return None
            peers = await self._peer_addresses()
        except errors.FluidcacheError as e:
            log.warning("block %s: no peer lookup (%s); reading the source", ref.id, e.message)
            return None
        for worker_id in holders:
            address = peers.get(worker_id)
            if address is None:
                continue
            if await self._stream_from(address, flight):
                return "peer"
        return None

    async def _from_peer(self, worker_id: str, flight: Inflight) -> bool:
        """Stream the block from the registered worker ``worker_id``; False if it cannot."""
        try:
            address = (await self._peer_addresses()).get(worker_id)
        except errors.FluidcacheError as e:
            log.warning("block %s: no worker list (%s)", flight.ref.id, e.message)
            return False
        return address is not None and await self._stream_from(address, flight)

    async def _stream_from(self, address: str, flight: Inflight) -> bool:
        """True when the whole block came from ``address``; False (and nothing kept) if not."""
        ref = flight.ref
        url = address.rstrip("/") + BLOCK.format(block_id=ref.id)
        headers = {**auth_headers(self.token), PEER_HEADER: self.self_id}
        chunks: list[bytes] = []
        try:
            async with self.session.get(
                url, params=ref.to_query(), headers=headers, timeout=PEER_TIMEOUT
            ) as resp:
                if resp.status != 200:
                    return False
                async for chunk in resp.content.iter_chunked(STREAM_CHUNK):
                    chunks.append(chunk)
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            log.info("peer %s failed for block %s: %s", address, ref.id, e)
            return False
        if sum(map(len, chunks)) != ref.length:
            return False
        # A peer may fail half-way: only a complete block is passed on to readers.
        for chunk in chunks:
            flight.append(chunk)
        return True

    async def _peer_addresses(self) -> dict[str, str]:
        """Worker id -> address of the live workers (cached for a few seconds)."""
        if time.monotonic() - self._peers_at > PEERS_TTL:
            reply = await self.master.call(WORKERS, None, WorkersReply)
            self._peers = {w.worker_id: w.address for w in reply.workers}
            self._peers_at = time.monotonic()
        return self._peers
