"""The namespace over a local source: lazy listing, paths, paging, TTL refresh, counters."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from fluidcache.common import errors
from fluidcache.common.config import DEFAULT_BLOCK_SIZE
from fluidcache.common.protocol import (
    ROOT_INO,
    ListRequest,
    LoadMetadataRequest,
    LookupRequest,
    StatRequest,
)
from fluidcache.master.service import MasterService
from tests.unit.master.helpers import Clock, config, make_tree, open_service


async def stat(svc: MasterService, path: str) -> object:
    return await svc.stat(StatRequest(path=path))


async def names(svc: MasterService, path: str) -> list[str]:
    reply = await svc.list_page(ListRequest(path=path))
    return [e.name for e in reply.entries]


async def test_lazy_listing_lists_only_the_parents_on_the_path(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    async with open_service(config(tmp_path / "data", src)) as svc:
        root = await svc.stat(StatRequest(path="/"))
        assert (root.ino, root.is_dir, root.path) == (ROOT_INO, True, "/")
        assert svc.sync.listings == 0
        info = await svc.stat(StatRequest(path="/default/a/b/deep.txt"))
        assert svc.sync.listings == 3  # /default, /default/a, /default/a/b — not /default/c
        assert info.path == "/default/a/b/deep.txt"
        assert info.name == "deep.txt" and info.size == 1000 and not info.is_dir
        assert info.uri == f"local://{src}/a/b/deep.txt"
        assert info.version and info.block_size == DEFAULT_BLOCK_SIZE  # a local source's own
        parent = await svc.stat(StatRequest(ino=info.parent))
        assert parent.path == "/default/a/b"
        again = await svc.stat(StatRequest(path="/default/a/b/deep.txt"))
        assert again == info and svc.sync.listings == 3
        looked = await svc.lookup(LookupRequest(parent.ino, "deep.txt"))
        assert looked == info


@pytest.mark.parametrize(
    ("block_size", "local", "s3"),
    [(0, DEFAULT_BLOCK_SIZE, 16 << 20), (1 << 20, 1 << 20, 1 << 20)],
)
async def test_block_size_is_each_sources_own_unless_the_dataset_sets_one(
    tmp_path: Path, block_size: int, local: int, s3: int
) -> None:
    src = tmp_path / "src"
    make_tree(src)
    mounts = [("files", f"local://{src}"), ("objects", "s3://bucket/prefix")]
    # Nothing listens there: the S3 mount's root is in the namespace without a listing.
    options = {"objects": {"endpoint_url": "http://127.0.0.1:9"}}
    cfg = config(
        tmp_path / "data", src, mounts=mounts, mount_options=options, block_size=block_size
    )
    for _ in range(2):  # and again from the stored dataset, after a restart
        async with open_service(cfg) as svc:
            info = await svc.stat(StatRequest(path="/default/files/top.txt"))
            objects = await svc.stat(StatRequest(path="/default/objects"))
            assert (info.block_size, objects.block_size) == (local, s3)


async def test_listing_sorted_with_dataset_at_the_root(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    async with open_service(config(tmp_path / "data", src, dataset="ds1")) as svc:
        assert await names(svc, "/") == ["ds1"]
        assert await names(svc, "/ds1") == ["a", "c", "top.txt"]
        dataset = await svc.stat(StatRequest(path="/ds1"))
        assert dataset.parent == ROOT_INO and dataset.uri == f"local://{src}"


async def test_named_mounts_are_directories_of_the_dataset(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    make_tree(one)
    two.mkdir()
    (two / "only.txt").write_bytes(b"2")
    cfg = config(
        tmp_path / "data", one, mounts=[("one", f"local://{one}"), ("two", f"local://{two}")]
    )
    async with open_service(cfg) as svc:
        assert await names(svc, "/default") == ["one", "two"]
        info = await svc.stat(StatRequest(path="/default/two/only.txt"))
        assert info.uri == f"local://{two}/only.txt"
        assert (await svc.stat(StatRequest(path="/default/one/a/one.bin"))).size == 100
        mounts = svc.ns.mount_infos()
        assert [(m.dataset, m.name, m.uri) for m in mounts] == [
            ("default", "one", f"local://{one}"),
            ("default", "two", f"local://{two}"),
        ]


async def test_errors_are_typed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    async with open_service(config(tmp_path / "data", src)) as svc:
        with pytest.raises(errors.NotFound):
            await svc.stat(StatRequest(path="/default/nope"))
        with pytest.raises(errors.NotFound):
            await svc.stat(StatRequest(path="/other"))
        with pytest.raises(errors.NotADirectory):
            await svc.stat(StatRequest(path="/default/top.txt/x"))
        with pytest.raises(errors.NotADirectory):
            await svc.list_page(ListRequest(path="/default/top.txt"))
        with pytest.raises(errors.InvalidArgument):
            await svc.stat(StatRequest(path="/default/../etc"))
        with pytest.raises(errors.NotFound):
            await svc.stat(StatRequest(ino=999_999))


async def test_a_missing_source_is_not_found(tmp_path: Path) -> None:
    async with open_service(config(tmp_path / "data", tmp_path / "absent")) as svc:
        assert (await svc.stat(StatRequest(path="/default"))).is_dir
        with pytest.raises(errors.NotFound):
            await svc.list_page(ListRequest(path="/default"))


async def test_a_refused_source_is_permission_denied(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    (src / "c").chmod(0)
    euid = os.geteuid()
    try:
        async with open_service(config(tmp_path / "data", src)) as svc:
            await svc.stat(StatRequest(path="/default"))
            if euid == 0:
                os.seteuid(65534)  # root reads everything: ask as nobody
            try:
                with pytest.raises(errors.PermissionDenied):
                    await svc.list_page(ListRequest(path="/default/c"))
            finally:
                if euid == 0:
                    os.seteuid(0)
    finally:
        (src / "c").chmod(0o755)


async def test_paging_a_big_directory(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    expected = sorted(f"f{i:05d}-{'é' if i % 7 == 0 else ''}" for i in range(2500))
    for name in expected:
        (src / name).touch()
    async with open_service(config(tmp_path / "data", src)) as svc:
        seen: list[str] = []
        cursor, pages = "", 0
        while True:
            page = await svc.list_page(ListRequest(path="/default", cursor=cursor, limit=5000))
            pages += 1
            assert len(page.entries) <= 1000  # the limit is capped
            seen += [e.name for e in page.entries]
            if not page.cursor:
                break
            assert page.cursor == page.entries[-1].name
            cursor = page.cursor
        assert seen == expected and pages == 3
        small = await svc.list_page(ListRequest(path="/default", cursor=expected[10], limit=3))
        assert [e.name for e in small.entries] == expected[11:14]
        assert svc.sync.listings == 1
        assert svc.report().file_count == 2500


async def test_concurrent_first_accesses_share_one_listing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(1200):
        (src / f"n{i}").touch()
    async with open_service(config(tmp_path / "data", src)) as svc:
        replies = await asyncio.gather(
            *(svc.list_page(ListRequest(path="/default", limit=1000)) for _ in range(10)),
            *(svc.stat(StatRequest(path=f"/default/n{i}")) for i in range(10)),
        )
        assert svc.sync.listings == 1
        assert all(len(r.entries) == 1000 for r in replies[:10])  # type: ignore[union-attr]
        assert svc.report().file_count == 1200


async def test_ttl_refresh_updates_changed_and_drops_deleted(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    clock = Clock()
    async with open_service(config(tmp_path / "data", src, sync_ttl=30.0), clock) as svc:
        await svc.loads.start(LoadMetadataRequest("/"))
        before = await svc.stat(StatRequest(path="/default/a/one.bin"))
        report = svc.report()
        assert (report.file_count, report.ufs_total_bytes) == (4, 1110)

        (src / "a" / "one.bin").write_bytes(b"w" * 150)
        os.utime(src / "a" / "one.bin", ns=(1, 1))  # a different mtime even on coarse clocks
        shutil.rmtree(src / "a" / "b")
        (src / "top.txt").unlink()
        (src / "new.txt").write_bytes(b"n" * 5)

        clock.advance(29)  # not yet stale: the old view stands
        assert (await svc.stat(StatRequest(path="/default/a/one.bin"))) == before
        assert (await svc.stat(StatRequest(path="/default/top.txt"))).size == 10

        clock.advance(2)
        after = await svc.stat(StatRequest(path="/default/a/one.bin"))
        assert after.ino == before.ino
        assert after.size == 150 and after.version != before.version
        assert after.block(0).id != before.block(0).id
        with pytest.raises(errors.NotFound):
            await svc.stat(StatRequest(path="/default/a/b/deep.txt"))
        with pytest.raises(errors.NotFound):
            await svc.stat(StatRequest(path="/default/top.txt"))
        assert await names(svc, "/default") == ["a", "c", "new.txt"]
        report = svc.report()
        assert (report.file_count, report.ufs_total_bytes) == (3, 155)


async def test_ttl_refresh_by_inode_and_kind_change(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    clock = Clock()
    async with open_service(config(tmp_path / "data", src, sync_ttl=10.0), clock) as svc:
        top = await svc.stat(StatRequest(path="/default/top.txt"))
        (src / "top.txt").unlink()
        (src / "top.txt").mkdir()
        (src / "top.txt" / "inner").write_bytes(b"i")
        clock.advance(11)
        with pytest.raises(errors.NotFound):
            await svc.stat(StatRequest(ino=top.ino))  # its parent was re-listed on the way
        now = await svc.stat(StatRequest(path="/default/top.txt/inner"))
        assert now.size == 1


async def test_ttl_zero_never_rechecks(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    clock = Clock()
    async with open_service(config(tmp_path / "data", src, sync_ttl=0.0), clock) as svc:
        await svc.stat(StatRequest(path="/default/top.txt"))
        (src / "top.txt").unlink()
        clock.advance(10**9)
        assert (await svc.stat(StatRequest(path="/default/top.txt"))).size == 10
        assert svc.sync.listings == 1


async def test_load_metadata_counts_and_force(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    async with open_service(config(tmp_path / "data", src)) as svc:
        done = await svc.loads.start(LoadMetadataRequest("/default"))
        assert done.state == "done"
        assert (done.dirs_listed, done.files, done.dirs, done.bytes) == (4, 4, 3, 1110)
        assert svc.loads.status(done.job_id) == done
        again = await svc.loads.start(LoadMetadataRequest("/default"))
        assert again.dirs_listed == 0  # everything is fresh
        forced = await svc.loads.start(LoadMetadataRequest("/default/a", force=True))
        assert (forced.dirs_listed, forced.files) == (2, 2)
        one = await svc.loads.start(LoadMetadataRequest("/default/top.txt"))
        assert (one.files, one.bytes) == (1, 10)
        report = svc.report()
        assert (report.file_count, report.ufs_total_bytes) == (4, 1110)
        with pytest.raises(errors.NotFound):
            await svc.loads.start(LoadMetadataRequest("/default/nope"))
        with pytest.raises(errors.NotFound):
            svc.loads.status("nope")


async def test_load_metadata_in_the_background(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    async with open_service(config(tmp_path / "data", src)) as svc:
        started = await svc.loads.start(LoadMetadataRequest("/", wait=False))
        assert started.state == "running"
        for _ in range(200):
            status = svc.loads.status(started.job_id)
            if status.state != "running":
                break
            await asyncio.sleep(0.01)
        assert status.state == "done" and status.files == 4


async def test_restart_keeps_the_namespace_without_listing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    cfg = config(tmp_path / "data", src)
    async with open_service(cfg) as svc:
        await svc.loads.start(LoadMetadataRequest("/"))
        infos = {
            p: await svc.stat(StatRequest(path=p))
            for p in ("/default/a/b/deep.txt", "/default/c/empty")
        }
        report = svc.report()
    shutil.rmtree(src)  # the source is gone: anything answered now comes from LMDB
    async with open_service(cfg) as svc:
        for path, info in infos.items():
            assert await svc.stat(StatRequest(path=path)) == info
            assert await svc.stat(StatRequest(ino=info.ino)) == info
        assert await names(svc, "/default") == ["a", "c", "top.txt"]
        assert svc.sync.listings == 0
        assert svc.report() == report


async def test_changed_sources_rebuild_the_dataset(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    make_tree(one)
    two.mkdir()
    (two / "x").write_bytes(b"xx")
    async with open_service(config(tmp_path / "data", one)) as svc:
        await svc.loads.start(LoadMetadataRequest("/"))
    async with open_service(config(tmp_path / "data", two)) as svc:
        assert await names(svc, "/default") == ["x"]
        report = svc.report()
        assert (report.file_count, report.ufs_total_bytes) == (1, 2)


async def test_an_unservable_source_changes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    async with open_service(config(tmp_path / "data", src)) as svc:
        info = await svc.stat(StatRequest(path="/default/a/one.bin"))
    with pytest.raises(errors.ConfigError, match="unsupported scheme"):
        MasterService.open(config(tmp_path / "data", src, mounts=[("", "nope://x/y")]))
    async with open_service(config(tmp_path / "data", src)) as svc:
        assert await svc.stat(StatRequest(path="/default/a/one.bin")) == info
        assert svc.sync.listings == 0
