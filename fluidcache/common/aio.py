"""Small asyncio tools: single-flight, hedged requests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """Concurrent calls with one key share one execution and its result (or exception).

    The shared work runs in its own task, so one caller being cancelled does not cancel the
    others' fetch.
    """

    def __init__(self) -> None:
        self._inflight: dict[Hashable, asyncio.Future[T]] = {}

    def __contains__(self, key: Hashable) -> bool:
        return key in self._inflight

    async def do(self, key: Hashable, fn: Callable[[], Awaitable[T]]) -> T:
        fut = self._inflight.get(key)
        if fut is None:
            fut = asyncio.ensure_future(fn())
            self._inflight[key] = fut
            fut.add_done_callback(lambda _f: self._inflight.pop(key, None))
            # The result is consumed by the waiters; never let an unread exception be logged.
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        return await asyncio.shield(fut)


async def hedged(
    attempts: Sequence[Callable[[], Awaitable[T]]],
    delay: float,
    hedgeable: int,
    retry_on: type[BaseException],
) -> T:
    """The first successful result of ``attempts``, tried in order.

    An attempt that fails with ``retry_on`` starts the next one at once. While one is still
    under way after ``delay`` seconds, the next is started beside it (a hedge), but only among
    the first ``hedgeable`` attempts; so at most ``hedgeable`` run at once (at least one). The
    others are cancelled as soon as one succeeds. Raises the last ``retry_on`` error when every
    attempt failed; any other exception propagates at once.
    """
    if not attempts:
        raise ValueError("hedged: no attempt")
    if min(hedgeable, len(attempts)) <= 1:
        return await _in_turn(attempts, retry_on)  # nothing to race: no task per attempt
    running: set[asyncio.Task[T]] = set()
    started = 0
    last: BaseException | None = None

    def start() -> None:
        nonlocal started
        running.add(asyncio.ensure_future(attempts[started]()))
        started += 1

    try:
        start()
        while running:
            hedge = started < min(hedgeable, len(attempts))
            done, _ = await asyncio.wait(
                running, timeout=delay if hedge else None, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                start()  # the ones under way are slow: ask the next one too
                continue
            for task in done:
                running.discard(task)
                error = task.exception()
                if error is None:
                    return task.result()
                if not isinstance(error, retry_on):
                    raise error
                last = error
            if not running and started < len(attempts):
                start()
        assert last is not None
        raise last
    finally:
        for task in running:
            task.cancel()
        for task in running:
            with contextlib.suppress(BaseException):
                await task


async def _in_turn(
    attempts: Sequence[Callable[[], Awaitable[T]]], retry_on: type[BaseException]
) -> T:
    """:func:`hedged` without hedges: each attempt after the one before failed."""
    for attempt in attempts[:-1]:
        try:
            return await attempt()
        except retry_on:
            continue
    return await attempts[-1]()
