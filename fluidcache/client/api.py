"""The async client library: namespace calls to the master, block reads from workers.

``AsyncClient`` is what the FUSE mount and Python code use. Reads map a byte range to blocks;
each block comes from a worker that holds it (locations from the master), else from the worker
placed for it by a stable hash of the block id, which fetches it from the source and keeps it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

import aiohttp

from fluidcache.client.blocks import BlockReader
from fluidcache.client.cache import TtlCache
from fluidcache.client.prefetch import ModelPrefetcher
from fluidcache.client.siblings import SiblingPrefetcher
from fluidcache.common import errors
from fluidcache.common.aio import SingleFlight
from fluidcache.common.http import RpcClient
from fluidcache.common.protocol import (
    COMPLETE,
    FAILED,
    FREE,
    JOB_BACKUP,
    JOB_CANCEL,
    JOB_LIST,
    JOB_LOAD,
    JOB_STATUS,
    JOB_SUBMIT,
    NS_LIST,
    NS_LOOKUP,
    NS_SEEN,
    NS_STAT,
    REPLICAS_ALL,
    REPORT,
    ROOT_INO,
    BlockRef,
    FileInfo,
    FreeReply,
    FreeRequest,
    JobIdRequest,
    JobInfo,
    JobRequest,
    JobsReply,
    JobsRequest,
    ListReply,
    ListRequest,
    LookupRequest,
    Message,
    Report,
    Seen,
    SeenReply,
    SeenRequest,
    StatRequest,
    check_name,
)
from fluidcache.common.tls import client_ssl

log = logging.getLogger(__name__)

MASTER_RETRY_WINDOW = 10.0
"""Seconds a namespace call keeps retrying a master that refuses connections (a restart)."""
LIST_AFTER_MISSES = 2
"""Lookups that miss the metadata cache in one directory before its pages are listed."""
SPANS_KEPT = 64  # listed pages remembered per directory
PAGES_IN_ORDER = 8  # pages of a directory listed in name order before lookups list at the name
AHEAD_BATCH = 4
"""A read-ahead window asks for its next blocks once a quarter of it is due (at least one)."""
STREAMING_READ = 512 * 1024
"""A read this large at a file's start is taken for a reader going through the file (the kernel
asks this much when a program reads 128 KiB or more at once): its window starts wide."""
START_WINDOW = 16
"""The read-ahead window, in blocks, after such a first read: a source that caps each connection
(an object store, a hub's CDN) fills its link only with many blocks under way, and the window
would otherwise grow only as the first blocks arrive (the kernel asks for more as they do)."""
SEEN_DELAY = 0.5
"""Seconds versions learnt at open wait to be told to the master, in one batch."""


def replicas_value(replicas: int | str) -> int:
    """``replicas`` as the wire gives it: a count, or ``"all"`` for every live worker."""
    if replicas == "all":
        return REPLICAS_ALL
    try:
        return int(replicas)
    except ValueError:
        raise errors.InvalidArgument(f"replicas: {replicas!r} is not a number or 'all'") from None


class AsyncClient:
    """Reads a fluidcache dataset. Use as ``async with AsyncClient(url, token) as c: ...``.

    Paths are relative to the dataset (``/`` is its root) and so are the inode numbers this
    client hands out: the dataset root is inode 1, as a FUSE mount needs. Metadata is cached for
    ``meta_ttl`` seconds; recently read blocks are kept in memory up to ``buffer_bytes``. ``ca``
    is the CA file that HTTPS servers of the cluster are verified against (default
    ``$FLUIDCACHE_TLS_CA``, else the system's trust store). A client used after :meth:`aclose`
    raises ``InvalidArgument``.
    """

    def __init__(
        self,
        master_url: str,
        token: str,
        *,
        dataset: str = "default",
        meta_ttl: float = 5.0,
        buffer_bytes: int = 128 * 1024 * 1024,
        readahead_blocks: int = 64,
        short_circuit: bool = True,
        node: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        ca: str = "",
        model_prefetch: bool = True,
        dir_prefetch: bool = True,
    ) -> None:
        self.master_url = master_url
        self._ssl = client_ssl(ca)
        self.dataset = dataset
        self._prefix = f"/{dataset}"
        self._root_ino = 0  # the dataset root's inode at the master, learnt on first use
        self._token = token
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._stats: TtlCache[str, FileInfo] = TtlCache(meta_ttl, 100_000, clock)
        self._inodes: TtlCache[int, FileInfo] = TtlCache(meta_ttl, 100_000, clock)
        self._checked: TtlCache[int, bool] = TtlCache(meta_ttl, 100_000, clock)
        self._pages: TtlCache[tuple[int, str, int], ListReply] = TtlCache(meta_ttl, 1_000, clock)
        self._misses: TtlCache[int, int] = TtlCache(meta_ttl, 1_000, clock)  # lookups by dir
        self._listings: SingleFlight[ListReply] = SingleFlight()
        # by directory: the name spans (after lo, up to hi; "": to the end) of pages listed
        self._spans: TtlCache[int, list[tuple[str, str]]] = TtlCache(meta_ttl, 1_000, clock)
        self.blocks = BlockReader(
            lambda: self.session,
            lambda: self._master,
            token,
            ttl=meta_ttl,
            buffer_bytes=buffer_bytes,
            clock=clock,
            node=node,
            short_circuit=short_circuit,
            ssl=self._ssl,
        )
        self._background: set[asyncio.Task[None]] = set()
        self._seen: list[Seen] = []  # versions learnt at open, not yet told to the master
        self._learnt: dict[int, FileInfo] = {}  # those files, by inode, until the master knows
        self._seen_task: asyncio.Future[None] | None = None
        self.readahead_blocks = readahead_blocks
        self._models = ModelPrefetcher(self) if model_prefetch else None
        self._opening: SingleFlight[FileInfo | None] = SingleFlight()  # opens at a worker
        self._opening_ahead: set[int] = set()  # inodes of those opened ahead of their readers
        self.siblings = SiblingPrefetcher(self, clock=clock) if dir_prefetch else None

    # ---- lifecycle ------------------------------------------------------------------------

    def _ensure_open(self) -> None:
        if self._closed:
            raise errors.InvalidArgument("client is closed")

    @property
    def session(self) -> aiohttp.ClientSession:
        self._ensure_open()
        if self._session is None:
            # Per worker: room for a whole read-ahead window and the demand reads beside it
            # (a worker serves those first; a full pool would queue them here instead).
            per_host = self.readahead_blocks + 32
            connector = aiohttp.TCPConnector(
                limit=2 * per_host, limit_per_host=per_host, ssl=self._ssl
            )
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    @property
    def _master(self) -> RpcClient:
        return RpcClient(self.master_url, self._token, self.session, ssl=self._ssl)

    async def aclose(self) -> None:
        """Stop background reads and close connections."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._seen_task is not None:
            self._seen_task.cancel()
        if self._session is not None:
            await self._tell_seen(0)
            await self.blocks.flush()
        await self.blocks.close()
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
        info = FileInfo(
            ROOT_INO if info.ino == root else info.ino,
            ROOT_INO if info.parent in (root, ROOT_INO) else info.parent,
            info.name,
            info.path[len(self._prefix) :] or "/",
            info.is_dir,
            info.size,
            info.mtime,
            info.uri,
            info.version,
            info.block_size,
        )
        if not info.version and not info.is_dir:
            # A listing that gives no version never hides one this client learnt at open: the
            # file would be opened at a worker again (a source GET) for nothing. Reads carry the
            # version, so one the source no longer has gives an error, never other bytes.
            known = self._learnt.get(info.ino) or self._inodes.get_stale(info.ino)
            same = known is not None and (known.uri, known.size) == (info.uri, info.size)
            if known is not None and same and known.version:
                info = dataclasses.replace(info, version=known.version, mtime=known.mtime)
        self._stats.put(info.path, info)
        self._inodes.put(info.ino, info)
        return info

    async def _master_ino(self, ino: int) -> int:
        if ino != ROOT_INO:
            return ino
        if not self._root_ino:
            await self.stat("/")
        return self._root_ino

    async def _ask(self, path: str, request: Message, stale: FileInfo | None) -> FileInfo:
        """A namespace answer from the master, remembered. While the master cannot be reached
        (a restart), what was learnt before (``stale``, expired) is used at once; without it
        the call is retried for at most MASTER_RETRY_WINDOW seconds, then Unavailable."""
        try:
            info = await self._master.call(
                path, request, FileInfo, retry_for=0.0 if stale else MASTER_RETRY_WINDOW
            )
        except errors.Unavailable as e:
            if stale is None:
                raise
            log.info("master unreachable (%s): using what was learnt of %s", e, stale.path)
            return stale
        return self._remember(info)

    async def stat(self, path: str) -> FileInfo:
        """The inode at ``path`` (``/`` is the dataset root)."""
        self._ensure_open()
        path = "/" + path.strip("/")
        info = self._stats.get(path)
        if info is not None:
            return info
        full = self._prefix + (path if path != "/" else "")
        return await self._ask(NS_STAT, StatRequest(path=full), self._stats.get_stale(path))

    async def getattr(self, ino: int) -> FileInfo:
        """The inode numbered ``ino``."""
        self._ensure_open()
        info = self._inodes.get(ino)
        if info is not None:
            return info
        stale = self._inodes.get_stale(ino)
        request = StatRequest(ino=await self._master_ino(ino))
        return await self._ask(NS_STAT, request, stale)

    async def validate(self, info: FileInfo) -> FileInfo:
        """``info`` as it is to be read: a file listed without its version (``version == ""``)
        has it asked of the source by the master first (NotFound if the source no longer has
        it). A version checked through this client is used as it is for its metadata TTL; after
        that the master checks it again if the dataset's TTL says so."""
        if info.is_dir or (info.version and self._checked.get(info.ino)):
            return info
        learnt = self._learnt.get(info.ino)
        if not info.version and learnt is not None:
            return learnt  # opened here moments ago; the master is about to be told
        if not info.version and info.block_size > 0:
            joined_ahead = info.ino in self._opening_ahead
            at_worker = functools.partial(self._open_at_worker, info)
            try:
                opened = await self._opening.do(info.ino, at_worker)
            except errors.FluidcacheError as e:
                # An open ahead that failed (the source away then, maybe back now) is not this
                # reader's: it gets an open of its own (a file gone is gone for both).
                if not joined_ahead or isinstance(e, errors.NotFound):
                    raise
                opened = await self._opening.do(info.ino, at_worker)
            if opened is not None:
                if self.siblings is not None:
                    self.siblings.cold(opened)
                return opened
        request = StatRequest(ino=await self._master_ino(info.ino), validate=True)
        retry = 0.0 if info.version else MASTER_RETRY_WINDOW
        try:
            checked = await self._master.call(NS_STAT, request, FileInfo, retry_for=retry)
        except errors.Unavailable as e:
            if not info.version:
                raise
            # The master is away (a restart): read the version learnt before; its blocks are
            # keyed by it, so a changed source gives an error, never mixed bytes.
            log.info("master unreachable (%s): %s read at its known version", e, info.path)
            return info
        info = self._remember(checked)
        self._checked.put(info.ino, True)
        return info

    async def open_ahead(self, info: FileInfo) -> bool:
        """Open file ``info`` (listed without its version) at a worker ahead of its reader,
        as :meth:`validate` would (the reader's open joins it, or finds it done); whether it
        opened. Errors are the reader's to see: ignored here."""
        self._opening_ahead.add(info.ino)
        try:
            opening = self._opening.do(info.ino, lambda: self._open_at_worker(info, ahead=True))
            return await opening is not None
        except errors.FluidcacheError:
            return False
        finally:
            self._opening_ahead.discard(info.ino)

    def unopened(self, info: FileInfo) -> bool:
        """Whether file ``info`` is known here as listed only: no version learnt, no open of
        it under way."""
        if info.ino in self._opening or info.ino in self._learnt:
            return False
        known = self._inodes.get_stale(info.ino)
        return known is None or not known.version

    async def _open_at_worker(self, info: FileInfo, ahead: bool = False) -> FileInfo | None:
        """``info`` at the version a worker found reading its first block (kept there, and
        its file known here): one source request instead of a version check then a read.
        The master is told later, in a batch. None if no worker could be asked."""
        try:
            opened = await self.blocks.open_file(info.uri, info.block_size, info.size, ahead)
        except errors.NotFound:
            await self.recheck(info)  # the master drops the entry as well
            raise
        except errors.Unavailable as e:
            log.info("%s: no worker to open it (%s); asking the master", info.path, e.message)
            return None
        info = dataclasses.replace(
            info, size=opened.size, mtime=opened.mtime, version=opened.version
        )
        self._stats.put(info.path, info)
        self._inodes.put(info.ino, info)
        self._checked.put(info.ino, True)
        seen = Seen(await self._master_ino(info.ino), info.size, info.mtime, info.version)
        self._seen.append(seen)
        self._learnt[info.ino] = info
        if self._seen_task is None:
            self._seen_task = asyncio.ensure_future(self._tell_seen(SEEN_DELAY))
        return info

    async def _tell_seen(self, delay: float) -> None:
        """Tell the master the versions learnt at open, after ``delay`` (in one call)."""
        try:
            await asyncio.sleep(delay)
        finally:
            self._seen_task = None
        batch, self._seen = self._seen, []
        told = [(ino, self._learnt[ino]) for ino in list(self._learnt)]
        if batch:
            with contextlib.suppress(errors.FluidcacheError):  # the master can check them again
                await self._master.call(NS_SEEN, SeenRequest(batch), SeenReply)
        for ino, info in told:
            if self._learnt.get(ino) is info:  # not learnt again meanwhile
                del self._learnt[ino]

    async def recheck(self, info: FileInfo) -> None:
        """A read found ``info``'s version gone from the source: have the master ask the source
        again (whatever the dataset's TTL), so the next open reads the version it has now."""
        self._checked.pop(info.ino)
        request = StatRequest(ino=await self._master_ino(info.ino), recheck=True)
        with contextlib.suppress(errors.FluidcacheError):
            self._remember(await self._master.call(NS_STAT, request, FileInfo))

    async def lookup(self, parent: int, name: str) -> FileInfo:
        """The entry ``name`` of directory ``parent`` (from the metadata cache when fresh);
        InvalidArgument for a name that is not one (``..``, a slash, NUL, overlong)."""
        try:
            check_name(name)
        except ValueError as e:
            raise errors.InvalidArgument(str(e)) from None
        known = self._inodes.get_stale(parent)
        stale = None
        if known is not None:
            path = known.path.rstrip("/") + "/" + name
            hit = self._stats.get(path)
            if hit is None and await self._listed(parent, name):
                hit = self._stats.get(path)
            if hit is not None:
                return hit
            stale = self._stats.get_stale(path)
        request = LookupRequest(await self._master_ino(parent), name)
        return await self._ask(NS_LOOKUP, request, stale)

    async def _listed(self, parent: int, name: str) -> bool:
        """Whether the page of directory ``parent`` where ``name`` would be was listed here, now
        or within the TTL, once lookups in it keep missing: one call for the next thousand
        names (a cold epoch opens every file of its directories) instead of one per name."""
        misses = (self._misses.get(parent) or 0) + 1
        self._misses.put(parent, misses)
        if misses < LIST_AFTER_MISSES:
            return False
        for _ in range(PAGES_IN_ORDER):
            spans = self._spans.get(parent) or []
            if any(lo < name and (not hi or name <= hi) for lo, hi in spans):
                return True  # listed: there, or not (the master is asked, for a newer entry)
            if len(spans) < PAGES_IN_ORDER:
                # A directory's first pages go in order (from its first name, then on from
                # the furthest page below the name): a shuffled epoch over a small directory
                # lists it in as many calls as it has pages, not a page from every name.
                cursor = max((hi for _, hi in spans if hi and hi < name), default="")
            else:
                cursor = name[:-1]  # from just before the name: its page holds it if any does
            try:
                page = await self._listings.do(
                    (parent, cursor), functools.partial(self.list_page, parent, cursor)
                )
            except errors.FluidcacheError:
                return False  # asked one by one instead
            spans = self._spans.get(parent) or []  # as other lookups left them meanwhile
            if (cursor, page.cursor) not in spans:
                self._spans.put(parent, [*spans, (cursor, page.cursor)][-SPANS_KEPT:])
        return True

    async def list_page(self, ino: int, cursor: str = "", limit: int = 1000) -> ListReply:
        """One page of directory ``ino`` after the name ``cursor`` (kept for the metadata TTL:
        listing a directory again within it asks nothing of the master; retried for a while
        when the master cannot be reached)."""
        key = (ino, cursor, limit)
        cached = self._pages.get(key)
        if cached is not None:
            return cached
        request = ListRequest(ino=await self._master_ino(ino), cursor=cursor, limit=limit)
        page = await self._master.call(NS_LIST, request, ListReply, retry_for=MASTER_RETRY_WINDOW)
        entries = [self._remember(e) for e in page.entries]
        if page.final:  # as the master would answer an open's check of them: no call for it
            for e in entries:
                if e.version and not e.is_dir:
                    self._checked.put(e.ino, True)
        firsts = [e.block(0) for e in entries if not e.is_dir and e.size > 0 and e.version]
        if firsts:
            self._spawn(self._warm(firsts))
        reply = ListReply(entries, page.cursor, page.final)
        self._pages.put(key, reply)
        return reply

    async def _warm(self, refs: list[BlockRef]) -> None:
        with contextlib.suppress(errors.FluidcacheError):  # a hint: reads work without it
            await self.blocks.warm(refs)

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

    # ---- operations: warm-ups, backups, free (the master's job API) -----------------------

    async def load(
        self,
        paths: Sequence[str] = ("/",),
        *,
        replicas: int | str = 1,
        metadata: bool = False,
        pin: bool = False,
        schedule: str = "",
        after: str = "",
        wait: bool = False,
    ) -> JobInfo:
        """Warm ``paths`` (dataset-relative) on ``replicas`` workers each (``"all"``: every
        worker, the source read once); returns the job, or with ``wait`` the finished job."""
        request = JobRequest(
            JOB_LOAD,
            self.dataset,
            list(paths),
            replicas_value(replicas),
            metadata,
            pin,
            schedule,
            after,
        )
        return await self.submit(request, wait)

    async def backup(
        self,
        name: str = "",
        *,
        directory: str = "",
        schedule: str = "",
        after: str = "",
        wait: bool = False,
    ) -> JobInfo:
        """Write a metadata backup on the master (a job, like a load), in its backup dir or in
        ``directory`` (absolute, under one of the master's backup roots)."""
        request = JobRequest(JOB_BACKUP, self.dataset, ["/"], schedule=schedule, after=after)
        return await self.submit(dataclasses.replace(request, name=name, directory=directory), wait)

    async def submit(self, request: JobRequest, wait: bool = False) -> JobInfo:
        job = await self._master.call(JOB_SUBMIT, request, JobInfo)
        return await self.wait(job.job_id) if wait else job

    async def job(self, job_id: str) -> JobInfo:
        return await self._master.call(JOB_STATUS, JobIdRequest(job_id), JobInfo)

    async def jobs(self, phase: str = "", limit: int = 100) -> list[JobInfo]:
        """Jobs newest first, of one phase (Pending, Executing, Complete, Failed) or all."""
        return (await self._master.call(JOB_LIST, JobsRequest(phase, limit), JobsReply)).jobs

    async def cancel(self, job_id: str) -> JobInfo:
        return await self._master.call(JOB_CANCEL, JobIdRequest(job_id), JobInfo)

    async def wait(self, job_id: str, poll: float = 0.5) -> JobInfo:
        """The job once its run is over (Complete or Failed); bound it with ``asyncio.timeout``.

        A scheduled job is over when a run is, so this returns its latest run's outcome."""
        while True:
            job = await self.job(job_id)
            if job.phase in (COMPLETE, FAILED) and job.finished:
                return job
            await asyncio.sleep(poll)

    async def free(self, paths: Sequence[str] = ("/",)) -> FreeReply:
        """Evict the blocks of ``paths`` from every worker (pinned ones too)."""
        return await self._master.call(FREE, FreeRequest(self.dataset, list(paths)), FreeReply)

    # ---- data -----------------------------------------------------------------------------

    def prefetch(self, info: FileInfo, index: int) -> None:
        """Start bringing block ``index`` of ``info`` close, in the background."""
        self.prefetch_many(info, range(index, index + 1))

    def prefetch_many(self, info: FileInfo, indexes: range) -> None:
        """Start bringing blocks ``indexes`` of ``info`` close, in the background (their holders
        asked of the master in one call)."""
        if indexes:
            self._spawn(self.blocks.prefetch_many([info.block(i) for i in indexes]))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def pread(self, info: FileInfo, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes of file ``info`` from ``offset`` (fewer only at end of file)."""
        return _bytes(await self.pread_buffer(info, offset, size))

    async def pread_buffer(self, info: FileInfo, offset: int, size: int) -> bytes | memoryview:
        """As :meth:`pread`, but a read within a block held on this node comes as a view of its
        file (:meth:`BlockReader.read`), for a caller that only copies it on."""
        self._ensure_open()
        if info.is_dir:
            raise errors.IsADirectory(info.path)
        end = min(offset + size, info.size)
        if offset >= end:
            return b""
        bs = info.block_size
        first, last = offset // bs, (end - 1) // bs
        if first == last:  # most reads: no task for a gather of one
            return await self.blocks.read(info.block(first), offset - first * bs, end - offset)
        parts = await asyncio.gather(
            *(
                self.blocks.read(
                    info.block(i),
                    max(offset, i * bs) - i * bs,
                    min(end, (i + 1) * bs) - max(offset, i * bs),
                )
                for i in range(first, last + 1)
            )
        )
        return b"".join(parts)

    async def cached_fraction(self, info: FileInfo) -> float:
        """The fraction of the file's blocks that some worker holds (1.0 for an empty file)."""
        if info.is_dir or info.block_count == 0:
            return 1.0
        refs = [info.block(i) for i in range(info.block_count)]
        holders = await self.blocks.locate(refs, refresh=True)
        held = sum(1 for r in refs if holders.get(r.id))
        return held / len(refs)

    async def open(self, path: str) -> AsyncFile:
        """A read-only file object for ``path``."""
        info = await self.stat(path)
        if info.is_dir:
            raise errors.IsADirectory(path)
        info = await self.validate(info)
        self.opened(info)
        return AsyncFile(self, info)

    def opened(self, info: FileInfo) -> None:
        """A file was opened (here or by the FUSE mount): start the prefetch it calls for."""
        if self._models is not None and self._models.wants(info):
            self._spawn(self._models.opened(info))
        if self.siblings is not None:
            self.siblings.opened(info)


class AsyncFile:
    """A read-only file with a position.

    Sequential reads trigger read-ahead with a window that doubles (up to the client's
    ``readahead_blocks``, and half its buffer when the blocks land there, see
    :meth:`BlockReader.ahead_room`) while access stays sequential and falls back to none on a
    jump, so random access never over-fetches. "Sequential" tolerates the reordering of a kernel
    that has several read-ahead requests in flight: a read within a block of the furthest end
    seen so far counts. Read-aheads are marked as such: a worker serves readers' demand reads
    before them (:class:`fluidcache.worker.fetch.Slots`), so a deep window does not hurt others.
    """

    def __init__(self, client: AsyncClient, info: FileInfo) -> None:
        self.client = client
        self.info = info
        self.pos = 0
        self._next_sequential = 0
        self._window = 0
        self._ahead = 0  # blocks below this index were already asked for

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
        return _bytes(await self.pread_buffer(offset, size))

    async def pread_buffer(self, offset: int, size: int) -> bytes | memoryview:
        """As :meth:`pread`, as a view where :meth:`AsyncClient.pread_buffer` gives one."""
        end = min(offset + size, self.info.size)
        if abs(offset - self._next_sequential) <= self.info.block_size:
            room = self.client.blocks.ahead_room(self.info.block_size)
            limit = (
                self.client.readahead_blocks
                if room is None
                else min(room, self.client.readahead_blocks)
            )
            start = START_WINDOW if offset == 0 and size >= STREAMING_READ else 1
            self._window = min(max(start, self._window * 2), limit)
            self._next_sequential = max(self._next_sequential, end)
            self._read_ahead(self._next_sequential)
        else:
            self._window, self._ahead = 0, 0
            self._next_sequential = end
        try:
            return await self.client.pread_buffer(self.info, offset, size)
        except errors.SourceChanged:
            # Never a mix of versions: this open fails; the next one reads the new version.
            await self.client.recheck(self.info)
            raise

    def _read_ahead(self, end: int) -> None:
        bs = self.info.block_size
        nxt = (end + bs - 1) // bs
        stop = min(nxt + self._window, self.info.block_count)
        start = max(nxt, self._ahead)
        if stop - start < self._window // AHEAD_BATCH and stop < self.info.block_count:
            return  # a few more first: their holders are then asked in one call, not one each
        self.client.prefetch_many(self.info, range(start, stop))
        self._ahead = max(self._ahead, stop)

    async def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = max(0, self.info.size - self.pos)
        data = await self.pread(self.pos, size)
        self.pos += len(data)
        return data

    async def readinto(self, buf: bytearray | memoryview) -> int:
        """Read into ``buf``; the number of bytes read (0 at end of file)."""
        data = await self.read(len(buf))
        memoryview(buf)[: len(data)] = data
        return len(data)

    async def close(self) -> None:
        """Nothing to release: blocks live in the client's shared buffer."""

    async def __aenter__(self) -> AsyncFile:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _bytes(data: bytes | memoryview) -> bytes:
    return data if isinstance(data, bytes) else data.tobytes()
