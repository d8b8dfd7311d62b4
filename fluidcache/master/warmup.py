"""Warm-ups and frees: what a load job does with the workers, block by block.

A load walks its targets in the namespace, then has every block of their files held by
``replicas`` distinct live workers. Each block's copies form a binary tree rooted at a worker
that already holds it (or, when none does, at the first worker chosen, which reads the source):
every other worker copies the block from its parent, so the source is read once per block
however many replicas are asked for. Workers are chosen per block by rendezvous hashing, which
spreads both the source reads and the copies over the cluster.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence

import xxhash

from fluidcache.common import errors
from fluidcache.common.http import RpcClient
from fluidcache.common.protocol import (
    BLOCK_CACHE,
    BLOCKS_FREE,
    REPLICAS_ALL,
    BlockRef,
    BlocksFreeReply,
    BlocksFreeRequest,
    FileInfo,
    FreeReply,
    LocalBlocksReply,
    WorkerInfo,
)
from fluidcache.master.blocks import BlockMap
from fluidcache.master.jobs import Progress
from fluidcache.master.namespace import Counts, Namespace
from fluidcache.master.store import Inode
from fluidcache.master.sync import Syncer

log = logging.getLogger(__name__)

BLOCKS_PER_WORKER = 4  # cache requests in flight per live worker
MAX_IN_FLIGHT = 64
FREE_BATCH = 4096
CACHE_TIMEOUT = 600.0  # one block: a slow source may take long, a dead worker is seen sooner


@dataclasses.dataclass
class _File:
    target: int
    info: FileInfo
    left: int  # blocks not yet at their replica count


def rank(block_id: str, workers: Iterable[str]) -> list[str]:
    """``workers`` in rendezvous-hash order for ``block_id`` (stable, spread evenly)."""
    return sorted(workers, key=lambda w: xxhash.xxh64_intdigest(f"{block_id}\0{w}".encode()))


def fanout_parent(position: int) -> int:
    """In a block's copy tree (positions 0, 1, 2, ...), where position ``position`` copies from."""
    return (position - 1) // 2


async def files_under(ns: Namespace, sync: Syncer, top: Inode) -> AsyncIterator[FileInfo]:
    """Every file at or under ``top``, listing directories that were never listed (or stale)."""
    stack = [top]
    while stack:
        node = stack.pop()
        if not node.is_dir:
            yield ns.info(await sync.validate(node))
            continue
        node = await sync.fresh(node)
        cursor = ""
        while True:
            page, more = ns.page(node.ino, cursor, 1000)
            for child in page:
                if child.is_dir:
                    stack.append(child)
                else:
                    try:
                        yield ns.info(await sync.validate(child))
                    except errors.NotFound:
                        continue  # gone from the source since it was listed: nothing to load
            if not more:
                break
            cursor = page[-1].name


class Warmer:
    """Runs the block work of load and free jobs against the live workers."""

    def __init__(
        self,
        ns: Namespace,
        sync: Syncer,
        blocks: BlockMap,
        live_workers: Callable[[], list[WorkerInfo]],
        rpc: Callable[[str], RpcClient],
    ) -> None:
        self.ns = ns
        self.sync = sync
        self.blocks = blocks
        self.live_workers = live_workers
        self.rpc = rpc

    def replica_count(self, replicas: int) -> int:
        """The number of copies ``replicas`` asks for now; InvalidArgument if it cannot be met."""
        live = len(self.live_workers())
        if replicas == REPLICAS_ALL:
            if live == 0:
                raise errors.Unavailable("replicas all: no live worker")
            return live
        if replicas < 1:
            raise errors.InvalidArgument(f"replicas: {replicas} (use 1..{live} or all)")
        if replicas > live:
            raise errors.InvalidArgument(
                f"replicas: {replicas} is more than the {live} live workers"
            )
        return replicas

    async def load(
        self,
        tops: Sequence[Inode],
        replicas: int,
        metadata: bool,
        pin: bool,
        progress: Progress,
        wait_workers: Callable[[int], Awaitable[None]],
    ) -> None:
        """Have every block under ``tops`` held by ``replicas`` workers; raise on failures.

        Progress totals are known before any block is asked for, so rate and ETA make sense.
        """
        if metadata:
            for top in tops:
                if top.is_dir:
                    await self.sync.walk(top, True, Counts())
        files: list[_File] = []
        for index, top in enumerate(tops):
            async for info in files_under(self.ns, self.sync, top):
                files.append(_File(index, info, info.block_count))
                progress.add(index, 1, info.size)
        for f in files:
            if f.left == 0:
                progress.add(f.target, 1, 0, done=True)
        want = REPLICAS_ALL if replicas == REPLICAS_ALL else replicas
        await wait_workers(1 if want == REPLICAS_ALL else want)
        count = self.replica_count(want)
        failures: list[str] = []
        slots = asyncio.Semaphore(min(MAX_IN_FLIGHT, BLOCKS_PER_WORKER * count))

        async def one(f: _File, ref: BlockRef) -> None:
            try:
                await self._place(ref, count, pin, progress)
            except errors.FluidcacheError as e:
                failures.append(f"{f.info.path} block {ref.index}: {e.message}")
                return
            finally:
                slots.release()
            progress.add(f.target, 0, ref.length, done=True)
            f.left -= 1
            if f.left == 0:
                progress.add(f.target, 1, 0, done=True)

        tasks: set[asyncio.Task[None]] = set()
        try:
            for f in files:
                for i in range(f.info.block_count):
                    await slots.acquire()  # bounded: never more tasks than slots
                    task = asyncio.ensure_future(one(f, f.info.block(i)))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if failures:
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            raise errors.Unavailable(f"{len(failures)} blocks not cached: {failures[0]}{more}")

    async def _place(self, ref: BlockRef, count: int, pin: bool, progress: Progress) -> None:
        """Make ``ref`` held by ``count`` live workers, copying down a tree from one holder."""
        live = {w.worker_id for w in self.live_workers()}
        held = [w for w in self.blocks.holders([ref.id]).get(ref.id, []) if w in live]
        ranked = rank(ref.id, live - set(held))
        tree = held[:]  # positions: holders first, then the workers that will copy
        if pin:
            await asyncio.gather(*(self._cache(w, ref, "", True) for w in held))
        while len(tree) < count and ranked:
            depth_start = len(tree)
            wave: list[tuple[str, str]] = []
            while len(tree) < count and ranked and len(wave) < max(1, depth_start):
                worker = ranked.pop(0)
                parent = tree[fanout_parent(len(tree) + len(wave))] if tree else ""
                wave.append((worker, parent))
            results = await asyncio.gather(
                *(self._cache(w, ref, parent, pin) for w, parent in wave),
                return_exceptions=True,
            )
            for (worker, parent), result in zip(wave, results, strict=True):
                if result is True:
                    tree.append(worker)
                    if not parent:
                        progress.source_bytes += ref.length
                elif isinstance(result, BaseException) and not isinstance(
                    result, errors.FluidcacheError
                ):
                    raise result
                else:
                    log.info("block %s not kept on %s: %s", ref.id, worker, result)
        if len(tree) < count:
            raise errors.Unavailable(f"held by {len(tree)} of {count} workers (no room or down)")

    async def _cache(self, worker_id: str, ref: BlockRef, peer: str, pin: bool) -> bool:
        """Ask ``worker_id`` to cache ``ref`` (copying from ``peer`` if set); True if kept."""
        params = {**ref.to_query(), "pin": "1" if pin else "0"}
        if peer:
            params["peer"] = peer
        else:
            params["peers"] = "0"  # the master just saw no holder: straight to the source
        path = BLOCK_CACHE.format(block_id=ref.id)
        got = await self.rpc(worker_id).call(path, None, LocalBlocksReply, params)
        if ref.id not in got.paths:
            return False
        self.blocks.update(worker_id, [ref.id], [])  # seen now, before the worker reports it
        return True

    async def free(self, tops: Sequence[Inode]) -> FreeReply:
        """Remove every block of the files under ``tops`` from every live worker holding it."""
        files = 0
        by_worker: dict[str, list[str]] = {}
        live = {w.worker_id for w in self.live_workers()}
        for top in tops:
            async for info in files_under(self.ns, self.sync, top):
                files += 1
                ids = [info.block(i).id for i in range(info.block_count)]
                for block_id, holders in self.blocks.holders(ids).items():
                    for w in holders:
                        if w in live:
                            by_worker.setdefault(w, []).append(block_id)
        blocks = size = 0
        for worker_id, ids in by_worker.items():
            for start in range(0, len(ids), FREE_BATCH):
                batch = ids[start : start + FREE_BATCH]
                got = await self.rpc(worker_id).call(
                    BLOCKS_FREE, BlocksFreeRequest(batch), BlocksFreeReply
                )
                self.blocks.update(worker_id, [], batch)
                blocks, size = blocks + got.blocks, size + got.bytes
        log.info("freed %d blocks (%d bytes) of %d files", blocks, size, files)
        return FreeReply(files, blocks, size)
