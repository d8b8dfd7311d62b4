"""The UFS contract: one suite, unchanged, on every adapter against a real server."""

from __future__ import annotations

import asyncio
import os
import random
from contextlib import aclosing

import pytest

from fluidcache.common import errors
from fluidcache.ufs import UfsStatus, UnderFileSystem
from fluidcache.ufs.base import FileRegion
from tests.integration.ufs.conftest import Source

DATA = random.Random(3).randbytes(200_003)
AWKWARD = ["with space.txt", "100%.txt", "ünïcødé.txt", "a#b.txt", "q?x.txt", "semi;amp&+=.txt"]
TREE: dict[str, bytes] = {
    "hello.txt": b"hello world\n",
    "empty": b"",
    "data.bin": DATA,
    "dir/one.txt": b"one",
    "dir/sub/deep.txt": b"deep down",
    **{f"names/{n}": n.encode() for n in AWKWARD},
}


def empty_dirs(ufs: UnderFileSystem) -> list[str]:
    """The empty directory of the tree, where the source can hold one (a git tree cannot)."""
    return ["emptydir"] if ufs.empty_directories else []


@pytest.fixture
def tree(source: Source) -> Source:
    for path, data in TREE.items():
        source.write(path, data)
    source.mkdir("emptydir")
    return source


async def listing(ufs: UnderFileSystem, path: str) -> list[UfsStatus]:
    async with aclosing(ufs.list(path)) as entries:  # type: ignore[type-var]
        return sorted([e async for e in entries], key=lambda e: e.name)


async def stream(
    ufs: UnderFileSystem, path: str, offset: int, length: int, chunk: int
) -> list[bytes]:
    async with aclosing(ufs.read_stream(path, offset, length, chunk)) as chunks:  # type: ignore[type-var]
        return [c async for c in chunks]


async def test_root_is_a_directory(tree: Source, ufs: UnderFileSystem) -> None:
    root = await ufs.stat("")
    assert root.is_dir and root.name == ""


async def test_stat_file(tree: Source, ufs: UnderFileSystem) -> None:
    s = await ufs.stat("dir/one.txt")
    assert (s.name, s.is_dir, s.size) == ("one.txt", False, 3)
    assert s.version and s.mtime > 0
    assert (await ufs.stat("data.bin")).size == len(DATA)
    assert (await ufs.stat("empty")).size == 0


async def test_stat_directories(tree: Source, ufs: UnderFileSystem) -> None:
    for path in ("dir", "dir/sub", *empty_dirs(ufs), "dir/", "/dir"):
        s = await ufs.stat(path)
        assert s.is_dir and s.name == path.strip("/").rpartition("/")[2]


@pytest.mark.parametrize("path", ["nope", "dir/nope", "nope/deeper.txt"])
async def test_stat_missing(tree: Source, ufs: UnderFileSystem, path: str) -> None:
    with pytest.raises(errors.NotFound):
        await ufs.stat(path)


async def test_list_root(tree: Source, ufs: UnderFileSystem) -> None:
    entries = await listing(ufs, "")
    assert [(e.name, e.is_dir) for e in entries] == [
        ("data.bin", False),
        ("dir", True),
        ("empty", False),
        *[(name, True) for name in empty_dirs(ufs)],
        ("hello.txt", False),
        ("names", True),
    ]
    for e in entries:
        if not e.is_dir:
            s = await ufs.stat(e.name)
            if e.version:
                assert e == s
            else:
                # Listed without its version (a listing with exact sizes: no request per
                # file); stat gives it, and the listing's date may be to the minute.
                assert (e.name, e.is_dir, e.size) == (s.name, s.is_dir, s.size) and s.version
                assert abs(e.mtime - s.mtime) < 60


async def test_list_nested_and_empty(tree: Source, ufs: UnderFileSystem) -> None:
    assert [(e.name, e.is_dir, e.size) for e in await listing(ufs, "dir")] == [
        ("one.txt", False, 3),
        ("sub", True, 0),
    ]
    assert [e.name for e in await listing(ufs, "dir/sub/")] == ["deep.txt"]
    for name in empty_dirs(ufs):
        assert await listing(ufs, name) == []


async def test_awkward_names(tree: Source, ufs: UnderFileSystem) -> None:
    entries = await listing(ufs, "names")
    assert sorted(e.name for e in entries) == sorted(AWKWARD)
    for name in AWKWARD:
        path = f"names/{name}"
        assert await ufs.read(path, 0, 100) == name.encode()
        assert (await ufs.stat(path)).size == len(name.encode())
        assert ufs.relpath(ufs.uri(path)) == path


async def test_list_missing_or_not_a_directory(tree: Source, ufs: UnderFileSystem) -> None:
    with pytest.raises(errors.NotFound):
        await listing(ufs, "nope")
    with pytest.raises(errors.NotADirectory):
        await listing(ufs, "hello.txt")


async def test_list_many_entries(source: Source, ufs: UnderFileSystem) -> None:
    names = {f"f{i:04d}" for i in range(150)}
    for name in names:
        source.write(f"many/{name}", name.encode())
    entries = await listing(ufs, "many")
    assert {e.name for e in entries} == names
    assert all(e.size == 5 and not e.is_dir for e in entries)


async def test_list_stops_early_without_leaks(tree: Source, ufs: UnderFileSystem) -> None:
    async with aclosing(ufs.list("")) as entries:  # type: ignore[type-var]
        async for _ in entries:
            break


async def test_ranged_reads(tree: Source, ufs: UnderFileSystem) -> None:
    assert await ufs.read("data.bin", 0, len(DATA)) == DATA
    assert await ufs.read("data.bin", 12_345, 70_000) == DATA[12_345:82_345]
    assert await ufs.read("data.bin", len(DATA) - 3, 10) == DATA[-3:]
    assert await ufs.read("data.bin", len(DATA), 10) == b""
    assert await ufs.read("data.bin", len(DATA) + 100, 10) == b""
    assert await ufs.read("data.bin", 5, 0) == b""
    assert await ufs.read("hello.txt", 6, 1000) == b"world\n"
    assert await ufs.read("empty", 0, 10) == b""


async def test_concurrent_reads(tree: Source, ufs: UnderFileSystem) -> None:
    offsets = list(range(0, len(DATA), 25_000))
    got = await asyncio.gather(*(ufs.read("data.bin", o, 25_000) for o in offsets))
    assert b"".join(got) == DATA


async def test_read_stream(tree: Source, ufs: UnderFileSystem) -> None:
    chunks = await stream(ufs, "data.bin", 1_000, 150_000, 40_000)
    assert b"".join(chunks) == DATA[1_000:151_000]
    assert all(0 < len(c) <= 40_000 for c in chunks)
    assert b"".join(await stream(ufs, "data.bin", 190_000, 50_000, 4096)) == DATA[190_000:]
    assert await stream(ufs, "empty", 0, 100, 10) == []


async def test_read_errors(tree: Source, ufs: UnderFileSystem) -> None:
    with pytest.raises(errors.NotFound):
        await ufs.read("nope.bin", 0, 10)
    with pytest.raises(errors.IsADirectory):
        await ufs.read("dir", 0, 10)
    with pytest.raises(errors.NotFound):
        await stream(ufs, "dir/nope", 0, 10, 5)


async def test_changed_file_shows_a_new_version(tree: Source, ufs: UnderFileSystem) -> None:
    before = await ufs.stat("hello.txt")
    tree.write("hello.txt", b"hello again, world\n")
    after = await ufs.stat("hello.txt")
    assert after.version != before.version
    assert after.size == len(b"hello again, world\n")
    assert await ufs.read("hello.txt", 0, 100) == b"hello again, world\n"
    listed = {e.name: e for e in await listing(ufs, "")}
    assert listed["hello.txt"].size == after.size
    assert listed["hello.txt"].version in ("", after.version)  # "": checked at open


async def test_uri_is_stable_and_reversible(tree: Source, ufs: UnderFileSystem) -> None:
    other = tree.ufs()
    try:
        for path in ["", *TREE, "emptydir"]:
            assert ufs.uri(path) == other.uri(path)
            assert ufs.relpath(ufs.uri(path)) == path
        assert len({ufs.uri(p) for p in TREE}) == len(TREE)
    finally:
        await other.close()


async def test_paths_outside_the_root_are_refused(tree: Source, ufs: UnderFileSystem) -> None:
    for path in ("../x", "dir/../../x", ".."):
        with pytest.raises(errors.InvalidArgument):
            await ufs.stat(path)
        with pytest.raises(errors.InvalidArgument):
            await ufs.read(path, 0, 1)
    with pytest.raises(errors.InvalidArgument):
        ufs.relpath("nowhere://else/x")


@pytest.mark.parametrize("size", [64_000, 300_000])  # HTTP: on the event loop, by a thread
async def test_read_head_gives_the_status_and_first_bytes(
    tree: Source, ufs: UnderFileSystem, size: int
) -> None:
    buf = memoryview(bytearray(size))
    told: list[UfsStatus] = []
    status, got = await ufs.read_head("data.bin", buf, told.append)
    assert status == await ufs.stat("data.bin")
    assert told[:1] == [status]  # told the status it returns (a reader may start on it)
    assert got == min(size, len(DATA))
    assert bytes(buf[:got]) == DATA[:size]
    status, got = await ufs.read_head("hello.txt", buf)
    assert (status.name, status.size, got, bytes(buf[:got])) == (
        "hello.txt",
        12,
        12,
        TREE["hello.txt"],
    )
    assert (await ufs.read_head("empty", buf))[1] == 0
    tree.write("hello.txt", b"hello again, world\n")
    status, got = await ufs.read_head("hello.txt", buf)
    assert status == await ufs.stat("hello.txt")
    assert bytes(buf[:got]) == b"hello again, world\n"
    with pytest.raises(errors.NotFound):
        await ufs.read_head("nope.bin", buf)
    with pytest.raises(errors.IsADirectory):
        await ufs.read_head("dir", buf)


async def test_a_file_region_is_filled_as_memory_is(
    tree: Source, ufs: UnderFileSystem, block_fd: int
) -> None:
    """A block going to memory is read into its file (a FileRegion; adapters that can splice
    the socket's bytes into it): the same bytes as into memory, read after read."""
    size = 300_000
    os.ftruncate(block_fd, size)
    region = FileRegion(block_fd, 0, size)
    for offset, at in ((0, 0), (7, 1_000), (150_000, 5), (len(DATA) - 3, 0)):
        want = DATA[offset : offset + size - at]
        assert await ufs.read_into("data.bin", offset, region[at:]) == len(want)
        assert os.pread(block_fd, len(want), at) == want
    assert await ufs.read_into("hello.txt", 0, region[10:22]) == 12
    assert os.pread(block_fd, 12, 10) == TREE["hello.txt"]


async def test_a_read_naming_a_version_never_gives_another(
    tree: Source, ufs: UnderFileSystem
) -> None:
    before = await ufs.stat("data.bin")
    buf = memoryview(bytearray(100_000))
    assert await ufs.read_into("data.bin", 1_000, buf, before.version) == 100_000
    assert bytes(buf) == DATA[1_000:101_000]
    tree.write("data.bin", DATA[::-1] + b"grown")

    async def into() -> bytes:
        got = await ufs.read_into("data.bin", 1_000, buf, before.version)
        return bytes(buf[:got])

    async def streamed() -> bytes:
        stream = ufs.read_stream("data.bin", 1_000, 100_000, 40_000, before.version)
        async with aclosing(stream) as chunks:  # type: ignore[type-var]
            return b"".join([c async for c in chunks])

    for read in (into, streamed):
        try:
            got = await read()
        except errors.SourceChanged:
            continue
        assert got == DATA[1_000:101_000]  # a source pinned to a snapshot still serves it
