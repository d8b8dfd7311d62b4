"""Paths a caller makes up: ``..``, absolute paths outside the dataset, NUL, overlong names,
names with slashes. The master refuses them in every call that takes a path or a name (the
FUSE layer's lookups go through the same client call), and never answers with a file outside
the dataset's source root. Symlinks that leave a local root: tests/unit/ufs/test_local.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fluidcache.client import AsyncClient
from fluidcache.common import errors
from fluidcache.common.protocol import (
    FREE,
    JOB_SUBMIT,
    NS_LIST,
    NS_LOAD_METADATA,
    NS_STAT,
    FileInfo,
    FreeReply,
    FreeRequest,
    JobInfo,
    JobRequest,
    ListReply,
    ListRequest,
    LoadMetadataReply,
    LoadMetadataRequest,
    StatRequest,
)
from tests.unit.master.helpers import TOKEN, config, make_tree, running_master

BAD_PATHS = [
    "/default/../..",
    "/default/a/../../../etc/passwd",
    "/../etc/passwd",
    "/default/a\x00b",
    "/default/" + "x" * 256,
    "/default/a/" + "\u00e9" * 200,
]
BAD_NAMES = ["..", ".", "", "a/b", "/etc", "a\x00", "x" * 256, "../../etc/passwd"]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    make_tree(src)
    (tmp_path / "secret.txt").write_text("outside the root")
    os.symlink(tmp_path / "secret.txt", src / "a" / "escape")  # leaves the root: refused
    return src


async def test_master_refuses_bad_paths_everywhere(tmp_path: Path, tree: Path) -> None:
    async with running_master(config(tmp_path / "data", tree)) as m:
        for path in BAD_PATHS:
            calls = [
                (NS_STAT, StatRequest(path=path), FileInfo),
                (NS_LIST, ListRequest(path=path), ListReply),
                (NS_LOAD_METADATA, LoadMetadataRequest(path=path), LoadMetadataReply),
                (JOB_SUBMIT, JobRequest(paths=[path.removeprefix("/default")]), JobInfo),
                (FREE, FreeRequest(paths=[path.removeprefix("/default")]), FreeReply),
            ]
            for route, request, reply in calls:
                with pytest.raises((errors.InvalidArgument, errors.NotFound)) as e:
                    await m.rpc.call(route, request, reply)
                if ".." in path or "\x00" in path or len(path) > 250:
                    assert isinstance(e.value, errors.InvalidArgument), (route, path, e.value)


async def test_lookups_refuse_names_that_are_not_names(tmp_path: Path, tree: Path) -> None:
    async with (
        running_master(config(tmp_path / "data", tree)) as m,
        AsyncClient(m.url, TOKEN, short_circuit=False) as client,
    ):
        root = await client.stat("/")
        for name in BAD_NAMES:
            with pytest.raises(errors.InvalidArgument):
                await client.lookup(root.ino, name)
        assert (await client.lookup(root.ino, "a")).is_dir


async def test_nothing_outside_the_root_is_served(tmp_path: Path, tree: Path) -> None:
    async with (
        running_master(config(tmp_path / "data", tree)) as m,
        AsyncClient(m.url, TOKEN, short_circuit=False) as client,
    ):
        names = [e.name for e in (await client.list_page((await client.stat("/a")).ino)).entries]
        assert "escape" not in names
        for path in ("/a/escape", "/a/escape/..", "/../secret.txt", "/a/../../secret.txt"):
            with pytest.raises((errors.NotFound, errors.InvalidArgument)):
                await client.stat(path)
