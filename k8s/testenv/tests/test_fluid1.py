"""Part 2 against the real control plane: the cache-affinity webhook (called by the API server
over TLS), a Dataset made whole by a RuntimeProfile, a DataProcess after its runAfter.

    .venv/bin/python -m pytest -q k8s/testenv/tests/test_fluid1.py
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from support import NS, Env, dataset, running_env, runtime, wait_for, webhook_args

FILES = {f"dir/f{i}.bin": os.urandom(200_000 + i) for i in range(3)}
CACHE_LABEL = "fluid.io/s-default-cached"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("fluid1")
    args = webhook_args(root)
    with running_env(root, FILES, args, master_dataset="cached") as e:
        e.token_secrets("cached", "profiled")
        yield e


def pod(name: str, claim: str = "", labels: dict[str, str] | None = None, **spec: Any) -> dict:
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}] if claim else []
    volumes.append({"name": "scratch", "emptyDir": {}})
    mounts = [{"name": v["name"], "mountPath": f"/{v['name']}"} for v in volumes]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels or {}},
        "spec": {
            "containers": [{"name": "app", "image": "fake.invalid/app:1", "volumeMounts": mounts}],
            "volumes": volumes,
            **spec,
        },
    }


def phase_of(env: Env, kind: str, name: str, want: str) -> Any:
    def check() -> Any:
        obj = env.get(kind, name, "-n", NS)
        return obj.get("status", {}).get("phase") == want and obj

    return check


@pytest.mark.timeout(240)
def test_webhook_gives_cache_affinity_over_tls(env: Env) -> None:
    assert env.apply(dataset("cached")).returncode == 0
    assert env.apply(runtime("cached", env.fc.master_url)).returncode == 0
    cache_nodes = wait_for("2 cache nodes", lambda: len(n := env.labelled(CACHE_LABEL)) == 2 and n)
    wait_for("the PVC", lambda: env.get("pvc", "cached", "-n", NS))
    config = wait_for(
        "the webhook configuration",
        lambda: env.get("mutatingwebhookconfigurations", "fluidcache.data.fluidcache.io"),
    )
    client = config["webhooks"][0]["clientConfig"]
    assert client["url"].startswith("https://127.0.0.1:") and client["caBundle"]

    assert env.apply(pod("app", claim="cached")).returncode == 0
    app = env.get("pod", "app", "-n", NS)
    preferred = app["spec"]["affinity"]["nodeAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    weights = {p["weight"]: p["preference"]["matchExpressions"][0] for p in preferred}
    assert weights[100] == {"key": CACHE_LABEL, "operator": "In", "values": ["true"]}
    zones = {
        env.get("node", n)["metadata"]["labels"]["topology.kubernetes.io/zone"] for n in cache_nodes
    }
    assert weights[50]["key"] == "topology.kubernetes.io/zone"
    assert set(weights[50]["values"]) == zones
    mounts = {m["name"]: m for m in app["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["data"]["mountPropagation"] == "HostToContainer"
    assert "mountPropagation" not in mounts["scratch"]
    app = wait_for("app Running", phase_of(env, "pod", "app", "Running"))
    assert app["spec"]["nodeName"] in cache_nodes

    assert env.apply(pod("plain")).returncode == 0
    plain = env.get("pod", "plain", "-n", NS)
    assert "affinity" not in plain["spec"]
    assert all("mountPropagation" not in m for m in plain["spec"]["containers"][0]["volumeMounts"])

    other = sorted({f"kwok-node-{i}" for i in (0, 2, 3, 4)} - cache_nodes)[0]
    strict = pod(
        "strict",
        claim="cached",
        labels={"fluid.io/dataset.cached.sched": "required"},
        nodeSelector={"kubernetes.io/hostname": other},
    )
    assert env.apply(strict).returncode == 0
    body = env.get("pod", "strict", "-n", NS)
    terms = body["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": CACHE_LABEL, "operator": "In", "values": ["true"]}
    ]
    cond = wait_for(
        "strict Unschedulable",
        lambda: next(
            (
                c
                for c in env.get("pod", "strict", "-n", NS)["status"].get("conditions", [])
                if c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable"
            ),
            None,
        ),
    )
    assert "affinity" in cond["message"], cond
    assert env.get("pod", "strict", "-n", NS)["status"]["phase"] == "Pending"
    for name in ("app", "plain", "strict"):
        env.kubectl("delete", "pod", name, "-n", NS, "--grace-period=0", "--force", "--wait=false")


@pytest.mark.timeout(180)
def test_dataset_naming_a_runtime_profile_gets_a_running_runtime(env: Env) -> None:
    profile = runtime("standard", env.fc.master_url, replicas=1)
    profile["kind"] = "RuntimeProfile"
    del profile["metadata"]["namespace"]
    profile["spec"]["description"] = "one worker, 1Gi of memory"
    assert env.apply(profile).returncode == 0, env.apply(profile).stderr
    ds = dataset("profiled", runtimeProfile="standard", placement="Shared")
    assert env.apply(ds).returncode == 0
    rt = wait_for(
        "the profile's runtime Ready",
        lambda: (
            (r := env.get("fluidcacheruntime", "profiled", "-n", NS))
            .get("status", {})
            .get("workerPhase")
            == "Ready"
            and r
        ),
    )
    assert rt["metadata"]["labels"]["data.fluidcache.io/runtime-profile"] == "standard"
    assert rt["metadata"]["ownerReferences"][0]["kind"] == "Dataset"
    assert rt["spec"]["replicas"] == 1 and "description" not in rt["spec"]
    wait_for("profiled Bound", phase_of(env, "dataset", "profiled", "Bound"))


def _op(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "data.fluidcache.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def process(name: str, after: str) -> dict[str, Any]:
    return _op(
        "DataProcess",
        name,
        {
            "dataset": {"name": "cached", "mountPath": "/data"},
            "runAfter": {"kind": "DataLoad", "name": after},
            "processor": {
                "script": {"image": "python", "imageTag": "3.11", "source": "ls -R /data"}
            },
        },
    )


@pytest.mark.timeout(180)
def test_dataprocess_waits_for_its_run_after_and_then_runs(env: Env) -> None:
    assert env.apply(process("count", "warm")).returncode == 0
    waiting = wait_for("count Pending", phase_of(env, "dataprocess", "count", "Pending"))
    assert waiting["status"]["waitingFor"] == {"operationComplete": False}
    messages = [c.get("message", "") for c in waiting["status"]["conditions"]]
    assert any("DataLoad default/warm" in m for m in messages), messages
    assert not env.get("jobs", "-n", NS)["items"]

    load = {"dataset": {"name": "cached"}, "loadMetadata": True, "target": [{"path": "/dir"}]}
    assert env.apply(_op("DataLoad", "warm", load)).returncode == 0
    wait_for("warm Complete", phase_of(env, "dataload", "warm", "Complete"))
    job = wait_for("the Job", lambda: env.get("jobs", "-n", NS)["items"])[0]
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["volumes"][-1]["persistentVolumeClaim"]["claimName"] == "cached"
    assert pod_spec["containers"][0]["volumeMounts"][-1]["mountPath"] == "/data"
    assert pod_spec["containers"][0]["image"] == "python:3.11"
    wait_for("count Complete", phase_of(env, "dataprocess", "count", "Complete"), timeout=120)


@pytest.mark.timeout(120)
def test_a_dataload_runs_after_a_dataprocess(env: Env) -> None:
    """Fluid's data flow: a DataLoad whose runAfter is a DataProcess (count, Complete above)
    starts once that one is Complete, without a master job to wait on."""
    load = {
        "dataset": {"name": "cached"},
        "target": [{"path": "/dir"}],
        "runAfter": {
            "apiVersion": "data.fluidcache.io/v1alpha1",
            "kind": "DataProcess",
            "name": "count",
        },
    }
    assert env.apply(_op("DataLoad", "after-count", load)).returncode == 0
    done = wait_for("after-count Complete", phase_of(env, "dataload", "after-count", "Complete"))
    assert done["status"]["progress"]["bytesDone"] > 0


@pytest.mark.timeout(120)
def test_dataprocess_fails_with_its_run_after(env: Env) -> None:
    load = {"dataset": {"name": "cached"}, "target": [{"path": "/no/such/dir"}]}
    assert env.apply(_op("DataLoad", "broken", load)).returncode == 0
    assert env.apply(process("doomed", "broken")).returncode == 0
    wait_for("broken Failed", phase_of(env, "dataload", "broken", "Failed"))
    doomed = wait_for("doomed Failed", phase_of(env, "dataprocess", "doomed", "Failed"))
    assert doomed["status"]["conditions"][-1]["reason"] == "RunAfterFailed"
    assert env.kubectl("get", "job", "doomed-process", "-n", NS, check=False) == ""
    # what runs after the failed DataProcess fails with it
    spec = {"dataset": "cached", "runAfter": {"kind": "DataProcess", "name": "doomed"}}
    assert env.apply(_op("DataBackup", "after-doomed", spec)).returncode == 0
    backup = wait_for("after-doomed Failed", phase_of(env, "databackup", "after-doomed", "Failed"))
    assert backup["status"]["conditions"][-1]["reason"] == "RunAfterFailed"
    assert not backup["status"].get("jobIds")
