"""Keeping the namespace in step with the sources: lazy listing, TTL refresh, eager loads.

A directory is listed from its source the first time it is needed and again, on access, once its
listing is older than the dataset's TTL (0: never again). Concurrent needs of one directory share
one listing (single-flight). A listing is streamed into LMDB in batches, never held whole.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

from fluidcache.common import errors
from fluidcache.common.aio import SingleFlight
from fluidcache.master.namespace import Counts, Namespace
from fluidcache.master.store import Inode

log = logging.getLogger(__name__)

LIST_BATCH = 1000
FLUSH_DELAY = 0.5  # s: versions checked at open are written to LMDB in batches this often
WALK_CONCURRENCY = 4


class Syncer:
    """Lists directories from their sources into the namespace, when they need it."""

    def __init__(
        self,
        ns: Namespace,
        clock: Callable[[], float] = time.time,
        batch: int = LIST_BATCH,
    ) -> None:
        self.ns = ns
        self.clock = clock
        self.batch = batch
        self.listings = 0  # source listings started, for tests and metrics
        self.validations = 0  # files' versions asked of their source at open
        self._flight: SingleFlight[Counts] = SingleFlight()
        self._checks: SingleFlight[Inode] = SingleFlight()
        # Versions checked at open and not yet written (see flush): ino -> inode as checked.
        self._checked: dict[int, Inode] = {}
        self._flusher: asyncio.Future[None] | None = None

    def stale(self, node: Inode) -> bool:
        """Whether directory ``node`` must be listed before it is used."""
        if not node.is_dir:
            return False
        mount = self.ns.mount_of(node.path)
        if mount is None:
            return False  # the root and datasets' virtual directories live in LMDB only
        if node.synced_at == 0:
            return True
        return mount.ttl > 0 and self.clock() - node.synced_at >= mount.ttl

    async def fresh(self, node: Inode) -> Inode:
        """``node`` after listing it if it was stale (sharing a listing under way)."""
        if not self.stale(node):
            return node
        await self.list_dir(node.ino)
        return self.ns.get(node.ino)

    async def list_dir(self, ino: int) -> Counts:
        """List directory ``ino`` from its source now, or join the listing under way."""
        return await self._flight.do(ino, lambda: self._list(ino))

    async def _list(self, ino: int) -> Counts:
        node = self.ns.get(ino)
        mount = self.ns.mount_of(node.path)
        if mount is None:
            return Counts()
        self.listings += 1
        stamp, prune = self.ns.start_listing(ino)
        counts = Counts(dirs_listed=1)
        batch = []
        async for entry in mount.ufs.list(mount.rel(node.path)):
            batch.append(entry)
            if len(batch) >= self.batch:
                counts.add(self.ns.apply_listing(ino, stamp, batch))
                batch = []
        counts.add(self.ns.apply_listing(ino, stamp, batch))
        dropped = self.ns.finish_listing(ino, stamp, prune, self.clock())
        self.ns.note_snapshot(mount)
        if dropped:
            log.info("%s: %d entries gone from the source", node.path, dropped)
        return counts

    def unchecked(self, node: Inode) -> bool:
        """Whether file ``node``'s version must be asked of its source before it is read: it
        was listed without one, or (with a TTL) it was checked longer ago than that."""
        if node.is_dir:
            return False
        if not node.version:
            return True
        mount = self.ns.mount_of(node.path)
        return mount is not None and mount.ttl > 0 and self.clock() - node.synced_at >= mount.ttl

    async def validate(self, node: Inode, force: bool = False) -> Inode:
        """File ``node`` with the version its source has now (a ``stat`` of it, when
        :meth:`unchecked`); NotFound, and the entry dropped, when the source no longer has it.

        Called when a file is opened (not when listed), so that what is read is the version
        the source has, never blocks of one it no longer has. ``force``: whatever the TTL."""
        recent = self._checked.get(node.ino)
        if recent is not None and recent.path == node.path:
            node = recent
        if not force and not self.unchecked(node):
            return node
        return await self._checks.do(node.ino, lambda: self._validate(node))

    async def flush(self) -> None:
        """Write the versions checked so far to the namespace, in one transaction (a commit
        per open would cost a disk sync each)."""
        if self._flusher is not None and self._flusher is not asyncio.current_task():
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        self._flusher = None
        checked, self._checked = self._checked, {}
        if checked:
            self.ns.validated(checked.values())

    async def _flush_later(self) -> None:
        await asyncio.sleep(FLUSH_DELAY)
        await self.flush()

    async def _validate(self, node: Inode) -> Inode:
        mount = self.ns.mount_of(node.path)
        if mount is None:
            return node
        try:
            status = await mount.ufs.stat(mount.rel(node.path))
        except errors.NotFound:
            self._checked.pop(node.ino, None)
            self.ns.drop(node.ino)
            raise errors.NotFound(f"{node.path}: no longer at the source") from None
        self.ns.note_snapshot(mount)
        if status.is_dir:
            raise errors.IsADirectory(f"{node.path}: is a directory at the source now")
        self.validations += 1
        return self.checked(node, status.size, status.mtime, status.version)

    def learnt(self, node: Inode, size: int, mtime: float, version: str) -> bool:
        """Record the version a worker found when a client opened file ``node``, unless a
        version is known already (checked here meanwhile: as new as that one, or newer)."""
        if node.is_dir or node.version or node.ino in self._checked:
            return False
        self.checked(node, size, mtime, version)
        return True

    def checked(self, node: Inode, size: int, mtime: float, version: str) -> Inode:
        """Record file ``node`` as its source has it now (by :meth:`validate`, or as a worker
        found it when a client opened it); written to LMDB with the next batch."""
        node = dataclasses.replace(
            node, size=size, mtime=mtime, version=version, synced_at=self.clock()
        )
        self._checked[node.ino] = node
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush_later())
        return node

    async def walk(self, top: Inode, force: bool, progress: Counts) -> None:
        """List every directory under ``top`` (stale ones, or all with ``force``).

        ``progress`` is updated as directories complete; a bounded number are listed at once,
        and only inode numbers of directories still to visit are kept in memory.
        """
        queue: asyncio.Queue[int] = asyncio.Queue()
        queue.put_nowait(top.ino)

        async def visit() -> None:
            while True:
                ino = await queue.get()
                try:
                    node = self.ns.get(ino)
                    has_dirs = True
                    if force or self.stale(node):
                        counts = await self.list_dir(ino)
                        progress.add(counts)
                        # A listing that saw no directory spares a scan of its entries.
                        has_dirs = counts.dirs > 0 or not counts.dirs_listed
                    for sub in self.ns.subdirs(ino) if has_dirs else ():
                        queue.put_nowait(sub)
                except errors.NotFound:
                    if ino == top.ino:
                        raise
                    # A directory removed from the source while the walk ran: nothing to load.
                finally:
                    queue.task_done()

        tasks = [asyncio.create_task(visit()) for _ in range(WALK_CONCURRENCY)]
        join = asyncio.create_task(queue.join())
        try:
            done, _ = await asyncio.wait([join, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not join:
                    task.result()  # a visitor failed: raise its error
        finally:
            for task in [join, *tasks]:
                task.cancel()
            await asyncio.gather(join, *tasks, return_exceptions=True)
