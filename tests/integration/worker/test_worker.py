"""Workers as real processes over a real HTTP source: single-flight, P2P, checksums, restart."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import msgpack
import pytest

from fluidcache.client import AsyncClient
from fluidcache.common.http import auth_headers
from fluidcache.common.protocol import (
    BLOCK,
    BLOCKS_TOUCH,
    MAX_TOUCHES,
    METRICS,
    MSGPACK,
    BlockRef,
    FileInfo,
)
from tests.cluster import Cluster, cluster
from tests.sources import HttpSource

BLOCK_SIZE = 1 << 20


@pytest.fixture
def source(tmp_path: Path) -> Iterator[HttpSource]:
    data = tmp_path / "src"
    data.mkdir()
    rng = random.Random(3)
    (data / "f.bin").write_bytes(rng.randbytes(3 * BLOCK_SIZE + 777))
    src = HttpSource(data)
    try:
        yield src
    finally:
        src.stop()


@pytest.fixture
def fc(tmp_path: Path, source: HttpSource) -> Iterator[Cluster]:
    with cluster(tmp_path / "cluster") as c:
        c.start_master(f"data={source.url}", extra=("--block-size", "1Mi"))
        yield c


async def file_info(c: Cluster, path: str = "/data/f.bin") -> FileInfo:
    async with AsyncClient(c.master_url, c.token) as client:
        return await client.stat(path)


async def get_block(c: Cluster, worker: str, ref: BlockRef) -> bytes:
    url = c.urls[worker] + BLOCK.format(block_id=ref.id)
    async with (
        aiohttp.ClientSession() as s,
        s.get(url, params=ref.to_query(), headers=auth_headers(c.token)) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await resp.read()


async def metric(c: Cluster, worker: str, name: str) -> float:
    async with (
        aiohttp.ClientSession() as s,
        s.get(c.urls[worker] + METRICS, headers=auth_headers(c.token)) as resp,
    ):
        text = await resp.text()
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def expected(source: HttpSource, ref: BlockRef) -> bytes:
    data = (source.root / "f.bin").read_bytes()
    return data[ref.offset : ref.offset + ref.length]


async def test_concurrent_cold_readers_cause_one_source_fetch(
    fc: Cluster, source: HttpSource
) -> None:
    fc.start_worker("w1")
    ref = (await file_info(fc)).block(1)
    before = source.file_gets()
    got = await asyncio.gather(*(get_block(fc, "w1", ref) for _ in range(32)))
    assert all(g == expected(source, ref) for g in got)
    assert source.file_gets() - before == 1


async def test_block_cached_on_a_is_fetched_from_a_by_b(fc: Cluster, source: HttpSource) -> None:
    fc.start_worker("a", node="node-a")
    fc.start_worker("b", node="node-b")
    ref = (await file_info(fc)).block(0)
    assert await get_block(fc, "a", ref) == expected(source, ref)
    await asyncio.sleep(1.0)  # the commit reaches the master with the next (early) heartbeat
    gets = source.file_gets()
    served = await metric(fc, "a", "fluidcache_peer_served_blocks_total")
    assert await get_block(fc, "b", ref) == expected(source, ref)
    assert source.file_gets() == gets, "b went to the source instead of a"
    assert await metric(fc, "a", "fluidcache_peer_served_blocks_total") == served + 1
    assert await metric(fc, "b", 'fluidcache_block_misses_total{origin="peer"}') == 1


async def test_dead_peer_falls_back_to_source(fc: Cluster, source: HttpSource) -> None:
    fc.start_worker("a", node="node-a")
    fc.start_worker("b", node="node-b")
    ref = (await file_info(fc)).block(2)
    await get_block(fc, "a", ref)
    await asyncio.sleep(1.0)
    fc.kill("a")
    gets = source.file_gets()
    assert await get_block(fc, "b", ref) == expected(source, ref)
    assert source.file_gets() == gets + 1


async def test_ssd_blocks_survive_kill_and_corruption_is_caught(
    fc: Cluster, source: HttpSource, tmp_path: Path
) -> None:
    ssd = tmp_path / "ssd"
    tier = f"SSD:{ssd}:64Mi"
    fc.start_worker("w1", tier)
    info = await file_info(fc)
    refs = [info.block(i) for i in range(info.block_count)]
    for ref in refs:
        assert await get_block(fc, "w1", ref) == expected(source, ref)
    fc.kill("w1")  # SIGKILL

    victim = next(ssd.glob(f"{refs[1].id}.*"))
    data = bytearray(victim.read_bytes())
    data[12345] ^= 0x01
    victim.write_bytes(bytes(data))

    gets = source.file_gets()
    fc.start_worker("w1", tier)
    assert await get_block(fc, "w1", refs[0]) == expected(source, refs[0])
    assert source.file_gets() == gets, "a block kept on SSD was fetched again"
    assert await get_block(fc, "w1", refs[1]) == expected(source, refs[1])
    assert source.file_gets() == gets + 1, "the corrupted block was not refetched"
    assert await metric(fc, "w1", "fluidcache_checksum_failures_total") == 1


async def test_malformed_and_unauthorized_requests_get_4xx(fc: Cluster) -> None:
    fc.start_worker("w1")
    ref = (await file_info(fc)).block(0)
    url = fc.urls["w1"] + BLOCK.format(block_id=ref.id)
    async with aiohttp.ClientSession() as s:
        async with s.get(url, params=ref.to_query()) as resp:
            assert resp.status == 401
        async with s.get(url, params={"uri": "x"}, headers=auth_headers(fc.token)) as resp:
            assert resp.status == 400
            assert b"bad block reference" in await resp.read()
        other = BlockRef("local:///etc/passwd", "1-1", 0, BLOCK_SIZE, 10)
        async with s.get(
            fc.urls["w1"] + BLOCK.format(block_id=other.id),
            params=other.to_query(),
            headers=auth_headers(fc.token),
        ) as resp:
            assert resp.status == 400
            assert b"not under any mount" in await resp.read()


async def touch(c: Cluster, worker: str, reads: dict[str, object]) -> tuple[int, bytes]:
    """POST a raw touch body (built by hand, so values the client would never send get sent)."""
    headers = {**auth_headers(c.token), "Content-Type": MSGPACK}
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            c.urls[worker] + BLOCKS_TOUCH, data=msgpack.packb({"reads": reads}), headers=headers
        ) as resp,
    ):
        return resp.status, await resp.read()


async def test_touched_byte_counts_are_bounded_by_what_could_be_read(fc: Cluster) -> None:
    fc.start_worker("w1")
    info = await file_info(fc)
    held, unknown = info.block(0), info.block(1)
    await get_block(fc, "w1", held)
    local = 'fluidcache_read_bytes_total{origin="local"}'
    before = await metric(fc, "w1", local)
    status, _ = await touch(fc, "w1", {held.id: 10**12, unknown.id: 10**12})
    assert status == 200
    # The held block counts at most its size; a block never held counts nothing.
    assert await metric(fc, "w1", local) == before + held.length
    for reads, field in (
        ({held.id: -5}, f"reads[{held.id!r}]"),
        ({f"b{i}": 1 for i in range(MAX_TOUCHES + 1)}, "reads:"),
        ({held.id: "5"}, "expected int"),
    ):
        status, body = await touch(fc, "w1", reads)
        assert status == 400, body
        assert field.encode() in body, body
    assert await metric(fc, "w1", local) == before + held.length
