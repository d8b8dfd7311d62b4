"""The miss path: fetch a block from the source, keep it, once per block however many ask."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fluidcache.common import errors
from fluidcache.common.aio import SingleFlight
from fluidcache.common.protocol import BlockRef
from fluidcache.worker.metrics import Metrics
from fluidcache.worker.sources import SourceMap
from fluidcache.worker.store import Block, BlockStore

log = logging.getLogger(__name__)

Cached = Block | bytes
"""A held block, or the bytes just fetched (kept in the store when they fit)."""


class Fetcher:
    """Serves a block reference from the store, else from the source (single-flight)."""

    def __init__(
        self,
        store: BlockStore,
        sources: SourceMap,
        metrics: Metrics,
        refresh_mounts: Callable[[], Awaitable[None]],
    ) -> None:
        self.store = store
        self.sources = sources
        self.metrics = metrics
        self._refresh_mounts = refresh_mounts
        self._flight: SingleFlight[Cached] = SingleFlight()

    async def lookup(self, block_id: str) -> Block | None:
        """The held, verified block, or None."""
        block = self.store.get(block_id)
        if block is not None and not await self.store.verify(block):
            return None
        return block

    async def get(self, ref: BlockRef) -> Cached:
        """The block ``ref``, from the store or fetched once for all concurrent callers."""
        block = await self.lookup(ref.id)
        if block is not None:
            self.metrics.hit(self.store.levels[block.level].config.medium)
            return block
        return await self._flight.do(ref.id, lambda: self._fetch(ref))

    async def _fetch(self, ref: BlockRef) -> Cached:
        block = self.store.get(ref.id)  # another flight may have finished meanwhile
        if block is not None:
            return block
        data = await self._read_source(ref)
        self.metrics.miss("source", len(data))
        await self.store.commit(ref.id, data)
        return data  # the waiters get the bytes at hand, not a file to read back

    async def _read_source(self, ref: BlockRef) -> bytes:
        try:
            ufs, path = self.sources.resolve(ref.uri)
        except errors.InvalidArgument:
            await self._refresh_mounts()  # a dataset may have been added since we registered
            ufs, path = self.sources.resolve(ref.uri)
        data = await ufs.read(path, ref.offset, ref.length)
        if len(data) != ref.length:
            raise errors.SourceError(
                f"{ref.uri}: source returned {len(data)} bytes for block {ref.index}, "
                f"expected {ref.length} (the file changed at the source?)"
            )
        return data
