"""The master's operations, one method per route: namespace, workers, blocks, statistics, jobs.

:class:`MasterService` wires the parts together (LMDB store, namespace, syncer, block map,
worker registry) and is what the HTTP handlers in :mod:`fluidcache.master.server` call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from fluidcache.common import errors
from fluidcache.common.protocol import (
    ROOT_INO,
    BackupReply,
    BackupRequest,
    FileInfo,
    HeartbeatReply,
    HeartbeatRequest,
    JobsReply,
    JobsRequest,
    ListReply,
    ListRequest,
    LocationsReply,
    LocationsRequest,
    LookupRequest,
    MountInfo,
    RegisterReply,
    RegisterRequest,
    Report,
    StatRequest,
    Status,
    WorkerInfo,
    WorkersReply,
)
from fluidcache.master.backup import BackupInfo, restore_backup, verify_backup, write_backup
from fluidcache.master.blocks import BlockMap
from fluidcache.master.config import MasterConfig
from fluidcache.master.jobs import MetadataLoads
from fluidcache.master.namespace import DatasetStats, Namespace, split_path, valid_name
from fluidcache.master.store import Inode, Store
from fluidcache.master.sync import Syncer
from fluidcache.master.workers import WorkerRegistry
from fluidcache.ufs import create_ufs

log = logging.getLogger(__name__)

MAX_PAGE = 1000
MAX_LOCATIONS = 100_000


class MasterService:
    """Everything the master does, behind one object; create with :meth:`open`."""

    def __init__(
        self,
        config: MasterConfig,
        store: Store,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.ns = Namespace(store)
        self.sync = Syncer(self.ns, clock or time.time)
        self.blocks = BlockMap(store)
        self.workers = WorkerRegistry(
            store, self.blocks, config.worker_timeout, clock or time.monotonic, clock or time.time
        )
        self.loads = MetadataLoads(self.sync, self.resolve)
        self.jobs = PlaceholderJobs()
        self._tasks: set[asyncio.Task[None]] = set()
        self._backups: set[asyncio.Future[BackupInfo]] = set()

    @classmethod
    def open(cls, config: MasterConfig, clock: Callable[[], float] | None = None) -> MasterService:
        """Open (or create) the LMDB environment and declare the configured dataset."""
        store = Store(config.data_dir, config.map_size)
        try:
            if config.restore_from is not None:
                _restore(store, config.restore_from)
            service = cls(config, store, clock)
            mounts = [
                MountInfo(config.dataset, name, uri, dict(config.mount_options.get(name, {})))
                for name, uri in config.mounts
            ]
            # Adapters first: a source that cannot be served is refused before LMDB changes.
            adapters = {(m.dataset, m.name): create_ufs(m.uri, m.options) for m in mounts}
            service.ns.setup_dataset(config.dataset, mounts, config.block_size, config.sync_ttl)
            service.ns.open_mounts(adapters)
            service.workers.forget_all()
        except BaseException:
            store.close()
            raise
        return service

    def start(self) -> None:
        """Start the background sweep of lost workers."""
        every = min(self.config.heartbeat_interval, self.config.worker_timeout / 4)
        self._spawn(self.workers.run_sweeper(every))

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop background work, close the sources, close LMDB."""
        await self.loads.close()
        # A backup reads LMDB in a thread that cannot be interrupted: let it finish first.
        await asyncio.gather(*self._backups, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.ns.close()
        self.store.close()

    # ---- namespace ------------------------------------------------------------------------

    async def resolve(self, path: str) -> Inode:
        """The inode at namespace ``path``, listing each parent on the way if it needs it."""
        node = self.ns.get(ROOT_INO)
        for name in split_path(path):
            if not node.is_dir:
                raise errors.NotADirectory(f"{node.path}: not a directory (in {path})")
            node = await self.sync.fresh(node)
            child = self.ns.child(node.ino, name)
            if child is None:
                raise errors.NotFound(f"{path}: no such file or directory")
            node = child
        return node

    async def _by_ino(self, ino: int) -> Inode:
        """Inode ``ino``, after refreshing its parent's listing if that is stale."""
        node = self.ns.get(ino)
        if node.ino != ROOT_INO and self.sync.stale(parent := self.ns.get(node.parent)):
            await self.sync.fresh(parent)
            node = self.ns.get(ino)
        return node

    async def _node(self, path: str, ino: int) -> Inode:
        return await self._by_ino(ino) if ino else await self.resolve(path)

    async def stat(self, request: StatRequest) -> FileInfo:
        return self.ns.info(await self._node(request.path, request.ino))

    async def lookup(self, request: LookupRequest) -> FileInfo:
        parent = self.ns.get(request.parent)
        if not parent.is_dir:
            raise errors.NotADirectory(f"{parent.path}: not a directory")
        parent = await self.sync.fresh(parent)
        child = self.ns.child(parent.ino, request.name)
        if child is None:
            raise errors.NotFound(f"{parent.path.rstrip('/')}/{request.name}: no such entry")
        return self.ns.info(child)

    async def list_page(self, request: ListRequest) -> ListReply:
        node = await self._node(request.path, request.ino)
        if not node.is_dir:
            raise errors.NotADirectory(f"{node.path}: not a directory")
        node = await self.sync.fresh(node)
        limit = max(1, min(request.limit, MAX_PAGE))
        entries, more = self.ns.page(node.ino, request.cursor, limit)
        cursor = entries[-1].name if more else ""
        return ListReply([self.ns.info(e) for e in entries], cursor)

    # ---- blocks and workers ---------------------------------------------------------------

    def locations(self, request: LocationsRequest) -> LocationsReply:
        if len(request.block_ids) > MAX_LOCATIONS:
            raise errors.InvalidArgument(f"at most {MAX_LOCATIONS} block ids per request")
        held = self.blocks.holders(request.block_ids)
        live = {
            block_id: [w for w in workers if self.workers.is_live(w)]
            for block_id, workers in held.items()
        }
        return LocationsReply({b: ws for b, ws in live.items() if ws})

    def register(self, request: RegisterRequest) -> RegisterReply:
        self.workers.register(request)
        return RegisterReply(self.config.heartbeat_interval, self.ns.mount_infos())

    def heartbeat(self, request: HeartbeatRequest) -> HeartbeatReply:
        return HeartbeatReply(reregister=not self.workers.heartbeat(request))

    def live_workers(self) -> WorkersReply:
        return WorkersReply(self.workers.live())

    # ---- statistics -----------------------------------------------------------------------

    def report(self, dataset: str = "") -> Report:
        """Fluid's dataset statistics: of one dataset, or of all of them with ``""``."""
        names = self.ns.datasets()
        if dataset and dataset not in names:
            raise errors.NotFound(f"dataset {dataset!r}")
        total = DatasetStats()
        for name in [dataset] if dataset else names:
            s = self.ns.stats(name)
            total.bytes += s.bytes
            total.files += s.files
        workers = self.workers.live()
        cached = sum(t.used for w in workers for t in w.tiers)
        capacity = sum(t.capacity for w in workers for t in w.tiers)
        percent = min(100.0, 100.0 * cached / total.bytes) if total.bytes else 0.0
        return Report(total.bytes, total.files, cached, capacity, round(percent, 2), workers)

    def status(self, jobs: JobsRequest) -> Status:
        """What the status page shows: the report of every dataset and the jobs ``jobs`` asks."""
        return Status(self.report(), self.jobs.list(jobs).jobs, time.time())

    def all_workers(self) -> list[WorkerInfo]:
        return self.workers.all()

    # ---- backups --------------------------------------------------------------------------

    async def backup(self, request: BackupRequest) -> BackupReply:
        """Write a backup of the namespace into the backup dir; never overwrites silently."""
        name = request.name or time.strftime("backup-%Y%m%d-%H%M%S.fcbak", time.gmtime())
        if not valid_name(name) or name.startswith("."):
            raise errors.InvalidArgument(f"backup name {name!r}: a plain file name is needed")
        path = self.config.backups / name
        if path.exists():
            raise errors.InvalidArgument(f"backup {path} already exists")
        job = asyncio.ensure_future(asyncio.to_thread(write_backup, self.store, path))
        self._backups.add(job)
        job.add_done_callback(self._backups.discard)
        info = await asyncio.shield(job)
        log.info("backup %s: %d inodes, %d bytes", info.path, info.inodes, info.size)
        return BackupReply(str(info.path), info.size, info.inodes, info.checksum)


class PlaceholderJobs:
    """Stands in for the job engine (``fluidcache.master.jobs``) until it is merged: no jobs.

    The status page needs only :meth:`list`; the engine replaces this class, not its callers.
    """

    def list(self, request: JobsRequest) -> JobsReply:
        return JobsReply([])


def _restore(store: Store, path: Path) -> None:
    """Load ``path`` into a fresh store; with a namespace already there, only verify it."""
    if store.is_empty():
        records = restore_backup(store, path)
        log.info("restored %d records from %s", records, path)
    else:
        verify_backup(path)
        log.warning("data dir already holds a namespace: kept, %s not restored", path)
