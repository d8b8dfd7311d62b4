"""The objects a dataset and its runtime turn into, each valid for the pinned Kubernetes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from fluidcache.common.protocol import DatasetReport, JobInfo, ReadBytes, Report
from fluidcache.controller import reconcile as rc
from tests.unit.controller.samples import dataset, runtime

ROOT = Path(__file__).resolve().parents[3]


def k8s_version() -> str:
    """``1.33`` from k8s/testenv/versions.env (K8S_VERSION=v1.33.13)."""
    for line in (ROOT / "k8s/testenv/versions.env").read_text().splitlines():
        if line.startswith("K8S_VERSION="):
            return ".".join(line.split("=", 1)[1].strip().lstrip("v").split(".")[:2])
    raise AssertionError("K8S_VERSION missing from versions.env")


def render(**rt_spec: Any) -> list[dict[str, Any]]:
    ds = dataset(
        mounts=[
            {
                "mountPoint": "s3://bucket/prefix",
                "name": "imgs",
                "options": {"endpoint": "http://s3.local"},
                "encryptOptions": [
                    {
                        "name": "access_key",
                        "valueFrom": {"secretKeyRef": {"name": "s3cred", "key": "ak"}},
                    }
                ],
            }
        ],
        tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
    )
    rt = runtime(**rt_spec)
    placement = rc.Placement(("n1", "n2"), 2)
    return [*rc.desired_objects(ds, rt, placement), rc.token_secret(rt, "t0k3n")]


def by_kind(objs: list[dict[str, Any]], kind: str, suffix: str = "") -> dict[str, Any]:
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"].endswith(suffix))


@pytest.mark.parametrize(
    "rt_spec",
    [{}, {"networkmode": "HostNetwork"}, {"master": {"endpoint": "http://10.1.1.1:7000"}}],
)
def test_every_object_validates_for_the_pinned_version(rt_spec: dict[str, Any]) -> None:
    version = k8s_version()
    for obj in render(**rt_spec):
        kubernetes_validate.validate(obj, version, strict=True)


def test_crds_validate_and_show_fluids_columns() -> None:
    crds = {}
    for f in sorted((ROOT / "k8s/crds").glob("*.yaml")):
        crd = yaml.safe_load(f.read_text())
        kubernetes_validate.validate(crd, k8s_version(), strict=True)
        crds[crd["spec"]["names"]["kind"]] = crd
    assert set(crds) == {
        "Dataset",
        "FluidCacheRuntime",
        "DataLoad",
        "DataBackup",
        "DataProcess",
        "RuntimeProfile",
    }
    assert {c["spec"]["group"] for c in crds.values()} == {"data.fluidcache.io"}
    columns = [
        c["name"] for c in crds["Dataset"]["spec"]["versions"][0]["additionalPrinterColumns"]
    ]
    assert columns == [
        "Ufs Total Size",
        "Cached",
        "Cache Capacity",
        "Cached Percentage",
        "Phase",
        "Age",
    ]
    scale = crds["FluidCacheRuntime"]["spec"]["versions"][0]["subresources"]["scale"]
    assert scale["specReplicasPath"] == ".spec.replicas"
    for kind, crd in crds.items():
        if kind != "RuntimeProfile":  # a profile is read, never reconciled: it has no status
            assert crd["spec"]["versions"][0]["subresources"]["status"] == {}


def test_workers_pinned_to_the_label_with_tier_volumes() -> None:
    sts = by_kind(render(), "StatefulSet", "-worker")
    assert sts["spec"]["replicas"] == 2
    pod = sts["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"fluid.io/s-fluidcache-default-demo": "true"}
    anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["topologyKey"] == "kubernetes.io/hostname"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["mem-0-0"]["emptyDir"] == {"sizeLimit": str(2**30), "medium": "Memory"}
    assert volumes["ssd-1-0"]["hostPath"]["path"] == "/mnt/a/default/demo"
    assert volumes["ssd-1-1"]["hostPath"]["path"] == "/mnt/b/default/demo"
    args = pod["containers"][0]["args"]
    tiers = [args[i + 1] for i, a in enumerate(args) if a == "--tier"]
    assert tiers == [
        f"MEM:/cache/mem-0-0:{2**30}",
        f"SSD:/cache/ssd-1-0,/cache/ssd-1-1:{30 * 2**30}:0.9:0.7",
    ]
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_master_gets_sources_options_and_secrets_never_in_args() -> None:
    objs = render()
    sts = by_kind(objs, "StatefulSet", "-master")
    c = sts["spec"]["template"]["spec"]["containers"][0]
    assert c["args"][:2] == ["master", "imgs=s3://bucket/prefix"]
    assert "imgs.endpoint=http://s3.local" in c["args"]
    assert "imgs.credentials_file=/etc/fluidcache/credentials/imgs" in c["args"]
    assert not [e for e in c["env"] if "valueFrom" in e]  # the secret reaches only the init
    for sts in (by_kind(objs, "StatefulSet", "-master"), by_kind(objs, "StatefulSet", "-worker")):
        pod = sts["spec"]["template"]["spec"]
        (init,) = pod["initContainers"]
        assert init["env"] == [
            {"name": "CRED_0_0", "valueFrom": {"secretKeyRef": {"name": "s3cred", "key": "ak"}}}
        ]
        script = init["command"][2]
        assert (
            "printf '%s=%s\\n' access_key \"$CRED_0_0\" >> /etc/fluidcache/credentials/imgs"
            in script
        )
        assert {"name": "credentials", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}} in (
            pod["volumes"]
        )
    assert by_kind(objs, "Service")["spec"]["ports"][0]["port"] == 7000
    for o in objs:
        if o["kind"] != "PersistentVolume":
            assert o["metadata"]["ownerReferences"][0]["controller"] is True


def test_existing_master_is_not_deployed() -> None:
    objs = render(master={"endpoint": "http://10.1.1.1:7000/"})
    assert [o["kind"] for o in objs if "master" in o["metadata"]["name"]] == []
    worker = by_kind(objs, "StatefulSet", "-worker")
    args = worker["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--master") + 1] == "http://10.1.1.1:7000"


def test_pv_and_pvc_named_after_the_dataset() -> None:
    objs = render()
    pv, pvc = by_kind(objs, "PersistentVolume"), by_kind(objs, "PersistentVolumeClaim")
    assert pv["metadata"]["name"] == "default-demo"
    assert "ownerReferences" not in pv["metadata"]
    assert pv["spec"]["claimRef"] == {"namespace": "default", "name": "demo"}
    assert pvc["metadata"]["name"] == "demo"
    assert pvc["spec"]["volumeName"] == "default-demo"
    assert pvc["spec"]["accessModes"] == ["ReadOnlyMany"]


def test_fuse_runs_only_where_labelled() -> None:
    ds = by_kind(render(), "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"fluid.io/f-default-demo": "true"}
    assert pod["containers"][0]["securityContext"] == {"privileged": True}


# ---- statuses ----------------------------------------------------------------------------------


def test_runtime_status() -> None:
    placement = rc.Placement(("n1",), 2, "1 of 2 workers placed: only 1 node(s) match")
    status = rc.runtime_status(
        runtime(), placement, {"readyReplicas": 1, "currentReplicas": 1}, {"readyReplicas": 1}, {}
    )
    assert status["workerPhase"] == "PartialReady"
    assert status["workerReason"].startswith("1 of 2")
    assert (status["desiredWorkerNumberScheduled"], status["workerNumberReady"]) == (2, 1)
    assert status["masterPhase"] == "Ready"
    assert status["selector"].endswith("data.fluidcache.io/dataset=demo")


def test_report_status_uses_fluids_keys() -> None:
    ds = DatasetReport("demo", 3 * 2**20, 3, 2**20, 2**30, 33.333, 0.5, 0.25, 0.25)
    report = Report(3 * 2**20, 3, 2**20, 2**30, 33.3, [], [ds], ReadBytes())
    assert rc.report_status(report, "demo") == {
        "ufsTotal": "3.00MiB",
        "fileNum": "3",
        "cacheStates": {
            "cached": "1.00MiB",
            "cacheCapacity": "1.00GiB",
            "cachedPercentage": "33.3%",
            "cacheHitRatio": "50.0%",
            "localHitRatio": "25.0%",
            "remoteHitRatio": "25.0%",
        },
    }


def job(phase: str, **kw: Any) -> JobInfo:
    return JobInfo(
        job_id=kw.pop("job_id", "j1"), kind="load", dataset="demo", paths=["/"], phase=phase, **kw
    )


@pytest.mark.parametrize(
    ("jobs", "phase", "done", "total"),
    [
        ([job("Pending")], "Pending", 0, 0),
        ([job("Executing", started=100.0, bytes_total=200, bytes_done=50)], "Executing", 50, 200),
        (
            [
                job(
                    "Complete",
                    started=100.0,
                    finished=110.0,
                    bytes_total=100,
                    bytes_done=100,
                    last_success=110.0,
                ),
                job("Executing", job_id="j2", started=100.0, bytes_total=100, bytes_done=10),
            ],
            "Executing",
            110,
            200,
        ),
        ([job("Complete"), job("Failed", job_id="j2", error="boom")], "Failed", 0, 0),
        # a Cron job back to Pending after a good run shows that run
        (
            [
                job(
                    "Pending",
                    schedule="* * * * *",
                    runs=1,
                    started=1.0,
                    finished=2.0,
                    last_success=2.0,
                )
            ],
            "Complete",
            0,
            0,
        ),
    ],
)
def test_job_status(jobs: list[JobInfo], phase: str, done: int, total: int) -> None:
    status = rc.job_status(jobs)
    assert status["phase"] == phase
    assert (status["progress"]["bytesDone"], status["progress"]["bytesTotal"]) == (done, total)
    assert status["jobIds"] == [j.job_id for j in jobs]


def test_job_status_duration_and_backup_location() -> None:
    status = rc.job_status(
        [
            JobInfo(
                "b1",
                "backup",
                "demo",
                ["/"],
                "Complete",
                started=100.0,
                finished=175.0,
                result="/x/b.fcbak",
            )
        ]
    )
    assert status["duration"] == "1m15s"
    assert status["backupLocation"] == {"path": "/x/b.fcbak"}


@pytest.mark.parametrize(
    ("targets", "groups"),
    [
        ([{"path": "/a"}], [(1, ["/a"])]),
        (
            [{"path": "/a", "replicas": 2}, {"path": "/b"}, {"path": "/c", "replicas": 2}],
            [(2, ["/a", "/c"]), (1, ["/b"])],
        ),
        ([{"path": "/a", "replicas": "all"}], [("all", ["/a"])]),
    ],
)
def test_load_targets_group_by_replicas(targets: list[dict[str, Any]], groups: list[Any]) -> None:
    from fluidcache.controller.model import DataLoad

    load = DataLoad.parse(
        {"metadata": {"name": "l"}, "spec": {"dataset": {"name": "demo"}, "target": targets}}
    )
    assert rc.load_targets(load) == groups


def test_deploy_manifests_validate() -> None:
    kinds = []
    for f in sorted((ROOT / "k8s/deploy").glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            kubernetes_validate.validate(doc, k8s_version(), strict=True)
            kinds.append(doc["kind"])
    assert {"ClusterRole", "ClusterRoleBinding", "ServiceAccount", "Deployment"} <= set(kinds)
