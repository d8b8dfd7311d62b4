"""The execution entries of upstream Fluid's generic cache runtime (``CacheRuntimeClass``,
k8s/fluid/): what Fluid runs in the master pod and in its DataLoad Jobs, so that a cluster running
Fluid can use fluidcache without our controller.

- ``fluidcache fluid mount-ufs``: prints ``{"mounted": [...]}``, the dataset paths of the mounts
  in Fluid's runtime config (``$FLUID_RUNTIME_CONFIG_PATH``) that the master serves.
- ``fluidcache fluid report-summary``: prints Fluid's ``CacheRuntimeReportSummary`` (cached,
  cacheCapacity, cachedPercentage, cacheHitRatio, fileNum, ufsTotal: strings) from the master's
  report (what ``fluidcache report --json`` shows).
- ``fluidcache fluid dataload``: a load job from ``FLUID_DATALOAD_METADATA``,
  ``FLUID_DATALOAD_DATA_PATH`` and ``FLUID_DATALOAD_PATH_REPLICAS`` (``:``-separated), waited for;
  exit status 1 if it fails.

Only JSON goes to stdout (Fluid parses it); messages go to stderr. Called by :mod:`fluidcache.cli`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from fluidcache.client import AsyncClient
from fluidcache.client.api import replicas_value
from fluidcache.common import errors
from fluidcache.common.config import human_bytes
from fluidcache.common.protocol import COMPLETE, JobRequest, Report

NATIVE_SCHEMES = ("local://", "pvc://")  # Fluid's own: it never checks these in mountUFS's output


def mount_paths(config: Mapping[str, Any]) -> list[str]:
    """The paths Fluid expects in mountUFS's output, one per mount of its runtime config that it
    checks: the mount's ``path`` when absolute, else ``/<name>`` (Fluid's
    ``GenUFSPathInUnifiedNamespace``). Mounts of Fluid's native schemes are left out: Fluid
    skips them, and waits for any other path listed to go away."""
    return [
        m["path"]
        if str(m.get("path") or "").startswith("/")
        else "/" + str(m.get("name") or "").lstrip("/")
        for m in config.get("mounts") or []
        if not str(m.get("mountPoint") or "").startswith(NATIVE_SCHEMES)
    ]


def report_summary(report: Report, dataset: str = "") -> dict[str, str]:
    """Fluid's ``CacheRuntimeReportSummary``: the dataset's figures (the cluster's when the
    master has no dataset of that name), percentages 0-100, sizes human-readable."""
    s: Any = next((d for d in report.datasets if d.name == dataset), report)
    return {
        "cached": human_bytes(s.cached_bytes),
        "cacheCapacity": human_bytes(s.cache_capacity),
        "cachedPercentage": f"{s.cached_percent:.1f}",
        "cacheHitRatio": f"{100 * s.cache_hit_ratio:.1f}",
        "fileNum": str(s.file_count),
        "ufsTotal": human_bytes(s.ufs_total_bytes),
    }


def dataload_requests(env: Mapping[str, str], dataset: str) -> list[JobRequest]:
    """One load job per path, with its replicas (``all`` allowed), from Fluid's DataLoad env."""
    paths = [p for p in env.get("FLUID_DATALOAD_DATA_PATH", "/").split(":") if p]
    replicas = [r for r in env.get("FLUID_DATALOAD_PATH_REPLICAS", "").split(":") if r]
    if replicas and len(replicas) != len(paths):
        raise errors.InvalidArgument(
            f"FLUID_DATALOAD_PATH_REPLICAS has {len(replicas)} values for {len(paths)} paths"
        )
    metadata = env.get("FLUID_DATALOAD_METADATA", "false").lower() == "true"
    return [
        JobRequest(
            dataset=dataset,
            paths=[p],
            replicas=replicas_value(r),
            metadata=metadata,
        )
        for p, r in zip(paths, replicas or ["1"] * len(paths), strict=True)
    ]


async def mount_ufs(client: AsyncClient, config: Mapping[str, Any]) -> dict[str, list[str]]:
    """``{"mounted": [...]}``: the config's mount paths that the master serves."""
    mounted = []
    for path in mount_paths(config):
        try:
            await client.stat(path)
        except errors.NotFound:
            print(f"not mounted: {path}", file=sys.stderr)
            continue
        mounted.append(path)
    return {"mounted": mounted}


async def dataload(client: AsyncClient, env: Mapping[str, str], dataset: str) -> bool:
    ok = True
    for request in dataload_requests(env, dataset):
        job = await client.wait((await client.submit(request)).job_id)
        print(
            f"load {request.paths[0]}: {job.phase}, {job.bytes_done}/{job.bytes_total} bytes"
            + (f": {job.error}" if job.error else ""),
            file=sys.stderr,
        )
        ok = ok and job.phase == COMPLETE
    return ok


__all__ = ["dataload", "dataload_requests", "mount_paths", "mount_ufs", "report_summary"]
