"""Safetensors-aware prefetch: when a model file is opened, its tensor data is brought close ahead
of the loader.

Opening a ``.safetensors`` file reads its header (8 bytes of length, then JSON) and asks for the
blocks holding the tensor data in the order loaders read them (ascending data offsets), a bounded
number at a time, through the client's ordinary block prefetch (a same-node worker fetches and
keeps the block; otherwise the bytes come into the client's buffer). Opening a sharded model's
``*.safetensors.index.json``, or its first shard, schedules every shard of the index in name
order, as ``from_pretrained`` loads them. Each file is scheduled once per client; errors are
ignored (a prefetch is a hint: the real read reports them).

Bounded by the cache's room as well as by concurrency: each open asks the master for the live
workers' tier usage and schedules at most :data:`ROOM_FRACTION` of their free room (less what
this client prefetched too recently to show in that usage), headers included, then stops, so a
prefetch never pushes out what the cache holds (a hot set, or the blocks it has just fetched).

Called by :class:`~fluidcache.client.api.AsyncClient` on every open (the library's and the FUSE
mount's); holds no state beyond what it has scheduled.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import posixpath
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fluidcache.common import errors
from fluidcache.common.protocol import FileInfo, WorkerInfo

if TYPE_CHECKING:
    from fluidcache.client.api import AsyncClient

log = logging.getLogger(__name__)

MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header
FIRST_SHARD = re.compile(r"-0*1-of-\d+\.safetensors$")
ROOM_FRACTION = 0.5
"""The share of the cache's free room one open may prefetch into."""
REPORT_LAG = 10.0  # s: blocks prefetched this recently may not show in the workers' usage yet


def free_room(workers: list[WorkerInfo]) -> int:
    """Bytes the workers' tiers can still take (their quotas less what they hold)."""
    return sum(max(0, t.capacity - t.used) for w in workers for t in w.tiers)


class RoomUsed(Exception):
    """The open's share of the cache's room is scheduled: nothing more is."""


class Room:
    """A prefetch's budget: :data:`ROOM_FRACTION` of the cache's free room (the live workers'
    quotas less what they hold), less what was prefetched too recently to show in that."""

    def __init__(self, client: AsyncClient, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self._clock = clock
        self._recent: collections.deque[tuple[float, int]] = collections.deque()  # (when, bytes)
        self.left = 0  # bytes the prefetch being scheduled may still ask for

    async def measure(self) -> None:
        """Set the budget from the workers' usage now."""
        now = self._clock()
        while self._recent and now - self._recent[0][0] >= REPORT_LAG:
            self._recent.popleft()
        room = free_room(await self.client.blocks.workers(refresh=True))
        self.left = int(room * ROOM_FRACTION) - sum(n for _, n in self._recent)

    def take(self, nbytes: int) -> None:
        """Count ``nbytes`` more against the budget; RoomUsed when they do not fit."""
        if nbytes > self.left:
            raise RoomUsed
        self.left -= nbytes
        self._recent.append((self._clock(), nbytes))


def tensor_blocks(header: dict[str, Any], header_len: int, block_size: int) -> list[int]:
    """Indices of the blocks holding tensor data, in ascending data offset, each once."""
    base = 8 + header_len
    spans = sorted(
        (int(v["data_offsets"][0]), int(v["data_offsets"][1]))
        for k, v in header.items()
        if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v
    )
    out: list[int] = []
    seen: set[int] = set()
    for start, end in spans:
        if end <= start:
            continue
        for index in range((base + start) // block_size, (base + end - 1) // block_size + 1):
            if index not in seen:
                seen.add(index)
                out.append(index)
    return out


class ModelPrefetcher:
    """Schedules the tensor data of opened safetensors files, ``concurrency`` blocks at once."""

    def __init__(
        self,
        client: AsyncClient,
        concurrency: int = 16,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self._slots = asyncio.Semaphore(concurrency)
        self._scheduled: set[tuple[str, str]] = set()  # (path, version)
        self.room = Room(client, clock)

    def wants(self, info: FileInfo) -> bool:
        """Whether opening ``info`` schedules a prefetch."""
        return info.path.endswith((".safetensors", ".safetensors.index.json"))

    async def opened(self, info: FileInfo) -> None:
        """Prefetch what opening ``info`` calls for (the file, or all shards of its index)."""
        try:
            await self.room.measure()
            if info.path.endswith(".safetensors.index.json"):
                await self._shards(info)
            elif FIRST_SHARD.search(info.path):
                index = posixpath.join(posixpath.dirname(info.path), "model.safetensors.index.json")
                try:
                    await self._shards(await self._opened(index), first=info)
                except errors.NotFound:
                    await self._file(info)
            else:
                await self._file(info)
        except RoomUsed:
            log.info("prefetch from %s stopped: its share of the cache's room is asked", info.path)
        except (errors.FluidcacheError, ValueError, KeyError, TypeError) as e:
            log.debug("prefetch of %s stopped: %s", info.path, e)

    async def _shards(self, index: FileInfo, first: FileInfo | None = None) -> None:
        if index.size > MAX_HEADER:
            return
        data = json.loads(await self.client.pread(index, 0, index.size))
        names = sorted(set(data.get("weight_map", {}).values()))
        folder = posixpath.dirname(index.path)
        for name in names:
            path = posixpath.join(folder, name)
            info = first if first is not None and first.path == path else None
            await self._file(info or await self._opened(path))

    async def _opened(self, path: str) -> FileInfo:
        """``path`` as an open would read it: with the version the source has now where it was
        listed without one (blocks are keyed by version: fetched under another, they would be
        fetched again for the loader)."""
        return await self.client.validate(await self.client.stat(path))

    async def _file(self, info: FileInfo) -> None:
        key = (info.path, info.version)
        if key in self._scheduled or info.size < 8:
            return
        self.room.take(info.block(0).length)  # the header's block comes into the cache too
        self._scheduled.add(key)
        header_len = int.from_bytes(await self.client.pread(info, 0, 8), "little")
        if header_len > min(MAX_HEADER, info.size - 8):
            return
        last = (8 + header_len - 1) // info.block_size  # the header's last block
        for index in range(1, last + 1):
            self.room.take(info.block(index).length)
        header = json.loads(await self.client.pread(info, 8, header_len))
        indexes = tensor_blocks(header, header_len, info.block_size)
        held: dict[str, list[str]] = {}
        with contextlib.suppress(errors.FluidcacheError):
            # Their holders in a few batched calls, not one call per block.
            held = await self.client.blocks.locate([info.block(i) for i in indexes])
        for index in indexes:
            if held.get(info.block(index).id):
                continue  # cached already (a warm start): nothing to fetch, no room taken
            if index > last:
                self.room.take(info.block(index).length)
            await self._slots.acquire()  # bounded: the next block waits for a free slot
            self.client._spawn(self._one(info, index))

    async def _one(self, info: FileInfo, index: int) -> None:
        try:
            await self.client.blocks.prefetch(info.block(index))
        finally:
            self._slots.release()
