"""Backups: a restored master answers like the original without listing; bad files are refused."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from fluidcache.common import errors
from fluidcache.common.protocol import (
    BackupRequest,
    ListRequest,
    LoadMetadataRequest,
    RegisterRequest,
    StatRequest,
    WorkerInfo,
)
from fluidcache.master.backup import verify_backup
from fluidcache.master.service import MasterService
from tests.unit.master.helpers import config, make_tree, open_service


async def snapshot(svc: MasterService) -> dict[str, object]:
    out: dict[str, object] = {}
    for path in ("/", "/default", "/default/a", "/default/a/b", "/default/c"):
        page = await svc.list_page(ListRequest(path=path))
        for e in page.entries:
            out[e.path] = e
    return out


async def make_backup(tmp_path: Path) -> tuple[Path, dict[str, object], Path]:
    src = tmp_path / "src"
    make_tree(src)
    cfg = config(tmp_path / "data", src, mount_options={"": {"region": "eu-1"}})
    async with open_service(cfg) as svc:
        await svc.loads.start(LoadMetadataRequest("/"))
        svc.register(RegisterRequest(WorkerInfo("w1", "http://127.0.0.1:1"), []))
        reply = await svc.backup(BackupRequest("meta.fcbak"))
        assert reply.path == str(tmp_path / "data" / "backups" / "meta.fcbak")
        assert reply.inodes == 9  # root, dataset, 3 directories, 4 files
        assert len(reply.checksum) == 16
        with pytest.raises(errors.InvalidArgument, match="already exists"):
            await svc.backup(BackupRequest("meta.fcbak"))
        with pytest.raises(errors.InvalidArgument):
            await svc.backup(BackupRequest("../escape"))
        return Path(reply.path), await snapshot(svc), src


async def test_restore_answers_without_the_source(tmp_path: Path) -> None:
    path, before, src = await make_backup(tmp_path)
    shutil.rmtree(src)
    cfg = config(
        tmp_path / "restored",
        src,
        restore_from=path,
        mount_options={"": {"region": "eu-1"}},
    )
    async with open_service(cfg) as svc:
        assert await snapshot(svc) == before
        assert svc.sync.listings == 0
        report = svc.report()
        assert (report.file_count, report.ufs_total_bytes) == (4, 1110)
        assert svc.live_workers().workers == []  # workers re-register, they are not restored
        assert svc.ns.mount_infos()[0].options == {"region": "eu-1"}
        new = await svc.stat(StatRequest(path="/default/a/b/deep.txt"))
        assert new == before["/default/a/b/deep.txt"]
    # Started again with the same flag, the namespace it has is kept (not restored over).
    async with open_service(cfg) as svc:
        assert await snapshot(svc) == before


async def test_a_damaged_backup_is_refused(tmp_path: Path) -> None:
    path, _, src = await make_backup(tmp_path)
    data = path.read_bytes()
    assert verify_backup(path) > 9

    cases = {
        "truncated": data[: len(data) // 2],
        "corrupted": data[:40] + bytes([data[40] ^ 1]) + data[41:],
        "not a fluidcache metadata backup": b"PK\x03\x04" + data[4:],
        "truncated (": data[:10],
        "format version": data[:8] + b"\0\0\0\x09" + data[12:],
    }
    (tmp_path / "text").write_text("hello\n")
    with pytest.raises(errors.ConfigError, match="not a fluidcache metadata backup"):
        verify_backup(tmp_path / "text")
    for i, (message, content) in enumerate(cases.items()):
        bad = tmp_path / f"bad{i}"
        bad.write_bytes(content)
        with pytest.raises(errors.ConfigError, match=f"restore_from: .*{re.escape(message)}"):
            verify_backup(bad)
        cfg = config(tmp_path / f"fresh{i}", src, restore_from=bad)
        with pytest.raises(errors.ConfigError, match=re.escape(message)):
            MasterService.open(cfg)
    # A refused restore wrote nothing: the data dir starts empty and lists the source.
    async with open_service(config(tmp_path / "fresh0", src)) as svc:
        assert svc.ns.stats("default").files == 0


async def test_no_secret_reaches_a_backup(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with pytest.raises(errors.ConfigError, match="credential"):
        config(tmp_path / "data", src, mount_options={"": {"aws_secret_access_key": "s3cr3t"}})
    path, _, _ = await make_backup(tmp_path / "b")
    assert b"s3cr3t" not in path.read_bytes()
