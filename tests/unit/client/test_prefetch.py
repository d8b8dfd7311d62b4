"""Which blocks a safetensors prefetch asks for, and in what order."""

from __future__ import annotations

import json

import numpy as np
from safetensors.numpy import save

from fluidcache.client.prefetch import FIRST_SHARD, tensor_blocks


def header_of(data: bytes) -> tuple[dict[str, object], int]:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n]), n


def test_blocks_in_data_order_each_once() -> None:
    tensors = {
        "b": np.zeros(3000, np.float32),  # 12000 bytes
        "a": np.ones(10, np.float32),
        "c": np.zeros(5000, np.float16),
    }
    data = save(tensors)
    header, n = header_of(data)
    blocks = tensor_blocks(header, n, 4096)
    assert blocks == sorted(blocks) and len(blocks) == len(set(blocks))
    assert blocks[-1] == (len(data) - 1) // 4096
    assert blocks[0] == (8 + n) // 4096
    # Every byte of tensor data is inside a listed block.
    for meta in header.values():
        if isinstance(meta, dict):
            start, end = meta["data_offsets"]
            assert {(8 + n + start) // 4096, (8 + n + end - 1) // 4096} <= set(blocks)


def test_header_only_files_and_metadata() -> None:
    assert tensor_blocks({"__metadata__": {"format": "pt"}}, 40, 1024) == []
    assert tensor_blocks({"empty": {"data_offsets": [0, 0]}}, 40, 1024) == []


def test_first_shard_names() -> None:
    assert FIRST_SHARD.search("/m/model-00001-of-00003.safetensors")
    assert not FIRST_SHARD.search("/m/model-00002-of-00003.safetensors")
    assert not FIRST_SHARD.search("/m/model.safetensors")


def test_free_room_is_what_the_tiers_can_still_take() -> None:
    from fluidcache.client.prefetch import free_room
    from fluidcache.common.protocol import TierUsage, WorkerInfo

    workers = [
        WorkerInfo("w0", "http://a", tiers=[TierUsage("MEM", 100, 30), TierUsage("SSD", 50, 60)]),
        WorkerInfo("w1", "http://b", tiers=[TierUsage("MEM", 100, 0)]),
    ]
    assert free_room(workers) == 70 + 0 + 100  # an over-full tier counts as none, not less
    assert free_room([]) == 0
