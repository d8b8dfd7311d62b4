"""Batched calls: idle calls go out alone and at once; calls that wait go out together."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

import pytest

from fluidcache.common.aio import Batcher


async def test_waiting_calls_go_out_together_each_with_its_own_result() -> None:
    sent: list[list[int]] = []
    release = asyncio.Event()

    async def send(key: Hashable, items: list[int]) -> list[int | BaseException]:
        sent.append(items)
        await release.wait()
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(send, in_flight=1, most=3, max_wait=60)
    calls = [asyncio.ensure_future(batcher.call("w", i)) for i in range(6)]
    await asyncio.sleep(0.01)
    assert sent == [[0]]  # the first went out alone, at once; the rest wait for it
    release.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert sent == [[0], [1, 2, 3], [4, 5]]  # at most three a batch
    assert results[0::2] == [0, 20, 40]
    assert [str(e) for e in results[1::2]] == ["odd 1", "odd 3", "odd 5"]


async def test_calls_wait_at_most_max_wait_for_a_slow_batch() -> None:
    sent: list[list[int]] = []
    release = asyncio.Event()

    async def send(key: Hashable, items: list[int]) -> list[int | BaseException]:
        sent.append(items)
        if items == [0]:
            await release.wait()  # the first batch is slow
        return items

    batcher: Batcher[int, int] = Batcher(send, in_flight=1, most=8, max_wait=0.05)
    first = asyncio.ensure_future(batcher.call("w", 0))
    await asyncio.sleep(0)
    later = [asyncio.ensure_future(batcher.call("w", i)) for i in (1, 2)]
    assert await asyncio.wait_for(asyncio.gather(*later), 5) == [1, 2]
    assert sent == [[0], [1, 2]] and not first.done()  # they went together, without it
    release.set()
    assert await first == 0


async def test_a_failed_batch_fails_its_calls_and_the_next_batch_still_goes() -> None:
    async def send(key: Hashable, items: list[str]) -> list[str | BaseException]:
        await asyncio.sleep(0)
        if "bad" in items:
            raise ConnectionError("worker gone")
        return [s.upper() for s in items]

    batcher: Batcher[str, str] = Batcher(send, in_flight=1, most=2, max_wait=60)
    first = asyncio.ensure_future(batcher.call("w", "bad"))
    second = asyncio.ensure_future(batcher.call("w", "ok"))
    other_key = asyncio.ensure_future(batcher.call("v", "fine"))
    with pytest.raises(ConnectionError):
        await first
    assert await second == "OK"
    assert await other_key == "FINE"


async def test_close_cancels_what_waits_and_what_is_under_way() -> None:
    async def send(key: Hashable, items: list[int]) -> list[int | BaseException]:
        await asyncio.sleep(60)
        return items

    batcher: Batcher[int, int] = Batcher(send, in_flight=1, most=8, max_wait=60)
    under_way = asyncio.ensure_future(batcher.call("w", 1))
    waiting = asyncio.ensure_future(batcher.call("w", 2))
    await asyncio.sleep(0.01)
    await batcher.close()
    for call in (under_way, waiting):
        with pytest.raises(asyncio.CancelledError):
            await call
