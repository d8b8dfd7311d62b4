"""What a scenario measures: series of repeated values, their medians, and speed-ups."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

# Systems: how they are labelled, and which baseline each is compared with.
SYSTEMS: dict[str, str] = {
    "http-direct": "HTTP source read directly (aiohttp, no cache)",
    "s3-direct": "S3 source read directly (aiobotocore, no cache)",
    "fc-fuse-http": "fluidcache FUSE mount, HTTP source",
    "fc-client-http": "fluidcache client library, HTTP source",
    "fc-fuse-s3": "fluidcache FUSE mount, S3 source",
    "fc-client-s3": "fluidcache client library, S3 source",
    "rclone-s3": "rclone mount --vfs-cache-mode full --use-server-modtime, S3 source",
    "s3fs-s3": "s3fs-fuse with use_cache, S3 source",
    "hf-snapshot-download": "huggingface_hub.snapshot_download to local disk, then loading",
    "fc-fuse-hf": "fluidcache FUSE mount, hf:// source",
}
BASELINES = ("http-direct", "s3-direct", "hf-snapshot-download")


def baseline_of(system: str) -> str | None:
    if system in BASELINES:
        return None
    if system.endswith("-hf"):
        return "hf-snapshot-download"
    return "s3-direct" if system.endswith("-s3") else "http-direct"


@dataclass
class Series:
    """One quantity measured ``reps`` times for one system in one case."""

    case: str
    system: str
    metric: str  # unit, e.g. "MB/s", "files/s", "s", "%"
    values: list[float] = field(default_factory=list)
    higher_is_better: bool = True
    vs_case: str | None = None  # the baseline's case this is compared with (None: no ratio)
    x: float | None = None  # position on a line plot (readers, workers), if any
    group: str = ""  # series of a line plot share a group (the plot's name)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Series:
        return cls(
            d["case"],
            d["system"],
            d["metric"],
            list(d["values"]),
            d["higher_is_better"],
            d.get("vs_case"),
            d.get("x"),
            d.get("group", ""),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "system": self.system,
            "metric": self.metric,
            "values": self.values,
            "median": self.median,
            "min": min(self.values) if self.values else None,
            "max": max(self.values) if self.values else None,
            "higher_is_better": self.higher_is_better,
            "vs_case": self.vs_case,
            "x": self.x,
            "group": self.group,
        }


@dataclass
class Result:
    """A scenario's outcome: its parameters, series, what was skipped and why, notes."""

    name: str
    title: str
    params: dict[str, Any] = field(default_factory=dict)
    series: list[Series] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # system -> reason
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    def add(
        self,
        case: str,
        system: str,
        metric: str,
        value: float,
        *,
        higher_is_better: bool = True,
        vs_case: str | None = None,
        x: float | None = None,
        group: str = "",
    ) -> None:
        """Record one repetition's value."""
        for s in self.series:
            if (s.case, s.system, s.metric) == (case, system, metric):
                s.values.append(value)
                return
        s = Series(case, system, metric, [value], higher_is_better, vs_case, x, group)
        self.series.append(s)

    def find(self, case: str, system: str, metric: str) -> Series | None:
        for s in self.series:
            if (s.case, s.system, s.metric) == (case, system, metric):
                return s
        return None

    def speedups(self) -> list[dict[str, Any]]:
        """Each series against its baseline: how many times faster (>1: faster than baseline)."""
        out = []
        for s in self.series:
            base_system = baseline_of(s.system)
            if base_system is None or s.vs_case is None:
                continue
            base = self.find(s.vs_case, base_system, s.metric)
            if base is None or not base.values or not s.values:
                continue
            if s.median == 0 or base.median == 0:
                continue
            ratio = s.median / base.median if s.higher_is_better else base.median / s.median
            out.append(
                {
                    "case": s.case,
                    "system": s.system,
                    "baseline": base_system,
                    "baseline_case": s.vs_case,
                    "metric": s.metric,
                    "median": s.median,
                    "baseline_median": base.median,
                    "speedup": ratio,
                }
            )
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Result:
        return cls(
            d["name"],
            d["title"],
            d.get("params", {}),
            [Series.from_dict(s) for s in d.get("series", [])],
            d.get("skipped", {}),
            d.get("notes", []),
            d.get("extra", {}),
            d.get("seconds", 0.0),
            d.get("error"),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "params": self.params,
            "series": [s.as_dict() for s in self.series],
            "speedups": self.speedups(),
            "skipped": self.skipped,
            "notes": self.notes,
            "extra": self.extra,
            "seconds": self.seconds,
            "error": self.error,
        }
