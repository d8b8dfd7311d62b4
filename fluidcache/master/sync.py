"""Keeping the namespace in step with the sources: lazy listing, TTL refresh, eager loads.

A directory is listed from its source the first time it is needed and again, on access, once its
listing is older than the dataset's TTL (0: never again). Concurrent needs of one directory share
one listing (single-flight). A listing is streamed into LMDB in batches, never held whole.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from fluidcache.common import errors
from fluidcache.common.aio import SingleFlight
from fluidcache.master.namespace import Counts, Namespace
from fluidcache.master.store import Inode

log = logging.getLogger(__name__)

LIST_BATCH = 1000
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
        self._flight: SingleFlight[Counts] = SingleFlight()

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
        if dropped:
            log.info("%s: %d entries gone from the source", node.path, dropped)
        return counts

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
