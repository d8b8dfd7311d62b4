"""Small asyncio tools: single-flight, batched calls, hedged requests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")
A = TypeVar("A")


def retrieved(fut: asyncio.Future[Any]) -> None:
    """A done callback for work whose outcome may go unread: its exception is retrieved, so
    asyncio does not log it as never retrieved (whoever awaits it still gets it)."""
    if not fut.cancelled():
        fut.exception()


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
            fut.add_done_callback(retrieved)
        return await asyncio.shield(fut)


class Batcher(Generic[A, T]):
    """Calls to one destination go out together when they have to wait anyway: while
    ``in_flight`` batches for a key are under way, new calls queue, and the next batch takes
    them (at most ``most``). Idle, a call goes out at once, alone: batching adds no delay. A
    call waits at most ``max_wait`` seconds: then what waits goes out even with ``in_flight``
    batches under way (a slow destination does not hold the calls behind it).

    ``send(key, items)`` returns one result or exception per item, in order; its own
    exception fails every item of the batch.
    """

    def __init__(
        self,
        send: Callable[[Hashable, list[A]], Awaitable[list[T | BaseException]]],
        in_flight: int,
        most: int,
        max_wait: float,
    ) -> None:
        self._send = send
        self.in_flight, self.most, self.max_wait = in_flight, most, max_wait
        self._waiting: dict[Hashable, list[tuple[A, asyncio.Future[T]]]] = {}
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._busy: dict[Hashable, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def call(self, key: Hashable, item: A) -> T:
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append((item, fut))
        self._next(key)
        self._arm(key)
        return await fut

    def _arm(self, key: Hashable) -> None:
        """Send what waits for ``key`` after ``max_wait`` at the latest."""
        if key in self._waiting and key not in self._timers:
            loop = asyncio.get_running_loop()
            self._timers[key] = loop.call_later(self.max_wait, self._next, key, True)

    def _next(self, key: Hashable, late: bool = False) -> None:
        if late:
            self._timers.pop(key, None)
        waiting = self._waiting.get(key)
        if not waiting or (self._busy.get(key, 0) >= self.in_flight and not late):
            return
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        batch, rest = waiting[: self.most], waiting[self.most :]
        if rest:
            self._waiting[key] = rest
        else:
            del self._waiting[key]
        self._busy[key] = self._busy.get(key, 0) + 1
        task = asyncio.ensure_future(self._run(key, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._arm(key)

    async def _run(self, key: Hashable, batch: list[tuple[A, asyncio.Future[T]]]) -> None:
        try:
            results = await self._send(key, [item for item, _ in batch])
            if len(results) != len(batch):
                raise ValueError(f"{len(results)} results for a batch of {len(batch)}")
        except asyncio.CancelledError:
            for _, fut in batch:
                fut.cancel()
            raise
        except Exception as e:
            results = [e] * len(batch)
        finally:
            self._busy[key] -= 1
            if not self._busy[key]:
                del self._busy[key]
        for (_, fut), result in zip(batch, results, strict=True):
            if fut.done():
                continue  # its caller is gone
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)
        self._next(key)

    async def close(self) -> None:
        """Cancel the batches under way and the calls waiting."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for waiting in self._waiting.values():
            for _, fut in waiting:
                fut.cancel()
        self._waiting.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


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
