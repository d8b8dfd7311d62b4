"""A block on its way in: readers get its bytes as they arrive, and its error if it fails."""

from __future__ import annotations

import asyncio

import pytest

from fluidcache.common import errors
from fluidcache.common.protocol import BlockRef
from fluidcache.worker.fetch import Inflight

REF = BlockRef("local:///d/f", "v", 0, 8, 8)


async def test_readers_get_the_first_bytes_before_the_fetch_ends() -> None:
    flight = Inflight(REF)
    got: list[bytes] = []
    first = asyncio.Event()

    async def reader() -> None:
        async for chunk in flight.chunks():
            got.append(chunk)
            first.set()

    readers = [asyncio.create_task(reader()) for _ in range(3)]
    flight.append(b"abcd")
    await asyncio.wait_for(first.wait(), 1)
    assert not flight.done and got[0] == b"abcd"
    flight.append(b"efgh")
    flight.finish()
    await asyncio.gather(*readers)
    assert got.count(b"abcd") == 3 and got.count(b"efgh") == 3
    assert await flight.data() == b"abcdefgh"


async def test_late_reader_gets_everything_and_errors_reach_every_reader() -> None:
    flight = Inflight(REF)
    flight.append(b"ab")
    failing = asyncio.create_task(flight.data())
    flight.finish(errors.SourceUnavailable("source down"))
    with pytest.raises(errors.SourceUnavailable):
        await failing
    chunks = flight.chunks()
    assert await anext(chunks) == b"ab"
    with pytest.raises(errors.SourceUnavailable):
        await anext(chunks)
