"""``Speeds``: which holders of a block are slow, and when a block request is late."""

from __future__ import annotations

from fluidcache.client.speeds import FORGET, HEDGE_FIRST, HEDGE_MIN, MIB, Speeds
from fluidcache.common.protocol import WorkerInfo


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def workers(*ids: str) -> list[WorkerInfo]:
    return [WorkerInfo(worker_id=i, address=f"http://{i}", node=i) for i in ids]


def ids(ws: list[WorkerInfo]) -> list[str]:
    return [w.worker_id for w in ws]


def test_unknown_workers_keep_their_order_and_hedges_wait_the_first_delay() -> None:
    speeds = Speeds(Clock())
    assert ids(speeds.order(workers("a", "b", "c"))) == ["a", "b", "c"]
    assert speeds.hedge_delay(MIB) == HEDGE_FIRST


def test_a_slow_worker_goes_last_and_comparable_ones_keep_their_order() -> None:
    speeds = Speeds(Clock())
    speeds.record("a", 4.0, MIB)  # 4 s/MiB: a slow link
    speeds.record("b", 0.02, MIB)
    speeds.record("c", 0.03, MIB)  # noise among healthy ones changes nothing
    assert ids(speeds.order(workers("a", "b", "c"))) == ["b", "c", "a"]
    assert ids(speeds.order(workers("c", "a", "b"))) == ["c", "b", "a"]
    assert speeds.hedge_delay(MIB) == HEDGE_MIN  # 4 x 0.02 s is below the floor
    speeds.record("b", 1.0, MIB)
    speeds.record("c", 1.0, MIB)
    assert speeds.hedge_delay(MIB) > HEDGE_MIN


def test_an_abandoned_request_only_ever_makes_a_worker_look_slower() -> None:
    speeds = Speeds(Clock())
    speeds.record("a", 0.01, MIB)
    speeds.record_lower_bound("a", 0.001, MIB)  # lost a race it had just joined: no news
    assert speeds.cost("a") == 0.01
    speeds.record_lower_bound("a", 2.0, MIB)
    assert speeds.cost("a") == 2.0


def test_a_slow_worker_is_forgotten_and_tried_again_later() -> None:
    clock = Clock()
    speeds = Speeds(clock)
    speeds.record("a", 4.0, MIB)
    speeds.record("b", 0.02, MIB)
    assert ids(speeds.order(workers("a", "b"))) == ["b", "a"]
    clock.now += FORGET + 1
    assert speeds.cost("a") is None
    assert ids(speeds.order(workers("a", "b"))) == ["a", "b"]


def test_a_tiny_block_is_not_taken_for_a_slow_link() -> None:
    speeds = Speeds(Clock())
    speeds.record("a", 0.005, 10)  # 10 bytes in 5 ms: latency, not 500 s/MiB
    speeds.record("b", 0.005, MIB)
    assert ids(speeds.order(workers("a", "b"))) == ["a", "b"]
