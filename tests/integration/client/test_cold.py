"""The cold path against a source that records its requests (an aiohttp server on 127.0.0.1):
sequential reads keep several source requests in flight, within a bound; random reads do not
read ahead; a listing with exact sizes costs no request per file, and versions are checked when
a file is opened: a file changed after listing is read at its new version, never a mix, and a
file deleted after listing is not found."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from safetensors.numpy import save as st_save

from fluidcache.client import AsyncClient
from fluidcache.client.api import START_WINDOW
from fluidcache.common import errors
from fluidcache.common.http import RpcClient
from fluidcache.common.protocol import BLOCK_LOCATIONS, FILE_OPEN, NS_LIST, NS_LOOKUP, NS_STAT
from fluidcache.worker.config import WorkerConfig
from tests.cluster import Cluster, cluster

MIB = 2**20
DELAY = 0.03  # seconds before each body: a remote store's time to first byte
SLOTS = WorkerConfig.fetch_concurrency  # source reads a worker has under way at once


@dataclass
class Source:
    """Files served as an nginx-like directory (exact sizes), with Range, ETag and HEAD."""

    files: dict[str, bytes] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    hits: collections.Counter[str] = field(default_factory=collections.Counter)
    ranges: list[tuple[str, int]] = field(default_factory=list)  # (name, first byte) of GETs
    inflight: int = 0
    peak: int = 0
    url: str = ""
    gates: dict[str, asyncio.Event] = field(default_factory=dict)  # GETs of a name wait for it
    tickets: dict[str, asyncio.Semaphore] = field(default_factory=dict)  # one GET per ticket
    bodies: dict[str, asyncio.Event] = field(default_factory=dict)  # headers sent, body waits
    cut: set[str] = field(default_factory=set)  # the next body of each breaks off half-way
    refused: collections.Counter[str] = field(default_factory=collections.Counter)  # next 403s

    def put(self, name: str, data: bytes) -> None:
        self.files[name] = data
        self.versions[name] = self.versions.get(name, 0) + 1

    def reset(self) -> None:
        self.hits.clear()
        self.ranges.clear()
        self.peak = 0

    def _refuse(self, name: str) -> None:
        if self.refused[name] > 0:
            self.refused[name] -= 1
            raise web.HTTPForbidden()

    async def index(self, request: web.Request) -> web.Response:
        self.hits["GET /"] += 1
        rows = [
            f'<a href="{n}">{n}</a>        02-Dec-2025 08:05    {len(d)}\n'
            for n, d in sorted(self.files.items())
        ]
        page = '<html><body><pre><a href="../">../</a>\n' + "".join(rows) + "</pre></body></html>"
        return web.Response(text=page, content_type="text/html")

    async def file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.hits[f"{request.method} {name}"] += 1
        if name not in self.files:
            raise web.HTTPNotFound()
        data = self.files[name]
        headers = {
            "ETag": f'"{name}-v{self.versions[name]}"',
            "Last-Modified": "Tue, 02 Dec 2025 08:05:00 GMT",
            "Accept-Ranges": "bytes",
        }
        if request.method == "HEAD":
            self._refuse(name)
            headers["Content-Length"] = str(len(data))
            return web.Response(headers=headers)
        start, stop = 0, len(data)
        rng = request.http_range
        status = 200
        if rng.start is not None:
            start, stop, status = rng.start, min(len(data), rng.stop or len(data)), 206
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(data)}"
        self.ranges.append((name, start))
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        try:
            if name in self.gates:
                await self.gates[name].wait()
            if name in self.tickets:
                await self.tickets[name].acquire()
            self._refuse(name)
            await asyncio.sleep(DELAY)
            if name not in self.bodies:
                return web.Response(status=status, body=data[start:stop], headers=headers)
            resp = web.StreamResponse(status=status, headers=headers)
            resp.content_length = stop - start
            await resp.prepare(request)
            await self.bodies[name].wait()
            if name in self.cut:
                self.cut.discard(name)
                await resp.write(data[start : (start + stop) // 2])
                assert request.transport is not None
                request.transport.close()  # the connection drops mid-body
                return resp
            await resp.write(data[start:stop])
            return resp
        finally:
            self.inflight -= 1


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[Source]:
    src = Source()
    app = web.Application()
    app.router.add_get("/data/", src.index)
    app.router.add_route("GET", "/data/{name}", src.file)
    app.router.add_route("HEAD", "/data/{name}", src.file)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    src.url = f"http://127.0.0.1:{port}/data/"
    try:
        yield src
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def cluster_over(
    url: str, tmp_path: Path, workers: int = 1, options: tuple[str, ...] = ()
) -> Iterator[Cluster]:
    """A cluster of ``workers`` workers (w1, w2, ...) over ``url``, with 1 MiB blocks and the
    source's ``options`` (``KEY=VALUE``)."""
    with cluster(tmp_path / "c") as c:
        opts = [a for o in options for a in ("--option", o)]
        c.start_master(url, extra=("--block-size", "1Mi", *opts))
        for i in range(workers):
            c.start_worker(f"w{i + 1}")
        yield c


def counting_calls(monkeypatch: pytest.MonkeyPatch) -> collections.Counter[str]:
    """From now on, every call a client makes (its path, without a query), counted."""
    calls: collections.Counter[str] = collections.Counter()
    call = RpcClient.call

    async def counted(self: RpcClient, path: str, *args: Any, **kwargs: Any) -> Any:
        calls[path.partition("?")[0]] += 1
        return await call(self, path, *args, **kwargs)

    monkeypatch.setattr(RpcClient, "call", counted)
    return calls


def blob(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.mark.timeout(120)
async def test_sequential_cold_read_overlaps_source_requests_within_a_bound(tmp_path: Path) -> None:
    async with serving() as src:
        src.put("seq.bin", blob(1, 24 * MIB))
        src.put("rnd.bin", blob(2, 24 * MIB))
        with cluster_over(src.url, tmp_path, workers=2) as c:
            async with AsyncClient(c.master_url, c.token, readahead_blocks=8) as client:
                assert {e.name for e in await client.ls("/")} == {"seq.bin", "rnd.bin"}
                # The page gave exact sizes: no HEAD per entry.
                assert not [k for k in src.hits if k.startswith("HEAD")]

                src.reset()
                f = await client.open("/seq.bin")
                got = bytearray()
                while data := await f.read(128 * 1024):  # as the kernel asks
                    got += data
                assert got == src.files["seq.bin"]
                # Its version came with the first block, read once at open: no HEAD.
                assert src.hits["HEAD seq.bin"] == 0
                assert [start for name, start in src.ranges if name == "seq.bin"].count(0) == 1
                assert src.peak >= 3, f"at most {src.peak} source request(s) at once"
                # Bounded: the read-ahead window, plus the blocks being read.
                assert src.peak <= client.readahead_blocks + 2

                src.reset()
                f = await client.open("/rnd.bin")
                data = src.files["rnd.bin"]
                for index in (17, 3, 11, 22, 6):  # far apart: never "sequential"
                    offset = index * MIB + 1000
                    assert await f.pread(offset, 4096) == data[offset : offset + 4096]
                await asyncio.sleep(0.5)  # a stray read-ahead would have started by now
                # The first block (with the version) at open, then only the blocks read.
                assert sorted(start for _, start in src.ranges) == [
                    i * MIB for i in (0, 3, 6, 11, 17, 22)
                ]


@pytest.mark.timeout(120)
async def test_a_read_aheads_holders_are_asked_a_quarter_window_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving() as src:
        src.put("seq.bin", blob(3, 48 * MIB))
        with cluster_over(src.url, tmp_path, workers=2) as c:
            async with AsyncClient(c.master_url, c.token, readahead_blocks=16) as client:
                f = await client.open("/seq.bin")
                calls = counting_calls(monkeypatch)
                got = bytearray()
                while data := await f.read(MIB):
                    got += data
                assert got == src.files["seq.bin"]
            # 48 blocks: a call for the window's first steps (1, 2, 4, 8 blocks), then one
            # per 4 blocks due; not one per block.
            assert calls[BLOCK_LOCATIONS] <= 16, calls


@pytest.mark.timeout(120)
@pytest.mark.parametrize("threads", [None, 4], ids=["default", "4-threads"])
async def test_a_demand_read_goes_before_another_readers_read_ahead(
    tmp_path: Path, threads: int | None
) -> None:
    """With a dataset's ``read_threads`` below the worker's slots too: a read-ahead waiting for
    one of its threads would otherwise hold a slot, and the demand read queue behind it."""
    slots = SLOTS if threads is None else threads
    options = () if threads is None else (f"read_threads={threads}",)
    async with serving() as src:
        src.put("seq.bin", blob(11, 160 * MIB))
        src.put("rnd.bin", blob(12, 24 * MIB))
        with cluster_over(src.url, tmp_path, options=options) as c:  # slots source reads at once
            async with AsyncClient(c.master_url, c.token, readahead_blocks=2 * slots) as client:
                await client.ls("/")
                seq = await client.open("/seq.bin")
                paused, resume = asyncio.Event(), asyncio.Event()

                async def read_seq() -> bytes:
                    got = bytearray()
                    while data := await seq.read(128 * 1024):
                        got += data
                        if len(got) == 8 * MIB:  # the window has grown past `slots` blocks
                            paused.set()
                            await resume.wait()
                    return bytes(got)

                reading = asyncio.ensure_future(read_seq())
                await asyncio.wait_for(paused.wait(), 60)
                for _ in range(500):  # the window's blocks fetched, none under way
                    if src.inflight == 0:
                        break
                    await asyncio.sleep(0.01)
                assert src.inflight == 0
                # From now on every GET of seq.bin waits for a ticket: once the reader goes on,
                # the worker's slots fill with them, and its further read-aheads queue behind.
                tickets = src.tickets["seq.bin"] = asyncio.Semaphore(0)
                resume.set()
                for _ in range(500):
                    if src.inflight >= slots:
                        break
                    await asyncio.sleep(0.01)
                assert src.inflight == slots
                await asyncio.sleep(0.5)  # the client asks for the rest of its window
                src.reset()

                rnd = await asyncio.wait_for(client.open("/rnd.bin"), 60)  # ...
                offset = 20 * MIB + 1000
                demand = asyncio.ensure_future(rnd.pread(offset, 4096))
                releases = 0
                while not demand.done() and releases < 40:
                    tickets.release()  # one seq.bin GET answers: a slot is free
                    releases += 1
                    await asyncio.sleep(0.2)
                assert await demand == src.files["rnd.bin"][offset : offset + 4096]
                # The open's and the read's GETs took the next slots that came free, ahead of
                # seq.bin's queued read-aheads (first come, they would wait for about as many).
                assert releases <= 3, f"the demand read waited for {releases} slots"
                del src.tickets["seq.bin"]
                for _ in range(2 * slots):
                    tickets.release()
                assert await asyncio.wait_for(reading, 60) == src.files["seq.bin"]


@pytest.mark.timeout(120)
async def test_versions_are_checked_at_open(tmp_path: Path) -> None:
    async with serving() as src:
        src.put("a.bin", blob(3, 3 * MIB))
        src.put("b.bin", blob(4, 3 * MIB))
        src.put("c.bin", blob(5, 3 * MIB))
        src.put("d.bin", blob(10, 1000))
        with cluster_over(src.url, tmp_path, workers=1) as c:
            async with AsyncClient(c.master_url, c.token) as client:
                listed = {e.name: e for e in await client.ls("/")}
                assert listed["a.bin"].size == 3 * MIB

                # Changed (and grown) after listing, before open: read at its new version.
                src.put("a.bin", blob(6, 3 * MIB + 123))
                f = await client.open("/a.bin")
                assert f.size == 3 * MIB + 123
                assert await f.read() == src.files["a.bin"]

                # A small file grown after listing: its whole first block, at the new version.
                src.put("d.bin", blob(9, 3000))
                f = await client.open("/d.bin")
                assert (f.size, await f.read()) == (3000, src.files["d.bin"])

                # Deleted after listing: not found at open, never stale bytes.
                del src.files["b.bin"]
                with pytest.raises(errors.NotFound):
                    await client.open("/b.bin")

                # Changed while open: blocks of the old version are never fetched (an error,
                # not a mix of versions).
                f = await client.open("/c.bin")
                first = await f.pread(0, MIB)
                assert first == src.files["c.bin"][:MIB]
                src.put("c.bin", blob(7, 3 * MIB))
                with pytest.raises(errors.SourceError):
                    await f.pread(2 * MIB, MIB)
                # Opened again: the new version (the failed read had it checked again).
                f = await client.open("/c.bin")
                t0 = time.monotonic()
                assert await f.read() == src.files["c.bin"]
                assert time.monotonic() - t0 < 30


@pytest.mark.timeout(120)
async def test_a_file_of_several_blocks_is_opened_once_its_version_is_known(
    tmp_path: Path,
) -> None:
    """Its reader reads ahead while the first block is still arriving; a file of one block
    is opened with its bytes, as before (its reader needs nothing else)."""
    async with serving() as src:
        src.put("big.bin", blob(11, 5 * MIB))
        src.put("small.bin", blob(12, 1000))
        with cluster_over(src.url, tmp_path, workers=1) as c:
            async with AsyncClient(c.master_url, c.token) as client:
                await client.ls("/")
                for name in ("big.bin", "small.bin"):
                    src.bodies[name] = asyncio.Event()
                src.reset()
                f = await asyncio.wait_for(client.open("/big.bin"), timeout=10)
                assert f.info.version == f'"big.bin-v{src.versions["big.bin"]}"'
                small = asyncio.ensure_future(client.open("/small.bin"))
                await asyncio.sleep(0.5)
                assert not small.done()  # waits for its bytes
                src.bodies["big.bin"].set()
                src.bodies["small.bin"].set()
                assert (await small).size == 1000
                assert await f.read() == src.files["big.bin"]
                # The first block came with the open's request, not a second one; and the
                # open did not give up waiting on the worker for a HEAD through the master.
                assert [s for n, s in src.ranges if n == "big.bin"].count(0) == 1
                assert src.hits["HEAD big.bin"] == 0


@pytest.mark.timeout(120)
async def test_a_first_block_still_arriving_is_read_from_its_file_on_this_node(
    tmp_path: Path,
) -> None:
    """The open answered before the first block's bytes: a reader on the worker's node waits
    for the block there and reads its file, with no copy of it sent over HTTP; the block's
    fetch counts once as a read from the source."""
    async with serving() as src:
        src.put("big.bin", blob(16, 3 * MIB))
        with cluster_over(src.url, tmp_path, workers=1) as c:
            async with AsyncClient(c.master_url, c.token) as client:
                await client.ls("/")
                src.bodies["big.bin"] = asyncio.Event()
                f = await asyncio.wait_for(client.open("/big.bin"), timeout=10)
                reading = asyncio.ensure_future(f.read())
                await asyncio.sleep(0.3)
                assert not reading.done()  # waits for the first block
                src.bodies["big.bin"].set()
                assert await asyncio.wait_for(reading, 30) == src.files["big.bin"]
            assert await c.metric("w1", "fluidcache_served_bytes_total") == 0
            source = 'fluidcache_read_bytes_total{origin="source"}'
            assert await c.metric("w1", source) == len(src.files["big.bin"])


@pytest.mark.timeout(120)
async def test_a_first_block_that_breaks_off_after_the_open_is_fetched_again(
    tmp_path: Path,
) -> None:
    """The open answered with the version; the same answer's body then broke off: the reader
    gets the file's bytes (the block fetched again), never a part of them."""
    async with serving() as src:
        src.put("big.bin", blob(15, 5 * MIB))
        with cluster_over(src.url, tmp_path, workers=1) as c:
            async with AsyncClient(c.master_url, c.token) as client:
                await client.ls("/")
                src.bodies["big.bin"] = asyncio.Event()
                src.cut.add("big.bin")
                src.reset()
                f = await asyncio.wait_for(client.open("/big.bin"), timeout=10)
                src.bodies["big.bin"].set()
                assert await f.read() == src.files["big.bin"]
                assert not src.cut
                assert [s for n, s in src.ranges if n == "big.bin"].count(0) == 2


@pytest.mark.timeout(120)
async def test_a_large_first_read_at_the_start_reads_ahead_at_once(tmp_path: Path) -> None:
    """A first read of 512 KiB or more at offset 0 asks for a wide window at once; a small
    one (a header read) for its block and the next only."""
    async with serving() as src:
        src.put("stream.bin", blob(13, 40 * MIB))
        src.put("header.bin", blob(14, 40 * MIB))
        with cluster_over(src.url, tmp_path, workers=1) as c:
            async with AsyncClient(c.master_url, c.token) as client:
                await client.ls("/")
                f = await client.open("/header.bin")
                assert await f.pread(0, 4096) == src.files["header.bin"][:4096]
                f = await client.open("/stream.bin")
                assert await f.pread(0, MIB) == src.files["stream.bin"][:MIB]
                await asyncio.sleep(1.0)  # the window's fetches have all started by now
                starts = collections.Counter(n for n, _ in src.ranges)
                assert starts["header.bin"] <= 2, sorted(src.ranges)
                assert starts["stream.bin"] == 1 + START_WINDOW, sorted(src.ranges)


@pytest.mark.timeout(120)
async def test_a_sharded_model_listed_without_versions_is_fetched_once(tmp_path: Path) -> None:
    """Opening its first shard prefetches every shard under the version its loader reads (the
    other shards were only listed): no block is fetched twice."""
    shards = [f"model-{i:05d}-of-00003.safetensors" for i in (1, 2, 3)]
    async with serving() as src:
        for i, name in enumerate(shards):
            src.put(name, st_save({f"w{i}": np.frombuffer(blob(30 + i, 3 * MIB), np.uint8)}))
        index = {"metadata": {}, "weight_map": {f"w{i}": name for i, name in enumerate(shards)}}
        src.put("model.safetensors.index.json", json.dumps(index).encode())
        with cluster_over(src.url, tmp_path, workers=1) as c:
            async with AsyncClient(c.master_url, c.token) as client:
                await client.ls("/")
                src.reset()
                for name in shards:  # as a loader does, one shard after the other
                    f = await client.open(f"/{name}")
                    assert await f.read() == src.files[name]
                await asyncio.sleep(1.0)  # the prefetch's last fetches have ended by now
                fetched = collections.Counter(src.ranges)
                assert fetched and max(fetched.values()) == 1, sorted(fetched.items())
                assert {n for n, _ in fetched} == set(shards) | {"model.safetensors.index.json"}


@pytest.mark.timeout(120)
async def test_the_version_learnt_at_open_is_told_to_the_master(tmp_path: Path) -> None:
    async with serving() as src:
        src.put("a.bin", blob(8, 2 * MIB))
        with cluster_over(src.url, tmp_path, workers=1) as c:
            async with AsyncClient(c.master_url, c.token) as client:
                f = await client.open("/a.bin")
                assert await f.read() == src.files["a.bin"]
            src.reset()
            # Another client (nothing cached in it): the master knows the version now, so
            # opening and reading the file again asks nothing of the source.
            async with AsyncClient(c.master_url, c.token) as other:
                f = await other.open("/a.bin")
                assert f.info.version == f'"a.bin-v{src.versions["a.bin"]}"'
                assert await f.read() == src.files["a.bin"]
            assert not src.hits, dict(src.hits)


@pytest.mark.timeout(120)
async def test_lookups_in_one_directory_are_answered_from_one_listing(tmp_path: Path) -> None:
    async with serving() as src:
        for i in range(5):
            src.put(f"f{i}.bin", blob(20 + i, 1000))
        with cluster(tmp_path / "c") as c:
            c.start_master(src.url)
            async with AsyncClient(c.master_url, c.token) as client:
                root = await client.stat("/")
                assert (await client.lookup(root.ino, "f0.bin")).size == 1000
                assert (await client.lookup(root.ino, "f1.bin")).size == 1000  # lists "/"
                c.kill("master")
                # The other names come from that listing: no call to the (stopped) master.
                for i in range(2, 5):
                    assert (await client.lookup(root.ino, f"f{i}.bin")).name == f"f{i}.bin"


async def _lookups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, order: Callable[[list[str]], list[str]]
) -> collections.Counter[str]:
    """The calls a client makes looking up the 2,500 names of a directory in ``order(names)``,
    then a name it does not hold."""
    src = tmp_path / "src"
    src.mkdir()
    names = [f"s{i:05d}.bin" for i in range(2500)]
    for n in names:
        (src / n).write_bytes(n.encode())
    with cluster(tmp_path / "c") as c:
        c.start_master(f"local://{src}")
        async with AsyncClient(c.master_url, c.token) as client:
            root = await client.stat("/")
            calls = counting_calls(monkeypatch)
            for n in order(names):
                assert (await client.lookup(root.ino, n)).name == n
            with pytest.raises(errors.NotFound):
                await client.lookup(root.ino, "s99999.bin")
    return calls


@pytest.mark.timeout(120)
async def test_lookups_in_a_large_directory_list_a_page_per_thousand_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def scattered(names: list[str]) -> list[str]:
        rest = names[1000:]
        random.Random(3).shuffle(rest)
        return names[:1000] + rest  # sorted first, then scattered

    calls = await _lookups(tmp_path, monkeypatch, scattered)
    # Names past the first thousand are answered from pages too, not one call each.
    assert calls[NS_LOOKUP] <= 3, calls
    assert calls[NS_LIST] <= 12, calls


@pytest.mark.timeout(120)
async def test_lookups_in_shuffled_order_list_a_directory_page_by_page_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def shuffled(names: list[str]) -> list[str]:
        random.Random(7).shuffle(names)  # a shuffled epoch
        return names

    calls = await _lookups(tmp_path, monkeypatch, shuffled)
    # Its three pages, listed once each (not a page from wherever a name fell); one lookup
    # for the first name, before any listing, and one for the name it does not hold.
    assert calls[NS_LIST] == 3, calls
    assert calls[NS_LOOKUP] == 2, calls


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("ttl", "checks"), [(0, 0), (300, 6)])
async def test_versions_listed_as_final_are_opened_without_a_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ttl: int, checks: int
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"f{i}.bin").write_bytes(blob(60 + i, 3000))
    with cluster(tmp_path / "c") as c:
        c.start_master(f"local://{src}", extra=("--ttl", str(ttl)))
        c.start_worker("w1")
        async with AsyncClient(c.master_url, c.token, dir_prefetch=False) as client:
            listed = await client.ls("/")
            assert all(e.version for e in listed)  # a local listing gives versions
            calls = counting_calls(monkeypatch)
            for e in listed:
                f = await client.open(e.path)
                assert await f.read() == (src / e.name).read_bytes()
            # --ttl 0: the source is never checked again, so neither is the version at open;
            # with a TTL the master decides at each open whether to check it.
            assert calls[NS_STAT] == checks, calls


@pytest.mark.timeout(120)
async def test_opens_waiting_for_a_worker_go_in_one_call_each_with_its_own_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving() as src:
        for i in range(12):
            src.put(f"f{i:02d}.bin", blob(40 + i, 1000 + i))
        # Opens wait for the calls under way however long they take (not 5 ms): the count
        # below then depends on batching alone, not on how busy the machine is.
        monkeypatch.setattr("fluidcache.client.blocks.OPEN_MAX_WAIT", 60.0)
        monkeypatch.setattr("fluidcache.client.blocks.OPENS_IN_FLIGHT", 2)
        with cluster(tmp_path / "c") as c:
            c.start_master(src.url)
            c.start_worker("w1")
            async with AsyncClient(c.master_url, c.token) as client:
                listed = {i: await client.stat(f"/f{i:02d}.bin") for i in range(12)}
                assert not any(info.version for info in listed.values())
                del src.files["f05.bin"]  # gone from the source after it was listed
                calls = counting_calls(monkeypatch)

                async def read(i: int) -> bytes:
                    return await (await client.open(f"/f{i:02d}.bin")).read()

                got = await asyncio.gather(*(read(i) for i in range(12)), return_exceptions=True)
            # Twelve opens at once: two calls go out, the ten that waited go in the third.
            assert calls[FILE_OPEN] <= 3, calls
            assert isinstance(got[5], errors.NotFound), got[5]
            for i, data in enumerate(got):
                if i != 5:
                    assert data == src.files[f"f{i:02d}.bin"], i
            assert src.hits["HEAD f00.bin"] == 0  # the version came with the first block's GET


@pytest.mark.timeout(120)
async def test_a_stalled_open_does_not_hold_the_opens_that_went_with_it(tmp_path: Path) -> None:
    async with serving() as src:
        for name in ("a.bin", "b.bin", "slow.bin", "fast.bin"):
            src.put(name, blob(len(name) + ord(name[0]), 5000))
        src.gates = {n: asyncio.Event() for n in ("a.bin", "b.bin", "slow.bin")}
        with cluster(tmp_path / "c") as c:
            c.start_master(src.url)
            c.start_worker("w1")
            async with AsyncClient(c.master_url, c.token) as client:
                for name in src.files:
                    await client.stat(f"/{name}")

                async def read(name: str) -> bytes:
                    return await (await client.open(f"/{name}")).read()

                busy = [asyncio.ensure_future(read(n)) for n in ("a.bin", "b.bin")]
                await asyncio.sleep(0.3)  # both calls to the worker under way: the next wait
                slow = asyncio.ensure_future(read("slow.bin"))
                fast = asyncio.ensure_future(read("fast.bin"))
                await asyncio.sleep(0.1)
                src.gates["a.bin"].set()
                src.gates["b.bin"].set()  # slow.bin and fast.bin now go in one call
                # fast.bin's answer comes without slow.bin's (whose source waits for it)
                assert await fast == src.files["fast.bin"]
                src.gates["slow.bin"].set()
                assert await slow == src.files["slow.bin"]
                assert await asyncio.gather(*busy) == [src.files["a.bin"], src.files["b.bin"]]
            # Its late open, and the read that asked the master for its version instead (the
            # version the open will find is only known from that open's answer)
            assert src.hits["GET slow.bin"] <= 2, dict(src.hits)
