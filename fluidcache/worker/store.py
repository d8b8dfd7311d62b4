"""The tiered block store: levels (MEM, SSD, HDD) with quotas, LRU eviction and demotion.

Who calls it: the worker's fetch path (``commit``), its HTTP handlers (``get``/``pin``) and the
reporter (``subscribe``). The store never touches the network.

Invariants:
- a level's ``used`` (committed plus reserved bytes) never exceeds its quota, at any instant:
  room is reserved before a byte is written, and a block that cannot fit is not cached;
- a block file is written under a temporary name, then renamed to ``<id>.<checksum>``; the
  directory listing of a persistent level is its durable index, and start-up deletes temp names;
- a block read from a persistent level after a restart is verified once against its checksum;
  a mismatch deletes it (and counts it), so a corrupted byte is never served;
- pinned blocks (being served) are never evicted, nor are kept blocks (a load with ``pin``)
  until they are removed on purpose (``fluidcache free``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import mmap
import os
import shutil
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from fluidcache.common.blockid import checksum, is_block_id
from fluidcache.common.protocol import TierUsage
from fluidcache.ufs.base import FileRegion
from fluidcache.worker.config import LevelConfig

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
SPARE_PREFIX = ".spare-"
SPARE_BYTES = 4 * 1024 * 1024  # each spare file (the default block size)
PROMOTE_AFTER_HITS = 2
GONE_REMEMBERED = 65_536  # sizes of removed blocks kept, for reads through fds that outlived them

Listener = Callable[[str, str], None]
"""Called with (event, block id); events are ``committed`` and ``removed``."""


@dataclass(eq=False)
class Block:
    """One cached block: where it lives and what its bytes must hash to."""

    id: str
    size: int
    checksum: str
    level: int
    path: Path
    verified: bool = True
    pins: int = 0
    hits: int = 0
    kept: bool = False  # pinned by a load (Fluid's data.pin): never evicted, only removed
    stamp: tuple[int, int, int] = (0, 0, 0)  # (inode, size, mtime ns) of the file verified

    def changed_on_disk(self) -> bool:
        """Whether the file is no longer the one verified (rewritten or replaced since): a
        stat, so that every serve can afford it."""
        try:
            return _stamp(self.path) != self.stamp
        except OSError:
            return True


@dataclass(eq=False)
class Level:
    """A storage level and the blocks on it, least recently used first."""

    config: LevelConfig
    used: int = 0  # blocks, blocks being written and spares
    lru: OrderedDict[str, Block] = field(default_factory=OrderedDict)
    spares: list[Path] = field(default_factory=list)  # see BlockStore.prefill

    @property
    def quota(self) -> int:
        return self.config.quota

    def directory(self, block_id: str) -> Path:
        paths = self.config.paths
        return paths[int(block_id[:8], 16) % len(paths)]

    def usage(self) -> TierUsage:
        """Quota, bytes held, blocks. Spares are room (given up when needed), not held."""
        held = self.used - len(self.spares) * SPARE_BYTES
        return TierUsage(self.config.medium, self.quota, held, len(self.lru))


@dataclass
class StoreCounters:
    evictions: int = 0
    demotions: int = 0
    promotions: int = 0
    checksum_failures: int = 0
    passthrough: int = 0


class BlockStore:
    """Blocks on tiered levels, the top level first; see the module docstring for invariants."""

    def __init__(self, levels: list[LevelConfig]) -> None:
        self.levels = [Level(c) for c in levels]
        self.blocks: dict[str, Block] = {}
        self.counters = StoreCounters()
        self._gone: OrderedDict[str, int] = OrderedDict()  # removed block id -> its size
        self._listeners: list[Listener] = []
        self._lock = asyncio.Lock()
        self._spare_names = itertools.count()

    # ---- lifecycle and queries -------------------------------------------------------------

    def open(self) -> None:
        """Create level directories, drop temp files and MEM blocks, index persistent blocks."""
        for i, level in enumerate(self.levels):
            for d in level.config.paths:
                d.mkdir(parents=True, exist_ok=True)
                for entry in os.scandir(d):
                    self._adopt(i, level, Path(entry.path), entry.name)

    def _adopt(self, index: int, level: Level, path: Path, name: str) -> None:
        block_id, _, digest = name.partition(".")
        known = is_block_id(block_id) and len(digest) == 16 and block_id not in self.blocks
        if not level.config.persistent or not known or name.startswith(TMP_PREFIX):
            with contextlib.suppress(OSError):
                path.unlink()
            return
        size = path.stat().st_size
        if level.used + size > level.quota:
            path.unlink()  # the quota shrank since the last run
            return
        block = Block(block_id, size, digest, index, path, verified=False)
        self.blocks[block_id] = block
        level.lru[block_id] = block
        level.used += size

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _emit(self, event: str, block_id: str) -> None:
        for listener in self._listeners:
            listener(event, block_id)

    def ids(self) -> list[str]:
        return list(self.blocks)

    def usage(self) -> list[TierUsage]:
        return [level.usage() for level in self.levels]

    def get(self, block_id: str) -> Block | None:
        """The block if held, marked as just used."""
        block = self.blocks.get(block_id)
        if block is not None:
            self.levels[block.level].lru.move_to_end(block_id)
            block.hits += 1
        return block

    def touch(self, block_id: str) -> Block | None:
        """Mark a block read elsewhere (a same-node client's short-circuit read) as just used,
        exactly as :meth:`get` does; None if it is no longer held."""
        return self.get(block_id)

    def gone_size(self, block_id: str) -> int:
        """The size of a block removed lately (a client may still read it through an open
        descriptor), else 0; the last :data:`GONE_REMEMBERED` removals are remembered."""
        return self._gone.get(block_id, 0)

    def wants_promotion(self, block: Block) -> bool:
        return block.level > 0 and block.hits >= PROMOTE_AFTER_HITS

    @contextlib.contextmanager
    def pin(self, block: Block) -> Iterator[Block]:
        """Keep ``block`` from being evicted or moved while it is read."""
        block.pins += 1
        try:
            yield block
        finally:
            block.pins -= 1

    async def verify(self, block: Block) -> bool:
        """Check an unverified block, or one whose file changed on disk since it was checked,
        against its checksum; delete it on a mismatch (it is refetched, never served)."""
        if block.verified and not block.changed_on_disk():
            return True
        try:
            data = await asyncio.to_thread(block.path.read_bytes)
        except OSError:
            data = b""
        if len(data) == block.size and checksum([data]) == block.checksum:
            block.verified = True
            with contextlib.suppress(OSError):
                block.stamp = _stamp(block.path)
            return True
        log.warning("block %s failed its checksum on %s; deleting it", block.id, block.path)
        self.counters.checksum_failures += 1
        async with self._lock:
            if self.blocks.get(block.id) is block:
                self._drop(block)
        return False

    # ---- writes --------------------------------------------------------------------------

    async def commit(
        self, block_id: str, data: bytes | Sequence[bytes | memoryview]
    ) -> Block | None:
        """Cache ``data`` (bytes, or parts in order) as ``block_id`` on the top level with room;
        None if it cannot fit.

        Idempotent: a block already held is returned as is.
        """
        parts = [data] if isinstance(data, bytes) else data
        size = sum(map(len, parts))
        async with self._lock:
            held = self.blocks.get(block_id)
            if held is not None:
                return held
            index = await self._reserve_any(size)
        if index is None:
            self.counters.passthrough += 1
            return None
        level = self.levels[index]
        digest = checksum(parts)
        path = level.directory(block_id) / f"{block_id}.{digest}"
        try:
            await asyncio.to_thread(_write_file, path, parts)
        except OSError as e:
            # The level's file system is fuller than its quota says (something else filled it)
            # or failing: serve this block pass-through rather than fail the read.
            level.used -= size
            self.counters.passthrough += 1
            log.warning("block %s not kept on %s: %s", block_id, level.config.medium, e)
            return None
        block = Block(block_id, size, digest, index, path)
        with contextlib.suppress(OSError):
            block.stamp = _stamp(path)
        async with self._lock:
            self.blocks[block_id] = block
            level.lru[block_id] = block
            await self._apply_watermark(index)
        self._emit("committed", block_id)
        return block

    async def writer(self, block_id: str, size: int) -> BlockWriter | None:
        """Room for a block of ``size`` bytes that arrives in pieces, written as they come (on a
        MEM level; elsewhere kept and written at commit); None if it is held already or cannot
        fit (the caller serves it pass-through). Call ``commit`` or ``abort`` exactly once."""
        async with self._lock:
            if block_id in self.blocks:
                return None
            index = await self._reserve_any(size)
        if index is None:
            self.counters.passthrough += 1
            return None
        return BlockWriter(self, block_id, size, index)

    def _adopt_written(self, block: Block) -> None:
        with contextlib.suppress(OSError):
            block.stamp = _stamp(block.path)  # its bytes were hashed as written: verified
        level = self.levels[block.level]
        self.blocks[block.id] = block
        level.lru[block.id] = block

    async def remove(self, block_id: str) -> Block | None:
        """Delete a block, kept or not (readers with an open fd finish); None if not held."""
        async with self._lock:
            block = self.blocks.get(block_id)
            if block is not None:
                self._drop(block)
            return block

    async def promote(self, block: Block) -> None:
        """Move a hot block from a lower level to the top level when it fits there."""
        async with self._lock:
            if self.blocks.get(block.id) is not block or block.level == 0 or block.pins:
                return
            if not await self._reserve(0, block.size, exclude=block):
                return
            await self._move(block, 0)
            self.counters.promotions += 1
            await self._apply_watermark(0)

    # ---- memory made ready ahead of need ---------------------------------------------------

    async def prefill(self, limit: int) -> int:
        """Allocate up to ``limit`` bytes of each MEM level ahead of need, as spare files of
        :data:`SPARE_BYTES` that the next blocks are written into; how many bytes.

        Why: a page a MEM block is written into is allocated (zeroed) on its first write, in
        the writer's time. Where memory given back to a hypervisor must be faulted in again,
        that cost most of a worker's CPU on a cold read (``perf``: ``memset`` in
        ``shmem_write_end``). Spares count as used, stay under the low watermark, and go
        before any block when room is needed."""
        made = 0
        for level in self.levels:
            if level.config.medium != "MEM":
                continue
            while len(level.spares) * SPARE_BYTES + SPARE_BYTES <= limit:
                async with self._lock:
                    if level.used + SPARE_BYTES > level.config.low * level.quota:
                        break
                    level.used += SPARE_BYTES
                n = next(self._spare_names)
                path = level.config.paths[n % len(level.config.paths)] / f"{SPARE_PREFIX}{n}"
                try:
                    # Written, not fallocated: tmpfs leaves a fallocated page untouched.
                    await asyncio.to_thread(_write_file, path, [bytes(SPARE_BYTES)])
                except OSError as e:
                    level.used -= SPARE_BYTES
                    log.warning("no spare memory on %s: %s", level.config.medium, e)
                    break
                level.spares.append(path)
                made += SPARE_BYTES
        return made

    def open_spare(self, index: int, size: int, path: Path) -> int:
        """A spare file of level ``index`` renamed to ``path`` and cut (or grown) to ``size``
        bytes, open for writing (a block's room is reserved already: the spare's is given
        back); -1 if none is in that directory or the block needs no more than half of one.
        A block larger than a spare (a dataset of 16 MiB blocks) finds its first
        :data:`SPARE_BYTES` ready."""
        level = self.levels[index]
        if size <= SPARE_BYTES // 2:
            return -1
        for i, spare in enumerate(level.spares):
            if spare.parent != path.parent:
                continue
            del level.spares[i]
            level.used -= SPARE_BYTES
            fd = -1
            try:
                os.replace(spare, path)
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
                os.ftruncate(fd, size)
            except OSError:
                if fd >= 0:
                    os.close(fd)
                with contextlib.suppress(OSError):
                    spare.unlink()
                return -1
            return fd
        return -1

    def drop_spares(self) -> None:
        """Delete every spare file (the worker stops)."""
        for level in self.levels:
            while level.spares:
                self._drop_spare(level)

    def _drop_spare(self, level: Level) -> None:
        with contextlib.suppress(OSError):
            level.spares.pop().unlink()
        level.used -= SPARE_BYTES

    # ---- space management (callers hold the lock) ---------------------------------------

    async def _reserve_any(self, size: int) -> int | None:
        for index in range(len(self.levels)):
            if await self._reserve(index, size):
                return index
        return None

    async def _reserve(self, index: int, size: int, exclude: Block | None = None) -> bool:
        """Make room for ``size`` bytes on a level and count them as used."""
        level = self.levels[index]
        if size > level.quota:
            return False
        while level.used + size > level.quota:
            if not await self._give_back(level, exclude):
                return False
        level.used += size
        return True

    async def _apply_watermark(self, index: int) -> None:
        """Past the high watermark, evict least recently used blocks until under low."""
        level = self.levels[index]
        if level.used <= level.config.high * level.quota:
            return
        target = level.config.low * level.quota
        while level.used > target:
            if not await self._give_back(level):
                return

    async def _give_back(self, level: Level, exclude: Block | None = None) -> bool:
        """Free some of ``level``: a spare if it has one, else its least recently used block
        (demoted or dropped); False if nothing can go."""
        if level.spares:
            self._drop_spare(level)
            return True
        victim = _oldest_unpinned(level, exclude)
        if victim is None:
            return False
        await self._evict(victim)
        return True

    async def _evict(self, block: Block) -> None:
        """Demote ``block`` to the next level when it has room, else drop it."""
        below = block.level + 1
        if below < len(self.levels) and await self._reserve(below, block.size):
            await self._move(block, below)
            self.counters.demotions += 1
        else:
            self._drop(block)
            self.counters.evictions += 1

    async def _move(self, block: Block, index: int) -> None:
        """Copy a block to level ``index`` (already reserved there) and release its old place."""
        src_level, dst_level = self.levels[block.level], self.levels[index]
        dst = dst_level.directory(block.id) / block.path.name
        try:
            await asyncio.to_thread(_copy_file, block.path, dst)
        except OSError:
            dst_level.used -= block.size
            self._drop(block)
            return
        old = block.path
        del src_level.lru[block.id]
        src_level.used -= block.size
        block.level, block.path = index, dst
        with contextlib.suppress(OSError):
            block.stamp = _stamp(dst)
        dst_level.lru[block.id] = block
        with contextlib.suppress(OSError):
            old.unlink()  # readers holding an open fd keep reading the old file

    def _drop(self, block: Block) -> None:
        level = self.levels[block.level]
        level.lru.pop(block.id, None)
        level.used -= block.size
        self.blocks.pop(block.id, None)
        with contextlib.suppress(OSError):
            block.path.unlink()
        self._gone[block.id] = block.size
        while len(self._gone) > GONE_REMEMBERED:
            self._gone.popitem(last=False)
        self._emit("removed", block.id)


class BlockWriter:
    """A block being written as its bytes arrive: to a temporary file on a MEM level (a memory
    copy, cheap enough for the event loop), else held until :meth:`commit` writes it in a
    thread. The checksum is computed on the way; the name is given at commit (crash-safe)."""

    def __init__(self, store: BlockStore, block_id: str, size: int, index: int) -> None:
        self.store, self.block_id, self.size, self.index = store, block_id, size, index
        self.level = store.levels[index]
        self.written = 0
        self._hash = xxhash.xxh3_64()
        self._parts: list[bytes | memoryview] = []
        self._tmp = self.level.directory(block_id) / f"{TMP_PREFIX}{block_id}"
        self._fd = -1
        self._map: mmap.mmap | None = None
        if self.level.config.medium == "MEM":
            self._fd = store.open_spare(index, size, self._tmp)
            if self._fd < 0:
                flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
                self._fd = os.open(self._tmp, flags)

    def region(self) -> FileRegion | None:
        """The block's file on a MEM level, sized, as the target of a source's read (its bytes
        spliced in; then :meth:`received`); None elsewhere."""
        if self._fd < 0 or self.written or self.size <= 0:
            return None
        os.ftruncate(self._fd, self.size)
        return FileRegion(self._fd, 0, self.size)

    def received(self, n: int) -> memoryview:
        """The first ``n`` bytes of :meth:`region` were written: hashed, counted, and given
        back as a view of the file (it stays valid after commit)."""
        self._map = mmap.mmap(self._fd, self.size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        view = memoryview(self._map)[:n]
        self._hash.update(view)
        self.written += n
        return view

    def write(self, piece: bytes | memoryview) -> None:
        """Add the next piece; never awaits. OSError when the level cannot take it."""
        self._hash.update(piece)
        self.written += len(piece)
        if self._fd < 0:
            self._parts.append(piece)
            return
        view = memoryview(piece)
        while view:
            view = view[os.write(self._fd, view) :]

    async def commit(self) -> Block | None:
        """Name and index the block (it must have exactly ``size`` bytes); None if another
        copy was committed meanwhile (this one is dropped)."""
        if self.written != self.size:
            message = f"block {self.block_id}: {self.written} of {self.size} bytes written"
            self.abort()
            raise ValueError(message)
        digest = self._hash.hexdigest()
        path = self.level.directory(self.block_id) / f"{self.block_id}.{digest}"
        store = self.store
        try:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
                os.replace(self._tmp, path)
            else:
                await asyncio.to_thread(_write_file, path, self._parts)
        except OSError:
            self.abort()
            raise
        self._parts = []
        block = Block(self.block_id, self.size, digest, self.index, path)
        async with store._lock:
            if self.block_id in store.blocks:
                self.level.used -= self.size
                return store.blocks[self.block_id]
            store._adopt_written(block)
            await store._apply_watermark(self.index)
        store._emit("committed", self.block_id)
        return block

    def abort(self) -> None:
        """Give the room back and remove the temporary file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(OSError):
            self._tmp.unlink()
        if self.size >= 0:
            self.level.used -= self.size
            self.size = -1
        self._parts = []


def _oldest_unpinned(level: Level, exclude: Block | None = None) -> Block | None:
    for block in level.lru.values():
        if block.pins == 0 and not block.kept and block is not exclude:
            return block
    return None


def _write_file(path: Path, parts: Sequence[bytes | memoryview]) -> None:
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}")
    try:
        with open(tmp, "wb") as f:
            f.writelines(parts)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()  # a partial block never stays behind (ENOSPC)
        raise


def _copy_file(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f"{TMP_PREFIX}{dst.name}")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _stamp(path: Path) -> tuple[int, int, int]:
    s = path.stat()
    return s.st_ino, s.st_size, s.st_mtime_ns
