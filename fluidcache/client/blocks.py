"""Where the client gets a block's bytes, fastest first (DESIGN.md, "One read, end to end"):

1. a block file held by a worker on this node, read directly through an open descriptor
   (short-circuit: no network hop, and the descriptor outlives eviction);
2. a worker that holds the block (locations from the master, cached briefly), the ones known to
   be slow last; one that has not answered when it is late (:mod:`~fluidcache.client.speeds`)
   is raced by the next holder (a hedged read: at most one more request at a time);
3. the worker placed for it by a stable hash of the block id, which fetches it once.
A worker that fails is skipped and the read tried elsewhere, a bounded number of times.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Hashable, Mapping
from ssl import SSLContext
from urllib.parse import urlencode

import aiohttp

from fluidcache.client.cache import BlockCache, FdCache, LocalFile, TtlCache
from fluidcache.client.speeds import Speeds
from fluidcache.common import errors
from fluidcache.common.aio import Batcher, SingleFlight, hedged
from fluidcache.common.http import RpcClient, auth_headers, raise_for_error
from fluidcache.common.protocol import (
    AHEAD_PARAM,
    BLOCK,
    BLOCK_CACHE,
    BLOCK_LOCATIONS,
    BLOCKS_CACHE,
    BLOCKS_LOCAL,
    BLOCKS_TOUCH,
    FILE_OPEN,
    MAX_CACHES,
    MAX_OPENS,
    MAX_TOUCHES,
    READER_HEADER,
    WORKERS,
    BlockRef,
    CacheBlocksRequest,
    LocalBlocksReply,
    LocalBlocksRequest,
    LocationsReply,
    LocationsRequest,
    OpenFilesReply,
    OpenFilesRequest,
    OpenReply,
    OpenRequest,
    TouchReply,
    TouchRequest,
    WorkerInfo,
    WorkersReply,
)

log = logging.getLogger(__name__)

READ_ATTEMPTS = 5  # over 0.1+0.3+0.9+2.7 s of pauses: a worker's restart takes about 1 s
HEDGES = 2  # block requests at once to the holders of one block, at most
FD_CACHE_FILES = 1024  # block files a client keeps open for short-circuit reads, at most
FD_CACHE_BYTES = 64 * 1024 * 1024  # evicted blocks kept alive by open descriptors, at most
LOCATE_BATCH = 512
TOUCH_DELAY = 0.5  # seconds short-circuit reads wait to be told to their worker, in one batch
MAX_CREDITS = 10_000
OPENS_IN_FLIGHT = 16
"""Open calls under way to one worker; more opens wait and go in one call. A batch answers
when its slowest file has opened, so batching starts past a reader pool's worth of opens (at
2, 16 readers of a 20 ms source waited 38 ms per open against 22 ms reading it directly)."""
AHEAD_OPENS_IN_FLIGHT = 2  # the same for opens ahead of readers (fewer calls, the same files)
OPEN_MAX_WAIT = 0.005  # seconds an open waits for those calls (a source's first byte can be slow)


def placement(block_id: str, workers: list[WorkerInfo]) -> list[WorkerInfo]:
    """Workers in the order a cold block should be asked of them (rendezvous hashing)."""

    def score(w: WorkerInfo) -> bytes:
        return hashlib.blake2b(f"{w.worker_id}/{block_id}".encode(), digest_size=8).digest()

    return sorted(workers, key=score, reverse=True)


class Touches:
    """Short-circuit reads not yet told to their workers: worker address -> block id -> bytes.

    A read only adds to a dict; one task sends what gathered after ``delay`` (one call per
    worker), so workers count the local hits and keep the blocks warm in their LRU without a
    call per read. A block a worker just fetched for this reader carries a credit: its first
    bytes read were counted as that fetch (a miss), not as hits.
    """

    def __init__(self, send: Callable[[str, TouchRequest], Awaitable[object]], delay: float):
        self._send = send
        self.delay = delay
        self._pending: dict[str, dict[str, int]] = {}
        self._credits: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def credit(self, block_id: str, size: int) -> None:
        self._credits[block_id] = size
        while len(self._credits) > MAX_CREDITS:
            del self._credits[next(iter(self._credits))]

    def add(self, owner: str, block_id: str, size: int) -> None:
        """Note ``size`` bytes read from ``owner``'s file of ``block_id``; never awaits."""
        if self._credits:
            credit = self._credits.pop(block_id, 0)
            if credit > size:
                self._credits[block_id] = credit - size
            size -= min(credit, size)
            if size == 0:
                return
        if not owner:
            return
        batch = self._pending.setdefault(owner, {})
        batch[block_id] = batch.get(block_id, 0) + size
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._later())

    async def _later(self) -> None:
        # The task stays known until its sends are done, so that close() waits for them
        # (never a send on a closed session); reads noted meanwhile get a task of their own.
        try:
            await asyncio.sleep(self.delay)
            await self.flush()
        finally:
            self._task = None
        if self._pending:
            self._task = asyncio.get_running_loop().create_task(self._later())

    async def flush(self) -> None:
        """Send every pending read now; a worker that cannot be reached loses its counts."""
        pending, self._pending = self._pending, {}
        for owner, reads in pending.items():
            items = list(reads.items())
            for i in range(0, len(items), MAX_TOUCHES):
                batch = dict(items[i : i + MAX_TOUCHES])
                try:
                    await self._send(owner, TouchRequest(batch))
                except errors.FluidcacheError as e:
                    log.debug("touch of %d blocks on %s failed: %s", len(batch), owner, e.message)

    async def close(self) -> None:
        task = self._task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.flush()


class BlockReader:
    """Reads block ranges for one client; shares fetches between concurrent readers."""

    def __init__(
        self,
        session: Callable[[], aiohttp.ClientSession],
        master: Callable[[], RpcClient],
        token: str,
        *,
        ttl: float,
        buffer_bytes: int,
        clock: Callable[[], float],
        node: str | None = None,
        short_circuit: bool = True,
        ssl: SSLContext | bool = True,
    ) -> None:
        self._session = session
        self._clock = clock
        self.speeds = Speeds(clock)
        self._ssl = ssl
        self._master = master
        self._token = token
        self.node = node or socket.gethostname()
        self.short_circuit = short_circuit
        self._workers: TtlCache[str, list[WorkerInfo]] = TtlCache(ttl, 1, clock)
        self._locations: TtlCache[str, list[str]] = TtlCache(ttl, 100_000, clock)
        # block id -> (path of its file on this node, address of the worker that holds it)
        self._paths: TtlCache[str, LocalFile] = TtlCache(ttl, 100_000, clock)
        self.touches = Touches(self._touch, TOUCH_DELAY)
        self.buffer = BlockCache(buffer_bytes)
        self.fds = FdCache(FD_CACHE_FILES, FD_CACHE_BYTES)
        self._flight: SingleFlight[bytes] = SingleFlight()
        self._local_flight: SingleFlight[LocalFile | None] = SingleFlight()
        # opens waiting for a worker go in one call (see Batcher), by its address
        self._opens: Batcher[OpenRequest, OpenReply] = Batcher(
            self._open_files, OPENS_IN_FLIGHT, MAX_OPENS, OPEN_MAX_WAIT
        )
        # opens ahead of readers: no reader waits, so they go in fewer, larger calls
        self._ahead_opens: Batcher[OpenRequest, OpenReply] = Batcher(
            self._open_files, AHEAD_OPENS_IN_FLIGHT, MAX_OPENS, OPEN_MAX_WAIT
        )
        # the same for small files listed with their versions: their blocks, read now and ahead
        self._caches: Batcher[BlockRef, LocalBlocksReply] = Batcher(
            functools.partial(self._cache_blocks, ahead=False),
            OPENS_IN_FLIGHT,
            MAX_CACHES,
            OPEN_MAX_WAIT,
        )
        self._ahead_caches: Batcher[BlockRef, LocalBlocksReply] = Batcher(
            self._cache_blocks, AHEAD_OPENS_IN_FLIGHT, MAX_CACHES, OPEN_MAX_WAIT
        )

    def _rpc(self, address: str, headers: Mapping[str, str] | None = None) -> RpcClient:
        return RpcClient(address, self._token, self._session(), headers=headers, ssl=self._ssl)

    async def _touch(self, address: str, request: TouchRequest) -> TouchReply:
        rpc = self._rpc(address)
        return await rpc.call(BLOCKS_TOUCH, request, TouchReply)

    async def flush(self) -> None:
        """Tell workers about short-circuit reads now (before the session closes)."""
        await self.touches.close()

    async def close(self) -> None:
        await self._opens.close()
        await self._ahead_opens.close()
        await self._caches.close()
        await self._ahead_caches.close()
        self.fds.close()
        self.buffer.clear()
        self._paths.clear()

    # ---- cluster view -------------------------------------------------------------------

    async def workers(self, refresh: bool = False) -> list[WorkerInfo]:
        """The live workers (cached for the TTL; the last list known while the master cannot
        be reached, so reads go on through a master restart)."""
        live = None if refresh else self._workers.get("")
        if live is None:
            try:
                live = (await self._master().call(WORKERS, None, WorkersReply)).workers
            except errors.Unavailable:
                live = self._workers.get_stale("")
                if live is None:
                    raise
            else:
                self._workers.put("", live)
        if not live:
            raise errors.Unavailable("no live worker in the cluster")
        return live

    def ahead_room(self, block_size: int) -> int | None:
        """How many blocks a read-ahead may ask for at once: None (no bound of this reader's)
        when every worker is on this node, so prefetched blocks go to their files there
        (short-circuit); else half of what the buffer holds, so a read-ahead never pushes out
        the blocks it fetched before they are read."""
        workers = self._workers.get_stale("") or []
        if self.short_circuit and workers and all(w.node == self.node for w in workers):
            return None
        return max(1, self.buffer.capacity // (2 * block_size))

    async def locate(self, refs: list[BlockRef], refresh: bool = False) -> dict[str, list[str]]:
        """Which workers hold these blocks (asked in batches; holders cached for the TTL)."""
        found: dict[str, list[str]] = {}
        ask: list[str] = []
        for ref in refs:
            cached = None if refresh else self._locations.get(ref.id)
            if cached is None:
                ask.append(ref.id)
            else:
                found[ref.id] = cached
        for i in range(0, len(ask), LOCATE_BATCH):
            batch = ask[i : i + LOCATE_BATCH]
            try:
                reply = await self._master().call(
                    BLOCK_LOCATIONS, LocationsRequest(batch), LocationsReply
                )
            except errors.Unavailable:
                # The master is away: holders learnt before (else none: the placed worker
                # serves or fetches the block); not remembered, so asked again next time.
                for block_id in batch:
                    found[block_id] = self._locations.get_stale(block_id) or []
                continue
            for block_id in batch:
                # Holding "no holder" is safe: a cold read goes to the placed worker, which
                # serves the block if it was cached meanwhile.
                found[block_id] = reply.locations.get(block_id, [])
                self._locations.put(block_id, found[block_id])
        return found

    def uncached(self, ref: BlockRef) -> bool:
        """Whether block ``ref`` is known here to be held by no worker (asked within the TTL)
        and no read of it is under way: a cold block."""
        busy = ref.id in self._flight or ref.id in self._local_flight
        if busy or self._paths.get(ref.id) is not None or self.buffer.get(ref.id) is not None:
            return False
        return self._locations.get(ref.id) == []

    async def warm(self, refs: list[BlockRef]) -> None:
        """Learn, in a few batched calls, where this node's workers keep these blocks, so that
        reading them later costs no call at all (used on directory listings); blocks whose
        files are known here already are not asked for again."""
        refs = [r for r in refs if self._paths.get(r.id) is None]
        if not self.short_circuit or not refs:
            return
        workers = {w.worker_id: w for w in await self.workers() if w.node == self.node}
        by_worker: dict[str, list[str]] = {}
        for block_id, holders in (await self.locate(refs)).items():
            local = next((h for h in holders if h in workers), None)
            if local is not None:
                by_worker.setdefault(local, []).append(block_id)
        for worker_id, ids in by_worker.items():
            address = workers[worker_id].address
            rpc = self._rpc(address)
            for i in range(0, len(ids), LOCATE_BATCH):
                reply = await rpc.call(
                    BLOCKS_LOCAL, LocalBlocksRequest(ids[i : i + LOCATE_BATCH]), LocalBlocksReply
                )
                for block_id in reply.paths:
                    self._learn_path(block_id, reply, address)

    async def open_file(
        self, uri: str, block_size: int, size_hint: int = -1, ahead: bool = False
    ) -> OpenReply:
        """Have a worker (this node's first) read the first block of file ``uri`` with the
        version the source has now, and keep it: its file is then known here, so reading it
        costs no further call (the status and first bytes come from one source request).
        ``ahead``: opened ahead of a reader, so the worker serves readers' opens first."""
        workers = await self.workers()
        local = [w for w in workers if w.node == self.node and self.short_circuit]
        worker = placement(uri, local or workers)[0]
        opens = self._ahead_opens if ahead else self._opens
        opened = await opens.call(worker.address, OpenRequest(uri, block_size, size_hint, ahead))
        if opened.error:
            raise errors.from_item(opened.error)
        ref = BlockRef(uri, opened.version, 0, block_size, opened.size)
        self._locations.put(ref.id, [worker.worker_id])
        if opened.fetched:
            self.touches.credit(ref.id, ref.length)  # the worker counted this read as its fetch
        if opened.path and worker in local:
            self._paths.put(ref.id, LocalFile(opened.path, worker.address, tuple(opened.stamp)))
        return opened

    async def _open_files(
        self, address: Hashable, files: list[OpenRequest]
    ) -> list[OpenReply | BaseException]:
        rpc = self._rpc(str(address), self._reader)
        return list((await rpc.call(FILE_OPEN, OpenFilesRequest(files), OpenFilesReply)).files)

    async def _cache_blocks(
        self, address: Hashable, refs: list[BlockRef], ahead: bool = True
    ) -> list[LocalBlocksReply | BaseException]:
        rpc = self._rpc(str(address), self._reader)
        reply = await rpc.call(BLOCKS_CACHE, CacheBlocksRequest(refs, ahead), LocalBlocksReply)
        return [reply] * len(refs)

    async def _holders(self, ref: BlockRef, refresh: bool = False) -> list[str]:
        return (await self.locate([ref], refresh)).get(ref.id, [])

    # ---- reads ------------------------------------------------------------------------------

    async def read(self, ref: BlockRef, start: int, length: int) -> bytes | memoryview:
        """Bytes ``[start, start + length)`` of block ``ref`` (fewer only at its end); from a
        file of this node's of at least ``MAPPED_MIN_BYTES``, a view of the file mapped: no
        copy here (a FUSE reply is written from the file's pages)."""
        length = max(0, min(length, ref.length - start))
        if self.short_circuit:
            data = self._pread_local(ref.id, start, length)
            if data is not None:
                return data
        cached = self.buffer.get(ref.id)
        if cached is not None:
            return cached[start : start + length]
        if self.short_circuit:
            found = await self._local_flight.do(ref.id, lambda: self._find_local(ref))
            local = self._pread_local(ref.id, start, length, found)  # same step as the await
            if local is not None:
                return local
        fetched = await self.fetch(ref)
        return fetched[start : start + length]

    def _pread_local(
        self, block_id: str, start: int, length: int, found: LocalFile | None = None
    ) -> bytes | memoryview | None:
        """Read this node's copy of a block when its file is known (or given), else None.

        Never awaits: a descriptor (and its mapping) is used in the same step it is taken from
        the cache, so no other read can close it (or reuse its number) in between. The read is
        noted for the worker that holds the file (:class:`Touches`).
        """
        fd = self.fds.get(block_id)
        if fd is None:
            found = found or self._paths.get(block_id)
            if found is None:
                return None
            fd = self.fds.open(block_id, found)
            if fd is None:
                self._paths.pop(block_id)  # evicted since
                return None
        m = self.fds.mapped(block_id)
        data = os.pread(fd, length, start) if m is None else memoryview(m)[start : start + length]
        self.touches.add(self.fds.owner(block_id), block_id, len(data))
        return data

    async def _find_local(
        self, ref: BlockRef, ahead: bool = False, batched: bool = False
    ) -> LocalFile | None:
        """The path of the block's file on this node's worker, if there is one.

        A holder on this node is asked where its file is, and if the block is still arriving
        there (the first block of a file opened there, say), for its file once it is in: its
        bytes need no HTTP hop to us. A cold block whose placed worker is on this node is
        fetched there first (the bytes then need no HTTP hop either): the block of a file of one
        block (or with ``batched``) in one call with the others waiting for that worker, as
        opens are (a cold epoch of small S3 objects made one call a file).
        """
        known = self._paths.get(ref.id)
        if known is not None:
            return known
        workers = {w.worker_id: w for w in await self.workers()}
        holders = await self._holders(ref)
        for holder in holders:
            w = workers.get(holder)
            if w is None or w.node != self.node:
                continue
            try:
                reply = await self._rpc(w.address).call(
                    BLOCKS_LOCAL, LocalBlocksRequest([ref.id]), LocalBlocksReply
                )
                if ref.id not in reply.paths:  # still arriving there: its file once it is in
                    reply = await self._cache_block(w.address, ref, ahead, joining=True)
            except errors.FluidcacheError:
                continue
            found = self._learn_path(ref.id, reply, w.address)
            if found is not None:
                return found
        if holders:
            return None
        placed = placement(ref.id, list(workers.values()))[0]
        if placed.node != self.node:
            return None
        try:
            if batched or ref.length == ref.file_size:  # a whole file: with others for its worker
                caches = self._ahead_caches if ahead else self._caches
                reply = await caches.call(placed.address, ref)
                failed = reply.errors.get(ref.id)
                if failed:  # this block's own answer
                    raise errors.from_item(failed)
            else:
                reply = await self._cache_block(placed.address, ref, ahead)
        except errors.Unavailable:
            return None
        if ref.id in reply.fetched:
            self.touches.credit(ref.id, ref.length)  # the worker counted this read as its fetch
        found = self._learn_path(ref.id, reply, placed.address)
        if found is not None:
            self._locations.put(ref.id, [placed.worker_id])
        return found

    async def _cache_block(
        self, address: str, ref: BlockRef, ahead: bool, joining: bool = False
    ) -> LocalBlocksReply:
        """The block kept at worker ``address``: its file. Fetched there if it has it not,
        without asking for peers (no worker held it a moment ago), and counted there as this
        node's reader's fetch (``fetched`` in the answer). ``joining``: the block is on its way
        there already, fetched and counted for whoever asked first: its file once it is in
        (peers asked if it has gone meanwhile), counted for no one."""
        params = ref.to_query() if joining else {**ref.to_query(), "peers": "0"}
        if ahead:
            params[AHEAD_PARAM] = "1"
        path_and_query = BLOCK_CACHE.format(block_id=ref.id) + "?" + urlencode(params)
        rpc = self._rpc(address) if joining else self._rpc(address, self._reader)
        return await rpc.call(path_and_query, None, LocalBlocksReply)

    def _learn_path(self, block_id: str, reply: LocalBlocksReply, address: str) -> LocalFile | None:
        path = reply.paths.get(block_id)
        if path is None:
            return None
        found = LocalFile(path, address, tuple(reply.stamps.get(block_id, ())))
        self._paths.put(block_id, found)
        return found

    @property
    def _reader(self) -> dict[str, str]:
        """The header that tells a worker which node a read is for (its hit accounting)."""
        return {READER_HEADER: self.node}

    async def fetch(self, ref: BlockRef, ahead: bool = False) -> bytes:
        """The whole block from a worker; concurrent callers share one request. ``ahead``: a
        read-ahead, whose source read the worker puts behind readers' demand reads."""
        data = self.buffer.get(ref.id)
        if data is not None:
            return data

        async def fetch() -> bytes:
            block = await self._fetch_remote(ref, ahead)
            self.buffer.put(ref.id, block)
            return block

        return await self._flight.do(ref.id, fetch)

    async def prefetch(self, ref: BlockRef, batched: bool = False) -> None:
        """Bring a block close (learn its local file, else fetch it); errors are ignored.
        ``batched``: a whole small file's block, fetched at this node's worker in one call
        with others (the call answers when its slowest block has arrived, so never the
        read-ahead of a long file, whose reader waits for its blocks in order)."""
        if (
            self.fds.get(ref.id) is not None
            or self._paths.get(ref.id) is not None
            or self.buffer.get(ref.id) is not None
        ):
            return
        try:
            if self.short_circuit and await self._local_flight.do(
                ref.id, lambda: self._find_local(ref, ahead=True, batched=batched)
            ):
                return  # its path is known now: reads open it when they come
            await self.fetch(ref, ahead=True)
        except errors.FluidcacheError:
            pass  # a prefetch is a hint; the real read reports the error

    async def prefetch_many(self, refs: list[BlockRef]) -> None:
        """:meth:`prefetch` of each block, at once: their holders asked in one batched call,
        and the files of those held on this node in one call per worker (:meth:`warm`)."""
        if len(refs) > 1:
            with contextlib.suppress(errors.FluidcacheError):
                if self.short_circuit:
                    await self.warm(refs)
                else:
                    await self.locate(refs)
        await asyncio.gather(*(self.prefetch(ref) for ref in refs))

    async def _fetch_remote(self, ref: BlockRef, ahead: bool = False) -> bytes:
        last: errors.FluidcacheError = errors.Unavailable("no worker answered")
        for attempt in range(READ_ATTEMPTS):
            refresh = attempt > 0
            if refresh:  # no pause after the last attempt: its error is reported at once
                await asyncio.sleep(0.1 * 3 ** (attempt - 1))
            workers = await self.workers(refresh)
            holders = set(await self._holders(ref, refresh))
            ordered = placement(ref.id, workers)
            held = self.speeds.order([w for w in ordered if w.worker_id in holders])
            # Only holders are raced: a second cold fetch would read the source twice.
            candidates = held + [w for w in ordered if w.worker_id not in holders][:2]
            try:
                return await hedged(
                    [functools.partial(self._timed_get, w, ref, ahead) for w in candidates],
                    self.speeds.hedge_delay(ref.length),
                    min(len(held), HEDGES),
                    errors.Unavailable,
                )
            except errors.Unavailable as e:
                last = e
        raise last

    async def _timed_get(self, worker: WorkerInfo, ref: BlockRef, ahead: bool = False) -> bytes:
        """:meth:`_get_from`, its time noted in :attr:`speeds` (a lower bound when abandoned)."""
        start = self._clock()
        try:
            data = await self._get_from(worker, ref, ahead)
        except asyncio.CancelledError:
            self.speeds.record_lower_bound(worker.worker_id, self._clock() - start, ref.length)
            raise
        except errors.Unavailable as e:
            log.info("block %s: %s; trying elsewhere", ref.id, e.message)
            raise
        self.speeds.record(worker.worker_id, self._clock() - start, ref.length)
        return data

    async def _get_from(self, worker: WorkerInfo, ref: BlockRef, ahead: bool = False) -> bytes:
        url = worker.address.rstrip("/") + BLOCK.format(block_id=ref.id)
        params = {**ref.to_query(), **({AHEAD_PARAM: "1"} if ahead else {})}
        try:
            async with self._session().get(
                url, params=params, headers={**auth_headers(self._token), **self._reader}
            ) as resp:
                await raise_for_error(resp)
                data = await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise errors.Unavailable(f"worker {worker.worker_id}: {e}") from None
        if len(data) != ref.length:
            raise errors.Unavailable(
                f"worker {worker.worker_id} sent {len(data)} bytes of block {ref.id}, "
                f"expected {ref.length}"
            )
        return data
