"""The tiered block store on real directories: quotas, watermarks, demotion, checksums, restart."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fluidcache.common.blockid import block_id
from fluidcache.worker.config import LevelConfig
from fluidcache.worker.store import SPARE_BYTES, SPARE_PREFIX, BlockStore

KIB = 1024


def bid(i: int) -> str:
    return block_id("local:///data/f", "v1", i, 64 * KIB)


def payload(i: int, size: int = 64 * KIB) -> bytes:
    return (i.to_bytes(4, "big") * (size // 4 + 1))[:size]


def levels(tmp_path: Path, mem: int, ssd: int = 0) -> list[LevelConfig]:
    out = [LevelConfig("MEM", (tmp_path / "mem",), mem, high=0.9, low=0.5)]
    if ssd:
        out.append(LevelConfig("SSD", (tmp_path / "ssd",), ssd, high=0.9, low=0.5))
    return out


def open_store(config: list[LevelConfig]) -> BlockStore:
    store = BlockStore(config)
    store.open()
    return store


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def disk_usage(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir()) if path.exists() else 0


async def test_usage_never_exceeds_quota_and_ends_under_low(tmp_path: Path) -> None:
    mem_quota, ssd_quota = 10 * 64 * KIB, 20 * 64 * KIB
    store = open_store(levels(tmp_path, mem_quota, ssd_quota))
    samples: list[tuple[int, int]] = []
    for i in range(3 * 10):
        assert await store.commit(bid(i), payload(i)) is not None
        samples.append((store.levels[0].used, store.levels[1].used))
        assert disk_usage(tmp_path / "mem") <= mem_quota
        assert disk_usage(tmp_path / "ssd") <= ssd_quota
    assert all(m <= mem_quota and s <= ssd_quota for m, s in samples)
    assert store.levels[0].used <= 0.9 * mem_quota
    assert store.counters.demotions > 0
    demoted = [b for b in store.blocks.values() if b.level == 1]
    assert demoted
    for block in demoted:
        index = next(i for i in range(30) if bid(i) == block.id)
        assert block.path.read_bytes() == payload(index)


async def test_watermark_evicts_down_to_low(tmp_path: Path) -> None:
    quota = 10 * 64 * KIB
    store = open_store(levels(tmp_path, quota))
    for i in range(10):
        await store.commit(bid(i), payload(i))
    # 0.9 * 10 blocks = 9: the 10th commit passes high and eviction goes down to 5 blocks.
    assert store.levels[0].used <= 0.5 * quota
    assert store.counters.evictions >= 5
    assert bid(9) in store.blocks and bid(0) not in store.blocks


async def test_lru_keeps_recently_used(tmp_path: Path) -> None:
    store = open_store(levels(tmp_path, 10 * 64 * KIB))
    for i in range(8):
        await store.commit(bid(i), payload(i))
    store.get(bid(0))
    for i in range(8, 10):
        await store.commit(bid(i), payload(i))
    assert bid(0) in store.blocks
    assert bid(1) not in store.blocks


async def test_pinned_blocks_stay_and_unfit_block_passes_through(tmp_path: Path) -> None:
    store = open_store(levels(tmp_path, 2 * 64 * KIB))
    a = await store.commit(bid(0), payload(0))
    assert a is not None
    with store.pin(a):
        assert await store.commit(bid(1), payload(1)) is not None
        # Full: the only candidate besides the pinned block is evicted, the pinned one stays.
        assert await store.commit(bid(2), payload(2)) is not None
        assert bid(0) in store.blocks
    assert await store.commit(bid(3), payload(3, 3 * 64 * KIB)) is None
    assert store.counters.passthrough == 1


async def test_persistent_level_survives_restart_and_detects_corruption(tmp_path: Path) -> None:
    config = [LevelConfig("SSD", (tmp_path / "ssd",), 10 * 64 * KIB, high=1.0, low=0.5)]
    store = open_store(config)
    for i in range(3):
        await store.commit(bid(i), payload(i))
    (tmp_path / "ssd" / ".tmp-leftover").write_bytes(b"half a block")

    again = open_store(config)
    assert sorted(again.ids()) == sorted(bid(i) for i in range(3))
    assert not (tmp_path / "ssd" / ".tmp-leftover").exists()
    assert again.levels[0].used == 3 * 64 * KIB

    bad = again.blocks[bid(1)]
    flip_byte(bad.path, 1000)
    good = again.blocks[bid(0)]
    assert await again.verify(good)
    assert not await again.verify(bad)
    assert bid(1) not in again.blocks
    assert not bad.path.exists()
    assert again.counters.checksum_failures == 1


async def test_mem_level_is_emptied_on_start(tmp_path: Path) -> None:
    config = levels(tmp_path, 4 * 64 * KIB)
    store = open_store(config)
    await store.commit(bid(0), payload(0))
    assert open_store(config).ids() == []
    assert os.listdir(tmp_path / "mem") == []


async def test_hot_block_is_promoted(tmp_path: Path) -> None:
    store = open_store(levels(tmp_path, 2 * 64 * KIB, 10 * 64 * KIB))
    for i in range(4):
        await store.commit(bid(i), payload(i))
    cold = next(b for b in store.blocks.values() if b.level == 1)
    for _ in range(2):
        store.get(cold.id)
    assert store.wants_promotion(cold)
    await store.promote(cold)
    assert cold.level == 0
    assert cold.path.read_bytes() == payload(next(i for i in range(4) if bid(i) == cold.id))
    assert store.counters.promotions == 1


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ("MEM:/tmp/x:lots", "tier[0].quota"),
        ("MEM:/tmp/x:1Gi:0.5:0.7", "tier[0].low"),
        ("MEM:/tmp/x:1Gi:1.5:0.7", "tier[0].high"),
        ("TAPE:/tmp/x:1Gi", "tier[0].mediumtype"),
        ("MEM:/proc/fluidcache-x:1Gi", "tier[0].path"),
    ],
)
def test_bad_level_config_names_the_field(spec: str, field: str) -> None:
    from fluidcache.common.errors import ConfigError

    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        LevelConfig.parse(spec, 0).validate("tier[0]")


async def test_a_block_touched_by_short_circuit_reads_outlives_colder_ones(tmp_path: Path) -> None:
    # MEM only, room for 10 blocks; the 10th passes the high watermark (0.9) and evicts to 0.5.
    store = open_store([LevelConfig("MEM", (tmp_path / "mem",), 10 * 64 * KIB, high=0.9, low=0.5)])
    for i in range(9):
        await store.commit(bid(i), payload(i))
    assert len(store.blocks) == 9
    # Block 0 is the oldest commit, but a client has been reading it through its file.
    assert store.touch(bid(0)) is not None
    assert store.touch(bid(99)) is None  # not held: nothing to refresh
    await store.commit(bid(9), payload(9))
    assert store.counters.evictions == 5
    assert bid(0) in store.blocks  # the hottest block stayed
    assert all(bid(i) not in store.blocks for i in range(1, 6))  # the coldest went instead


async def test_a_written_block_is_stamped_so_its_first_lookup_reads_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks received through a writer (the cold path, into the MEM file's region) were hashed
    as they arrived: their stamp is the file as written, so verify() does not read the file
    again; a file rewritten in place afterwards is checked and dropped."""
    store = open_store(levels(tmp_path, 1024 * KIB))
    data = payload(7)
    writer = await store.writer(bid(7), len(data))
    assert writer is not None
    region = writer.region()
    assert region is not None and len(region) == len(data)
    region[: len(data)] = data
    assert writer.received(len(data)) == data
    block = await writer.commit()
    assert block is not None
    s = block.path.stat()
    assert block.stamp == (s.st_ino, s.st_size, s.st_mtime_ns)
    reads: list[Path] = []
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda p: reads.append(p) or real(p))
    assert await store.verify(block)
    assert reads == []
    flip_byte(block.path, 5)
    reads.clear()
    assert not await store.verify(block)
    assert reads == [block.path]


# ---- spare memory (BlockStore.prefill) ------------------------------------------------------

MIB = 1024 * KIB


def spares_on_disk(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.name.startswith(SPARE_PREFIX))


async def written_through(store: BlockStore, block: str, data: bytes) -> None:
    writer = await store.writer(block, len(data))
    assert writer is not None
    region = writer.region()
    assert region is not None
    region[: len(data)] = data
    writer.received(len(data))
    assert await writer.commit() is not None


async def test_prefill_stops_at_the_low_watermark_and_counts_as_used(tmp_path: Path) -> None:
    store = open_store(levels(tmp_path, 20 * MIB))  # low watermark: 10 MiB
    assert await store.prefill(100 * MIB) == 8 * MIB  # two 4 MiB spares fit under it
    assert [p.stat().st_size for p in spares_on_disk(tmp_path / "mem")] == [SPARE_BYTES] * 2
    assert store.levels[0].used == 8 * MIB and not store.blocks
    assert store.usage()[0].used == 0  # reported as room: prefetches may use it
    store.drop_spares()
    assert spares_on_disk(tmp_path / "mem") == [] and store.levels[0].used == 0


async def test_a_block_is_written_into_a_spare(tmp_path: Path) -> None:
    store = open_store(levels(tmp_path, 40 * MIB))
    assert await store.prefill(8 * MIB) == 8 * MIB
    big, small = payload(1, SPARE_BYTES - 100), payload(2, 64 * KIB)
    larger = payload(3, 4 * SPARE_BYTES)  # a block of 16 MiB grows one
    await written_through(store, bid(1), big)
    await written_through(store, bid(2), small)  # too small to take one
    assert len(spares_on_disk(tmp_path / "mem")) == 1
    assert store.levels[0].used == SPARE_BYTES + len(big) + len(small)
    await written_through(store, bid(3), larger)
    assert spares_on_disk(tmp_path / "mem") == []
    assert store.levels[0].used == len(big) + len(small) + len(larger)
    for i, data in ((1, big), (2, small), (3, larger)):
        block = store.get(bid(i))
        assert block is not None and block.path.read_bytes() == data
        assert await store.verify(block)


async def test_spares_make_room_before_any_block_is_evicted(tmp_path: Path) -> None:
    store = open_store(levels(tmp_path, 24 * MIB))  # low 12 MiB, high 21.6 MiB
    assert await store.prefill(12 * MIB) == 12 * MIB
    for i in range(3):  # 3 MiB each: 21 MiB in all, under the high watermark
        assert await store.commit(bid(i), payload(i, 3 * MIB)) is not None
    assert len(store.levels[0].spares) == 3
    assert await store.commit(bid(3), payload(3, 3 * MIB)) is not None  # past it: 24 MiB
    assert set(store.blocks) == {bid(i) for i in range(4)} and store.counters.evictions == 0
    assert len(spares_on_disk(tmp_path / "mem")) == len(store.levels[0].spares) == 0
    assert store.levels[0].used == 12 * MIB


async def test_spares_left_by_a_stopped_worker_are_removed_on_start(tmp_path: Path) -> None:
    config = levels(tmp_path, 40 * MIB)
    store = open_store(config)
    assert await store.prefill(8 * MIB) == 8 * MIB
    again = open_store(config)  # as after a crash: the files are still there
    assert spares_on_disk(tmp_path / "mem") == [] and again.levels[0].used == 0


async def test_a_level_on_two_directories_takes_spares_from_the_block_s_own(tmp_path: Path) -> None:
    dirs = (tmp_path / "a", tmp_path / "b")
    store = open_store([LevelConfig("MEM", dirs, 40 * MIB, high=0.9, low=0.5)])
    assert await store.prefill(16 * MIB) == 16 * MIB
    assert [len(spares_on_disk(d)) for d in dirs] == [2, 2]
    data = payload(5, SPARE_BYTES)
    await written_through(store, bid(5), data)
    home = store.levels[0].directory(bid(5))
    assert len(spares_on_disk(home)) == 1
    assert [len(spares_on_disk(d)) for d in dirs if d != home] == [2]
    block = store.get(bid(5))
    assert block is not None and block.path.parent == home and block.path.read_bytes() == data
