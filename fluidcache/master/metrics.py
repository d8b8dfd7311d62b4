"""The master's Prometheus metrics: read from the service's state at scrape time.

Nothing is counted twice: :class:`MasterCollector` builds every family from one
:meth:`MasterService.report` (and the worker registry) when ``/metrics`` is scraped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from fluidcache.common.protocol import Report

if TYPE_CHECKING:
    from fluidcache.master.service import MasterService

Family = CounterMetricFamily | GaugeMetricFamily


class MasterCollector(Collector):
    """Datasets, workers, capacity and hit ratios of one master; add a family group as one
    more ``_name(report)`` generator in :meth:`collect`."""

    def __init__(self, service: MasterService) -> None:
        self.service = service

    def collect(self) -> Iterator[Family]:
        report = self.service.report()
        yield from self._datasets(report)
        yield from self._workers(report)
        yield from self._hits(report)
        yield from self._jobs()

    def _datasets(self, report: Report) -> Iterator[Family]:
        label = ["dataset"]
        ufs = GaugeMetricFamily("fluidcache_dataset_ufs_bytes", "UFS total size", labels=label)
        files = GaugeMetricFamily("fluidcache_dataset_files", "Files in the dataset", labels=label)
        cached = GaugeMetricFamily("fluidcache_dataset_cached_bytes", "Bytes cached", labels=label)
        pct = GaugeMetricFamily(
            "fluidcache_dataset_cached_percent", "Cached percentage (0-100)", labels=label
        )
        missing = GaugeMetricFamily(
            "fluidcache_dataset_capacity_shortfall_bytes",
            "UFS bytes beyond the cache capacity (0: the dataset fits)",
            labels=label,
        )
        for d in report.datasets:
            ufs.add_metric([d.name], d.ufs_total_bytes)
            files.add_metric([d.name], d.file_count)
            cached.add_metric([d.name], d.cached_bytes)
            pct.add_metric([d.name], d.cached_percent)
            missing.add_metric([d.name], d.shortfall.missing_bytes if d.shortfall else 0)
        yield from (ufs, files, cached, pct, missing)

    def _workers(self, report: Report) -> Iterator[Family]:
        workers = GaugeMetricFamily("fluidcache_workers", "Workers by state", labels=["state"])
        workers.add_metric(["live"], len(report.workers))
        workers.add_metric(["lost"], report.lost_workers)
        yield workers
        yield GaugeMetricFamily(
            "fluidcache_cache_capacity_bytes",
            "Quota of every live worker's tiers",
            report.cache_capacity,
        )
        yield GaugeMetricFamily(
            "fluidcache_cached_bytes", "Bytes held by the live workers", report.cached_bytes
        )

    def _hits(self, report: Report) -> Iterator[Family]:
        ratio = GaugeMetricFamily(
            "fluidcache_hit_ratio",
            "Fluid's hit ratios (kind: cache, local, remote) over the live workers' reads",
            labels=["kind"],
        )
        ratio.add_metric(["cache"], report.cache_hit_ratio)
        ratio.add_metric(["local"], report.local_hit_ratio)
        ratio.add_metric(["remote"], report.remote_hit_ratio)
        yield ratio
        read = CounterMetricFamily(
            "fluidcache_read_bytes",
            "Bytes readers got, by origin (local, remote, source)",
            labels=["origin"],
        )
        for origin, value in report.reads.to_wire().items():
            read.add_metric([origin], value)
        yield read

    def _jobs(self) -> Iterator[Family]:
        jobs = self.service.jobs
        phases = GaugeMetricFamily("fluidcache_jobs", "Jobs by phase", labels=["phase"])
        for phase, count in jobs.phase_counts().items():
            phases.add_metric([phase], count)
        yield phases
        yield CounterMetricFamily(
            "fluidcache_job_loaded_bytes",
            "Bytes brought to their replica count by finished job runs since start",
            value=jobs.bytes_loaded,
        )


class MasterMetrics:
    """A registry of the master's own (several masters may share a process in tests)."""

    def __init__(self, service: MasterService) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(MasterCollector(service))

    def render(self) -> bytes:
        return generate_latest(self.registry)
