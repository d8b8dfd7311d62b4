"""Resources as the API server hands them to the controller, for the unit tests."""

from __future__ import annotations

from typing import Any

from fluidcache.controller.model import API_VERSION, Dataset, Node, Runtime


def dataset_body(name: str = "demo", namespace: str = "default", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Dataset",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
        "spec": {"mounts": [{"mountPoint": "https://files.example/data/", "name": "web"}], **spec},
    }


def runtime_body(name: str = "demo", namespace: str = "default", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "FluidCacheRuntime",
        "metadata": {"name": name, "namespace": namespace, "uid": f"rt-{name}"},
        "spec": {
            "replicas": 2,
            "tieredstore": {
                "levels": [
                    {"mediumtype": "MEM", "path": "/dev/shm", "quota": "1Gi"},
                    {
                        "mediumtype": "SSD",
                        "path": "/mnt/a,/mnt/b",
                        "quotaList": "10Gi,20Gi",
                        "quota": "30Gi",
                        "high": "0.9",
                        "low": "0.7",
                    },
                ]
            },
            **spec,
        },
    }


def dataset(name: str = "demo", **spec: Any) -> Dataset:
    return Dataset.parse(dataset_body(name, **spec))


def runtime(name: str = "demo", **spec: Any) -> Runtime:
    return Runtime.parse(runtime_body(name, **spec))


def node(name: str, taints: tuple[tuple[str, str], ...] = (), **labels: str) -> Node:
    return Node.parse(
        {
            "metadata": {"name": name, "labels": labels, "resourceVersion": "7"},
            "spec": {"taints": [{"key": k, "effect": e} for k, e in taints]},
        }
    )
