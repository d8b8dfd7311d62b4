"""The worker's source slots: bounded, readers' demand reads before read-aheads, a read-ahead
promoted when a reader asks for its block, and no slot lost to a cancelled waiter."""

from __future__ import annotations

import asyncio

from fluidcache.worker.fetch import Slots


class Fetch:
    """A holder of a slot until told to let go; ``urgent`` can change while it waits."""

    def __init__(self, slots: Slots, name: str, urgent: bool, order: list[str]) -> None:
        self.name, self.urgent = name, urgent
        self.done = asyncio.Event()
        self.task = asyncio.ensure_future(self._run(slots, order))

    async def _run(self, slots: Slots, order: list[str]) -> None:
        async with slots.held(lambda: self.urgent):
            order.append(self.name)
            await self.done.wait()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_demand_reads_go_before_read_aheads_and_a_promoted_one_before_the_rest() -> None:
    slots, order = Slots(2), []
    running = [Fetch(slots, f"busy{i}", True, order) for i in range(2)]
    await settle()
    ahead = [Fetch(slots, f"ahead{i}", False, order) for i in range(3)]
    await settle()
    reader = Fetch(slots, "reader", True, order)
    await settle()
    assert order == ["busy0", "busy1"]  # bounded: the others wait

    running[0].done.set()
    await settle()
    assert order[2:] == ["reader"]  # came last, served first

    ahead[2].urgent = True  # a reader now waits for this read-ahead's block
    running[1].done.set()
    await settle()
    assert order[3:] == ["ahead2"]

    for f in (reader, ahead[2]):
        f.done.set()
    await settle()
    assert order[4:] == ["ahead0", "ahead1"]  # the rest in the order they came
    for f in ahead:
        f.done.set()
    await asyncio.gather(*(f.task for f in [*running, *ahead, reader]))


async def test_a_cancelled_waiter_loses_no_slot() -> None:
    slots, order = Slots(1), []
    busy = Fetch(slots, "busy", True, order)
    await settle()
    waiting = [Fetch(slots, f"w{i}", True, order) for i in range(3)]
    await settle()
    waiting[0].task.cancel()  # cancelled while it waits
    await settle()
    busy.done.set()
    await asyncio.sleep(0)  # busy lets go: its slot is handed to w1 ...
    waiting[1].task.cancel()  # ... which is cancelled before it could run
    await asyncio.gather(busy.task, *(w.task for w in waiting[:2]), return_exceptions=True)
    await settle()
    assert order == ["busy", "w2"]  # the slot went on to w2
    waiting[2].done.set()
    await asyncio.wait_for(waiting[2].task, 5)
    # Every slot came back: one more holder gets it at once.
    last = Fetch(slots, "last", False, order)
    await settle()
    assert order[-1] == "last"
    last.done.set()
    await last.task
