"""The master's jobs: warm-ups and backups kept in LMDB, and metadata loads kept in memory.

:class:`Jobs` is the one job API the CLI, the Python client, the status page and the
Kubernetes controller call. A job is submitted (validated first: bad input changes nothing),
waits while it is Pending (for its ``after`` job, or its next cron time), runs (Executing) and
ends Complete or Failed with the reason. Every change of phase, and progress once a second, is
written to LMDB, so a master killed during a run finds the job again at start-up and resumes
it. What a job of each kind does is a *runner* given by the service; this module only keeps
the books.

:class:`MetadataLoads` runs eager syncs of a subtree: a load keeps running if the caller that
asked for it goes away; its progress is readable by job id until newer loads replace it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping

from croniter import croniter

from fluidcache.common import errors
from fluidcache.common.protocol import (
    COMPLETE,
    EXECUTING,
    FAILED,
    JOB_KINDS,
    JOB_PHASES,
    PENDING,
    JobInfo,
    JobRequest,
    JobsReply,
    JobsRequest,
    LoadMetadataReply,
    LoadMetadataRequest,
    TargetProgress,
)
from fluidcache.master.namespace import Counts
from fluidcache.master.store import Inode, Store
from fluidcache.master.sync import Syncer

log = logging.getLogger(__name__)

KEEP_JOBS = 64  # metadata loads kept in memory
KEEP_FINISHED = 1000  # finished jobs kept in LMDB
TICK = 0.5  # seconds between looks at schedules, predecessors and progress
SAVE_EVERY = 1.0  # seconds between progress writes of a running job
MAX_LIST = 1000
CANCELLED = "cancelled"


@dataclasses.dataclass
class Progress:
    """Exact counts of one run, per target; a runner updates them as its work completes."""

    targets: list[TargetProgress]
    source_bytes: int = 0

    def totals(self) -> tuple[int, int, int, int]:
        """(files total, bytes total, files done, bytes done)."""
        t = self.targets
        return (
            sum(x.files_total for x in t),
            sum(x.bytes_total for x in t),
            sum(x.files_done for x in t),
            sum(x.bytes_done for x in t),
        )

    def add(self, index: int, files: int = 0, size: int = 0, done: bool = False) -> None:
        """Count ``files`` and ``size`` bytes of target ``index`` as found, or as ``done``."""
        t = self.targets[index]
        if done:
            t = dataclasses.replace(
                t, files_done=t.files_done + files, bytes_done=t.bytes_done + size
            )
        else:
            t = dataclasses.replace(
                t, files_total=t.files_total + files, bytes_total=t.bytes_total + size
            )
        self.targets[index] = t


Runner = Callable[[JobInfo, Progress, bool], Awaitable[str]]
"""Does one run of a job: (job, progress to update, resumed after a restart) -> result text.
Raises a FluidcacheError whose message becomes the job's error."""


@dataclasses.dataclass(eq=False)
class _Entry:
    info: JobInfo
    progress: Progress | None = None
    task: asyncio.Task[None] | None = None
    cancelled: bool = False
    saved: float = 0.0

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()


def _next_fire(schedule: str, after: float) -> float:
    return float(croniter(schedule, after).get_next(float))


class Jobs:
    """Submits, schedules, runs, cancels and keeps jobs; one instance per master."""

    def __init__(
        self,
        store: Store,
        runners: Mapping[str, Runner],
        check: Callable[[JobRequest], Awaitable[None]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.runners = runners
        self.check = check  # raises for targets or replicas that cannot be served
        self.clock = clock
        self._jobs: dict[str, _Entry] = {}
        self._loop: asyncio.Task[None] | None = None
        self._closing = False
        self.bytes_loaded = 0  # over every run since start, for metrics

    # ---- lifecycle ----------------------------------------------------------------------------

    def open(self) -> None:
        """Read the jobs kept in LMDB; runs cut short by a stop or crash will resume."""
        with self.store.read() as txn:
            for _, value in txn.cursor(db=self.store.jobs):
                info = JobInfo.decode(value)
                self._jobs[info.job_id] = _Entry(info)

    def start(self) -> None:
        """Resume interrupted runs and start the scheduler; call from the event loop."""
        now = self.clock()
        for entry in self._jobs.values():
            info = entry.info
            if info.next_run and info.next_run < now:
                log.info("job %s: missed cron times while down; next one kept", info.job_id)
                entry.info = dataclasses.replace(info, next_run=_next_fire(info.schedule, now))
            if info.phase == EXECUTING:
                log.info("job %s was Executing when the master stopped: resuming", info.job_id)
                self._run(entry, resumed=True)
        self._loop = asyncio.create_task(self._scheduler())

    async def close(self) -> None:
        """Stop the scheduler and running jobs; they stay Executing in LMDB and resume later."""
        self._closing = True
        tasks = [e.task for e in self._jobs.values() if e.task is not None and e.running]
        if self._loop is not None:
            tasks.append(self._loop)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- the API --------------------------------------------------------------------------------

    async def submit(self, request: JobRequest) -> JobInfo:
        """Validate and record a job; it starts at once unless it waits for ``after`` or a time."""
        if request.kind not in JOB_KINDS:
            raise errors.InvalidArgument(f"kind: {request.kind!r} is not one of {JOB_KINDS}")
        if request.schedule and not croniter.is_valid(request.schedule):
            raise errors.InvalidArgument(
                f"schedule: {request.schedule!r} is not a cron expression "
                "(five fields, e.g. '0 */6 * * *'; a sixth gives seconds)"
            )
        if request.after and request.after not in self._jobs:
            raise errors.NotFound(f"after: no job {request.after!r}")
        await self.check(request)
        now = self.clock()
        info = JobInfo(
            job_id=f"{request.kind}-{uuid.uuid4().hex[:10]}",
            kind=request.kind,
            dataset=request.dataset,
            paths=list(request.paths),
            phase=PENDING,
            replicas=request.replicas,
            metadata=request.metadata,
            pin=request.pin,
            schedule=request.schedule,
            after=request.after,
            name=request.name,
            directory=request.directory,
            created=now,
            next_run=_next_fire(request.schedule, now) if request.schedule else 0.0,
            targets=[TargetProgress(p) for p in request.paths],
        )
        entry = self._jobs[info.job_id] = _Entry(info)
        self._save(entry)
        log.info("job %s submitted: %s %s", info.job_id, info.kind, " ".join(info.paths))
        self._advance(entry, now)
        self._prune()
        return self.status(info.job_id)

    def status(self, job_id: str) -> JobInfo:
        entry = self._jobs.get(job_id)
        if entry is None:
            raise errors.NotFound(f"no job {job_id!r}")
        return self._view(entry)

    def list(self, request: JobsRequest) -> JobsReply:
        """Jobs newest first, of one phase or all."""
        if request.phase and request.phase not in JOB_PHASES:
            raise errors.InvalidArgument(f"phase: {request.phase!r} is not one of {JOB_PHASES}")
        limit = max(1, min(request.limit, MAX_LIST))
        entries = sorted(self._jobs.values(), key=lambda e: e.info.created, reverse=True)
        views = [
            self._view(e) for e in entries if not request.phase or e.info.phase == request.phase
        ]
        return JobsReply(views[:limit])

    def cancel(self, job_id: str) -> JobInfo:
        """Stop a job (its run, its schedule); a finished job cannot be cancelled."""
        entry = self._jobs.get(job_id)
        if entry is None:
            raise errors.NotFound(f"no job {job_id!r}")
        info = entry.info
        if info.phase in (COMPLETE, FAILED) and not info.next_run:
            raise errors.InvalidArgument(f"job {job_id} is already {info.phase}: nothing to cancel")
        entry.cancelled = True
        if entry.running:
            assert entry.task is not None
            entry.task.cancel()  # its run records Failed (cancelled)
        else:
            self._finish(entry, FAILED, CANCELLED)
        entry.info = dataclasses.replace(entry.info, next_run=0.0)
        self._save(entry)
        log.info("job %s cancelled", job_id)
        return self._view(entry)

    def phase_counts(self) -> dict[str, int]:
        """How many jobs are in each phase (for metrics)."""
        counts = dict.fromkeys(JOB_PHASES, 0)
        for entry in self._jobs.values():
            counts[entry.info.phase] += 1
        return counts

    # ---- running --------------------------------------------------------------------------------

    async def _scheduler(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            now = self.clock()
            for entry in list(self._jobs.values()):
                if entry.running:
                    if now - entry.saved >= SAVE_EVERY:
                        self._save(entry)
                else:
                    self._advance(entry, now)

    def _advance(self, entry: _Entry, now: float) -> None:
        """Start, or fail, a job that is not running, as its predecessor and schedule say."""
        info = entry.info
        waiting = info.phase == PENDING or (info.next_run and now >= info.next_run)
        if entry.running or entry.cancelled or not waiting:
            return
        if info.after:
            before = self._jobs.get(info.after)
            if before is None or before.info.phase == FAILED:
                why = before.info.error if before is not None else "it is gone"
                self._finish(entry, FAILED, f"predecessor {info.after} failed: {why}")
                entry.info = dataclasses.replace(entry.info, next_run=0.0)
                self._save(entry)
                return
            if before.info.phase != COMPLETE:
                return
        if info.next_run and now < info.next_run:
            return
        if info.next_run:
            entry.info = dataclasses.replace(info, next_run=_next_fire(info.schedule, now))
        self._run(entry, resumed=False)

    def _run(self, entry: _Entry, resumed: bool) -> None:
        info = entry.info
        now = self.clock()
        entry.progress = Progress([TargetProgress(p) for p in info.paths])
        entry.info = dataclasses.replace(
            info,
            phase=EXECUTING,
            started=info.started if resumed and info.started else now,
            finished=0.0,
            error="",
            runs=info.runs if resumed else info.runs + 1,
        )
        self._save(entry)
        entry.task = asyncio.create_task(self._execute(entry, resumed))

    async def _execute(self, entry: _Entry, resumed: bool) -> None:
        info, progress = entry.info, entry.progress
        assert progress is not None
        log.info("job %s %s", info.job_id, "resumed" if resumed else "started")
        try:
            result = await self.runners[info.kind](info, progress, resumed)
        except asyncio.CancelledError:
            if self._closing and not entry.cancelled:
                self._save(entry)  # stays Executing: resumed at the next start
                raise
            self._finish(entry, FAILED, CANCELLED)
        except errors.FluidcacheError as e:
            self._finish(entry, FAILED, e.message)
        except Exception as e:
            log.exception("job %s failed", info.job_id)
            self._finish(entry, FAILED, f"internal error: {e}")
        else:
            self._finish(entry, COMPLETE, "", result)
        finally:
            self.bytes_loaded += progress.totals()[3]

    def _finish(self, entry: _Entry, phase: str, error: str, result: str = "") -> None:
        now = self.clock()
        entry.info = dataclasses.replace(
            self._view(entry),
            phase=phase,
            error=error,
            result=result or entry.info.result,
            finished=now,
            last_success=now if phase == COMPLETE else entry.info.last_success,
            rate=0.0,
            eta=-1.0,
        )
        entry.progress = None
        self._save(entry)
        i = entry.info
        log.info(
            "job %s %s: %d/%d files, %d/%d bytes in %.1f s%s",
            i.job_id,
            phase,
            i.files_done,
            i.files_total,
            i.bytes_done,
            i.bytes_total,
            i.duration,
            f" ({error})" if error else "",
        )

    # ---- records --------------------------------------------------------------------------------

    def _view(self, entry: _Entry) -> JobInfo:
        """The job with its live progress, rate and ETA."""
        info, progress = entry.info, entry.progress
        if progress is None:
            return info
        files_total, bytes_total, files_done, bytes_done = progress.totals()
        elapsed = max(1e-3, self.clock() - info.started)
        rate = bytes_done / elapsed
        eta = (bytes_total - bytes_done) / rate if rate > 0 else -1.0
        return dataclasses.replace(
            info,
            files_total=files_total,
            bytes_total=bytes_total,
            files_done=files_done,
            bytes_done=bytes_done,
            source_bytes=progress.source_bytes,
            rate=round(rate, 1),
            eta=round(eta, 1),
            targets=list(progress.targets),
        )

    def _save(self, entry: _Entry) -> None:
        entry.saved = self.clock()
        with self.store.write() as txn:
            txn.put(entry.info.job_id.encode(), self._view(entry).encode(), db=self.store.jobs)

    def _prune(self) -> None:
        """Forget the oldest finished jobs beyond :data:`KEEP_FINISHED`."""
        done = [
            e
            for e in self._jobs.values()
            if e.info.phase in (COMPLETE, FAILED) and not e.info.next_run and not e.running
        ]
        done.sort(key=lambda e: e.info.created)
        with self.store.write() as txn:
            for entry in done[: max(0, len(done) - KEEP_FINISHED)]:
                del self._jobs[entry.info.job_id]
                txn.delete(entry.info.job_id.encode(), db=self.store.jobs)


@dataclasses.dataclass(slots=True)
class _Job:
    job_id: str
    path: str
    counts: Counts
    started: float
    task: asyncio.Task[None] | None = None
    state: str = "running"
    finished: float = 0.0
    error: str = ""
    exc: errors.FluidcacheError | None = None

    def reply(self) -> LoadMetadataReply:
        c = self.counts
        end = self.finished or time.monotonic()
        return LoadMetadataReply(
            job_id=self.job_id,
            path=self.path,
            state=self.state,
            dirs_listed=c.dirs_listed,
            files=c.files,
            dirs=c.dirs,
            bytes=c.bytes,
            seconds=round(end - self.started, 3),
            error=self.error,
        )


class MetadataLoads:
    """Starts loads, keeps their progress, answers status queries."""

    def __init__(self, sync: Syncer, resolve: Callable[[str], Awaitable[Inode]]) -> None:
        self.sync = sync
        self.resolve = resolve
        self._jobs: OrderedDict[str, _Job] = OrderedDict()

    async def start(self, request: LoadMetadataRequest) -> LoadMetadataReply:
        """Start a load of ``request.path``; with ``wait``, answer (or raise) once it is over."""
        top = await self.resolve(request.path)  # a bad path fails here, not in the job
        job = _Job(uuid.uuid4().hex[:16], top.path, Counts(), time.monotonic())
        job.task = asyncio.create_task(self._run(job, top, request.force))
        self._jobs[job.job_id] = job
        while len(self._jobs) > KEEP_JOBS:
            old_id = next(iter(self._jobs))
            if self._jobs[old_id].state == "running":
                break
            del self._jobs[old_id]
        if request.wait:
            # Shielded: the load goes on even if this caller disconnects.
            await asyncio.shield(job.task)
            if job.exc is not None:
                raise job.exc
        return job.reply()

    def status(self, job_id: str) -> LoadMetadataReply:
        job = self._jobs.get(job_id)
        if job is None:
            raise errors.NotFound(f"metadata load {job_id!r}")
        return job.reply()

    async def _run(self, job: _Job, top: Inode, force: bool) -> None:
        log.info("metadata load %s of %s started", job.job_id, job.path)
        try:
            if top.is_dir:
                await self.sync.walk(top, force, job.counts)
            else:
                job.counts.add(Counts(0, 1, 0, top.size))
            job.state = "done"
        except asyncio.CancelledError:
            job.state, job.error = "failed", "cancelled"
            raise
        except errors.FluidcacheError as e:
            job.state, job.error, job.exc = "failed", f"{e.code}: {e.message}", e
        except Exception as e:
            log.exception("metadata load %s failed", job.job_id)
            job.state, job.error = "failed", f"internal: {e}"
        finally:
            job.finished = time.monotonic()
            c = job.counts
            log.info(
                "metadata load %s of %s %s: %d dirs listed, %d files, %d bytes in %.1f s",
                job.job_id,
                job.path,
                job.state,
                c.dirs_listed,
                c.files,
                c.bytes,
                job.finished - job.started,
            )

    async def close(self) -> None:
        tasks = [j.task for j in self._jobs.values() if j.task is not None and not j.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
