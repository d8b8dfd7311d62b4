"""The cache-affinity mutation: table-driven, pure."""

from __future__ import annotations

from typing import Any

import pytest

from fluidcache.controller.webhook import CachedDataset, mutate_pod

DS = CachedDataset("demo", "demo", "fluid.io/s-default-demo", ("zone-a",), ("eu",))
NODE = {"key": "fluid.io/s-default-demo", "operator": "In", "values": ["true"]}


def pod(claim: str = "demo", labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}] if claim else []
    volumes.append({"name": "tmp", "emptyDir": {}})
    return {
        "metadata": {"name": "app", "labels": labels or {}},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "volumeMounts": [
                        {"name": "data", "mountPath": "/data"},
                        {"name": "tmp", "mountPath": "/tmp"},
                    ],
                }
            ],
            "volumes": volumes,
            **spec,
        },
    }


def weights(changes: dict[str, Any]) -> dict[int, dict[str, Any]]:
    prefs = changes["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    return {p["weight"]: p["preference"]["matchExpressions"][0] for p in prefs}


def required(changes: dict[str, Any]) -> list[dict[str, Any]]:
    na = changes["affinity"]["nodeAffinity"]
    return list(
        na.get("requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms", [])
    )


@pytest.mark.parametrize(
    ("body", "datasets", "want_weights", "want_required"),
    [
        (pod(), [DS], {100, 50, 20}, []),
        (pod(), [CachedDataset("demo", "demo", DS.node_label)], {100}, []),
        (
            pod(labels={"fluid.io/dataset.demo.sched": "required"}),
            [DS],
            {100, 50, 20},
            [{"matchExpressions": [NODE]}],
        ),
        (
            pod(
                labels={"fluid.io/dataset.demo.sched": "required"},
                affinity={
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]},
                                {"matchExpressions": [{"key": "tpu", "operator": "Exists"}]},
                            ]
                        }
                    }
                },
            ),
            [DS],
            {100, 50, 20},
            [
                {"matchExpressions": [{"key": "gpu", "operator": "Exists"}, NODE]},
                {"matchExpressions": [{"key": "tpu", "operator": "Exists"}, NODE]},
            ],
        ),
        (pod(labels={"fluid.io/dataset.other.sched": "required"}), [DS], {100, 50, 20}, []),
    ],
    ids=["preferred", "no-topology", "required", "required-and-existing-terms", "other-label"],
)
def test_affinity(
    body: dict[str, Any],
    datasets: list[CachedDataset],
    want_weights: set[int],
    want_required: list[dict[str, Any]],
) -> None:
    changes = mutate_pod(body, datasets)
    w = weights(changes)
    assert set(w) == want_weights
    assert w[100] == NODE
    if 50 in w:
        assert w[50] == {
            "key": "topology.kubernetes.io/zone",
            "operator": "In",
            "values": ["zone-a"],
        }
        assert w[20]["key"] == "topology.kubernetes.io/region"
    assert required(changes) == want_required


@pytest.mark.parametrize(
    ("body", "datasets"),
    [(pod(claim=""), [DS]), (pod(claim="not-a-dataset"), [DS]), (pod(), [])],
    ids=["no-claim", "other-claim", "no-datasets"],
)
def test_pods_without_a_dataset_are_untouched(
    body: dict[str, Any], datasets: list[CachedDataset]
) -> None:
    assert mutate_pod(body, datasets) == {}


def test_dataset_mounts_get_host_to_container_propagation_others_not() -> None:
    body = pod(
        initContainers=[{"name": "init", "volumeMounts": [{"name": "data", "mountPath": "/d"}]}]
    )
    changes = mutate_pod(body, [DS])
    mounts = {m["name"]: m for m in changes["containers"][0]["volumeMounts"]}
    assert mounts["data"]["mountPropagation"] == "HostToContainer"
    assert "mountPropagation" not in mounts["tmp"]
    assert changes["initContainers"][0]["volumeMounts"][0]["mountPropagation"] == "HostToContainer"
    assert "mountPropagation" not in body["spec"]["containers"][0]["volumeMounts"][0]  # not mutated


def test_mutation_is_idempotent() -> None:
    body = pod(labels={"fluid.io/dataset.demo.sched": "required"})
    once = mutate_pod(body, [DS])
    twice = mutate_pod({**body, "spec": {**body["spec"], **once}}, [DS])
    assert twice == once
