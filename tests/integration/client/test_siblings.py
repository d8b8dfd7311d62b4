"""Directory read-ahead (:mod:`fluidcache.client.siblings`) against a recording HTTP source: a
cold epoch's other small files are opened ahead of the readers, each once, within bounds."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fluidcache.client import AsyncClient
from fluidcache.client.siblings import SiblingPrefetcher
from fluidcache.common import errors
from fluidcache.common.http import RpcClient
from fluidcache.common.protocol import (
    BLOCK_CACHE,
    BLOCKS_CACHE,
    CacheBlocksRequest,
    FileInfo,
    LocalBlocksReply,
)
from tests.cluster import Cluster, cluster
from tests.integration.client.test_cold import (
    Source,
    blob,
    cluster_over,
    counting_calls,
    serving,
)


def _gets(src: Source) -> set[str]:
    """The files the source was asked for with a GET."""
    return {k[4:] for k, n in src.hits.items() if k.startswith("GET ") and k != "GET /" and n}


async def _until(check: Callable[[], bool | Awaitable[bool]], seconds: float = 15.0) -> None:
    """Wait (bounded) until ``check()`` (or what it returns, awaited) is true."""
    deadline = time.monotonic() + seconds
    while True:
        done = check()
        if not isinstance(done, bool):
            done = await done
        if done:
            return
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def _reading(
    tmp_path: Path, count: int, size: int, large: int = 0
) -> AsyncIterator[tuple[Source, list[str], AsyncClient]]:
    """A source of ``count`` files of ``size`` bytes (their names, in order) and ``large``
    files of two 1 MiB blocks (t0.bin, ...), a one-worker cluster over it and a client."""
    async with serving() as src:
        names = [f"f{i:02d}.bin" for i in range(count)]
        for i, n in enumerate(names):
            src.put(n, blob(i, size))
        for i in range(large):
            src.put(f"t{i}.bin", blob(100 + i, 2 * 2**20))
        with cluster_over(src.url, tmp_path) as c:
            async with AsyncClient(c.master_url, c.token) as client:
                yield src, names, client


@contextlib.asynccontextmanager
async def _reading_versioned(
    tmp_path: Path, count: int, size: int
) -> AsyncIterator[tuple[Path, Cluster, dict[str, bytes], list[FileInfo], AsyncClient]]:
    """``count`` files of about ``size`` bytes in a local source (listed with their versions),
    a one-worker cluster over it, their bytes by name, the listing once no worker holds them,
    and a client."""
    src = tmp_path / "src"
    src.mkdir()
    data = {f"f{i:02d}.bin": blob(i, size + i) for i in range(count)}
    for name, body in data.items():
        (src / name).write_bytes(body)
    with cluster(tmp_path / "c") as c:
        c.start_master(f"local://{src}")
        c.start_worker("w1")
        async with AsyncClient(c.master_url, c.token) as client:
            listed = await client.ls("/")
            assert all(e.version for e in listed)  # a local listing gives versions
            # The listing's lookup of holders (in the background) found none.
            await _until(lambda: all(client.blocks.uncached(e.block(0)) for e in listed))
            yield src, c, data, listed, client


async def _read(client: AsyncClient, name: str) -> bytes:
    return await (await client.open(f"/{name}")).read()


@pytest.mark.timeout(120)
async def test_a_directory_opened_cold_has_its_other_small_files_opened_ahead(
    tmp_path: Path,
) -> None:
    async with _reading(tmp_path, 24, 1000) as (src, names, client):
        for n in names[:3]:
            assert await _read(client, n) == src.files[n]
        await asyncio.sleep(0.5)
        assert _gets(src) == set(names[:3])  # three cold opens: nothing ahead yet
        assert await _read(client, names[3]) == src.files[names[3]]
        siblings = client.siblings
        assert siblings is not None
        await _until(lambda: siblings.opened_ahead == 20)
        assert _gets(src) == set(names)
        assert all(src.hits[f"GET {n}"] == 1 for n in names), dict(src.hits)
        src.reset()
        # The readers' opens find every version known and every block held.
        for n in reversed(names):
            assert await _read(client, n) == src.files[n]
        assert not src.hits, dict(src.hits)


@pytest.mark.timeout(120)
async def test_a_readers_open_joins_the_open_ahead_of_its_file(tmp_path: Path) -> None:
    async with _reading(tmp_path, 8, 2000) as (src, names, client):
        src.gates["f06.bin"] = asyncio.Event()  # its GET waits until the reader asks too
        for n in names[:4]:
            await _read(client, n)
        await _until(lambda: src.hits["GET f06.bin"] == 1)
        reading = asyncio.ensure_future(_read(client, "f06.bin"))
        await asyncio.sleep(0.3)
        assert not reading.done()
        src.gates["f06.bin"].set()
        assert await reading == src.files["f06.bin"]
        assert src.hits["GET f06.bin"] == 1, dict(src.hits)
        assert src.hits["HEAD f06.bin"] == 0


@pytest.mark.timeout(120)
async def test_a_reader_that_joined_a_failed_open_ahead_opens_the_file_itself(
    tmp_path: Path,
) -> None:
    """The open ahead's failure (the source refused it then) is not the reader's to see."""
    async with _reading(tmp_path, 8, 2000) as (src, names, client):
        src.gates["f06.bin"] = asyncio.Event()
        src.refused["f06.bin"] = 2  # the open ahead's GET, then its HEAD
        for n in names[:4]:
            await _read(client, n)
        await _until(lambda: src.hits["GET f06.bin"] == 1)
        reading = asyncio.ensure_future(_read(client, "f06.bin"))
        await asyncio.sleep(0.3)
        assert not reading.done()  # joined the open ahead
        src.gates["f06.bin"].set()
        assert await reading == src.files["f06.bin"]
        assert src.refused["f06.bin"] == 0 and src.hits["GET f06.bin"] >= 2, dict(src.hits)


@pytest.mark.timeout(120)
async def test_opens_ahead_stay_within_the_window_beyond_what_readers_opened(
    tmp_path: Path,
) -> None:
    async with _reading(tmp_path, 40, 500) as (src, names, client):
        client.siblings = SiblingPrefetcher(client, window=5, idle=2.0)
        for n in names[:4]:
            await _read(client, n)
        # Started at the fourth cold open; that open counts: 5 + 1 files ahead.
        await _until(lambda: len(_gets(src)) >= 10)
        await asyncio.sleep(0.5)
        assert len(_gets(src)) == 10, sorted(_gets(src))
        ahead = sorted(_gets(src) - set(names[:4]))
        for n in ahead[:3]:  # each open of one lets one more go ahead
            await _read(client, n)
        await _until(lambda: len(_gets(src)) >= 13)
        await asyncio.sleep(0.5)
        assert len(_gets(src)) == 13, sorted(_gets(src))
        await asyncio.sleep(2.5)  # no open for longer than ``idle``: it stopped
        for n in ahead[3:]:
            await _read(client, n)
        await asyncio.sleep(0.5)
        assert len(_gets(src)) == 13, sorted(_gets(src))


@pytest.mark.timeout(120)
async def test_files_larger_than_a_block_are_not_opened_ahead(tmp_path: Path) -> None:
    async with _reading(tmp_path, 4, 100, large=3) as (src, names, client):
        for n in names:
            await _read(client, n)
        await asyncio.sleep(1.0)
        assert _gets(src) == set(names), dict(src.hits)
        assert [e.name for e in await client.ls("/")][4:] == ["t0.bin", "t1.bin", "t2.bin"]


@pytest.mark.timeout(120)
async def test_files_listed_with_their_versions_are_fetched_ahead_when_cold(
    tmp_path: Path,
) -> None:
    async with _reading_versioned(tmp_path, 24, 700) as (_, _, data, listed, client):
        for name in sorted(data)[:4]:
            assert await _read(client, name) == data[name]
        siblings = client.siblings
        assert siblings is not None
        await _until(lambda: siblings.opened_ahead == 20)

        async def all_held() -> bool:  # as the master counts them, once workers report
            return all([await client.cached_fraction(e) == 1.0 for e in listed])

        await _until(all_held)
        for name in sorted(data, reverse=True):
            assert await _read(client, name) == data[name]


@pytest.mark.timeout(120)
async def test_blocks_fetched_ahead_go_in_few_calls_each_file_with_its_own_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Calls wait for those under way however long they take (not 5 ms): the count below
    # then depends on batching alone, not on how busy the machine is.
    monkeypatch.setattr("fluidcache.client.blocks.OPEN_MAX_WAIT", 60.0)
    async with _reading_versioned(tmp_path, 40, 900) as (src, c, data, listed, client):
        (src / "f30.bin").unlink()  # gone from the source after it was listed
        calls = counting_calls(monkeypatch)
        urgent: list[list[str]] = []  # the blocks of each batch asked for by readers
        counted = RpcClient.call

        async def noted(self: RpcClient, path: str, request: Any = None, *a: Any, **k: Any) -> Any:
            if isinstance(request, CacheBlocksRequest) and not request.ahead:
                urgent.append([ref.uri.rpartition("/")[2] for ref in request.blocks])
            return await counted(self, path, request, *a, **k)

        monkeypatch.setattr(RpcClient, "call", noted)

        def singles() -> int:  # calls for one block
            one = BLOCK_CACHE.format(block_id="[0-9a-f]+")
            return sum(n for path, n in calls.items() if re.fullmatch(one, path))

        for name in sorted(data)[:4]:
            assert await _read(client, name) == data[name]
        siblings = client.siblings
        assert siblings is not None
        await _until(lambda: siblings.opened_ahead == 36)  # errors are the readers' to see
        # The readers' four cold reads (one after the other: a batch each), ahead of the rest.
        assert urgent == [[n] for n in sorted(data)[:4]], urgent
        assert singles() == 0, calls
        assert calls[BLOCKS_CACHE] <= 4 + 12, calls  # and 36 blocks: two calls, then batches
        before = calls[BLOCKS_CACHE]
        for name in sorted(data, reverse=True):
            if name == "f30.bin":
                with pytest.raises(errors.NotFound):
                    await _read(client, name)
            else:
                assert await _read(client, name) == data[name]
        assert urgent[4:] == [["f30.bin"]], urgent  # the file gone, asked for by its reader
        assert calls[BLOCKS_CACHE] == before + 1 and singles() == 0, calls
        # One call, each block its own answer: the file kept, the error of the one gone.
        by_name = {e.name: e.block(0) for e in listed}
        kept, gone = by_name["f31.bin"], by_name["f30.bin"]
        async with aiohttp.ClientSession() as session:
            rpc = RpcClient(c.urls["w1"], c.token, session)
            got = await rpc.call(BLOCKS_CACHE, CacheBlocksRequest([kept, gone]), LocalBlocksReply)
        assert list(got.paths) == [kept.id], got
        assert list(got.errors) == [gone.id] and got.errors[gone.id][0] == errors.NotFound.code, got
