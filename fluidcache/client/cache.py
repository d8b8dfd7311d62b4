"""Bounded client-side caches: metadata with a TTL, block bytes by size, open block files."""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

from fluidcache.common.blockid import file_checksum

log = logging.getLogger(__name__)

VERIFIED_KEPT = 100_000  # block files known to match their checksum, at most
POPULATED_BYTES = 64 * 1024 * 1024  # block files mapped with their pages up front, at most
MAPPED_MIN_BYTES = 2 * 1024 * 1024  # smaller block files are copied: a read or two each, and
# a mapping per read costs more than the copy (a warm epoch over 128 KiB files: -20 %)

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """A dict whose entries expire after ``ttl`` seconds and which holds at most ``size``."""

    def __init__(self, ttl: float, size: int, clock: Callable[[], float]) -> None:
        self.ttl, self.size, self.clock = ttl, size, clock
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        hit = self._data.get(key)
        if hit is None or hit[0] < self.clock():
            return None
        self._data.move_to_end(key)
        return hit[1]

    def get_stale(self, key: K) -> V | None:
        """The entry even if expired (still bounded by ``size``): a fallback for when the
        source of truth cannot be reached."""
        hit = self._data.get(key)
        return None if hit is None else hit[1]

    def put(self, key: K, value: V) -> None:
        self._data[key] = (self.clock() + self.ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def pop(self, key: K) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()


class BlockCache:
    """Recently read blocks in memory, bounded by bytes, least recently used out first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._blocks: OrderedDict[str, bytes] = OrderedDict()

    def get(self, block_id: str) -> bytes | None:
        data = self._blocks.get(block_id)
        if data is not None:
            self._blocks.move_to_end(block_id)
        return data

    def put(self, block_id: str, data: bytes) -> None:
        if len(data) > self.capacity or block_id in self._blocks:
            return
        self._blocks[block_id] = data
        self.used += len(data)
        while self.used > self.capacity:
            _, old = self._blocks.popitem(last=False)
            self.used -= len(old)

    def clear(self) -> None:
        self._blocks.clear()
        self.used = 0


class LocalFile(NamedTuple):
    """A block's file on this node: its path, the worker that holds it, and the (inode, size,
    mtime ns) the worker last checked it at (empty when it has not)."""

    path: str
    owner: str
    stamp: tuple[int, ...] = ()


class FdCache:
    """Open read-only descriptors of block files (short-circuit reads), least recently used out.

    A descriptor stays valid after the worker evicts or moves the file: the bytes stay readable
    until it is closed here. Block files are named by content, so a path never changes bytes.
    Because an open descriptor keeps an evicted file's memory alive, the cache is bounded by the
    bytes it holds open as well as by count.
    """

    def __init__(self, size: int, max_bytes: int) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0
        # id -> (fd, file size, owner: the address of the worker whose file it is, mtime ns)
        self._fds: OrderedDict[str, tuple[int, int, str, int]] = OrderedDict()
        self._maps: dict[str, mmap.mmap] = {}
        self._verified: OrderedDict[tuple[str, int, int, int], None] = OrderedDict()

    def get(self, block_id: str) -> int | None:
        """The open descriptor of ``block_id``'s file; None (and closed) when the file was
        written since it was checked (a block damaged in place is never read)."""
        entry = self._fds.get(block_id)
        if entry is None:
            return None
        try:
            s = os.fstat(entry[0])
            unchanged = (s.st_size, s.st_mtime_ns) == (entry[1], entry[3])
        except OSError:
            unchanged = False
        if not unchanged:
            self.drop(block_id)
            return None
        self._fds.move_to_end(block_id)
        return entry[0]

    def mapped(self, block_id: str) -> mmap.mmap | None:
        """The open file of ``block_id`` mapped read-only (kept while its descriptor is), so a
        reply can be written from the file's pages without a copy; None for a file under
        ``MAPPED_MIN_BYTES`` or none open. Call after :meth:`get`, which checks the file is
        unchanged."""
        m = self._maps.get(block_id)
        if m is not None:
            return m
        entry = self._fds.get(block_id)
        if entry is None or entry[1] < MAPPED_MIN_BYTES:
            return None
        flags = mmap.MAP_SHARED | (mmap.MAP_POPULATE if entry[1] <= POPULATED_BYTES else 0)
        try:
            m = mmap.mmap(entry[0], entry[1], flags=flags, prot=mmap.PROT_READ)
        except OSError:
            return None
        self._maps[block_id] = m
        return m

    def owner(self, block_id: str) -> str:
        """The worker whose file ``block_id``'s descriptor reads ("" if none is open)."""
        entry = self._fds.get(block_id)
        return entry[2] if entry is not None else ""

    def open(self, block_id: str, local: LocalFile) -> int | None:
        """Open and keep ``local.path`` (a file of worker ``local.owner``) for ``block_id``;
        None if the file is gone already, or if its bytes do not match the checksum its name
        carries (a block file damaged on disk is never read; the worker then refetches it)."""
        path, owner = local.path, local.owner
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            s = os.fstat(fd)
            if not self._verified_file(fd, path, s, local.stamp):
                log.warning("block file %s does not match its checksum; not reading it", path)
                os.close(fd)
                return None
        except OSError:
            os.close(fd)
            return None
        self.drop(block_id)
        size = s.st_size
        self._fds[block_id] = (fd, size, owner, s.st_mtime_ns)
        self.bytes += size
        while len(self._fds) > 1 and (len(self._fds) > self.size or self.bytes > self.max_bytes):
            self.drop(next(iter(self._fds)))
        return fd

    def _verified_file(
        self, fd: int, path: str, s: os.stat_result, stamp: tuple[int, ...] = ()
    ) -> bool:
        """Whether the open file's bytes hash to the checksum after the dot in its name.

        Checked once per file as it is on disk (inode, size, mtime): a later open of the same
        unchanged file costs nothing more, nor does a file the worker checked (or wrote and
        hashed) as it is now, by the ``stamp`` it gave.
        """
        digest = path.rpartition(".")[2]
        if len(digest) != 16 or "/" in digest:
            return True  # not a checksummed block file name
        key = (path, s.st_ino, s.st_size, s.st_mtime_ns)
        if key in self._verified:
            self._verified.move_to_end(key)
            return True
        if stamp != key[1:] and file_checksum(fd, s.st_size) != digest:
            return False
        self._verified[key] = None
        while len(self._verified) > VERIFIED_KEPT:
            self._verified.popitem(last=False)
        return True

    def drop(self, block_id: str) -> None:
        """Close ``block_id``'s descriptor and mapping (a mapping a reply still reads from is
        unmapped when that reply lets go of it)."""
        entry = self._fds.pop(block_id, None)
        if entry is not None:
            self.bytes -= entry[1]
            with contextlib.suppress(OSError):
                os.close(entry[0])
        m = self._maps.pop(block_id, None)
        if m is not None:
            with contextlib.suppress(BufferError):
                m.close()

    def close(self) -> None:
        for block_id in list(self._fds):
            self.drop(block_id)
