"""The block map: which workers hold which blocks, kept in LMDB both ways round.

``locations`` (block id + worker id) answers "who holds these blocks"; ``worker_blocks`` (worker
id + block id) lets a worker's whole set be replaced or dropped without scanning every block.
Callers filter the answer by liveness; this module knows nothing of heartbeats.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fluidcache.common import errors
from fluidcache.common.blockid import is_block_id
from fluidcache.master.store import Store, scan_prefix


def _block(block_id: str) -> bytes:
    if not is_block_id(block_id):
        raise errors.InvalidArgument(f"{block_id!r} is not a block id")
    return bytes.fromhex(block_id)


def _worker(worker_id: str) -> bytes:
    return worker_id.encode() + b"\0"


class BlockMap:
    """Block locations by worker; every method is one transaction."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def replace(self, worker_id: str, block_ids: Iterable[str]) -> None:
        """Make ``block_ids`` the whole set held by ``worker_id`` (registration)."""
        keys = [_block(b) for b in block_ids]
        with self.store.write() as txn:
            self._drop(txn, worker_id)
            self._add(txn, worker_id, keys)

    def update(self, worker_id: str, added: Iterable[str], removed: Iterable[str]) -> None:
        """Apply a heartbeat's delta."""
        add, remove = [_block(b) for b in added], [_block(b) for b in removed]
        if not add and not remove:
            return
        wkey = _worker(worker_id)
        with self.store.write() as txn:
            for key in remove:
                txn.delete(key + worker_id.encode(), db=self.store.locations)
                txn.delete(wkey + key, db=self.store.worker_blocks)
            self._add(txn, worker_id, add)

    def drop(self, worker_id: str) -> None:
        """Forget everything ``worker_id`` held (it was lost)."""
        with self.store.write() as txn:
            self._drop(txn, worker_id)

    def clear(self) -> None:
        """Forget every location (at start-up: workers re-register what they hold)."""
        with self.store.write() as txn:
            txn.drop(self.store.locations, delete=False)
            txn.drop(self.store.worker_blocks, delete=False)

    def holders(self, block_ids: Iterable[str]) -> dict[str, list[str]]:
        """Block id -> workers recorded as holding it (ids held by none are absent)."""
        out: dict[str, list[str]] = {}
        with self.store.read() as txn:
            for block_id in block_ids:
                key = _block(block_id)
                workers = [
                    k[len(key) :].decode() for k, _ in scan_prefix(txn, self.store.locations, key)
                ]
                if workers:
                    out[block_id] = workers
        return out

    def count(self, worker_id: str) -> int:
        with self.store.read() as txn:
            return sum(1 for _ in scan_prefix(txn, self.store.worker_blocks, _worker(worker_id)))

    def _add(self, txn: Any, worker_id: str, keys: list[bytes]) -> None:
        wkey, wid = _worker(worker_id), worker_id.encode()
        for key in keys:
            txn.put(key + wid, b"", db=self.store.locations)
            txn.put(wkey + key, b"", db=self.store.worker_blocks)

    def _drop(self, txn: Any, worker_id: str) -> None:
        wkey, wid = _worker(worker_id), worker_id.encode()
        keys = [k for k, _ in scan_prefix(txn, self.store.worker_blocks, wkey)]
        for k in keys:
            txn.delete(k, db=self.store.worker_blocks)
            txn.delete(k[len(wkey) :] + wid, db=self.store.locations)
