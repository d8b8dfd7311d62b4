"""The mount's wait for the FUSE device (:class:`fluidcache.client.fuse.DeviceWait`), on a pipe:
a queued request is taken without the event loop, a bounded number of times in a row; with
nothing queued it waits as pyfuse3 does."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pyfuse3.asyncio
import pytest

from fluidcache.client.fuse import READY_STREAK, DeviceWait


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    try:
        yield r, w
    finally:
        os.close(r)
        os.close(w)


LOOP_WAIT = pyfuse3.asyncio.wait_readable  # pyfuse3's own (a mount replaces it in its process)


class Counted:
    """pyfuse3's own wait on the event loop, counted."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, fd: int) -> None:
        self.calls += 1
        await LOOP_WAIT(fd)


async def test_queued_requests_skip_the_event_loop_a_bounded_number_of_times(
    pipe: tuple[int, int],
) -> None:
    r, w = pipe
    loop_wait = Counted()
    wait = DeviceWait(loop_wait)
    os.write(w, b"x")  # a request queued, never taken: readable throughout
    for _ in range(READY_STREAK):
        await wait(r)
    assert loop_wait.calls == 0
    await asyncio.wait_for(wait(r), 5)  # the streak's end: once through the event loop
    assert loop_wait.calls == 1
    await wait(r)
    assert loop_wait.calls == 1  # and a new streak


async def test_with_nothing_queued_it_waits_until_the_device_is_readable(
    pipe: tuple[int, int],
) -> None:
    r, w = pipe
    loop_wait = Counted()
    wait = DeviceWait(loop_wait)
    waiting = asyncio.ensure_future(wait(r))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    os.write(w, b"x")
    await asyncio.wait_for(waiting, 5)
    assert loop_wait.calls == 1
