"""The test control plane works: a Deployment's pods are scheduled onto kwok nodes and run.

Not collected by the default `pytest` run (testpaths = tests). Run it explicitly, after
`bash k8s/testenv/build.sh`:

    .venv/bin/python -m pytest -q k8s/testenv/tests

It fails (never skips) when the binaries are missing.
"""

import json
import time

import pytest
from cluster import NODE_LABEL, ControlPlane, default_bin_dir, missing_binaries

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "hello", "namespace": "default"},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "hello"}},
        "template": {
            "metadata": {"labels": {"app": "hello"}},
            "spec": {
                "nodeSelector": {NODE_LABEL: "true"},
                "containers": [
                    {
                        "name": "hello",
                        "image": "fake.invalid/hello:1",  # kwok never pulls it
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                    }
                ],
            },
        },
    },
}


@pytest.fixture(scope="module")
def control_plane():
    missing = missing_binaries()
    if missing:
        pytest.fail(
            f"missing {', '.join(missing)} in {default_bin_dir()}:"
            " run `bash k8s/testenv/build.sh` first"
        )
    with ControlPlane(nodes=3) as cp:
        yield cp


@pytest.mark.timeout(300)
def test_deployment_pods_scheduled_on_kwok_nodes_and_running(control_plane):
    cp = control_plane
    nodes = json.loads(cp.kubectl("get", "nodes", "-l", f"{NODE_LABEL}=true", "-o", "json").stdout)[
        "items"
    ]
    node_names = {n["metadata"]["name"] for n in nodes}
    assert len(node_names) == 3

    cp.kubectl("apply", "-f", "-", input=json.dumps(DEPLOYMENT))

    deadline = time.monotonic() + 120
    pods: list = []
    deploy: dict = {}
    while time.monotonic() < deadline:
        pods = json.loads(
            cp.kubectl("get", "pods", "-n", "default", "-l", "app=hello", "-o", "json").stdout
        )["items"]
        deploy = json.loads(
            cp.kubectl("get", "deployment", "hello", "-n", "default", "-o", "json").stdout
        )
        running = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
        if len(pods) == 2 == len(running) and deploy.get("status", {}).get("readyReplicas") == 2:
            break
        time.sleep(0.5)
    summary = [
        (p["metadata"]["name"], p["spec"].get("nodeName"), p.get("status", {}).get("phase"))
        for p in pods
    ]
    assert len(pods) == 2, summary
    for p in pods:
        assert p["spec"].get("nodeName") in node_names, summary
        assert p["status"]["phase"] == "Running", summary
        assert p["status"].get("podIP"), summary
        ready = {c["type"]: c["status"] for c in p["status"].get("conditions", [])}
        assert ready.get("PodScheduled") == "True", summary

    # the real scheduler placed them (an event from default-scheduler per pod)
    events = json.loads(
        cp.kubectl(
            "get", "events", "-n", "default", "--field-selector", "reason=Scheduled", "-o", "json"
        ).stdout
    )["items"]
    scheduled = {
        e["involvedObject"]["name"]
        for e in events
        if "default-scheduler"
        in (e.get("reportingComponent"), e.get("source", {}).get("component"))
    }
    assert {p["metadata"]["name"] for p in pods} <= scheduled, (summary, scheduled)
    assert deploy["status"].get("readyReplicas") == 2, deploy["status"]
