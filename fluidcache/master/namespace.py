"""The inode tree in LMDB: datasets and their mounts, lookups, pages, and applying listings.

Everything here is synchronous and short: one LMDB transaction per call, run on the event loop
(writes are batched by the caller, so no call holds the loop for long). Listing a source and
deciding *when* to list is :mod:`fluidcache.master.sync`'s job.

Paths: ``/`` is the root, ``/DATASET`` a dataset, ``/DATASET/MOUNT`` a named mount; a dataset with
a single unnamed mount has that mount's contents directly under ``/DATASET``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import msgpack

from fluidcache.common import errors
from fluidcache.common.blockid import content_digest
from fluidcache.common.protocol import MAX_NAME_BYTES, ROOT_INO, FileInfo, MountInfo, valid_name
from fluidcache.master.store import (
    NEXT_INO,
    NEXT_STAMP,
    Inode,
    Store,
    dentry_key,
    ino_key,
    pack_dentry,
    root_inode,
    scan_prefix,
    stats_key,
    unpack_dentry,
)
from fluidcache.ufs import UfsStatus, UnderFileSystem, create_ufs

log = logging.getLogger(__name__)


@dataclasses.dataclass(slots=True)
class Mount:
    """A mounted source: where it sits in the namespace and the adapter that lists it."""

    prefix: str  # namespace path of the mount root, e.g. /default or /default/imgs
    info: MountInfo
    ufs: UnderFileSystem
    block_size: int
    ttl: float
    snapshot: str = ""  # the snapshot its source serves, as stored with the mount record

    def rel(self, path: str) -> str:
        """The source-relative path of namespace ``path`` (under this mount)."""
        return path[len(self.prefix) + 1 :]


@dataclasses.dataclass(slots=True)
class Counts:
    """What a listing (or a walk of many) saw: directories listed, entries, bytes."""

    dirs_listed: int = 0
    files: int = 0
    dirs: int = 0
    bytes: int = 0

    def add(self, other: Counts) -> None:
        self.dirs_listed += other.dirs_listed
        self.files += other.files
        self.dirs += other.dirs
        self.bytes += other.bytes


@dataclasses.dataclass(slots=True)
class DatasetStats:
    """Incrementally maintained totals of what the namespace holds for one dataset."""

    bytes: int = 0
    files: int = 0
    dirs: int = 0

    def count(self, node: Inode, sign: int) -> None:
        if node.is_dir:
            self.dirs += sign
        else:
            self.files += sign
            self.bytes += sign * node.size


def split_path(path: str) -> list[str]:
    """The components of a namespace path; InvalidArgument for ``..``, NUL or a component over
    NAME_MAX bytes."""
    parts = [p for p in path.split("/") if p and p != "."]
    for p in parts:
        if p == ".." or "\0" in p:
            raise errors.InvalidArgument(f"path {path!r}: '..' and NUL are not allowed")
        if len(p.encode()) > MAX_NAME_BYTES:
            raise errors.InvalidArgument(f"path: a name over {MAX_NAME_BYTES} bytes in {path!r}")
    return parts


class Namespace:
    """Reads and writes of the inode tree; the mounts it serves, with their adapters."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.mounts: dict[str, Mount] = {}

    # ---- datasets and mounts ----------------------------------------------------------------

    def setup_dataset(
        self,
        dataset: str,
        mounts: list[MountInfo],
        block_size: int,
        ttl: float,
    ) -> None:
        """Declare ``dataset`` with its mounts; rebuilt from scratch if its sources changed."""
        with self.store.write() as txn:
            if txn.get(ino_key(ROOT_INO), db=self.store.inodes) is None:
                txn.put(ino_key(ROOT_INO), root_inode().pack(), db=self.store.inodes)
                txn.put(NEXT_INO, ino_key(ROOT_INO + 1), db=self.store.meta)
            stored = self._mount_records(txn, dataset)
            old = txn.get(dentry_key(ROOT_INO, dataset), db=self.store.dentries)
            same = [(m.name, m.uri) for m, _ in stored] == [(m.name, m.uri) for m in mounts]
            # The snapshot each source served is kept with an unchanged namespace, nowhere else.
            snapshots = {m.name: snap for m, snap in stored} if same else {}
            if old is not None and not same:
                log.warning("dataset %s: sources changed, its namespace is rebuilt", dataset)
                stats = DatasetStats()
                self._remove(txn, unpack_dentry(old)[0], stats)
                txn.delete(dentry_key(ROOT_INO, dataset), db=self.store.dentries)
                txn.delete(stats_key(dataset), db=self.store.meta)
                old = None
            for key, _ in list(scan_prefix(txn, self.store.mounts, dataset.encode() + b"\0")):
                txn.delete(key, db=self.store.mounts)
            for m in mounts:
                self._put_mount(txn, m, snapshots.get(m.name, ""))
            txn.put(dataset.encode(), msgpack.packb([block_size, ttl]), db=self.store.datasets)
            if old is None:
                top = self._create(txn, ROOT_INO, f"/{dataset}", True)
                for m in mounts:
                    if m.name:
                        self._create(txn, top, f"/{dataset}/{m.name}", True)

    def _create(self, txn: Any, parent: int, path: str, is_dir: bool) -> int:
        ino = int.from_bytes(txn.get(NEXT_INO, db=self.store.meta), "big")
        txn.put(NEXT_INO, ino_key(ino + 1), db=self.store.meta)
        node = Inode(ino, parent, path, is_dir)
        txn.put(ino_key(ino), node.pack(), db=self.store.inodes)
        txn.put(dentry_key(parent, node.name), pack_dentry(ino, 0, is_dir), db=self.store.dentries)
        return ino

    def _put_mount(self, txn: Any, m: MountInfo, snapshot: str) -> None:
        value = msgpack.packb([m.uri, m.options, snapshot])
        txn.put(f"{m.dataset}\0{m.name}".encode(), value, db=self.store.mounts)

    def _mount_records(self, txn: Any, dataset: str) -> list[tuple[MountInfo, str]]:
        """The mounts of ``dataset`` with the snapshot stored for each ("" when none)."""
        out = []
        prefix = dataset.encode() + b"\0"
        for key, value in scan_prefix(txn, self.store.mounts, prefix):
            uri, options, *rest = msgpack.unpackb(value)  # records before snapshots had two
            name = key[len(prefix) :].decode()
            out.append((MountInfo(dataset, name, uri, options), rest[0] if rest else ""))
        return out

    def _all_mounts(self) -> list[tuple[MountInfo, str]]:
        with self.store.read() as txn:
            return [
                record
                for key, _ in txn.cursor(db=self.store.datasets)
                for record in self._mount_records(txn, key.decode())
            ]

    def mount_infos(self) -> list[MountInfo]:
        """Every mount of every dataset, as workers need them."""
        return [m for m, _ in self._all_mounts()]

    def note_snapshot(self, mount: Mount) -> None:
        """Store the snapshot ``mount``'s source serves now with its record, if it moved: after
        a restart the source serves that one again (until its TTL), never a newer one under the
        listing of the old."""
        snapshot = mount.ufs.snapshot
        if not snapshot or snapshot == mount.snapshot:
            return
        with self.store.write() as txn:
            self._put_mount(txn, mount.info, snapshot)
        log.info("%s: %s serves snapshot %s", mount.prefix, mount.info.uri, snapshot)
        mount.snapshot = snapshot

    def datasets(self) -> list[str]:
        with self.store.read() as txn:
            return [key.decode() for key, _ in txn.cursor(db=self.store.datasets)]

    def open_mounts(self, adapters: Mapping[tuple[str, str], UnderFileSystem]) -> None:
        """Serve every stored mount (once, at start-up); ``adapters`` are ones already made, by
        ``(dataset, mount name)``; the other datasets' get theirs made here.
        """
        with self.store.read() as txn:
            settings = {
                key.decode(): msgpack.unpackb(value)
                for key, value in txn.cursor(db=self.store.datasets)
            }
        for m, snapshot in self._all_mounts():
            block_size, ttl = settings[m.dataset]
            prefix = f"/{m.dataset}/{m.name}" if m.name else f"/{m.dataset}"
            ufs = adapters.get((m.dataset, m.name)) or create_ufs(m.uri, m.options)
            ufs.keep_snapshot(snapshot or None, ttl)
            size = block_size or ufs.block_size  # 0: the source's own
            self.mounts[prefix] = Mount(prefix, m, ufs, size, ttl, snapshot)

    async def close(self) -> None:
        for mount in self.mounts.values():
            await mount.ufs.close()
        self.mounts.clear()

    def mount_of(self, path: str) -> Mount | None:
        """The mount that serves ``path``; None for the root and datasets' virtual directories."""
        parts = path.split("/", 3)
        if len(parts) >= 3 and (m := self.mounts.get(f"/{parts[1]}/{parts[2]}")):
            return m
        return self.mounts.get(f"/{parts[1]}") if len(parts) >= 2 and parts[1] else None

    # ---- reads -------------------------------------------------------------------------------

    def get(self, ino: int) -> Inode:
        """The inode numbered ``ino``; NotFound if there is none."""
        with self.store.read() as txn:
            return self._get(txn, ino)

    def _get(self, txn: Any, ino: int) -> Inode:
        data = txn.get(ino_key(ino), db=self.store.inodes)
        if data is None:
            raise errors.NotFound(f"inode {ino}")
        return Inode.unpack(ino, data)

    def child(self, parent: int, name: str) -> Inode | None:
        """The entry ``name`` of directory ``parent`` as last listed, if any."""
        if not valid_name(name):
            return None
        with self.store.read() as txn:
            value = txn.get(dentry_key(parent, name), db=self.store.dentries)
            return None if value is None else self._get(txn, unpack_dentry(value)[0])

    def page(self, parent: int, cursor: str, limit: int) -> tuple[list[Inode], bool]:
        """Up to ``limit`` entries after the name ``cursor``, sorted; and whether more follow."""
        prefix = ino_key(parent)
        after = cursor.encode()
        out: list[Inode] = []
        with self.store.read() as txn:
            for key, value in scan_prefix(txn, self.store.dentries, prefix, after):
                if after and key[len(prefix) :] == after:
                    continue
                if len(out) == limit:
                    return out, True
                out.append(self._get(txn, unpack_dentry(value)[0]))
        return out, False

    def subdirs(self, parent: int) -> list[int]:
        """The inode numbers of the directories directly under ``parent``."""
        with self.store.read() as txn:
            return [
                ino
                for _, value in scan_prefix(txn, self.store.dentries, ino_key(parent))
                for ino, _, is_dir in [unpack_dentry(value)]
                if is_dir
            ]

    def shared_bytes(self) -> tuple[dict[str, int], int]:
        """Bytes that content addressing keeps from being cached twice: per dataset, and over
        the whole namespace (datasets share the cache). A file counts when its version is a
        content digest another file already has; its blocks have the same ids.
        """
        seen: set[str] = set()
        per_dataset: dict[str, set[str]] = {}
        saved: dict[str, int] = {}
        total = 0
        with self.store.read() as txn:
            for key, value in txn.cursor(db=self.store.inodes):
                node = Inode.unpack(int.from_bytes(key, "big"), value)
                digest = None if node.is_dir else content_digest(node.version)
                if digest is None:
                    continue
                mine = per_dataset.setdefault(node.dataset, set())
                if digest in mine:
                    saved[node.dataset] = saved.get(node.dataset, 0) + node.size
                mine.add(digest)
                if digest in seen:
                    total += node.size
                seen.add(digest)
        return saved, total

    def stats(self, dataset: str) -> DatasetStats:
        with self.store.read() as txn:
            data = txn.get(stats_key(dataset), db=self.store.meta)
        return DatasetStats(*msgpack.unpackb(data)) if data else DatasetStats()

    def info(self, node: Inode) -> FileInfo:
        """The wire form of ``node``: full path, source URI, the dataset's block size."""
        mount = self.mount_of(node.path)
        return FileInfo(
            ino=node.ino,
            parent=node.parent,
            name=node.name,
            path=node.path,
            is_dir=node.is_dir,
            size=node.size,
            mtime=node.mtime,
            uri=mount.ufs.uri(mount.rel(node.path)) if mount else "",
            version=node.version,
            block_size=mount.block_size if mount else 0,
        )

    # ---- writes ------------------------------------------------------------------------------

    def apply_listing(self, parent: int, stamp: int, entries: Iterable[UfsStatus]) -> Counts:
        """Record one batch of a listing of ``parent``, in one transaction.

        New names get new inodes; a file whose version, size or mtime changed keeps its inode
        and takes the new values (so its block ids change); an entry that changed kind is
        replaced. Every entry seen is stamped with ``stamp``, so :meth:`finish_listing` can tell
        what the source no longer has.
        """
        counts = Counts()
        stats = DatasetStats()
        with self.store.write() as txn:
            directory = self._get(txn, parent)
            base = directory.path.rstrip("/")
            next_ino = int.from_bytes(txn.get(NEXT_INO, db=self.store.meta), "big")
            for e in entries:
                if not valid_name(e.name):
                    log.warning("%s: skipping entry with unusable name %r", directory.path, e.name)
                    continue
                if e.is_dir:
                    counts.dirs += 1
                else:
                    counts.files += 1
                    counts.bytes += e.size
                key = dentry_key(parent, e.name)
                old = txn.get(key, db=self.store.dentries)
                if old is not None:
                    ino, _, was_dir = unpack_dentry(old)
                    if was_dir == e.is_dir:
                        if not e.is_dir:
                            self._update_file(txn, ino, e, stats)
                        txn.put(key, pack_dentry(ino, stamp, was_dir), db=self.store.dentries)
                        continue
                    self._remove(txn, ino, stats)
                node = Inode(
                    next_ino,
                    parent,
                    f"{base}/{e.name}",
                    e.is_dir,
                    0 if e.is_dir else e.size,
                    e.mtime,
                    "" if e.is_dir else e.version,
                )
                next_ino += 1
                # Inode numbers only grow, so appending is safe and skips the B-tree search.
                txn.put(ino_key(node.ino), node.pack(), db=self.store.inodes, append=True)
                txn.put(key, pack_dentry(node.ino, stamp, e.is_dir), db=self.store.dentries)
                stats.count(node, +1)
            txn.put(NEXT_INO, ino_key(next_ino), db=self.store.meta)
            self._add_stats(txn, directory.dataset, stats)
        return counts

    def _update_file(self, txn: Any, ino: int, e: UfsStatus, stats: DatasetStats) -> None:
        node = self._get(txn, ino)
        if (node.size, node.mtime, node.version) == (e.size, e.mtime, e.version):
            return
        if (
            not e.version
            and node.version
            and e.size == node.size
            and abs(e.mtime - node.mtime) < 60
        ):
            # Listed without its version, and the listing (dates to the minute) shows no change
            # from the version checked at open: keep it; it is checked again once it is stale.
            return
        stats.bytes += e.size - node.size
        node.size, node.mtime, node.version = e.size, e.mtime, e.version
        txn.put(ino_key(ino), node.pack(), db=self.store.inodes)

    def validated(self, checked: Iterable[Inode]) -> None:
        """Record files as their sources described them when they were opened (size, mtime,
        version, and ``synced_at``: when), in one transaction; entries gone meanwhile are
        skipped."""
        stats: dict[str, DatasetStats] = {}
        with self.store.write() as txn:
            for new in checked:
                data = txn.get(ino_key(new.ino), db=self.store.inodes)
                if data is None:
                    continue
                node = Inode.unpack(new.ino, data)
                if node.path != new.path or node.is_dir:
                    continue
                stats.setdefault(node.dataset, DatasetStats()).bytes += new.size - node.size
                node.size, node.mtime, node.version = new.size, new.mtime, new.version
                node.synced_at = new.synced_at
                txn.put(ino_key(node.ino), node.pack(), db=self.store.inodes)
            for dataset, delta in stats.items():
                self._add_stats(txn, dataset, delta)

    def drop(self, ino: int) -> None:
        """Forget entry ``ino`` (and what is under it): the source no longer has it."""
        stats = DatasetStats()
        with self.store.write() as txn:
            node = self._get(txn, ino)
            self._remove(txn, ino, stats)
            txn.delete(dentry_key(node.parent, node.name), db=self.store.dentries)
            self._add_stats(txn, node.dataset, stats)

    def finish_listing(self, parent: int, stamp: int, prune: bool, now: float) -> int:
        """Mark ``parent`` listed at ``now``; with ``prune``, drop children the listing missed.

        Returns how many entries were dropped.
        """
        stats = DatasetStats()
        with self.store.write() as txn:
            directory = self._get(txn, parent)
            gone: list[bytes] = []
            if prune:
                for key, value in scan_prefix(txn, self.store.dentries, ino_key(parent)):
                    ino, seen, _ = unpack_dentry(value)
                    if seen != stamp:
                        gone.append(key)
                        self._remove(txn, ino, stats)
                for key in gone:
                    txn.delete(key, db=self.store.dentries)
            directory.synced_at = now
            directory.listings = stamp
            txn.put(ino_key(parent), directory.pack(), db=self.store.inodes)
            self._add_stats(txn, directory.dataset, stats)
        return len(gone)

    def start_listing(self, parent: int) -> tuple[int, bool]:
        """A fresh stamp for a listing of ``parent``, and whether it had children to prune.

        Stamps come from one counter, so entries left by an interrupted listing never carry
        the stamp of the next one.
        """
        with self.store.write() as txn:
            data = txn.get(NEXT_STAMP, db=self.store.meta)
            stamp = int.from_bytes(data, "big") if data else 1
            txn.put(NEXT_STAMP, ((stamp + 1) % (1 << 32)).to_bytes(4, "big"), db=self.store.meta)
            cursor = scan_prefix(txn, self.store.dentries, ino_key(parent))
            return stamp, next(cursor, None) is not None

    def _remove(self, txn: Any, top: int, stats: DatasetStats) -> None:
        """Delete inode ``top`` and everything under it (not its own dentry)."""
        stack = [top]
        while stack:
            node = self._get(txn, stack.pop())
            if node.is_dir:
                prefix = ino_key(node.ino)
                keys = []
                for key, value in scan_prefix(txn, self.store.dentries, prefix):
                    keys.append(key)
                    stack.append(unpack_dentry(value)[0])
                for key in keys:
                    txn.delete(key, db=self.store.dentries)
            txn.delete(ino_key(node.ino), db=self.store.inodes)
            stats.count(node, -1)

    def _add_stats(self, txn: Any, dataset: str, delta: DatasetStats) -> None:
        if delta == DatasetStats() or not dataset:
            return
        data = txn.get(stats_key(dataset), db=self.store.meta)
        total = DatasetStats(*msgpack.unpackb(data)) if data else DatasetStats()
        total.bytes += delta.bytes
        total.files += delta.files
        total.dirs += delta.dirs
        txn.put(
            stats_key(dataset),
            msgpack.packb([total.bytes, total.files, total.dirs]),
            db=self.store.meta,
        )
