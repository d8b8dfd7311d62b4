"""``hedged``: the first success of a list of attempts, a late one raced by the next (bounded)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from fluidcache.common.aio import hedged

DELAY = 0.01  # seconds before a hedge; the tests wait on events, never on durations


class Down(Exception):
    pass


class Attempts:
    """Attempts that answer, fail or hang (until cancelled), recording what happened."""

    def __init__(self, *kinds: str) -> None:
        self.kinds = kinds
        self.started: list[int] = []
        self.cancelled: list[int] = []

    def calls(self) -> list[Callable[[], Awaitable[int]]]:
        return [lambda i=i: self._run(i) for i in range(len(self.kinds))]

    async def _run(self, i: int) -> int:
        self.started.append(i)
        kind = self.kinds[i]
        if kind == "ok":
            return i
        if kind == "down":
            raise Down(f"attempt {i}")
        if kind == "bug":
            raise KeyError(i)
        try:
            await asyncio.Event().wait()  # "hang"
        except asyncio.CancelledError:
            self.cancelled.append(i)
            raise
        raise AssertionError("unreachable")


async def test_a_quick_answer_asks_no_one_else() -> None:
    a = Attempts("ok", "ok")
    assert await hedged(a.calls(), DELAY, 2, Down) == 0
    assert a.started == [0]


async def test_a_late_attempt_is_raced_by_the_next_and_cancelled_when_it_wins() -> None:
    a = Attempts("hang", "ok")
    assert await hedged(a.calls(), DELAY, 2, Down) == 1
    assert a.started == [0, 1]
    assert a.cancelled == [0]


async def test_a_failure_moves_on_at_once_even_past_the_hedgeable_ones() -> None:
    a = Attempts("down", "down", "ok")
    assert await hedged(a.calls(), 3600.0, 1, Down) == 2
    assert a.started == [0, 1, 2]


async def test_no_more_than_hedgeable_run_at_once() -> None:
    a = Attempts("hang", "hang", "ok")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(hedged(a.calls(), DELAY, 2, Down), 0.5)
    assert a.started == [0, 1]  # the third is asked only when one of them fails
    assert sorted(a.cancelled) == [0, 1]


async def test_every_attempt_failing_raises_the_last_error() -> None:
    a = Attempts("down", "down")
    with pytest.raises(Down, match="attempt 1"):
        await hedged(a.calls(), DELAY, 2, Down)


async def test_an_unexpected_error_propagates_and_cancels_the_others() -> None:
    a = Attempts("hang", "bug")
    with pytest.raises(KeyError):
        await hedged(a.calls(), DELAY, 2, Down)
    assert a.cancelled == [0]
