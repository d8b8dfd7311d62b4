"""Fluid's node label formats, the UID fallback, and the label patches of a node."""

from __future__ import annotations

import pytest

from fluidcache.controller import reconcile as rc
from fluidcache.controller.model import Dataset, Meta, Node, Runtime
from tests.unit.controller.samples import dataset, runtime

LONG = "a" * 50


@pytest.mark.parametrize(
    ("meta", "fn", "expected"),
    [
        (Meta("default", "demo", "u1"), rc.dataset_label, "fluid.io/s-default-demo"),
        (Meta("default", "demo", "u1"), rc.runtime_label, "fluid.io/s-fluidcache-default-demo"),
        (
            Meta("default", "demo", "u1"),
            lambda m: rc.capacity_label(m, "m"),
            "fluid.io/s-h-fluidcache-m-default-demo",
        ),
        (Meta("default", "demo", "u1"), rc.fuse_label, "fluid.io/f-default-demo"),
        (Meta("default", "demo", "u1"), rc.exclusive_value, "default_demo"),
        # 63 characters or more: the Dataset's UID stands for <ns>-<name>
        (Meta("default", LONG, "u1"), rc.runtime_label, "fluid.io/s-fluidcache-u1"),
        (Meta("default", LONG + "12345", "u1"), rc.dataset_label, "fluid.io/s-u1"),
        (Meta("ns", "x" * 60, "u1"), rc.exclusive_value, "u1"),
        # 62 characters still fit
        (Meta("ns", "x" * 57, "u1"), rc.dataset_label, "fluid.io/s-ns-" + "x" * 57),
    ],
)
def test_label_names(meta: Meta, fn: object, expected: str) -> None:
    assert fn(meta) == expected  # type: ignore[operator]


def test_cache_labels_carry_capacities_in_human_units() -> None:
    labels = rc.cache_labels(dataset(), runtime())
    assert labels == {
        "fluid.io/s-default-demo": "true",
        "fluid.io/s-fluidcache-default-demo": "true",
        "fluid.io/s-h-fluidcache-m-default-demo": "1.00GiB",
        "fluid.io/s-h-fluidcache-d-default-demo": "30.00GiB",
        "fluid.io/s-h-fluidcache-t-default-demo": "31.00GiB",
        "fluid_exclusive": "default_demo",
    }
    assert "fluid_exclusive" not in rc.cache_labels(dataset(placement="Shared"), runtime())


@pytest.mark.parametrize(
    ("labels", "cache", "expected"),
    [
        ({}, True, {**rc.cache_labels(dataset(), runtime()), rc.DATASET_NUM: "1"}),
        ({rc.DATASET_NUM: "1", "fluid.io/s-other-x": "true"}, True, None),  # counted: 2
        ({**rc.cache_labels(dataset(), runtime()), rc.DATASET_NUM: "1"}, True, {}),
        (
            {**rc.cache_labels(dataset(), runtime()), rc.DATASET_NUM: "1"},
            False,
            {**dict.fromkeys(rc.cache_labels(dataset(), runtime())), rc.DATASET_NUM: None},
        ),
        (
            {**rc.cache_labels(dataset(), runtime()), rc.DATASET_NUM: "3"},
            False,
            {**dict.fromkeys(rc.cache_labels(dataset(), runtime())), rc.DATASET_NUM: "2"},
        ),
        ({"zone": "a"}, False, {}),
    ],
)
def test_label_patch(
    labels: dict[str, str], cache: bool, expected: dict[str, object] | None
) -> None:
    node = Node("n1", labels, resource_version="42")
    patch = rc.label_patch(node, dataset(), runtime(), cache)
    if expected == {}:
        assert patch == {}
        return
    changes = patch["metadata"]["labels"]
    assert patch["metadata"]["resourceVersion"] == "42"
    if expected is None:
        assert changes[rc.DATASET_NUM] == "2"
    else:
        assert changes == expected


def test_unlabel_needs_no_runtime_details() -> None:
    """The finalizer unlabels with a bare runtime: label keys do not depend on the levels."""
    full = {**rc.cache_labels(dataset(), runtime()), rc.DATASET_NUM: "1"}
    patch = rc.label_patch(
        Node("n", full), Dataset(dataset().meta, ()), Runtime(dataset().meta), False
    )
    assert set(patch["metadata"]["labels"]) == set(full)
