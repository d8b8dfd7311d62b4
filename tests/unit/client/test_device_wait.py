"""The mount's wait for the FUSE device (:class:`fluidcache.client.fuse.DeviceWait`), on a pipe:
a queued request is taken without the event loop, a bounded number of times in a row; with
nothing queued it waits as pyfuse3 does."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pyfuse3.asyncio
import pytest

from fluidcache.client.fuse import READY_STREAK, DeviceWait

LOOP_WAIT = pyfuse3.asyncio.wait_readable  # pyfuse3's own (a mount replaces it in its process)


class Counted:
    """pyfuse3's own wait on the event loop, counted."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, fd: int) -> None:
        self.calls += 1
        await LOOP_WAIT(fd)


@dataclass
class Device:
    """A pipe standing for the FUSE device, and the mount's wait on its read end."""

    r: int
    w: int
    loop_wait: Counted
    wait: DeviceWait


@pytest.fixture
def device() -> Iterator[Device]:
    r, w = os.pipe()
    loop_wait = Counted()
    try:
        yield Device(r, w, loop_wait, DeviceWait(loop_wait))
    finally:
        os.close(r)
        os.close(w)


async def test_queued_requests_skip_the_event_loop_a_bounded_number_of_times(
    device: Device,
) -> None:
    r, w, loop_wait, wait = device.r, device.w, device.loop_wait, device.wait
    os.write(w, b"x")  # a request queued, never taken: readable throughout
    for _ in range(READY_STREAK):
        await wait(r)
    assert loop_wait.calls == 0
    await asyncio.wait_for(wait(r), 5)  # the streak's end: once through the event loop
    assert loop_wait.calls == 1
    await wait(r)
    assert loop_wait.calls == 1  # and a new streak


async def test_with_nothing_queued_it_waits_until_the_device_is_readable(
    device: Device,
) -> None:
    r, w, loop_wait, wait = device.r, device.w, device.loop_wait, device.wait
    waiting = asyncio.ensure_future(wait(r))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    os.write(w, b"x")
    await asyncio.wait_for(waiting, 5)
    assert loop_wait.calls == 1
