"""Bounded client-side caches: metadata with a TTL, block bytes by size, open block files."""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

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


class FdCache:
    """Open read-only descriptors of block files (short-circuit reads), least recently used out.

    A descriptor stays valid after the worker evicts or moves the file: the bytes stay readable
    until it is closed here. Block files are named by content, so a path never changes bytes.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._fds: OrderedDict[str, int] = OrderedDict()

    def get(self, block_id: str) -> int | None:
        fd = self._fds.get(block_id)
        if fd is not None:
            self._fds.move_to_end(block_id)
        return fd

    def open(self, block_id: str, path: str) -> int | None:
        """Open and keep ``path`` for ``block_id``; None if the file is gone already."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        old = self._fds.pop(block_id, None)
        if old is not None:
            os.close(old)
        self._fds[block_id] = fd
        while len(self._fds) > self.size:
            _, stale = self._fds.popitem(last=False)
            os.close(stale)
        return fd

    def drop(self, block_id: str) -> None:
        fd = self._fds.pop(block_id, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
