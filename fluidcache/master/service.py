"""The master's operations, one method per route: namespace, workers, blocks, statistics, jobs.

:class:`MasterService` wires the parts together (LMDB store, namespace, syncer, block map,
worker registry) and is what the HTTP handlers in :mod:`fluidcache.master.server` call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from fluidcache.common import errors
from fluidcache.common.http import RpcClient, client_session
from fluidcache.common.protocol import (
    JOB_BACKUP,
    JOB_LOAD,
    REPLICAS_ALL,
    ROOT_INO,
    BackupReply,
    BackupRequest,
    CapacityShortfall,
    DatasetReport,
    FileInfo,
    FreeReply,
    FreeRequest,
    HeartbeatReply,
    HeartbeatRequest,
    JobInfo,
    JobRequest,
    JobsRequest,
    ListReply,
    ListRequest,
    LocationsReply,
    LocationsRequest,
    LookupRequest,
    MountInfo,
    ReadBytes,
    RegisterReply,
    RegisterRequest,
    Report,
    SeenReply,
    SeenRequest,
    StatRequest,
    Status,
    WorkerInfo,
    WorkersReply,
    check_name,
    valid_name,
)
from fluidcache.master.backup import BackupInfo, restore_backup, verify_backup, write_backup
from fluidcache.master.blocks import BlockMap
from fluidcache.master.config import MasterConfig
from fluidcache.master.jobs import Jobs, MetadataLoads, Progress
from fluidcache.master.metrics import MasterMetrics
from fluidcache.master.namespace import DatasetStats, Mount, Namespace, split_path
from fluidcache.master.store import Inode, Store
from fluidcache.master.sync import Syncer
from fluidcache.master.warmup import Warmer
from fluidcache.master.workers import WorkerRegistry
from fluidcache.ufs import create_ufs

log = logging.getLogger(__name__)

MAX_PAGE = 1000
MAX_LOCATIONS = 100_000
MAX_TARGETS = 1000
WORKER_RPC_TIMEOUT = 600.0  # a cache request waits for its block to come from the source
SHARED_BYTES_TTL = 5.0  # seconds a scan of the namespace for shared content is reused


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
        self.warmer = Warmer(self.ns, self.sync, self.blocks, self.workers.live, self._worker_rpc)
        self.jobs = Jobs(
            store,
            {JOB_LOAD: self._run_load, JOB_BACKUP: self._run_backup},
            self._check_job,
            clock or time.time,
        )
        self.jobs.open()
        self._clock = clock or time.monotonic
        self._started = self._clock()
        self._session: aiohttp.ClientSession | None = None
        self.metrics = MasterMetrics(self)
        self._tasks: set[asyncio.Task[None]] = set()
        self._backups: set[asyncio.Future[BackupInfo]] = set()
        self._shared: tuple[float, dict[str, int], int] | None = None

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
        """Start the background sweep of lost workers and the jobs (resuming interrupted ones)."""
        every = min(self.config.heartbeat_interval, self.config.worker_timeout / 4)
        self._spawn(self.workers.run_sweeper(every))
        self._session = client_session()
        self._started = self._clock()
        self.jobs.start()
        for mount in self.ns.mounts.values():
            self._spawn(self._open_source(mount))

    async def _open_source(self, mount: Mount) -> None:
        """Look at each source's root once at start: an ``hf://`` branch is resolved to its
        commit now (or the one stored with the mount is taken up), so file URIs name that
        commit from the first one served."""
        try:
            await mount.ufs.stat("")
        except errors.FluidcacheError as e:
            log.warning("source %s: %s", mount.ufs.root_uri, e.message)
        else:
            self.ns.note_snapshot(mount)

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop background work, close the sources, close LMDB."""
        await self.jobs.close()
        await self.loads.close()
        # A backup reads LMDB in a thread that cannot be interrupted: let it finish first.
        await asyncio.gather(*self._backups, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.sync.flush()
        await self.ns.close()
        if self._session is not None:
            await self._session.close()
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
        node = await self._node(request.path, request.ino)
        if request.validate or request.recheck:
            node = await self.sync.validate(node, force=request.recheck)
        return self.ns.info(node)

    async def seen(self, request: SeenRequest) -> SeenReply:
        """Record versions clients learnt when opening files (entries gone, or whose version
        is known already, are skipped), in one write: answers given after it carry them."""
        recorded = 0
        for seen in request.files:
            try:
                node = self.ns.get(seen.ino)
            except errors.NotFound:
                continue
            recorded += self.sync.learnt(node, seen.size, seen.mtime, seen.version)
        await self.sync.flush()
        return SeenReply(recorded)

    async def lookup(self, request: LookupRequest) -> FileInfo:
        try:
            check_name(request.name)
        except ValueError as e:
            raise errors.InvalidArgument(str(e)) from None
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
        mount = self.ns.mount_of(node.path)
        final = mount is not None and mount.ttl <= 0
        return ListReply([self.ns.info(e) for e in entries], cursor, final)

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
        """Fluid's dataset statistics: of one dataset, or of all of them with ``""``.

        Totals, one entry per dataset (with capacity advice when it cannot fit), the hit ratios
        from the live workers' read counts, and each live worker's tiers.
        """
        names = self.ns.datasets()
        if dataset and dataset not in names:
            raise errors.NotFound(f"dataset {dataset!r}")
        workers = self.workers.live()
        cached = sum(t.used for w in workers for t in w.tiers)
        capacity = sum(t.capacity for w in workers for t in w.tiers)
        reads = sum((w.reads for w in workers), ReadBytes())
        ratios = _hit_ratios(reads)
        shared, shared_total = self._shared_bytes()
        entries = []
        for name in [dataset] if dataset else names:
            s = self.ns.stats(name)
            entries.append(
                DatasetReport(
                    name,
                    s.bytes,
                    s.files,
                    cached,
                    capacity,
                    _percent(cached, s.bytes),
                    *ratios,
                    shortfall=capacity_shortfall(s.bytes, capacity, len(workers)),
                    shared_bytes=shared.get(name, 0),
                    snapshots=self._snapshots(name),
                )
            )
        total = DatasetStats(
            bytes=sum(d.ufs_total_bytes for d in entries),
            files=sum(d.file_count for d in entries),
        )
        lost = sum(1 for w in self.workers.all() if w.state != "live")
        return Report(
            total.bytes,
            total.files,
            cached,
            capacity,
            _percent(cached, total.bytes),
            workers,
            entries,
            reads,
            *ratios,
            lost_workers=lost,
            shared_bytes=shared_total,
        )

    def _snapshots(self, dataset: str) -> dict[str, str]:
        """Mount name -> the URI it serves, where that names more than the configured URI
        (an ``hf://`` branch resolved to a commit)."""
        out = {}
        for m in self.ns.mounts.values():
            if m.info.dataset == dataset and (
                uri := m.ufs.uri("").rstrip("/")
            ) != m.info.uri.rstrip("/"):
                out[m.info.name] = uri
        return out

    def _shared_bytes(self) -> tuple[dict[str, int], int]:
        """:meth:`Namespace.shared_bytes`, recomputed at most every few seconds (a full scan;
        the status page asks for the report every 1.5 s)."""
        now = self._clock()
        if self._shared is None or now - self._shared[0] >= SHARED_BYTES_TTL:
            self._shared = (now, *self.ns.shared_bytes())
        return self._shared[1], self._shared[2]

    def status(self, jobs: JobsRequest) -> Status:
        """What the status page shows: the report of every dataset and the jobs ``jobs`` asks."""
        return Status(self.report(), self.jobs.list(jobs).jobs, time.time())

    def all_workers(self) -> list[WorkerInfo]:
        return self.workers.all()

    # ---- jobs -----------------------------------------------------------------------------

    def _worker_rpc(self, worker_id: str) -> RpcClient:
        info = self.workers.get_live(worker_id)
        if info is None or self._session is None:
            raise errors.Unavailable(f"worker {worker_id} is not live")
        return RpcClient(info.address, self.config.token, self._session, WORKER_RPC_TIMEOUT)

    async def _targets(self, dataset: str, paths: list[str]) -> list[Inode]:
        """The inodes of dataset-relative ``paths`` (NotFound names the first missing one)."""
        if dataset not in self.ns.datasets():
            raise errors.NotFound(f"dataset {dataset!r}")
        if not paths or len(paths) > MAX_TARGETS:
            raise errors.InvalidArgument(f"paths: give 1 to {MAX_TARGETS} paths")
        for path in paths:
            if not path.startswith("/"):
                raise errors.InvalidArgument(
                    f"paths: {path!r} must start with / (the dataset root)"
                )
        return [await self.resolve(f"/{dataset}{path}") for path in paths]

    async def _check_job(self, request: JobRequest) -> None:
        """Refuse a job whose targets, replicas or backup name cannot be served."""
        if request.kind == JOB_BACKUP:
            self._backup_path(request.name, request.directory)
            return
        await self._targets(request.dataset, request.paths)
        if request.replicas != REPLICAS_ALL:
            self.warmer.replica_count(request.replicas)

    async def _wait_workers(self, count: int) -> None:
        """After a master restart, give workers time to register again (bounded)."""
        grace = 2 * self.config.heartbeat_interval + 1
        deadline = self._started + max(grace, 3 * self.config.worker_timeout)
        while True:
            live = len(self.workers.live())
            now = self._clock()
            if live >= count and now - self._started >= grace:
                return
            if now >= deadline:
                if live >= count:
                    return
                raise errors.Unavailable(
                    f"{live} live workers, {count} needed: the others did not register "
                    f"within {deadline - self._started:.0f} s of the master's start"
                )
            await asyncio.sleep(0.2)

    async def _run_load(self, job: JobInfo, progress: Progress, resumed: bool) -> str:
        tops = await self._targets(job.dataset, job.paths)
        await self.warmer.load(
            tops, job.replicas, job.metadata, job.pin, progress, self._wait_workers
        )
        return ""

    async def _run_backup(self, job: JobInfo, progress: Progress, resumed: bool) -> str:
        name = job.name
        if job.schedule or (resumed and name):
            stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
            name = f"{name or 'backup'}-{stamp}.fcbak"
        return (await self.backup(BackupRequest(name, job.directory))).path

    async def free(self, request: FreeRequest) -> FreeReply:
        """Evict the blocks of the target paths from every worker (pins dropped too)."""
        return await self.warmer.free(await self._targets(request.dataset, request.paths))

    # ---- backups --------------------------------------------------------------------------

    def _backup_dir(self, directory: str) -> Path:
        """The backup dir, or ``directory`` when it is absolute, has no ``..`` and lies under
        the backup dir or a backup root (symlinks resolved, so none leads outside)."""
        if not directory:
            return self.config.backups
        if not directory.startswith("/"):
            raise errors.InvalidArgument(f"directory: {directory!r} is not an absolute path")
        if ".." in directory.split("/"):
            raise errors.InvalidArgument(f"directory: {directory!r} must not contain '..'")
        roots = [self.config.backups, *self.config.backup_roots]
        real = Path(os.path.realpath(directory))
        if not any(real.is_relative_to(os.path.realpath(r)) for r in roots):
            allowed = ", ".join(str(r) for r in roots)
            raise errors.InvalidArgument(
                f"directory: {directory} is outside the master's backup directories ({allowed})"
            )
        return real

    def _backup_path(self, name: str, directory: str = "") -> Path:
        if name and (not valid_name(name) or name.startswith(".")):
            raise errors.InvalidArgument(f"backup name {name!r}: a plain file name is needed")
        path = self._backup_dir(directory) / name
        if name and path.exists():
            raise errors.InvalidArgument(f"backup {path} already exists")
        return path

    async def backup(self, request: BackupRequest) -> BackupReply:
        """Write a backup of the namespace into the backup dir (or the request's directory);
        never overwrites silently."""
        name = request.name or time.strftime("backup-%Y%m%d-%H%M%S.fcbak", time.gmtime())
        path = self._backup_path(name, request.directory)
        job = asyncio.ensure_future(asyncio.to_thread(write_backup, self.store, path))
        self._backups.add(job)
        job.add_done_callback(self._backups.discard)
        info = await asyncio.shield(job)
        log.info("backup %s: %d inodes, %d bytes", info.path, info.inodes, info.size)
        return BackupReply(str(info.path), info.size, info.inodes, info.checksum)


def _percent(part: int, whole: int) -> float:
    return round(min(100.0, 100.0 * part / whole), 2) if whole else 0.0


def _hit_ratios(reads: ReadBytes) -> tuple[float, float, float]:
    """(cacheHitRatio, localHitRatio, remoteHitRatio) as Fluid computes them from Alluxio's
    local, remote and source bytes."""
    return (
        reads.ratio(reads.local + reads.remote),
        reads.ratio(reads.local),
        reads.ratio(reads.remote),
    )


def capacity_shortfall(
    ufs_total: int, capacity: int, live_workers: int
) -> CapacityShortfall | None:
    """Advice when a dataset of ``ufs_total`` bytes cannot fit the cache, else None."""
    missing = ufs_total - capacity
    if missing <= 0:
        return None
    per_worker = -(-missing // live_workers) if live_workers else missing
    if live_workers:
        room = (
            f"add {_size(per_worker)} of quota to each of the {live_workers} workers "
            f"(fluidcache up --mem-quota / --ssd-quota with --ssd-dir, or larger --tier quotas "
            f"of fluidcache worker), or start more workers (fluidcache up --workers)"
        )
    else:
        room = "start workers (fluidcache worker --tier ..., or fluidcache up --workers)"
    advice = (
        f"the cache holds {_percent(capacity, ufs_total)}% of the dataset: "
        f"{_size(missing)} more is needed; {room}"
    )
    return CapacityShortfall(
        ufs_total,
        capacity,
        missing,
        _percent(capacity, ufs_total),
        live_workers,
        per_worker,
        advice,
    )


def _size(n: int) -> str:
    """Bytes in the binary units the quota flags take (``1.5Gi``)."""
    value = float(n)
    for unit in ("", "Ki", "Mi", "Gi", "Ti"):
        if value < 1024 or unit == "Ti":
            return f"{value:.0f}" if not unit else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _restore(store: Store, path: Path) -> None:
    """Load ``path`` into a fresh store; with a namespace already there, only verify it."""
    if store.is_empty():
        records = restore_backup(store, path)
        log.info("restored %d records from %s", records, path)
    else:
        verify_backup(path)
        log.warning("data dir already holds a namespace: kept, %s not restored", path)
