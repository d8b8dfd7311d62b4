"""How fast each worker has lately sent this client blocks, to prefer the fast holders of a block
and to know when a request is late enough to ask another holder too (a hedged read).

Called by :class:`~fluidcache.client.blocks.BlockReader` around each block request. A figure is
seconds per MiB, a moving average; one older than :data:`FORGET` seconds is dropped, so a worker
judged slow is tried again later (and a hedge covers it if it still is).
"""

from __future__ import annotations

from collections.abc import Callable

from fluidcache.common.protocol import WorkerInfo

MIB = 1 << 20
MIN_BYTES = 64 * 1024  # a tiny block's time is mostly latency: count it as this many bytes
ALPHA = 0.3  # weight of the newest figure in the average
FORGET = 30.0  # seconds a figure is kept without news
SLOW_FACTOR = 4.0  # slower than this many times the fastest known worker: asked last
SLOW_FLOOR = 0.2  # seconds per MiB below which no worker is called slow (5 MiB/s)
HEDGE_FACTOR = 4.0  # a request is late after this many times the fastest worker's figure
HEDGE_MIN = 0.25  # seconds: never hedge sooner
HEDGE_FIRST = 1.0  # seconds: the hedge delay while no figure is known


class Speeds:
    """Seconds per MiB by worker id: recorded after each block request, read to order holders."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._cost: dict[str, tuple[float, float]] = {}  # worker id -> (s/MiB, when)

    def cost(self, worker_id: str) -> float | None:
        """The worker's seconds per MiB, or None if not known (lately)."""
        got = self._cost.get(worker_id)
        if got is None:
            return None
        if self._clock() - got[1] > FORGET:
            del self._cost[worker_id]
            return None
        return got[0]

    def record(self, worker_id: str, seconds: float, nbytes: int) -> None:
        """A request to the worker for ``nbytes`` took ``seconds``."""
        figure = seconds * MIB / max(nbytes, MIN_BYTES)
        old = self.cost(worker_id)
        cost = figure if old is None else old + ALPHA * (figure - old)
        self._cost[worker_id] = (cost, self._clock())

    def record_lower_bound(self, worker_id: str, seconds: float, nbytes: int) -> None:
        """A request to the worker was abandoned after ``seconds``: it is at least that slow."""
        figure = seconds * MIB / max(nbytes, MIN_BYTES)
        old = self.cost(worker_id)
        if old is None or figure > old:
            self._cost[worker_id] = (figure, self._clock())

    def _fastest(self) -> float | None:
        known = [c for c in (self.cost(w) for w in list(self._cost)) if c is not None]
        return min(known) if known else None

    def order(self, workers: list[WorkerInfo]) -> list[WorkerInfo]:
        """``workers`` in their given order, the ones known to be slow moved last (slowest last)."""
        fastest = self._fastest()
        if fastest is None:
            return workers
        limit = max(SLOW_FACTOR * fastest, SLOW_FLOOR)
        costs = {w.worker_id: self.cost(w.worker_id) for w in workers}
        fast = [w for w in workers if (costs[w.worker_id] or 0.0) <= limit]
        slow = [w for w in workers if (costs[w.worker_id] or 0.0) > limit]
        return fast + sorted(slow, key=lambda w: costs[w.worker_id] or 0.0)

    def hedge_delay(self, nbytes: int) -> float:
        """Seconds after which a request for ``nbytes`` is late enough to ask another holder."""
        fastest = self._fastest()
        if fastest is None:
            return HEDGE_FIRST
        return max(HEDGE_MIN, HEDGE_FACTOR * fastest * max(nbytes, MIN_BYTES) / MIB)
