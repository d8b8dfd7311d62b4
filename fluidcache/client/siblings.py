"""Directory read-ahead for cold epochs over small files.

A training epoch opens every file of its directories once, in an order of its own (often
shuffled). A cold open of a small file waits for a source round trip (tens of ms from an
object store or a hub), so the readers' own number caps how many are under way. Once a client
has opened :data:`AFTER` files of one directory cold, this opens the directory's other cold
one-block files ahead of the readers, in name order, :data:`CONCURRENCY` at a time, marked as
prefetches (a worker serves readers' opens first). Cold: listed without a version (an HTTP
listing), which a worker learns with the first block (:meth:`AsyncClient.open_ahead`); or listed
with it (S3, local) and held by no worker, whose block a worker then fetches. A reader's open
(or read) of a file under way joins it; one that comes later finds its version known here and
its block held: no source round trip.

Bounded three ways: by the cache's room (:class:`~fluidcache.client.prefetch.Room`); by demand
(at most :data:`WINDOW` files more than the readers have opened in the directory since it
started, so a random reader of a few files of a large directory costs at most that many
source reads more than its own); and in time (it stops when the readers have opened nothing
there for :data:`IDLE` seconds). Errors are ignored: a prefetch is a hint, the reader's own
open reports them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fluidcache.client.cache import TtlCache
from fluidcache.client.prefetch import Room, RoomUsed
from fluidcache.common import errors
from fluidcache.common.protocol import FileInfo

if TYPE_CHECKING:
    from fluidcache.client.api import AsyncClient

log = logging.getLogger(__name__)

AFTER = 4  # cold opens in one directory before its other files are opened ahead
WINDOW = 64  # files opened ahead beyond those the readers opened there since
CONCURRENCY = 32  # opens ahead under way at once, per client
IDLE = 5.0  # s without a reader's open in the directory: its read-ahead stops
DONE_TTL = 60.0  # s a directory whose every file was scheduled is not listed for it again


class _Idle(Exception):
    """The readers stopped opening files of the directory."""


@dataclass
class _Run:
    """One directory's read-ahead: what the readers opened since it started, what it did."""

    opened: int = 0
    scheduled: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class SiblingPrefetcher:
    """Opens the unopened small files of a directory that readers are opening cold."""

    def __init__(
        self,
        client: AsyncClient,
        after: int = AFTER,
        window: int = WINDOW,
        concurrency: int = CONCURRENCY,
        idle: float = IDLE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.after, self.window, self.idle = after, window, idle
        self.room = Room(client, clock)
        self._slots = asyncio.Semaphore(concurrency)
        self._cold: TtlCache[int, int] = TtlCache(DONE_TTL, 1_000, clock)  # by directory
        self._done: TtlCache[int, bool] = TtlCache(DONE_TTL, 1_000, clock)
        self._runs: dict[int, _Run] = {}
        self.opened_ahead = 0  # files this client opened ahead of its readers

    def cold(self, info: FileInfo) -> None:
        """A reader opened ``info`` cold: start its directory's read-ahead after :data:`AFTER`."""
        parent = info.parent
        if parent in self._runs or self._done.get(parent):
            return
        count = (self._cold.get(parent) or 0) + 1
        self._cold.put(parent, count)
        if count >= self.after:
            self._cold.pop(parent)
            self._runs[parent] = _Run()
            self.client._spawn(self._run(parent))

    def opened(self, info: FileInfo) -> None:
        """A reader opened ``info`` (cold or not): its directory's read-ahead may go further.
        A file listed with its version (S3, local) is cold when no worker holds its block;
        one listed without is counted cold by :meth:`AsyncClient.validate`, which opens it."""
        if (
            info.version
            and info.size <= info.block_size
            and self.client.blocks.uncached(info.block(0))
        ):
            self.cold(info)
        run = self._runs.get(info.parent)
        if run is not None:
            run.opened += 1
            run.wake.set()

    async def _run(self, parent: int) -> None:
        run = self._runs[parent]
        try:
            await self.room.measure()
            cursor = ""
            while True:
                page = await self.client.list_page(parent, cursor)
                # Which of the files listed with their versions are cold: one batched call.
                firsts = [e.block(0) for e in page.entries if self._small(e) and e.version]
                await self.client.blocks.locate(firsts)
                for entry in page.entries:
                    if not self._wanted(entry):
                        continue
                    await self._allowed(run)
                    await self._slots.acquire()
                    if not self._wanted(entry):  # a reader opened it meanwhile
                        self._slots.release()
                        continue
                    try:
                        self.room.take(entry.size)
                    except RoomUsed:
                        self._slots.release()
                        raise
                    run.scheduled += 1
                    self.client._spawn(self._one(entry))
                if not page.cursor:
                    break
                cursor = page.cursor
            self._done.put(parent, True)
        except (_Idle, RoomUsed) as e:
            log.debug("read-ahead of directory %d stopped: %s", parent, type(e).__name__)
        except errors.FluidcacheError as e:
            log.debug("read-ahead of directory %d stopped: %s", parent, e)
        finally:
            del self._runs[parent]

    @staticmethod
    def _small(entry: FileInfo) -> bool:
        return not entry.is_dir and 0 < entry.size <= entry.block_size

    def _wanted(self, entry: FileInfo) -> bool:
        """A one-block file listed without its version and not opened (or opening) here, or
        listed with it and held by no worker (nor being read here)."""
        if not self._small(entry):
            return False
        if entry.version:
            return self.client.blocks.uncached(entry.block(0))
        return self.client.unopened(entry)

    async def _allowed(self, run: _Run) -> None:
        """Return once one more file may be opened ahead; _Idle if the readers stop."""
        while run.scheduled >= self.window + run.opened:
            run.wake.clear()
            try:
                await asyncio.wait_for(run.wake.wait(), self.idle)
            except TimeoutError:
                raise _Idle from None

    async def _one(self, entry: FileInfo) -> None:
        try:
            if entry.version:
                await self.client.blocks.prefetch(entry.block(0), batched=True)  # errors ignored
                self.opened_ahead += 1
            elif await self.client.open_ahead(entry):
                self.opened_ahead += 1
        finally:
            self._slots.release()
