"""Metadata loads as jobs: an eager sync of a subtree that runs in the background.

A load keeps running if the caller that asked for it goes away; its progress (counts so far)
is readable by job id until enough newer jobs have replaced it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from fluidcache.common import errors
from fluidcache.common.protocol import LoadMetadataReply, LoadMetadataRequest
from fluidcache.master.namespace import Counts
from fluidcache.master.store import Inode
from fluidcache.master.sync import Syncer

log = logging.getLogger(__name__)

KEEP_JOBS = 64


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
