"""The worker registry: who is live, their tiers, and dropping those that stop heartbeating.

Liveness is kept in memory against an injectable monotonic clock; each worker's last known
record is kept in LMDB (``workers``) for reports. A master that restarts knows no worker as live
until it registers again, which is what a heartbeat answered with ``reregister`` asks for.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

from fluidcache.common import errors
from fluidcache.common.protocol import HeartbeatRequest, RegisterRequest, WorkerInfo
from fluidcache.master.blocks import BlockMap
from fluidcache.master.store import Store

log = logging.getLogger(__name__)


class WorkerRegistry:
    """Registration, heartbeats and the lost-worker sweep."""

    def __init__(
        self,
        store: Store,
        blocks: BlockMap,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.blocks = blocks
        self.timeout = timeout
        self.clock = clock
        self.wall = wall
        self._live: dict[str, WorkerInfo] = {}
        self._seen: dict[str, float] = {}

    def forget_all(self) -> None:
        """At start-up: every stored worker is lost until it registers again."""
        self.blocks.clear()
        with self.store.write() as txn:
            for key, value in list(txn.cursor(db=self.store.workers)):
                info = dataclasses.replace(WorkerInfo.decode(value), state="lost")
                txn.put(key, info.encode(), db=self.store.workers)

    def register(self, request: RegisterRequest) -> None:
        """(Re)admit a worker with the full set of blocks it holds."""
        w = request.worker
        if not w.worker_id or "\0" in w.worker_id or len(w.worker_id.encode()) > 200:
            raise errors.InvalidArgument(f"worker id {w.worker_id!r} is not usable")
        if not w.address.startswith(("http://", "https://")):
            raise errors.InvalidArgument(
                f"worker {w.worker_id}: address {w.address!r} is not a URL"
            )
        self.blocks.replace(w.worker_id, request.blocks)
        info = dataclasses.replace(w, state="live", last_heartbeat=self.wall())
        self._admit(info)
        log.info(
            "worker %s registered at %s with %d blocks", w.worker_id, w.address, len(request.blocks)
        )

    def heartbeat(self, request: HeartbeatRequest) -> bool:
        """Apply a heartbeat; False if the worker is unknown or lost and must register again."""
        info = self._live.get(request.worker_id)
        if info is None:
            return False
        self.blocks.update(request.worker_id, request.added, request.removed)
        self._seen[request.worker_id] = self.clock()
        # Tier usage changes every beat; memory is enough for it (LMDB gets it at registration).
        self._live[request.worker_id] = dataclasses.replace(
            info,
            tiers=request.tiers or info.tiers,
            reads=info.reads if request.reads is None else request.reads,
            last_heartbeat=self.wall(),
        )
        return True

    def live(self) -> list[WorkerInfo]:
        """Live workers, by id."""
        return [self._live[w] for w in sorted(self._live)]

    def is_live(self, worker_id: str) -> bool:
        return worker_id in self._live

    def get_live(self, worker_id: str) -> WorkerInfo | None:
        return self._live.get(worker_id)

    def all(self) -> list[WorkerInfo]:
        """Every worker ever registered: the live ones as they are now, the others as last seen."""
        with self.store.read() as txn:
            stored = {
                k.decode(): WorkerInfo.decode(v) for k, v in txn.cursor(db=self.store.workers)
            }
        stored.update(self._live)
        return [stored[w] for w in sorted(stored)]

    def sweep(self) -> list[str]:
        """Mark workers silent for longer than the timeout as lost and drop their locations."""
        now = self.clock()
        lost = [w for w, seen in self._seen.items() if now - seen > self.timeout]
        for worker_id in lost:
            info = dataclasses.replace(self._live.pop(worker_id), state="lost")
            del self._seen[worker_id]
            self.blocks.drop(worker_id)
            with self.store.write() as txn:
                txn.put(worker_id.encode(), info.encode(), db=self.store.workers)
            log.warning("worker %s lost: no heartbeat for %.0f s", worker_id, self.timeout)
        return lost

    async def run_sweeper(self, every: float) -> None:
        """Sweep every ``every`` seconds, forever."""
        while True:
            await asyncio.sleep(every)
            self.sweep()

    def _admit(self, info: WorkerInfo) -> None:
        self._live[info.worker_id] = info
        self._seen[info.worker_id] = self.clock()
        with self.store.write() as txn:
            txn.put(info.worker_id.encode(), info.encode(), db=self.store.workers)
