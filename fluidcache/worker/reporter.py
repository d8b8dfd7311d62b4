"""Tells the master what this worker holds: a full list at registration, deltas in heartbeats.

It subscribes to the store's events. A commit wakes the heartbeat early (debounced), so new
locations reach the master quickly; a delta whose heartbeat failed is merged back and re-sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from fluidcache.common import errors
from fluidcache.common.http import RpcClient
from fluidcache.common.protocol import (
    WORKER_HEARTBEAT,
    WORKER_REGISTER,
    HeartbeatReply,
    HeartbeatRequest,
    RegisterReply,
    RegisterRequest,
    WorkerInfo,
)
from fluidcache.worker.sources import SourceMap
from fluidcache.worker.store import BlockStore

log = logging.getLogger(__name__)

MIN_REPORT_GAP = 0.2


class Reporter:
    """Registration and heartbeats for one worker."""

    def __init__(
        self,
        store: BlockStore,
        master: RpcClient,
        sources: SourceMap,
        info: Callable[[], WorkerInfo],
    ) -> None:
        self.store = store
        self.master = master
        self.sources = sources
        self.info = info
        self.interval = 2.0
        self._added: set[str] = set()
        self._removed: set[str] = set()
        self._wake = asyncio.Event()
        store.subscribe(self._on_event)

    def _on_event(self, event: str, block_id: str) -> None:
        if event == "committed":
            self._removed.discard(block_id)
            self._added.add(block_id)
            self._wake.set()
        elif event == "removed":
            self._added.discard(block_id)
            self._removed.add(block_id)

    async def register(self) -> None:
        """Announce this worker and every block it holds; learn the mounts and the interval."""
        blocks = self.store.ids()
        self._added.clear()
        self._removed.clear()
        reply = await self.master.call(
            WORKER_REGISTER, RegisterRequest(self.info(), blocks), RegisterReply
        )
        self.interval = reply.heartbeat_interval
        await self.sources.update(reply.mounts)

    async def register_with_retry(self, within: float) -> None:
        """Register, retrying while the master cannot be reached, for at most ``within`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        delay = 0.1
        while True:
            try:
                await self.register()
                return
            except errors.Unavailable:
                if loop.time() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def heartbeat(self) -> None:
        """Send the delta since the last heartbeat that succeeded."""
        added, removed = self._added, self._removed
        self._added, self._removed = set(), set()
        info = self.info()
        request = HeartbeatRequest(
            info.worker_id, sorted(added), sorted(removed), info.tiers, info.reads
        )
        try:
            reply = await self.master.call(WORKER_HEARTBEAT, request, HeartbeatReply)
        except errors.FluidcacheError:
            # Merge back, newest events winning.
            self._added = (added - self._removed) | self._added
            self._removed = (removed - self._added) | self._removed
            raise
        if reply.reregister:
            await self.register()

    async def run(self) -> None:
        """Heartbeat every ``interval`` seconds, or soon after a commit; never returns."""
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
                await asyncio.sleep(MIN_REPORT_GAP)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.heartbeat()
            except errors.FluidcacheError as e:
                log.warning("heartbeat failed: %s", e.message)
