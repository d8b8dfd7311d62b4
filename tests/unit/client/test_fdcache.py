"""The client's cache of open block files: a file is hashed once, or not at all when the
worker's stamp says it checked the file as it is now."""

from __future__ import annotations

import os
from pathlib import Path

from fluidcache.client.cache import FdCache, LocalFile
from fluidcache.common.blockid import checksum


def stamp_of(path: Path) -> tuple[int, int, int]:
    s = path.stat()
    return s.st_ino, s.st_size, s.st_mtime_ns


def test_a_damaged_file_is_refused_unless_the_worker_stamped_it_as_it_is(tmp_path: Path) -> None:
    good = b"block bytes" * 1000
    path = tmp_path / f"b1.{checksum([good])}"
    path.write_bytes(good)
    fds = FdCache(8, 1 << 20)
    fd = fds.open("b1", LocalFile(str(path), "w0"))
    assert fd is not None and os.pread(fd, 5, 0) == b"block"
    fds.drop("b1")

    damaged = tmp_path / f"b2.{checksum([good])}"
    damaged.write_bytes(b"X" + good[1:])
    assert fds.open("b2", LocalFile(str(damaged), "w0")) is None  # hashed: refused
    assert fds.open("b2", LocalFile(str(damaged), "w0", (1, 2, 3))) is None  # stale stamp
    # The stamp of the file as it is now is the worker's word that it checked those bytes:
    # trusted without hashing (a worker that checked them would have dropped this file).
    assert fds.open("b2", LocalFile(str(damaged), "w0", stamp_of(damaged))) is not None
    fds.close()
