"""The client's cache of open block files: a file is hashed once, or not at all when the
worker's stamp says it checked the file as it is now."""

from __future__ import annotations

import os
from pathlib import Path

from fluidcache.client.cache import MAPPED_MIN_BYTES, FdCache, LocalFile
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


def test_a_mapped_file_serves_its_bytes_after_eviction_and_never_once_rewritten(
    tmp_path: Path,
) -> None:
    data = os.urandom(MAPPED_MIN_BYTES + 300_000)
    path = tmp_path / f"b1.{checksum([data])}"
    path.write_bytes(data)
    fds = FdCache(8, 1 << 30)
    assert fds.open("b1", LocalFile(str(path), "w0")) is not None
    m = fds.mapped("b1")
    assert m is not None and fds.mapped("b1") is m  # mapped once, kept with the descriptor
    view = memoryview(m)[1000:201_000]  # a reply still writing from the file
    path.unlink()  # the worker evicts the block
    fds.drop("b1")  # and the cache lets go: the mapping lives on while the view does
    assert view.tobytes() == data[1000:201_000]
    view.release()
    assert m.closed is False  # unmapped when the last view of it goes
    del view, m

    other = tmp_path / f"b2.{checksum([data])}"
    other.write_bytes(data)
    assert fds.open("b2", LocalFile(str(other), "w0")) is not None
    assert fds.mapped("b2") is not None
    with open(other, "r+b") as f:  # rewritten in place after the check
        f.write(b"X" * 10)
    os.utime(other, ns=(1, 1))
    assert fds.get("b2") is None and fds.mapped("b2") is None  # neither descriptor nor mapping
    small = tmp_path / "b3"
    small.write_bytes(data[: MAPPED_MIN_BYTES - 1])
    assert fds.open("b3", LocalFile(str(small), "w0")) is not None
    assert fds.mapped("b3") is None  # read once or twice: copied, cheaper than a mapping
    fds.close()
