"""The worker's Prometheus metrics, in a registry of its own (several workers may share a process
in tests)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from fluidcache.common.protocol import ReadBytes
from fluidcache.worker.store import BlockStore

READ_ORIGINS = ("local", "remote", "source")  # the fields of ReadBytes, in order


class _StoreCollector(Collector):
    """Reads tier usage and store counters at scrape time."""

    def __init__(self, store: BlockStore) -> None:
        self.store = store

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        used = GaugeMetricFamily("fluidcache_tier_used_bytes", "Bytes held", labels=["tier"])
        cap = GaugeMetricFamily("fluidcache_tier_capacity_bytes", "Quota", labels=["tier"])
        blocks = GaugeMetricFamily("fluidcache_tier_blocks", "Blocks held", labels=["tier"])
        spare = GaugeMetricFamily(
            "fluidcache_tier_spare_bytes",
            "Allocated ahead of need (--mem-prealloc)",
            labels=["tier"],
        )
        for level in self.store.levels:
            medium, usage = level.config.medium, level.usage()
            used.add_metric([medium], usage.used)
            cap.add_metric([medium], level.quota)
            blocks.add_metric([medium], len(level.lru))
            spare.add_metric([medium], level.used - usage.used)
        yield from (used, cap, blocks, spare)
        c = self.store.counters
        for name, value, doc in (
            ("evictions", c.evictions, "Blocks dropped from the store"),
            ("demotions", c.demotions, "Blocks moved to a lower level"),
            ("promotions", c.promotions, "Blocks moved to the top level"),
            ("checksum_failures", c.checksum_failures, "Blocks that failed verification"),
            ("passthrough", c.passthrough, "Blocks served without being cached"),
        ):
            yield CounterMetricFamily(f"fluidcache_{name}", doc, value=value)


class Metrics:
    """Hits by tier, misses by where they were served from, bytes served."""

    def __init__(self, store: BlockStore) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_StoreCollector(store))
        self.hits = Counter(
            "fluidcache_block_hits", "Blocks served from a tier", ["tier"], registry=self.registry
        )
        self.misses = Counter(
            "fluidcache_block_misses",
            "Blocks fetched, by where from (peer, source)",
            ["origin"],
            registry=self.registry,
        )
        self.fetched_bytes = Counter(
            "fluidcache_fetched_bytes", "Bytes fetched", ["origin"], registry=self.registry
        )
        self.served_bytes = Counter(
            "fluidcache_served_bytes", "Bytes sent to readers", registry=self.registry
        )
        self.read_bytes = Counter(
            "fluidcache_read_bytes",
            "Bytes readers got, by where from (local: cache on their node, remote: cache on "
            "another node, source: a miss)",
            ["origin"],
            registry=self.registry,
        )
        self.peer_served = Counter(
            "fluidcache_peer_served_blocks",
            "Blocks this worker served to other workers",
            registry=self.registry,
        )

    def hit(self, tier: str) -> None:
        self.hits.labels(tier).inc()

    def miss(self, origin: str, size: int) -> None:
        self.misses.labels(origin).inc()
        self.fetched_bytes.labels(origin).inc(size)

    def read(self, origin: str, size: int) -> None:
        """Count ``size`` bytes a reader got from ``origin`` (local, remote, source)."""
        self.read_bytes.labels(origin).inc(size)

    def reads(self) -> ReadBytes:
        """The read counts so far, as the heartbeat sends them."""
        return ReadBytes(
            *(int(self.value("fluidcache_read_bytes_total", origin=o)) for o in READ_ORIGINS)
        )

    def value(self, name: str, **labels: str) -> float:
        """One sample's current value (0 when absent), for stats and tests."""
        got = self.registry.get_sample_value(name, labels or None)
        return got or 0.0

    def render(self) -> bytes:
        return generate_latest(self.registry)
