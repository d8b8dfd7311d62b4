"""The async client library: namespace calls to the master, block reads from workers.

``AsyncClient`` is what the FUSE mount and Python code use. Reads map a byte range to blocks;
each block comes from a worker that holds it (locations from the master), else from the worker
placed for it by a stable hash of the block id, which fetches it from the source and keeps it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

import aiohttp

from fluidcache.common import errors
from fluidcache.common.aio import SingleFlight
from fluidcache.common.http import RpcClient, auth_headers, raise_for_error
from fluidcache.common.protocol import (
    BLOCK,
    BLOCK_LOCATIONS,
    NS_LIST,
    NS_LOOKUP,
    NS_STAT,
    REPORT,
    WORKERS,
    ROOT_INO,
    BlockRef,
    FileInfo,
    ListReply,
    ListRequest,
    LocationsReply,
    LocationsRequest,
    LookupRequest,
    Report,
    StatRequest,
    WorkerInfo,
    WorkersReply,
)

_READ_RETRIES = 3
K = TypeVar("K")
V = TypeVar("V")


class _TtlCache(Generic[K, V]):
    """A small dict whose entries expire after ``ttl`` seconds and which holds at most ``size``."""

    def __init__(self, ttl: float, size: int, clock: Callable[[], float]) -> None:
        self.ttl, self.size, self.clock = ttl, size, clock
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        hit = self._data.get(key)
        if hit is None or hit[0] < self.clock():
            return None
        self._data.move_to_end(key)
        return hit[1]

    def put(self, key: K, value: V) -> None:
        self._data[key] = (self.clock() + self.ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()


class BlockCache:
    """Recently read blocks held in memory, bounded by bytes, least recently used out first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._blocks: OrderedDict[str, bytes] = OrderedDict()

    def get(self, block_id: str) -> bytes | None:
        data = self._blocks.get(block_id)
        if data is not None:
            self._blocks.move_to_end(block_id)
        return data

    def put(self, block_id: str, data: bytes) -> None:
        if len(data) > self.capacity or block_id in self._blocks:
            return
        self._blocks[block_id] = data
        self.used += len(data)
        while self.used > self.capacity:
            _, old = self._blocks.popitem(last=False)
            self.used -= len(old)


def placement(block_id: str, workers: list[WorkerInfo]) -> list[WorkerInfo]:
    """Workers in the order a cold block should be asked of them (rendezvous hashing)."""

    def score(w: WorkerInfo) -> bytes:
        return hashlib.blake2b(f"{w.worker_id}/{block_id}".encode(), digest_size=8).digest()

    return sorted(workers, key=score, reverse=True)


class AsyncClient:
    """Reads a fluidcache dataset. Use as ``async with AsyncClient(url, token) as c: ...``.

    Paths are relative to the dataset (``/`` is its root) and so are the inode numbers this
    client hands out: the dataset root is inode 1, as a FUSE mount needs. Metadata is cached for
    ``meta_ttl`` seconds; recently read blocks are kept in memory up to ``buffer_bytes``. A client
    used after :meth:`aclose` raises ``InvalidArgument``.
    """

    def __init__(
        self,
        master_url: str,
        token: str,
        *,
        dataset: str = "default",
        meta_ttl: float = 5.0,
        buffer_bytes: int = 128 * 1024 * 1024,
        readahead_blocks: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.master_url = master_url
        self.dataset = dataset
        self._prefix = f"/{dataset}"
        self._root_ino = 0  # the dataset root's inode at the master, learnt on first use
        self._token = token
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._stats: _TtlCache[str, FileInfo] = _TtlCache(meta_ttl, 100_000, clock)
        self._inodes: _TtlCache[int, FileInfo] = _TtlCache(meta_ttl, 100_000, clock)
        self._workers: _TtlCache[str, list[WorkerInfo]] = _TtlCache(meta_ttl, 1, clock)
        self._blocks = BlockCache(buffer_bytes)
        self._flight: SingleFlight[bytes] = SingleFlight()
        self._background: set[asyncio.Task[None]] = set()
        self.readahead_blocks = readahead_blocks

    # ---- lifecycle ------------------------------------------------------------------------

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise errors.InvalidArgument("client is closed")
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=64, limit_per_host=32)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    @property
    def _master(self) -> RpcClient:
        return RpcClient(self.master_url, self._token, self.session)

    async def aclose(self) -> None:
        """Stop background reads and close connections."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        self._closed = True

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---- namespace ------------------------------------------------------------------------

    def _remember(self, info: FileInfo) -> FileInfo:
        """Translate a master inode into this client's view and cache it."""
        if info.path == self._prefix:
            self._root_ino = info.ino
        root = self._root_ino
        info = dataclasses.replace(
            info,
            ino=ROOT_INO if info.ino == root else info.ino,
            parent=ROOT_INO if info.parent in (root, ROOT_INO) else info.parent,
            path=info.path[len(self._prefix) :] or "/",
        )
        self._stats.put(info.path, info)
        self._inodes.put(info.ino, info)
        return info

    async def _master_ino(self, ino: int) -> int:
        if ino != ROOT_INO:
            return ino
        if not self._root_ino:
            await self.stat("/")
        return self._root_ino

    async def stat(self, path: str) -> FileInfo:
        """The inode at ``path`` (``/`` is the dataset root)."""
        path = "/" + path.strip("/")
        info = self._stats.get(path)
        if info is not None:
            return info
        full = self._prefix + (path if path != "/" else "")
        return self._remember(await self._master.call(NS_STAT, StatRequest(path=full), FileInfo))

    async def getattr(self, ino: int) -> FileInfo:
        """The inode numbered ``ino``."""
        info = self._inodes.get(ino)
        if info is not None:
            return info
        request = StatRequest(ino=await self._master_ino(ino))
        return self._remember(await self._master.call(NS_STAT, request, FileInfo))

    async def lookup(self, parent: int, name: str) -> FileInfo:
        """The entry ``name`` of directory ``parent``."""
        request = LookupRequest(await self._master_ino(parent), name)
        return self._remember(await self._master.call(NS_LOOKUP, request, FileInfo))

    async def list_page(self, ino: int, cursor: str = "", limit: int = 1000) -> ListReply:
        """One page of directory ``ino`` after the name ``cursor``."""
        request = ListRequest(ino=await self._master_ino(ino), cursor=cursor, limit=limit)
        page = await self._master.call(NS_LIST, request, ListReply)
        return ListReply([self._remember(e) for e in page.entries], page.cursor)

    async def iter_dir(self, path: str) -> AsyncIterator[FileInfo]:
        """The entries of a directory, page by page."""
        info = await self.stat(path)
        if not info.is_dir:
            raise errors.NotADirectory(path)
        cursor = ""
        while True:
            page = await self.list_page(info.ino, cursor)
            for entry in page.entries:
                yield entry
            if not page.cursor:
                return
            cursor = page.cursor

    async def ls(self, path: str) -> list[FileInfo]:
        """All entries of a directory."""
        return [e async for e in self.iter_dir(path)]

    async def walk(self, path: str = "/") -> AsyncIterator[FileInfo]:
        """Every file under ``path``, depth first."""
        async for entry in self.iter_dir(path):
            if entry.is_dir:
                async for sub in self.walk(entry.path):
                    yield sub
            else:
                yield entry

    async def report(self) -> Report:
        return await self._master.call(REPORT, None, Report)

    # ---- data -----------------------------------------------------------------------------

    async def workers(self, refresh: bool = False) -> list[WorkerInfo]:
        live = None if refresh else self._workers.get("")
        if live is None:
            live = (await self._master.call(WORKERS, None, WorkersReply)).workers
            self._workers.put("", live)
        if not live:
            raise errors.Unavailable("no live worker in the cluster")
        return live

    async def _candidates(self, ref: BlockRef, refresh: bool) -> list[WorkerInfo]:
        workers = await self.workers(refresh)
        reply = await self._master.call(BLOCK_LOCATIONS, LocationsRequest([ref.id]), LocationsReply)
        holders = set(reply.locations.get(ref.id, ()))
        ordered = placement(ref.id, workers)
        return [w for w in ordered if w.worker_id in holders] + [
            w for w in ordered if w.worker_id not in holders
        ]

    async def _fetch_block(self, ref: BlockRef) -> bytes:
        last: errors.FluidcacheError = errors.Unavailable("no worker answered")
        for attempt in range(_READ_RETRIES):
            for worker in (await self._candidates(ref, refresh=attempt > 0))[:2]:
                try:
                    return await self._get_from(worker, ref)
                except errors.Unavailable as e:
                    last = e
        raise last

    async def _get_from(self, worker: WorkerInfo, ref: BlockRef) -> bytes:
        url = worker.address.rstrip("/") + BLOCK.format(block_id=ref.id)
        try:
            async with self.session.get(
                url, params=ref.to_query(), headers=auth_headers(self._token)
            ) as resp:
                await raise_for_error(resp)
                data = await resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            raise errors.Unavailable(f"worker {worker.worker_id}: {e}") from None
        if len(data) != ref.length:
            raise errors.Unavailable(
                f"worker {worker.worker_id} sent {len(data)} bytes of block {ref.id}, "
                f"expected {ref.length}"
            )
        return data

    async def read_block(self, ref: BlockRef) -> bytes:
        """The whole block ``ref``; concurrent callers for one block share one request."""
        data = self._blocks.get(ref.id)
        if data is not None:
            return data

        async def fetch() -> bytes:
            block = await self._fetch_block(ref)
            self._blocks.put(ref.id, block)
            return block

        return await self._flight.do(ref.id, fetch)

    def prefetch(self, ref: BlockRef) -> None:
        """Start reading ``ref`` in the background unless it is buffered or on its way."""
        if self._blocks.get(ref.id) is not None or ref.id in self._flight:
            return
        task = asyncio.ensure_future(self._prefetch(ref))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _prefetch(self, ref: BlockRef) -> None:
        try:
            await self.read_block(ref)
        except errors.FluidcacheError:
            pass  # a prefetch is a hint; the real read reports the error

    async def pread(self, info: FileInfo, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes of file ``info`` from ``offset`` (fewer only at end of file)."""
        if info.is_dir:
            raise errors.IsADirectory(info.path)
        end = min(offset + size, info.size)
        if offset >= end:
            return b""
        first, last = offset // info.block_size, (end - 1) // info.block_size
        blocks = await asyncio.gather(
            *(self.read_block(info.block(i)) for i in range(first, last + 1))
        )
        data = b"".join(blocks) if len(blocks) > 1 else blocks[0]
        start = offset - first * info.block_size
        return data[start : start + end - offset]

    async def open(self, path: str) -> AsyncFile:
        """A read-only file object for ``path``."""
        info = await self.stat(path)
        if info.is_dir:
            raise errors.IsADirectory(path)
        return AsyncFile(self, info)


class AsyncFile:
    """A read-only file with a position; sequential reads trigger read-ahead."""

    def __init__(self, client: AsyncClient, info: FileInfo) -> None:
        self.client = client
        self.info = info
        self.pos = 0
        self._next_sequential = 0

    @property
    def size(self) -> int:
        return self.info.size

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.info.size}[whence]
        if base + offset < 0:
            raise errors.InvalidArgument("negative seek position")
        self.pos = base + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    async def pread(self, offset: int, size: int) -> bytes:
        """Read at ``offset`` without moving the position; sequential access reads ahead."""
        data = await self.client.pread(self.info, offset, size)
        if offset == self._next_sequential and data:
            self._read_ahead(offset + len(data))
        self._next_sequential = offset + len(data)
        return data

    def _read_ahead(self, end: int) -> None:
        bs = self.info.block_size
        nxt = (end + bs - 1) // bs
        for index in range(nxt, min(nxt + self.client.readahead_blocks, self.info.block_count)):
            self.client.prefetch(self.info.block(index))

    async def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = max(0, self.info.size - self.pos)
        data = await self.pread(self.pos, size)
        self.pos += len(data)
        return data

    async def readinto(self, buf: bytearray | memoryview) -> int:
        data = await self.read(len(buf))
        memoryview(buf)[: len(data)] = data
        return len(data)

    async def close(self) -> None:
        """Nothing to release: blocks live in the client's shared buffer."""

    async def __aenter__(self) -> AsyncFile:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
