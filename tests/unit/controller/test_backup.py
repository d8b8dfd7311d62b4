"""A DataBackup's backupPath (Fluid's local:///DIR and pvc://CLAIM/SUBPATH): where the master
writes, what its StatefulSet mounts for it, what the status says; and the master's node pin."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from fluidcache.controller import reconcile as rc
from fluidcache.controller.model import DataBackup
from tests.unit.controller.samples import dataset, node, runtime
from tests.unit.controller.test_render import k8s_version

HOST_MASTER = {"master": {"endpoint": "http://10.1.1.1:7000"}}


def backup(path: str = "", name: str = "snap", dataset: str = "demo") -> DataBackup:
    spec: dict[str, Any] = {"dataset": dataset}
    if path:
        spec["backupPath"] = path
    return DataBackup.parse({"metadata": {"name": name, "namespace": "default"}, "spec": spec})


@pytest.mark.parametrize(
    ("path", "rt_spec", "directory", "claim"),
    [
        ("", {}, "", ""),
        ("local:///var/backups/fc", {}, "/var/backups/fc", ""),
        ("local:///var/backups/fc/", HOST_MASTER, "/var/backups/fc", ""),
        ("pvc://backups/team/a", {}, f"{rc.BACKUP_PVC_ROOT}/backups/team/a", "backups"),
        ("pvc://backups", {}, f"{rc.BACKUP_PVC_ROOT}/backups", "backups"),
    ],
)
def test_backup_path_maps_to_a_directory_on_the_master(
    path: str, rt_spec: dict[str, Any], directory: str, claim: str
) -> None:
    target = rc.backup_target(backup(path), runtime(**rt_spec))
    assert (target.directory, target.claim) == (directory, claim)
    if claim:
        assert target.root == f"{rc.BACKUP_PVC_ROOT}/{claim}"
        assert target.directory.startswith(target.root)


@pytest.mark.parametrize(
    ("path", "rt_spec", "why"),
    [
        ("local:///var/../etc", {}, "without '..'"),
        ("local:///", {}, "root directory"),
        ("pvc:///sub", {}, "names no claim"),
        ("pvc://backups/x", HOST_MASTER, "needs a master run by the controller"),
        ("nfs://server/export", {}, "neither local:///dir nor pvc://"),
    ],
)
def test_bad_backup_paths_are_refused_naming_the_field(
    path: str, rt_spec: dict[str, Any], why: str
) -> None:
    with pytest.raises(ValueError, match=f"^spec.backupPath: .*{why}"):
        rc.backup_target(backup(path), runtime(**rt_spec))


def test_the_master_mounts_what_its_backups_need_and_validates() -> None:
    backups = [
        backup("pvc://backups/team/a", "b1"),
        backup("pvc://backups/team/b", "b2"),  # the same claim: mounted once
        backup("local:///srv/fc-backups", "b3"),
        backup("", "b4"),  # the master's own backup dir: nothing to mount
        backup("local:///a/../b", "b5"),  # refused: the DataBackup fails, the master is unchanged
    ]
    ds, rt = dataset(), runtime()
    sts = rc.master_objects(ds, rt, backups)[1]
    pod = sts["spec"]["template"]["spec"]
    c = pod["containers"][0]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    claim_root = f"{rc.BACKUP_PVC_ROOT}/backups"
    assert volumes["backup-0"]["hostPath"] == {
        "path": "/srv/fc-backups",
        "type": "DirectoryOrCreate",
    }
    assert mounts["backup-0"] == "/srv/fc-backups"
    assert volumes["backup-1"]["persistentVolumeClaim"] == {"claimName": "backups"}
    assert mounts["backup-1"] == claim_root
    assert "backup-2" not in volumes
    roots = [c["args"][i + 1] for i, a in enumerate(c["args"]) if a == "--backup-root"]
    assert roots == ["/srv/fc-backups", claim_root]
    # the directory a pvc:// backup is written to lies under the claim's mount
    assert rc.backup_target(backups[0], rt).directory == f"{claim_root}/team/a"
    assert rc.rolled_out(None, ["--backup-root", claim_root]) is False
    kubernetes_validate.validate(sts, k8s_version(), strict=True)
    # without backups, the master has no backup volume and no --backup-root
    bare = rc.master_objects(ds, rt)[1]["spec"]["template"]["spec"]
    assert not any(v["name"].startswith("backup-") for v in bare["volumes"])
    assert "--backup-root" not in bare["containers"][0]["args"]


def _sts(args: list[str], **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"generation": 3},
        "spec": {"template": {"spec": {"containers": [{"args": args}]}}},
        "status": status,
    }


@pytest.mark.parametrize(
    ("status", "args", "done"),
    [
        (
            {
                "observedGeneration": 3,
                "readyReplicas": 1,
                "updatedReplicas": 1,
                "currentRevision": "r2",
                "updateRevision": "r2",
            },
            ["master", "--backup-root", "/b"],
            True,
        ),
        (  # the old pod still runs
            {
                "observedGeneration": 3,
                "readyReplicas": 1,
                "updatedReplicas": 0,
                "currentRevision": "r1",
                "updateRevision": "r2",
            },
            ["master", "--backup-root", "/b"],
            False,
        ),
        (  # not yet seen by the StatefulSet controller
            {"observedGeneration": 2, "readyReplicas": 1, "updatedReplicas": 1},
            ["master", "--backup-root", "/b"],
            False,
        ),
        (  # another root
            {"observedGeneration": 3, "readyReplicas": 1, "updatedReplicas": 1},
            ["master", "--backup-root", "/c"],
            False,
        ),
    ],
)
def test_a_backup_waits_for_the_master_to_run_with_its_root(
    status: dict[str, Any], args: list[str], done: bool
) -> None:
    assert rc.rolled_out(_sts(args, **status), ["--backup-root", "/b"]) is done


def test_backup_location_in_fluids_shapes() -> None:
    rt = runtime()
    local = backup("local:///srv/b")
    where = rc.backup_location(rc.backup_target(local, rt), local, "/srv/b/x.fcbak", "node-3")
    assert where == {
        "backupLocation": {"path": "/srv/b/x.fcbak", "nodeName": "node-3"},
        "infos": {"BackupLocationPath": "local:///srv/b", "BackupLocationNodeName": "node-3"},
    }
    claim = backup("pvc://backups/a")
    file = f"{rc.BACKUP_PVC_ROOT}/backups/a/x.fcbak"
    where = rc.backup_location(rc.backup_target(claim, rt), claim, file, "node-3")
    assert where["infos"] == {
        "BackupLocationPath": "pvc://backups/a",
        "BackupLocationNodeName": "NA",
    }
    default = backup()
    where = rc.backup_location(rc.backup_target(default, rt), default, "/m/backups/y", "n1")
    assert where["infos"]["BackupLocationPath"] == "local:///m/backups"


def test_the_master_is_pinned_to_one_labelled_node() -> None:
    ds, rt = dataset(), runtime()
    label = rc.master_label(ds.meta)
    assert label == "fluid.io/s-fluidcache-master-default-demo"
    pod = rc.master_objects(ds, rt)[1]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {label: "true"}
    nodes = [node("a"), node("b"), node("c", taints=(("gpu", "NoSchedule"),))]
    # first time: the first worker node; later, the labelled node even when workers move
    assert rc.master_node(ds, rt, nodes, rc.Placement(("b", "a"), 2)) == "b"
    nodes[2] = node("c", **{label: "true"})
    assert rc.master_node(ds, rt, nodes, rc.Placement(("b", "a"), 2)) == "c"
    # no worker placed: the first node the runtime and the dataset allow
    tainted = [node("a", taints=(("gpu", "NoSchedule"),)), node("b")]
    assert rc.master_node(ds, rt, tainted, rc.Placement((), 2)) == "b"
    picky = runtime(master={"nodeSelector": {"role": "meta"}})
    assert rc.master_node(ds, picky, tainted, rc.Placement((), 2)) == ""
    pod = rc.master_objects(ds, picky)[1]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {label: "true", "role": "meta"}
