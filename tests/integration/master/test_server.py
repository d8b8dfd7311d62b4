"""The master over real HTTP on 127.0.0.1: routes, auth, error answers, workers, report."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import msgpack
import pytest

from fluidcache.common import errors
from fluidcache.common.blockid import block_id
from fluidcache.common.http import auth_headers
from fluidcache.common.protocol import (
    BACKUP,
    BLOCK_LOCATIONS,
    COMPLETE,
    DATASET_REPORT,
    FAILED,
    HEALTH,
    JOB_BACKUP,
    JOB_STATUS,
    JOB_SUBMIT,
    MSGPACK,
    NS_LIST,
    NS_LOAD_METADATA,
    NS_LOAD_STATUS,
    NS_LOOKUP,
    NS_STAT,
    REPORT,
    WORKER_HEARTBEAT,
    WORKER_REGISTER,
    WORKERS,
    BackupReply,
    BackupRequest,
    DatasetRequest,
    ErrorReply,
    FileInfo,
    HeartbeatReply,
    HeartbeatRequest,
    JobIdRequest,
    JobInfo,
    JobRequest,
    ListReply,
    ListRequest,
    LoadMetadataReply,
    LoadMetadataRequest,
    LoadStatusRequest,
    LocationsReply,
    LocationsRequest,
    LookupRequest,
    RegisterReply,
    RegisterRequest,
    Report,
    StatRequest,
    TierUsage,
    WorkerInfo,
    WorkersReply,
)
from fluidcache.master.server import SERVICE
from tests.unit.master.helpers import TOKEN, Clock, config, make_tree, running_master

B = [block_id("local:///f", "v", i, 4096) for i in range(3)]


async def test_namespace_routes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    async with running_master(config(tmp_path / "data", src)) as m:
        info = await m.rpc.call(NS_STAT, StatRequest(path="/default/a/one.bin"), FileInfo)
        assert (info.path, info.size, info.uri) == (
            "/default/a/one.bin",
            100,
            f"local://{src}/a/one.bin",
        )
        by_ino = await m.rpc.call(NS_STAT, StatRequest(ino=info.ino), FileInfo)
        assert by_ino == info
        parent = await m.rpc.call(NS_LOOKUP, LookupRequest(info.parent, "b"), FileInfo)
        assert parent.is_dir and parent.path == "/default/a/b"
        page = await m.rpc.call(NS_LIST, ListRequest(path="/default", limit=2), ListReply)
        assert [e.name for e in page.entries] == ["a", "c"] and page.cursor == "c"
        rest = await m.rpc.call(
            NS_LIST, ListRequest(ino=page.entries[0].parent, cursor="c"), ListReply
        )
        assert [e.name for e in rest.entries] == ["top.txt"] and rest.cursor == ""
        load = await m.rpc.call(
            NS_LOAD_METADATA, LoadMetadataRequest("/", force=True), LoadMetadataReply
        )
        assert (load.state, load.files, load.bytes) == ("done", 4, 1110)
        status = await m.rpc.call(NS_LOAD_STATUS, LoadStatusRequest(load.job_id), LoadMetadataReply)
        assert status == load
        report = await m.rpc.call(REPORT, None, Report)
        assert (report.file_count, report.ufs_total_bytes) == (4, 1110)
        assert await m.rpc.call(DATASET_REPORT, DatasetRequest("default"), Report) == report


async def test_errors_over_the_wire(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    async with running_master(config(tmp_path / "data", src)) as m:
        with pytest.raises(errors.NotFound, match="/default/nope"):
            await m.rpc.call(NS_STAT, StatRequest(path="/default/nope"), FileInfo)
        with pytest.raises(errors.NotADirectory):
            await m.rpc.call(NS_LIST, ListRequest(path="/default/top.txt"), ListReply)
        with pytest.raises(errors.NotFound):
            await m.rpc.call(DATASET_REPORT, DatasetRequest("nope"), Report)

        async with m.session.post(m.url + NS_STAT, data=StatRequest().encode()) as resp:
            assert resp.status == 401
            assert ErrorReply.decode(await resp.read()).code == "unauthorized"
        wrong = auth_headers("wrong")
        async with m.session.post(m.url + NS_STAT, data=b"", headers=wrong) as resp:
            assert resp.status == 401

        headers = {**auth_headers(TOKEN), "Content-Type": MSGPACK}
        for body in (b"\xc1garbage", msgpack.packb([1, 2]), msgpack.packb({"ino": "seven"})):
            async with m.session.post(m.url + NS_STAT, data=body, headers=headers) as resp:
                assert resp.status == 400
                err = ErrorReply.decode(await resp.read())
                assert err.code == "invalid" and "malformed StatRequest" in err.message
        async with m.session.post(m.url + "/v1/nope", data=b"", headers=headers) as resp:
            assert resp.status == 404
        async with m.session.get(m.url + HEALTH) as resp:  # no token needed
            assert resp.status == 200


async def test_workers_and_locations_over_http(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    clock = Clock()
    async with running_master(config(tmp_path / "data", tmp_path / "src"), clock) as m:
        w1 = WorkerInfo("w1", "http://127.0.0.1:9", tiers=[TierUsage("MEM", 1000, 10)])
        reg = await m.rpc.call(WORKER_REGISTER, RegisterRequest(w1, [B[0]]), RegisterReply)
        assert reg.heartbeat_interval == 2.0 and reg.mounts[0].uri == f"local://{tmp_path / 'src'}"
        beat = HeartbeatRequest("w1", added=[B[1]], tiers=[TierUsage("MEM", 1000, 20)])
        assert not (await m.rpc.call(WORKER_HEARTBEAT, beat, HeartbeatReply)).reregister
        where = await m.rpc.call(BLOCK_LOCATIONS, LocationsRequest(B), LocationsReply)
        assert where.locations == {B[0]: ["w1"], B[1]: ["w1"]}
        live = await m.rpc.call(WORKERS, None, WorkersReply)
        assert [(w.worker_id, w.tiers[0].used) for w in live.workers] == [("w1", 20)]

        clock.advance(25)
        m.app[SERVICE].workers.sweep()  # what the background sweep does every interval
        where = await m.rpc.call(BLOCK_LOCATIONS, LocationsRequest(B), LocationsReply)
        assert where.locations == {}
        assert (await m.rpc.call(WORKERS, None, WorkersReply)).workers == []
        again = await m.rpc.call(WORKER_HEARTBEAT, HeartbeatRequest("w1"), HeartbeatReply)
        assert again.reregister


async def test_backup_over_http_then_restore(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    async with running_master(config(tmp_path / "data", src)) as m:
        await m.rpc.call(NS_LOAD_METADATA, LoadMetadataRequest("/"), LoadMetadataReply)
        info = await m.rpc.call(NS_STAT, StatRequest(path="/default/c/empty"), FileInfo)
        made = await m.rpc.call(BACKUP, BackupRequest(), BackupReply)
        assert made.inodes == 9 and Path(made.path).parent == tmp_path / "data" / "backups"
    cfg = config(tmp_path / "data2", src, restore_from=Path(made.path))
    async with running_master(cfg) as m:
        assert await m.rpc.call(NS_STAT, StatRequest(path="/default/c/empty"), FileInfo) == info
        assert m.app[SERVICE].sync.listings == 0


async def test_a_backup_job_writes_into_an_allowed_directory_only(tmp_path: Path) -> None:
    """A DataBackup's backupPath reaches the master as ``directory``: written there when it
    lies under a ``--backup-root``; a relative path, ``..`` or a path outside (a symlink
    included) is a 400 naming the field, and nothing is written."""
    src, root, outside = tmp_path / "src", tmp_path / "allowed", tmp_path / "outside"
    make_tree(src)
    outside.mkdir()
    root.mkdir()
    (root / "link").symlink_to(outside)
    async with running_master(config(tmp_path / "data", src, backup_roots=[root])) as m:
        job = await m.rpc.call(
            JOB_SUBMIT, JobRequest(JOB_BACKUP, directory=f"{root}/nightly/a"), JobInfo
        )
        for _ in range(200):
            job = await m.rpc.call(JOB_STATUS, JobIdRequest(job.job_id), JobInfo)
            if job.phase in (COMPLETE, FAILED):
                break
            await asyncio.sleep(0.05)
        assert job.phase == COMPLETE, job.error
        assert Path(job.result).parent == root / "nightly" / "a"

        headers = {**auth_headers(TOKEN), "Content-Type": MSGPACK}
        bad = {
            "nightly": "is not an absolute path",
            f"{root}/../outside": "must not contain '..'",
            str(outside): "is outside the master's backup directories",
            f"{root}/link/x": "is outside the master's backup directories",
        }
        for directory, why in bad.items():
            body = JobRequest(JOB_BACKUP, directory=directory).encode()
            async with m.session.post(m.url + JOB_SUBMIT, data=body, headers=headers) as resp:
                assert resp.status == 400
                err = ErrorReply.decode(await resp.read())
                assert err.message.startswith("directory: ") and why in err.message, err
    assert (await asyncio.to_thread(os.path.getsize, job.result)) > 0
    assert list(outside.iterdir()) == []


async def test_the_background_sweep_drops_a_silent_worker(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    cfg = config(tmp_path / "data", tmp_path / "src", heartbeat_interval=0.05, worker_timeout=0.2)
    async with running_master(cfg) as m:
        w = WorkerInfo("w1", "http://127.0.0.1:9")
        await m.rpc.call(WORKER_REGISTER, RegisterRequest(w, [B[0]]), RegisterReply)
        for _ in range(100):
            if not (await m.rpc.call(WORKERS, None, WorkersReply)).workers:
                break
            await asyncio.sleep(0.05)
        assert (await m.rpc.call(WORKERS, None, WorkersReply)).workers == []
        where = await m.rpc.call(BLOCK_LOCATIONS, LocationsRequest([B[0]]), LocationsReply)
        assert where.locations == {}
