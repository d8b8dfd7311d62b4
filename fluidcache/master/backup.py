"""Metadata backups: the whole namespace (inodes, dentries, datasets, mounts, counters) in one file.

Layout::

    header   b"FCBACKUP" + format version (u32 BE)
    body     msgpack arrays [db index, key, value], one per LMDB record, streamed
    trailer  b"FCBKEND\\0" + record count (u64 BE) + xxh3-64 of header and body (u64 BE)

Block locations and workers are not included: workers re-register what they hold. Mount options
are non-secret by construction (see :class:`~fluidcache.master.config.MasterConfig`), so a backup
never holds a credential. A file that is truncated, altered or of another format is refused with a
ConfigError before anything is written.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from pathlib import Path
from typing import BinaryIO

import msgpack
import xxhash

from fluidcache.common.errors import ConfigError
from fluidcache.master.store import Store

MAGIC = b"FCBACKUP"
END = b"FCBKEND\0"
VERSION = 1
_HEADER = struct.Struct(">8sI")
_TRAILER = struct.Struct(">8sQQ")
_RESTORE_BATCH = 10_000
_CHUNK = 1 << 20
# The namespace counters (meta, holding next_ino) go last: a restore that stops half way leaves
# the store looking empty, so the next start restores again.
_ORDER = ("inodes", "dentries", "datasets", "mounts", "meta")


@dataclasses.dataclass(frozen=True, slots=True)
class BackupInfo:
    path: Path
    size: int
    records: int
    inodes: int
    checksum: str


class _Hashing:
    """A writer that hashes what passes through it."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.hash = xxhash.xxh3_64()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.hash.update(data)
        self.f.write(data)
        self.size += len(data)


def write_backup(store: Store, path: Path) -> BackupInfo:
    """Write a consistent snapshot of the namespace to ``path`` (atomically: temp name, rename).

    Blocking: call it in a thread. The snapshot is one LMDB read transaction, so writes that go
    on meanwhile are either wholly in it or not at all.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    records = inodes = 0
    packer = msgpack.Packer()
    try:
        with tmp.open("wb") as raw, store.read() as txn:
            out = _Hashing(raw)
            out.write(_HEADER.pack(MAGIC, VERSION))
            for index, name in enumerate(_ORDER):
                for key, value in txn.cursor(db=store.dbs[name]):
                    out.write(packer.pack([index, key, value]))
                    records += 1
                    inodes += name == "inodes"
            checksum = out.hash.intdigest()
            raw.write(_TRAILER.pack(END, records, checksum))
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return BackupInfo(path, out.size + _TRAILER.size, records, inodes, f"{checksum:016x}")


def verify_backup(path: Path) -> int:
    """Check a backup's format, length and checksum without loading it; its record count.

    ConfigError (naming ``restore_from``) says what is wrong.
    """
    what = f"restore_from: {path}"
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(_HEADER.size)
            if not MAGIC.startswith(head[: len(MAGIC)]):
                raise ConfigError(f"{what} is not a fluidcache metadata backup")
            if size < _HEADER.size + _TRAILER.size:
                raise ConfigError(f"{what} is truncated ({size} bytes)")
            _, version = _HEADER.unpack(head)
            if version != VERSION:
                raise ConfigError(
                    f"{what} has format version {version}; this master reads version {VERSION}"
                )
            f.seek(size - _TRAILER.size)
            end, records, checksum = _TRAILER.unpack(f.read(_TRAILER.size))
            if end != END:
                raise ConfigError(f"{what} is truncated or corrupted (no end marker)")
            f.seek(0)
            h = xxhash.xxh3_64()
            left = size - _TRAILER.size
            while left:
                chunk = f.read(min(_CHUNK, left))
                h.update(chunk)
                left -= len(chunk)
            if h.intdigest() != checksum:
                raise ConfigError(f"{what} is corrupted (checksum mismatch)")
    except OSError as e:
        raise ConfigError(f"{what}: cannot read it: {e.strerror}") from None
    return int(records)


def restore_backup(store: Store, path: Path) -> int:
    """Replace the namespace in ``store`` with the backup at ``path``; the records restored.

    The file is verified first, then loaded in batches (the whole namespace is never in memory).
    """
    expected = verify_backup(path)
    size = path.stat().st_size
    with store.write() as txn:
        for name in _ORDER:
            txn.drop(store.dbs[name], delete=False)
    count = 0
    with path.open("rb") as f:
        f.seek(_HEADER.size)
        body = _Limited(f, size - _HEADER.size - _TRAILER.size)
        unpacker = msgpack.Unpacker(body, use_list=True, max_buffer_size=64 << 20)
        batch: list[tuple[int, bytes, bytes]] = []
        for record in unpacker:
            index, key, value = record
            batch.append((index, key, value))
            if len(batch) >= _RESTORE_BATCH:
                count += _put(store, batch)
                batch = []
        count += _put(store, batch)
    if count != expected:
        raise ConfigError(
            f"restore_from: {path} holds {count} records, its trailer says {expected}"
        )
    return count


def _put(store: Store, batch: list[tuple[int, bytes, bytes]]) -> int:
    with store.write() as txn:
        for index, key, value in batch:
            txn.put(key, value, db=store.dbs[_ORDER[index]])
    return len(batch)


class _Limited:
    """A reader that stops after ``left`` bytes (the body, without the trailer)."""

    def __init__(self, f: BinaryIO, left: int) -> None:
        self.f = f
        self.left = left

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n)
        self.left -= len(data)
        return data
