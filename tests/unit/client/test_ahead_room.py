"""How far a read-ahead may go: unbounded by the buffer when every block goes to a worker's file
on this node, half the buffer when blocks come into it."""

from __future__ import annotations

import time
from typing import Any

from fluidcache.client.blocks import BlockReader
from fluidcache.common.protocol import WorkerInfo

MIB = 2**20


def reader(nodes: list[str], short_circuit: bool = True) -> BlockReader:
    def unused() -> Any:
        raise AssertionError("no call expected")

    r = BlockReader(
        unused,
        unused,
        "",
        ttl=60,
        buffer_bytes=128 * MIB,
        clock=time.monotonic,
        node="here",
        short_circuit=short_circuit,
    )
    workers = [
        WorkerInfo(f"w{i}", f"http://127.0.0.1:{7001 + i}", node) for i, node in enumerate(nodes)
    ]
    if workers:
        r._workers.put("", workers)
    return r


def test_the_window_is_held_to_half_the_buffer_unless_every_worker_is_on_this_node() -> None:
    assert reader(["here", "here"]).ahead_room(4 * MIB) is None
    assert reader(["here", "there"]).ahead_room(4 * MIB) == 16  # 128 MiB / 2 / 4 MiB
    assert reader(["here"], short_circuit=False).ahead_room(4 * MIB) == 16
    assert reader([]).ahead_room(4 * MIB) == 16  # workers not known yet
    assert reader(["there"]).ahead_room(256 * MIB) == 1  # at least one block
