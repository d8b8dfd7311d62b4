"""The cache-affinity mutation of application pods, as a pure function.

The admission handler in :mod:`fluidcache.controller.handlers` finds which of a pod's
PersistentVolumeClaims are datasets (and where their caches are), then calls :func:`mutate_pod`;
what it returns is merged into the pod's spec. Fluid's rules: a preferred node affinity toward
the nodes caching the dataset (weight 100), their zones (50) and regions (20); a required one when
the pod carries ``fluid.io/dataset.<name>.sched=required``; ``mountPropagation:
HostToContainer`` on every mount of a dataset volume, so a FUSE remount reaches the container.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"
NODE_WEIGHT, ZONE_WEIGHT, REGION_WEIGHT = 100, 50, 20
PROPAGATION = "HostToContainer"


def sched_label(dataset: str) -> str:
    """The pod label whose value ``required`` makes the cache affinity required."""
    return f"fluid.io/dataset.{dataset}.sched"


@dataclasses.dataclass(frozen=True, slots=True)
class CachedDataset:
    """A dataset a pod mounts: its claim, the node label of its cache nodes, their topology."""

    name: str
    claim: str
    node_label: str  # fluid.io/s-<ns>-<name>
    zones: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()


def claims(pod: Mapping[str, Any]) -> list[str]:
    """The PVC names the pod mounts, in volume order."""
    volumes = (pod.get("spec") or {}).get("volumes") or []
    return [
        str(v["persistentVolumeClaim"]["claimName"])
        for v in volumes
        if (v.get("persistentVolumeClaim") or {}).get("claimName")
    ]


def _expr(key: str, values: Sequence[str]) -> dict[str, Any]:
    return {"key": key, "operator": "In", "values": sorted(values)}


def _preferences(ds: CachedDataset) -> list[dict[str, Any]]:
    prefs = [
        {
            "weight": NODE_WEIGHT,
            "preference": {"matchExpressions": [_expr(ds.node_label, ["true"])]},
        }
    ]
    if ds.zones:
        prefs.append(
            {
                "weight": ZONE_WEIGHT,
                "preference": {"matchExpressions": [_expr(ZONE_LABEL, ds.zones)]},
            }
        )
    if ds.regions:
        prefs.append(
            {
                "weight": REGION_WEIGHT,
                "preference": {"matchExpressions": [_expr(REGION_LABEL, ds.regions)]},
            }
        )
    return prefs


def _require(node_affinity: dict[str, Any], expr: Mapping[str, Any]) -> None:
    """AND ``expr`` into every term (terms are ORed, so each must carry it)."""
    required = node_affinity.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
    terms = required.setdefault("nodeSelectorTerms", [])
    if not terms:
        terms.append({"matchExpressions": []})
    for term in terms:
        exprs = term.setdefault("matchExpressions", [])
        if expr not in exprs:
            exprs.append(dict(expr))


def mutate_pod(pod: Mapping[str, Any], datasets: Sequence[CachedDataset]) -> dict[str, Any]:
    """The spec fields to replace (``affinity``, ``containers``, ``initContainers``), or ``{}``
    when the pod mounts none of ``datasets``. Idempotent: mutating a mutated pod changes
    nothing (the API server may call a webhook twice)."""
    spec = pod.get("spec") or {}
    mounted = {c for c in claims(pod)}
    used = [d for d in datasets if d.claim in mounted]
    if not used:
        return {}
    labels = (pod.get("metadata") or {}).get("labels") or {}
    affinity = copy.deepcopy(dict(spec.get("affinity") or {}))
    node_affinity = affinity.setdefault("nodeAffinity", {})
    preferred = node_affinity.setdefault("preferredDuringSchedulingIgnoredDuringExecution", [])
    for ds in used:
        for pref in _preferences(ds):
            if pref not in preferred:
                preferred.append(pref)
        if labels.get(sched_label(ds.name)) == "required":
            _require(node_affinity, _expr(ds.node_label, ["true"]))

    claimed = {c for c in (d.claim for d in used)}
    volumes = {
        str(v["name"])
        for v in spec.get("volumes") or []
        if (v.get("persistentVolumeClaim") or {}).get("claimName") in claimed
    }
    out: dict[str, Any] = {"affinity": affinity}
    for key in ("containers", "initContainers"):
        if key not in spec:
            continue
        containers = copy.deepcopy(list(spec[key]))
        for c in containers:
            for m in c.get("volumeMounts") or []:
                if m.get("name") in volumes and not m.get("mountPropagation"):
                    m["mountPropagation"] = PROPAGATION
        out[key] = containers
    return out


__all__ = ["CachedDataset", "claims", "mutate_pod", "sched_label"]
