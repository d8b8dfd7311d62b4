"""The controller against the real control plane: CRDs, placement on kwok nodes, volumes,
statuses from a real fluidcache master on the host, jobs, deletion.

Not collected by the default `pytest` run (testpaths = tests). Run it explicitly, after
`bash k8s/testenv/build.sh`:

    .venv/bin/python -m pytest -q k8s/testenv/tests/test_controller.py

It fails (never skips) when the binaries are missing. The tests run in order on one control
plane with five kwok nodes: kwok-node-1 carries a NoSchedule taint, kwok-node-2 a `disk=ssd`
label, zones alternate. The master (and one worker, for capacity and loads) runs on the host
through tests/cluster.py; the runtime names it with `spec.master.endpoint`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import NS, Env, dataset, running_env, runtime, wait_for

LABEL = "fluid.io/s-default-demo"
FILES = {f"dir/f{i}.bin": os.urandom(300_000 + i) for i in range(6)}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with running_env(tmp_path_factory.mktemp("ctl"), FILES) as e:
        yield e


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({**dataset("bad"), "spec": {"mounts": [{"name": "x"}]}}, "spec.mounts[0].mountPoint"),
        (
            runtime(
                "bad",
                "http://127.0.0.1:1",
                tieredstore={
                    "levels": [{"mediumtype": "MEM", "quota": "1Gi", "high": "0.5", "low": "0.9"}]
                },
            ),
            "spec.tieredstore.levels[0].low",
        ),
        (
            runtime(
                "bad",
                "http://127.0.0.1:1",
                tieredstore={"levels": [{"mediumtype": "MEM", "quota": "lots"}]},
            ),
            "spec.tieredstore.levels[0].quota",
        ),
        (
            {
                "apiVersion": "data.fluidcache.io/v1alpha1",
                "kind": "DataLoad",
                "metadata": {"name": "bad"},
                "spec": {"dataset": {"name": "demo"}, "policy": "Cron"},
            },
            "spec.schedule",
        ),
        (
            {
                "apiVersion": "data.fluidcache.io/v1alpha1",
                "kind": "DataBackup",
                "metadata": {"name": "bad"},
                "spec": {"dataset": "demo", "backupPath": "local:///srv/../etc"},
            },
            "spec.backupPath",
        ),
        (
            {
                "apiVersion": "data.fluidcache.io/v1alpha1",
                "kind": "DataBackup",
                "metadata": {"name": "bad"},
                "spec": {"dataset": "demo", "backupPath": "local://relative/dir"},
            },
            "spec.backupPath",
        ),
    ],
    ids=[
        "no-mountPoint",
        "low-above-high",
        "bad-quota",
        "cron-without-schedule",
        "backup-dotdot",
        "backup-relative",
    ],
)
def test_invalid_resources_are_rejected_naming_the_field(
    env: Env, obj: dict[str, Any], field: str
) -> None:
    result = env.apply(obj)
    assert result.returncode != 0, result.stdout
    assert field in result.stderr, result.stderr


@pytest.mark.timeout(240)
def test_dataset_with_two_replicas_is_placed_bound_and_reports_the_cache(env: Env) -> None:
    assert env.apply(dataset("demo")).returncode == 0
    assert env.apply(runtime("demo", env.fc.master_url)).returncode == 0
    nodes = wait_for("2 labelled nodes", lambda: len(n := env.labelled()) == 2 and n)
    assert "kwok-node-1" not in nodes  # tainted, not tolerated
    node = env.get("node", sorted(nodes)[0])
    labels = node["metadata"]["labels"]
    assert labels["fluid.io/s-fluidcache-default-demo"] == "true"
    assert labels["fluid.io/s-h-fluidcache-m-default-demo"] == "1.00GiB"
    assert labels["fluid.io/dataset-num"] == "1"
    assert labels["fluid_exclusive"] == "default_demo"

    pods = wait_for(
        "2 running workers", lambda: (w := env.running_workers("demo")) and len(w) == 2 and w
    )
    assert set(pods.values()) == nodes
    events = env.get("events", "-n", NS, "--field-selector", "reason=Scheduled")["items"]
    scheduled = {
        e["involvedObject"]["name"]
        for e in events
        if "default-scheduler"
        in (e.get("reportingComponent"), e.get("source", {}).get("component"))
    }
    assert set(pods) <= scheduled

    wait_for(
        "PVC Bound", lambda: env.get("pvc", "demo", "-n", NS)["status"].get("phase") == "Bound"
    )
    assert env.get("pv", "default-demo")["spec"]["claimRef"]["name"] == "demo"

    ds = wait_for(
        "Dataset Bound",
        lambda: (
            (d := env.get("dataset", "demo", "-n", NS)).get("status", {}).get("phase") == "Bound"
            and d
        ),
    )
    states = ds["status"]["cacheStates"]
    assert (
        states["cacheCapacity"] == "64.00MiB"
    )  # the host worker's MEM tier, from the master's report
    assert set(states) >= {
        "cached",
        "cacheCapacity",
        "cachedPercentage",
        "cacheHitRatio",
        "localHitRatio",
        "remoteHitRatio",
    }
    table = env.kubectl("get", "dataset", "demo", "-n", NS)
    assert table.split("\n")[0].split() == [
        "NAME",
        "UFS",
        "TOTAL",
        "SIZE",
        "CACHED",
        "CACHE",
        "CAPACITY",
        "CACHED",
        "PERCENTAGE",
        "PHASE",
        "AGE",
    ]
    # Bound needs one ready worker (Fluid's meaning); the runtime is Ready once both are.
    rt = wait_for(
        "runtime's workers Ready",
        lambda: (
            (r := env.get("fluidcacheruntime", "demo", "-n", NS))["status"]["workerPhase"]
            == "Ready"
            and r
        ),
    )
    assert rt["status"]["workerNumberReady"] == 2
    assert rt["metadata"]["ownerReferences"][0]["kind"] == "Dataset"


@pytest.mark.timeout(180)
def test_scale_to_three_labels_one_more_node(env: Env) -> None:
    before = env.labelled()
    env.kubectl("scale", "fluidcacheruntime", "demo", "-n", NS, "--replicas=3")
    after = wait_for("3 labelled nodes", lambda: len(n := env.labelled()) == 3 and n)
    assert before < after
    pods = wait_for(
        "3 running workers", lambda: (w := env.running_workers("demo")) and len(w) == 3 and w
    )
    assert set(pods.values()) == after


@pytest.mark.timeout(180)
def test_exclusive_datasets_never_share_and_too_few_nodes_says_why(env: Env) -> None:
    assert env.apply(dataset("other")).returncode == 0
    assert env.apply(runtime("other", env.fc.master_url, replicas=2)).returncode == 0
    rt = wait_for(
        "other's placement reason",
        lambda: (
            (r := env.get("fluidcacheruntime", "other", "-n", NS))
            .get("status", {})
            .get("workerReason")
            and r
        ),
    )
    other = env.labelled("fluid.io/s-default-other")
    assert len(other) == 1  # 5 nodes: 1 tainted, 3 hold demo exclusively
    assert not other & env.labelled()
    reason = rt["status"]["workerReason"]
    assert reason.startswith("1 of 2 workers placed"), reason
    assert "3 excluded by exclusive" in reason and "1 excluded by taints" in reason, reason
    ds = env.get("dataset", "other", "-n", NS)
    cond = {c["type"]: c for c in ds["status"]["conditions"]}
    assert cond["RuntimeScheduled"]["reason"] == "NotEnoughNodes"
    env.kubectl("delete", "dataset", "other", "-n", NS, "--wait=true", "--timeout=60s")
    wait_for("other unlabelled", lambda: not env.labelled("fluid.io/s-default-other"))


def reaches(env: Env, kind: str, name: str, *phases: str) -> Any:
    """The resource once its status.phase is one of ``phases``."""
    return wait_for(
        f"{kind} {name} {' or '.join(phases)}",
        lambda: (d := env.get(kind, name, "-n", NS)).get("status", {}).get("phase") in phases and d,
    )


def _op(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "data.fluidcache.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


@pytest.mark.timeout(120)
def test_dataload_completes_with_byte_progress(env: Env) -> None:
    spec = {
        "dataset": {"name": "demo"},
        "loadMetadata": True,
        "target": [{"path": "/dir", "replicas": 1}],
    }
    assert env.apply(_op("DataLoad", "warm", spec)).returncode == 0
    load = reaches(env, "dataload", "warm", "Complete")
    progress = load["status"]["progress"]
    total = sum(len(b) for b in FILES.values())
    assert progress["bytesTotal"] == progress["bytesDone"] == total
    assert progress["filesDone"] == len(FILES)
    assert load["status"]["duration"]
    wait_for(  # the dataset's status follows the master's report
        "Dataset fileNum and cached",
        lambda: (
            (st := env.get("dataset", "demo", "-n", NS)["status"])["fileNum"] == str(len(FILES))
            and st["cacheStates"]["cachedPercentage"] == "100.0%"
        ),
    )


@pytest.mark.timeout(120)
def test_a_finished_dataload_goes_after_its_ttl(env: Env) -> None:
    """Fluid's ttlSecondsAfterFinished: Complete, then deleted by the controller."""
    spec = {"dataset": {"name": "demo"}, "target": [{"path": "/dir"}], "ttlSecondsAfterFinished": 4}
    assert env.apply(_op("DataLoad", "short-lived", spec)).returncode == 0
    load = reaches(env, "dataload", "short-lived", "Complete")
    assert load["status"]["progress"]["bytesDone"] > 0
    wait_for(
        "short-lived deleted",
        lambda: "short-lived" not in env.kubectl("get", "dataloads", "-n", NS, "-o", "name"),
        timeout=60,
    )


@pytest.mark.timeout(150)
def test_cron_dataload_fires(env: Env) -> None:
    spec = {
        "dataset": {"name": "demo"},
        "policy": "Cron",
        "schedule": "* * * * *",
        "target": [{"path": "/"}],
    }
    assert env.apply(_op("DataLoad", "nightly", spec)).returncode == 0
    load = wait_for(
        "a Cron run",
        lambda: (
            (d := env.get("dataload", "nightly", "-n", NS))
            .get("status", {})
            .get("lastSuccessfulTime")
            and d
        ),
        timeout=130,
    )
    assert load["status"]["progress"]["runs"] >= 1


@pytest.mark.timeout(120)
def test_databackup_writes_its_file(env: Env) -> None:
    assert env.apply(_op("DataBackup", "snap", {"dataset": "demo"})).returncode == 0
    backup = reaches(env, "databackup", "snap", "Complete")
    path = Path(backup["status"]["backupLocation"]["path"])
    assert path.is_file() and path.stat().st_size > 0


@pytest.mark.timeout(120)
def test_databackup_writes_into_its_backup_path(env: Env) -> None:
    """Fluid's local:///DIR: the master (on the host here) writes the file there, and the
    status says where (Fluid's backupLocation and Fluid 1.0's infos)."""
    target = env.data.parent / "exports" / "nightly"
    spec = {"dataset": "demo", "backupPath": f"local://{target}"}
    assert env.apply(_op("DataBackup", "to-dir", spec)).returncode == 0
    backup = reaches(env, "databackup", "to-dir", "Complete", "Failed")
    status = backup["status"]
    assert status["phase"] == "Complete", status
    path = Path(status["backupLocation"]["path"])
    assert path.parent == target
    assert path.is_file() and path.stat().st_size > 0
    assert status["backupLocation"]["nodeName"] == "127.0.0.1"  # the host master's
    assert status["infos"] == {
        "BackupLocationPath": f"local://{target}",
        "BackupLocationNodeName": "127.0.0.1",
    }
    columns = env.kubectl("get", "databackup", "to-dir", "-n", NS)
    assert f"local://{target}" in columns


@pytest.mark.timeout(120)
def test_a_backup_path_outside_the_masters_roots_fails_naming_the_field(env: Env) -> None:
    outside = env.data.parent / "not-exported"
    spec = {"dataset": "demo", "backupPath": f"local://{outside}"}
    assert env.apply(_op("DataBackup", "outside", spec)).returncode == 0
    backup = reaches(env, "databackup", "outside", "Failed")
    error = backup["status"]["error"]
    assert "spec.backupPath: " in error and "outside the master's backup directories" in error
    assert not outside.exists()


@pytest.mark.timeout(180)
def test_a_deployed_master_is_pinned_and_mounts_its_backup_claim(env: Env) -> None:
    """A runtime without an endpoint: its master StatefulSet runs on the one node labelled for
    it (kube-scheduler places the pod there); a DataBackup to pvc://CLAIM/SUB adds the claim to
    the master's pod (accepted by the API server) with the path the backup is written to."""
    label = "fluid.io/s-fluidcache-master-default-pinned"
    rt = runtime("pinned", "", replicas=1)
    del rt["spec"]["master"]
    assert env.apply(dataset("pinned", placement="Shared")).returncode == 0
    assert env.apply(rt).returncode == 0
    node = wait_for("the master's node", lambda: len(n := env.labelled(label)) == 1 and n).pop()
    pod = wait_for(
        "master pod scheduled",
        lambda: env.get("pod", "pinned-master-0", "-n", NS)["spec"].get("nodeName"),
    )
    assert pod == node
    spec = {"dataset": "pinned", "backupPath": "pvc://backups/team/a"}
    assert env.apply(_op("DataBackup", "to-claim", spec)).returncode == 0

    def claim_mounted() -> Any:
        sts = env.get("statefulset", "pinned-master", "-n", NS)
        pod_spec = sts["spec"]["template"]["spec"]
        volumes = [v for v in pod_spec["volumes"] if "persistentVolumeClaim" in v]
        return volumes and (volumes[0], pod_spec)

    volume, pod_spec = wait_for("the claim in the master's pod", claim_mounted)
    assert volume["persistentVolumeClaim"] == {"claimName": "backups"}
    c = pod_spec["containers"][0]
    mount = next(m for m in c["volumeMounts"] if m["name"] == volume["name"])
    root = c["args"][c["args"].index("--backup-root") + 1]
    assert mount["mountPath"] == root == "/var/lib/fluidcache/backup-pvc/backups"
    assert pod_spec["nodeSelector"] == {label: "true"}
    env.kubectl("delete", "databackup", "to-claim", "-n", NS, "--wait=true", "--timeout=60s")
    env.kubectl("delete", "dataset", "pinned", "-n", NS, "--wait=true", "--timeout=60s")
    wait_for("the master's node unlabelled", lambda: not env.labelled(label))


@pytest.mark.timeout(240)
def test_a_mounted_dataset_stays_then_deletion_leaves_nothing(env: Env) -> None:
    app = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "app", "namespace": NS},
        "spec": {
            "containers": [{"name": "app", "image": "fake.invalid/app:1"}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "demo"}}],
        },
    }
    assert env.apply(app).returncode == 0
    wait_for(
        "app Running", lambda: env.get("pod", "app", "-n", NS)["status"].get("phase") == "Running"
    )
    env.kubectl("delete", "dataset", "demo", "-n", NS, "--wait=false")
    ds = wait_for(
        "InUse condition",
        lambda: (
            (d := env.get("dataset", "demo", "-n", NS))
            and any(c.get("reason") == "InUse" for c in d["status"]["conditions"])
            and d
        ),
    )
    assert ds["metadata"]["deletionTimestamp"]
    time.sleep(3)
    assert env.get("dataset", "demo", "-n", NS)["metadata"]["name"] == "demo"  # still there

    env.kubectl(
        "delete",
        "pod",
        "app",
        "-n",
        NS,
        "--wait=true",
        "--timeout=60s",
        "--grace-period=0",
        "--force",
    )
    wait_for(
        "Dataset gone", lambda: "demo" not in env.kubectl("get", "datasets", "-n", NS, "-o", "name")
    )
    wait_for(
        "nodes unlabelled",
        lambda: not env.labelled() and not env.labelled("fluid.io/s-fluidcache-default-demo"),
    )
    for n in env.get("nodes")["items"]:
        assert not any(
            k.startswith("fluid.io/") or k == "fluid_exclusive" for k in n["metadata"]["labels"]
        ), n["metadata"]["labels"]
    selector = "app.kubernetes.io/name=fluidcache,data.fluidcache.io/dataset=demo"
    wait_for(
        "no objects left",
        lambda: (
            not env.get(
                "statefulsets,daemonsets,services,pods,pvc,secrets", "-n", NS, "-l", selector
            )["items"]
        ),
    )
    assert "default-demo" not in env.kubectl("get", "pv", "-o", "name")
    assert "demo" not in env.kubectl("get", "fluidcacheruntimes", "-n", NS, "-o", "name")
