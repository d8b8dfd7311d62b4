"""Which nodes hold a dataset's workers: affinity, tolerations, Exclusive, stability."""

from __future__ import annotations

import pytest

from fluidcache.controller import reconcile as rc
from fluidcache.controller.model import Node
from tests.unit.controller.samples import dataset, node, runtime

ZONE = "topology.kubernetes.io/zone"
IN_ZONE_A = {
    "required": {
        "nodeSelectorTerms": [
            {"matchExpressions": [{"key": ZONE, "operator": "In", "values": ["a"]}]}
        ]
    }
}
OTHER = {"fluid.io/s-default-other": "true", rc.DATASET_NUM: "1"}
OTHER_EXCLUSIVE = {**OTHER, rc.EXCLUSIVE_LABEL: "default_other"}
MINE = {"fluid.io/s-default-demo": "true", rc.DATASET_NUM: "1", rc.EXCLUSIVE_LABEL: "default_demo"}

CASES = [
    # (id, dataset spec, runtime spec, nodes, expected nodes, reason contains)
    ("first two by name", {}, {}, [node("n3"), node("n1"), node("n2")], ("n1", "n2"), ""),
    (
        "affinity",
        {"nodeAffinity": IN_ZONE_A},
        {},
        [node("n1", **{ZONE: "b"}), node("n2", **{ZONE: "a"}), node("n3", **{ZONE: "a"})],
        ("n2", "n3"),
        "",
    ),
    (
        "taint not tolerated",
        {},
        {},
        [node("n1", taints=(("gpu", "NoSchedule"),)), node("n2"), node("n3")],
        ("n2", "n3"),
        "",
    ),
    (
        "taint tolerated",
        {"tolerations": [{"key": "gpu", "operator": "Exists"}]},
        {"replicas": 1},
        [node("n1", taints=(("gpu", "NoSchedule"),))],
        ("n1",),
        "",
    ),
    (
        "PreferNoSchedule does not exclude",
        {},
        {"replicas": 1},
        [node("n1", taints=(("x", "PreferNoSchedule"),))],
        ("n1",),
        "",
    ),
    (
        "exclusive avoids a node with any dataset",
        {},
        {},
        [node("n1", **OTHER), node("n2"), node("n3")],
        ("n2", "n3"),
        "",
    ),
    (
        "shared uses a shared node, never an exclusive one",
        {"placement": "Shared"},
        {},
        [node("n1", **OTHER), node("n2", **OTHER_EXCLUSIVE), node("n3")],
        ("n1", "n3"),
        "",
    ),
    (
        "already labelled nodes first (scale up keeps them)",
        {},
        {"replicas": 3},
        [node("n1"), node("n2"), node("n9", **MINE), node("n3")],
        ("n9", "n1", "n2"),
        "",
    ),
    (
        "runtime nodeSelector",
        {},
        {"nodeSelector": {"disk": "ssd"}},
        [node("n1", disk="ssd"), node("n2"), node("n3", disk="ssd")],
        ("n1", "n3"),
        "",
    ),
    (
        "too few nodes says why",
        {"nodeAffinity": IN_ZONE_A},
        {"replicas": 3},
        [node("n1", **{ZONE: "a"}), node("n2", **{ZONE: "b"}), node("n3", **OTHER, **{ZONE: "a"})],
        ("n1",),
        "1 of 3 workers placed: only 1 node(s) match"
        " (1 excluded by exclusive, 1 excluded by nodeAffinity)",
    ),
]


@pytest.mark.parametrize(
    ("spec", "rt_spec", "nodes", "expected", "reason"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_place(
    spec: dict[str, object],
    rt_spec: dict[str, object],
    nodes: list[Node],
    expected: tuple[str, ...],
    reason: str,
) -> None:
    placement = rc.place(dataset(**spec), runtime(**rt_spec), nodes)
    assert placement.nodes == expected
    assert placement.reason == reason
    assert placement.complete == (not reason)


def test_scale_down_drops_the_last() -> None:
    nodes = [node(f"n{i}", **MINE) for i in range(3)]
    assert rc.place(dataset(), runtime(replicas=2), nodes).nodes == ("n0", "n1")


def test_scale_down_unlabels_the_node_of_the_pod_the_statefulset_removes() -> None:
    nodes = [node(f"n{i}", **MINE) for i in range(3)]
    pods = [
        {"metadata": {"name": f"demo-worker-{ordinal}"}, "spec": {"nodeName": name}}
        for ordinal, name in enumerate(["n2", "n0", "n1"])
    ]
    pods.append({"metadata": {"name": "someone-else"}, "spec": {"nodeName": "n0"}})
    ordinals = rc.worker_ordinals(dataset(), pods)
    assert ordinals == {"n2": 0, "n0": 1, "n1": 2}
    kept = rc.place(dataset(), runtime(replicas=2), nodes, ordinals).nodes
    assert kept == ("n2", "n0")  # demo-worker-2 (on n1) is the pod a scale-down removes
