"""The master's LMDB environment: its named sub-databases, key layouts and the inode record.

One environment in the data dir holds everything; every change is one write transaction.

    inodes         ino (8 bytes BE)             -> Inode record (msgpack)
    dentries       parent ino + name (UTF-8)    -> child ino, listing stamp, is_dir
    datasets       dataset name                 -> [block_size (0: each source's own), sync_ttl]
    mounts         dataset NUL mount name       -> [uri, options, snapshot served]
    locations      block id (16 bytes) + worker -> b""
    worker_blocks  worker NUL block id          -> b""
    workers        worker id                    -> WorkerInfo (msgpack)
    jobs           job id                       -> JobInfo (msgpack)
    meta           b"next_ino", b"next_stamp", b"stats/" + dataset -> counters

Dentries sort by name bytes (UTF-8 order is code point order), so a directory page is a cursor
range scan and never needs the whole directory in memory.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import msgpack

from fluidcache.common import errors
from fluidcache.common.protocol import ROOT_INO

DB_NAMES = (
    "inodes",
    "dentries",
    "datasets",
    "mounts",
    "locations",
    "worker_blocks",
    "workers",
    "jobs",
    "meta",
)

_DENTRY = struct.Struct(">QI?")
NEXT_INO = b"next_ino"
NEXT_STAMP = b"next_stamp"


def ino_key(ino: int) -> bytes:
    """The LMDB key of an inode; NotFound for a number no inode can have (negative, > 64 bits)."""
    if not 0 <= ino < 1 << 64:
        raise errors.NotFound(f"inode {ino}")
    return ino.to_bytes(8, "big")


def dentry_key(parent: int, name: str) -> bytes:
    return ino_key(parent) + name.encode()


def pack_dentry(ino: int, stamp: int, is_dir: bool) -> bytes:
    return _DENTRY.pack(ino, stamp, is_dir)


def unpack_dentry(value: bytes) -> tuple[int, int, bool]:
    ino, stamp, is_dir = _DENTRY.unpack(value)
    return int(ino), int(stamp), bool(is_dir)


def stats_key(dataset: str) -> bytes:
    return b"stats/" + dataset.encode()


@dataclasses.dataclass(slots=True)
class Inode:
    """One namespace entry as stored. Directories also record when they were last listed."""

    ino: int
    parent: int
    path: str
    is_dir: bool
    size: int = 0
    mtime: float = 0.0
    version: str = ""
    synced_at: float = 0.0  # directories: wall time of the last complete listing, 0 = never
    listings: int = 0  # directories: stamp of the newest listing (children carry it)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1]

    @property
    def dataset(self) -> str:
        return self.path.split("/", 2)[1] if self.path != "/" else ""

    def pack(self) -> bytes:
        return msgpack.packb(  # type: ignore[no-any-return]
            [
                self.parent,
                self.path,
                self.is_dir,
                self.size,
                self.mtime,
                self.version,
                self.synced_at,
                self.listings,
            ]
        )

    @classmethod
    def unpack(cls, ino: int, data: bytes) -> Inode:
        return cls(ino, *msgpack.unpackb(data))


def root_inode() -> Inode:
    return Inode(ROOT_INO, ROOT_INO, "/", True)


class Store:
    """The LMDB environment and its sub-databases; opened once per master process."""

    def __init__(self, data_dir: Path, map_size: int) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(
            str(data_dir / "master.lmdb"),
            map_size=map_size,
            max_dbs=len(DB_NAMES),
            subdir=True,
        )
        self.dbs: dict[str, Any] = {name: self.env.open_db(name.encode()) for name in DB_NAMES}
        self.inodes = self.dbs["inodes"]
        self.dentries = self.dbs["dentries"]
        self.datasets = self.dbs["datasets"]
        self.mounts = self.dbs["mounts"]
        self.locations = self.dbs["locations"]
        self.worker_blocks = self.dbs["worker_blocks"]
        self.workers = self.dbs["workers"]
        self.jobs = self.dbs["jobs"]
        self.meta = self.dbs["meta"]

    def read(self) -> Any:
        """A read-only transaction (use as a context manager)."""
        return self.env.begin()

    def write(self) -> Any:
        """A write transaction: committed on normal exit, aborted on an exception."""
        return self.env.begin(write=True)

    def is_empty(self) -> bool:
        with self.read() as txn:
            return txn.get(NEXT_INO, db=self.meta) is None

    def close(self) -> None:
        self.env.close()


def scan_prefix(
    txn: Any, db: Any, prefix: bytes, start: bytes = b""
) -> Iterator[tuple[bytes, bytes]]:
    """Key/value pairs whose key starts with ``prefix``, from ``prefix + start`` on, in order."""
    cursor = txn.cursor(db=db)
    if not cursor.set_range(prefix + start):
        return
    for key, value in cursor:
        if not key.startswith(prefix):
            return
        yield key, value
