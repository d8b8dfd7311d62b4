"""Workers and the block map: registration, heartbeats, lost workers, the report's numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from fluidcache.cli import format_report
from fluidcache.common import errors
from fluidcache.common.blockid import block_id
from fluidcache.common.protocol import (
    HeartbeatRequest,
    LoadMetadataRequest,
    LocationsRequest,
    ReadBytes,
    RegisterRequest,
    TierUsage,
    WorkerInfo,
)
from fluidcache.master.service import MasterService
from tests.unit.master.helpers import Clock, config, make_tree, open_service

B = [block_id("local:///f", "v1", i, 4096) for i in range(6)]


def worker(wid: str, used: int = 0, capacity: int = 1000) -> WorkerInfo:
    return WorkerInfo(
        wid, f"http://127.0.0.1:1/{wid}", node="n1", tiers=[TierUsage("MEM", capacity, used)]
    )


def where(svc: MasterService, ids: list[str]) -> dict[str, list[str]]:
    return svc.locations(LocationsRequest(ids)).locations


async def test_register_and_heartbeats_feed_the_block_map(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    async with open_service(config(tmp_path / "data", tmp_path / "src")) as svc:
        reply = svc.register(RegisterRequest(worker("w1"), [B[0], B[1]]))
        assert reply.heartbeat_interval == 2.0
        assert [(m.dataset, m.name, m.uri) for m in reply.mounts] == [
            ("default", "", f"local://{tmp_path / 'src'}")
        ]
        svc.register(RegisterRequest(worker("w2"), [B[1]]))
        assert where(svc, B[:3]) == {B[0]: ["w1"], B[1]: ["w1", "w2"]}

        hb = svc.heartbeat(HeartbeatRequest("w1", added=[B[2]], removed=[B[0]]))
        assert not hb.reregister
        assert where(svc, B[:3]) == {B[1]: ["w1", "w2"], B[2]: ["w1"]}

        svc.register(RegisterRequest(worker("w1"), [B[3]]))  # the full list replaces the old one
        assert where(svc, B[:4]) == {B[1]: ["w2"], B[3]: ["w1"]}
        assert svc.blocks.count("w1") == 1

        assert svc.heartbeat(HeartbeatRequest("stranger")).reregister
        assert [w.worker_id for w in svc.live_workers().workers] == ["w1", "w2"]


async def test_bad_worker_messages_are_refused(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    async with open_service(config(tmp_path / "data", tmp_path / "src")) as svc:
        with pytest.raises(errors.InvalidArgument):
            svc.register(RegisterRequest(worker("w1"), ["not-a-block"]))
        with pytest.raises(errors.InvalidArgument):
            svc.register(RegisterRequest(WorkerInfo("", "http://x"), []))
        with pytest.raises(errors.InvalidArgument):
            svc.register(RegisterRequest(WorkerInfo("w", "ftp://x"), []))
        with pytest.raises(errors.InvalidArgument):
            svc.locations(LocationsRequest(["zz"]))


async def test_a_silent_worker_is_lost_then_comes_back(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    clock = Clock()
    cfg = config(tmp_path / "data", tmp_path / "src", worker_timeout=20.0)
    async with open_service(cfg, clock) as svc:
        svc.register(RegisterRequest(worker("w1"), [B[0]]))
        svc.register(RegisterRequest(worker("w2"), [B[0], B[1]]))
        clock.advance(15)
        svc.heartbeat(HeartbeatRequest("w2"))
        clock.advance(6)  # w1 silent for 21 s, w2 for 6 s
        assert svc.workers.sweep() == ["w1"]
        assert where(svc, B[:2]) == {B[0]: ["w2"], B[1]: ["w2"]}
        assert [w.worker_id for w in svc.live_workers().workers] == ["w2"]
        states = {w.worker_id: w.state for w in svc.all_workers()}
        assert states == {"w1": "lost", "w2": "live"}
        assert svc.blocks.count("w1") == 0

        assert svc.heartbeat(HeartbeatRequest("w1", added=[B[2]])).reregister
        assert B[2] not in where(svc, [B[2]])  # a lost worker's delta is not applied
        svc.register(RegisterRequest(worker("w1"), [B[0], B[2]]))
        assert where(svc, B[:3]) == {B[0]: ["w1", "w2"], B[1]: ["w2"], B[2]: ["w1"]}
        assert not svc.heartbeat(HeartbeatRequest("w1")).reregister


async def test_restart_forgets_locations_until_workers_register(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    cfg = config(tmp_path / "data", tmp_path / "src")
    async with open_service(cfg) as svc:
        svc.register(RegisterRequest(worker("w1"), [B[0]]))
    async with open_service(cfg) as svc:
        assert where(svc, [B[0]]) == {}
        assert svc.live_workers().workers == []
        assert svc.heartbeat(HeartbeatRequest("w1")).reregister
        assert [(w.worker_id, w.state) for w in svc.all_workers()] == [("w1", "lost")]
        svc.register(RegisterRequest(worker("w1"), [B[0]]))
        assert where(svc, [B[0]]) == {B[0]: ["w1"]}


async def test_report_numbers(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)  # 4 files, 1110 bytes
    clock = Clock()
    async with open_service(config(tmp_path / "data", src), clock) as svc:
        empty = svc.report()
        assert (empty.ufs_total_bytes, empty.cached_percent, empty.workers) == (0, 0.0, [])
        await svc.loads.start(LoadMetadataRequest("/"))
        svc.register(RegisterRequest(worker("w1", used=100, capacity=1000), []))
        svc.register(RegisterRequest(worker("w2", used=0, capacity=3000), []))
        svc.heartbeat(HeartbeatRequest("w2", tiers=[TierUsage("MEM", 3000, 455, blocks=2)]))
        r = svc.report()
        assert (r.ufs_total_bytes, r.file_count) == (1110, 4)
        assert (r.cached_bytes, r.cache_capacity) == (555, 4000)
        assert r.cached_percent == 50.0
        assert [w.tiers[0].used for w in r.workers] == [100, 455]
        assert svc.report("default") == r
        with pytest.raises(errors.NotFound):
            svc.report("nope")
        clock.advance(21)
        svc.workers.sweep()
        assert svc.report().cached_bytes == 0  # lost workers hold nothing


async def test_hit_ratios_and_capacity_shortfall(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)  # 4 files, 1110 bytes
    async with open_service(config(tmp_path / "data", src)) as svc:
        await svc.loads.start(LoadMetadataRequest("/"))
        svc.register(RegisterRequest(worker("w1", used=100, capacity=300), []))
        svc.register(RegisterRequest(worker("w2", used=0, capacity=500), []))
        svc.heartbeat(HeartbeatRequest("w1", reads=ReadBytes(local=600, remote=0, source=200)))
        svc.heartbeat(HeartbeatRequest("w2", reads=ReadBytes(local=0, remote=150, source=50)))
        svc.heartbeat(HeartbeatRequest("w2"))  # a beat without counts keeps the last ones
        r = svc.report()
        assert r.reads == ReadBytes(600, 150, 250)
        assert (r.cache_hit_ratio, r.local_hit_ratio, r.remote_hit_ratio) == (0.75, 0.6, 0.15)
        [d] = r.datasets
        assert (d.name, d.ufs_total_bytes, d.file_count, d.cached_bytes) == (
            "default",
            1110,
            4,
            100,
        )
        assert (d.cache_hit_ratio, d.local_hit_ratio, d.remote_hit_ratio) == (0.75, 0.6, 0.15)
        s = d.shortfall
        assert s is not None
        assert (s.missing_bytes, s.cache_capacity, s.live_workers) == (310, 800, 2)
        assert s.per_worker_bytes == 155  # 2 x 155 more and the 1110 bytes fit
        assert s.fits_percent == 72.07
        assert "--mem-quota" in s.advice and "--workers" in s.advice and "--tier" in s.advice

        doc = r.fluid()
        entry = doc["datasets"][0]
        assert entry["ufsTotal"] == 1110 and entry["fileNum"] == 4 and entry["cached"] == 100
        assert entry["cacheCapacity"] == 800 and entry["cachedPercentage"] == 9.01
        assert (entry["cacheHitRatio"], entry["localHitRatio"], entry["remoteHitRatio"]) == (
            0.75,
            0.6,
            0.15,
        )
        assert entry["capacityShortfall"]["missing"] == 310
        assert doc["cluster"]["bytesRead"] == {"local": 600, "remote": 150, "source": 250}

        text = format_report(r)
        assert "default  1.1 KB" not in text  # sizes in MB, as the rest of the CLI
        assert "75.0%" in text and "60.0%" in text and "15.0%" in text
        assert "default: does not fit: the cache holds 72.07% of the dataset" in text

        # Enough room: no advice.
        svc.heartbeat(HeartbeatRequest("w2", tiers=[TierUsage("MEM", 5000, 0)]))
        assert svc.report().datasets[0].shortfall is None
        assert "does not fit" not in format_report(svc.report())
