"""Reconcile as pure functions: custom resources and the node list in, desired objects out.

Nothing here talks to the API server or the master; :mod:`fluidcache.controller.handlers` reads
the inputs, calls these functions and applies what they return. Node labels follow Fluid's
formats, so tools written for Fluid (its webhook's affinity, `kubectl get nodes -l`) still work:

    fluid.io/s-<ns>-<name>=true                 the node caches the dataset
    fluid.io/s-fluidcache-<ns>-<name>=true      ... with the fluidcache runtime
    fluid.io/s-h-fluidcache-{m,d,t}-<ns>-<name> capacity on it: memory, disk, total (e.g. 1.00GiB)
    fluid.io/dataset-num=<n>                    how many datasets the node caches
    fluid_exclusive=<ns>_<name>                 the node is held by one Exclusive dataset

A label name of 63 characters or more uses the Dataset's UID for ``<ns>-<name>``, as Fluid does.
"""

from __future__ import annotations

import dataclasses
import datetime
import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fluidcache.common.config import human_bytes
from fluidcache.common.protocol import COMPLETE, EXECUTING, FAILED, PENDING, JobInfo, Report
from fluidcache.controller.model import (
    API_VERSION,
    EXCLUSIVE,
    RUNTIME_TYPE,
    DataBackup,
    DataLoad,
    Dataset,
    Meta,
    Node,
    Runtime,
)

PREFIX = "fluid.io/"
DATASET_NUM = "fluid.io/dataset-num"
EXCLUSIVE_LABEL = "fluid_exclusive"
MAX_NAME = 63  # a label name (after the prefix) and a label value are at most 63 characters
TOKEN_KEY = "token"
CSI_DRIVER = "fuse.csi.fluidcache.io"
STORAGE_CLASS = "fluidcache"
PV_CAPACITY = "100Pi"  # Fluid's: the PV only names the dataset; its size is the source's
FUSE_ROOT = "/runtime-mnt/fluidcache"
APP_LABEL = "app.kubernetes.io/name"
ROLE_LABEL = "app.kubernetes.io/component"
DATASET_LABEL = "data.fluidcache.io/dataset"


# ---- names and labels ---------------------------------------------------------------------------


def _label_name(prefix: str, meta: Meta) -> str:
    """``prefix + <ns>-<name>``, or ``prefix + <uid>`` when that is 63 characters or more."""
    name = f"{prefix}{meta.namespace}-{meta.name}"
    return name if len(name) < MAX_NAME else f"{prefix}{meta.uid}"


def dataset_label(meta: Meta) -> str:
    """``fluid.io/s-<ns>-<name>``: the node caches this dataset."""
    return PREFIX + _label_name("s-", meta)


def runtime_label(meta: Meta) -> str:
    """``fluid.io/s-fluidcache-<ns>-<name>``: what worker pods select."""
    return PREFIX + _label_name(f"s-{RUNTIME_TYPE}-", meta)


def capacity_label(meta: Meta, kind: str) -> str:
    """``fluid.io/s-h-fluidcache-{m,d,t}-<ns>-<name>``."""
    return PREFIX + _label_name(f"s-h-{RUNTIME_TYPE}-{kind}-", meta)


def master_label(meta: Meta) -> str:
    """``fluid.io/s-fluidcache-master-<ns>-<name>``: the one node the master runs on, so a
    restarted master finds its LMDB on that node's hostPath."""
    return PREFIX + _label_name(f"s-{RUNTIME_TYPE}-master-", meta)


def fuse_label(meta: Meta) -> str:
    """``fluid.io/f-<ns>-<name>``: the FUSE DaemonSet runs where this is set (Fluid's)."""
    return PREFIX + _label_name("f-", meta)


def exclusive_value(meta: Meta) -> str:
    value = f"{meta.namespace}_{meta.name}"
    return value if len(value) < MAX_NAME else meta.uid


def cache_labels(dataset: Dataset, runtime: Runtime) -> dict[str, str]:
    """The labels a node gets while it caches ``dataset`` (``dataset-num`` aside)."""
    mem = runtime.capacity("MEM")
    disk = runtime.capacity("SSD") + runtime.capacity("HDD")
    meta = dataset.meta
    labels = {
        dataset_label(meta): "true",
        runtime_label(meta): "true",
        capacity_label(meta, "m"): human_bytes(mem),
        capacity_label(meta, "d"): human_bytes(disk),
        capacity_label(meta, "t"): human_bytes(mem + disk),
    }
    if dataset.placement == EXCLUSIVE:
        labels[EXCLUSIVE_LABEL] = exclusive_value(meta)
    return labels


def _dataset_num(labels: Mapping[str, str]) -> int:
    try:
        return int(labels.get(DATASET_NUM, "0"))
    except ValueError:
        return 0


def label_patch(node: Node, dataset: Dataset, runtime: Runtime, cache: bool) -> dict[str, Any]:
    """The merge patch of ``node``'s labels that makes it cache ``dataset`` or not; ``{}`` when
    it already is as asked. ``dataset-num`` moves by one, as Fluid counts."""
    meta = dataset.meta
    has = node.labels.get(dataset_label(meta)) == "true"
    wanted = cache_labels(dataset, runtime)
    if cache:
        changes: dict[str, str | None] = {
            k: v for k, v in wanted.items() if node.labels.get(k) != v
        }
        if not has:
            changes[DATASET_NUM] = str(_dataset_num(node.labels) + 1)
    else:
        changes = {k: None for k in wanted if k in node.labels}
        if node.labels.get(EXCLUSIVE_LABEL) == exclusive_value(meta):
            changes[EXCLUSIVE_LABEL] = None
        if has:
            left = _dataset_num(node.labels) - 1
            changes[DATASET_NUM] = str(left) if left > 0 else None
    if not changes:
        return {}
    # resourceVersion makes the patch fail on a concurrent change, so dataset-num never drifts
    return {"metadata": {"labels": changes, "resourceVersion": node.resource_version}}


# ---- placement ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Placement:
    """The nodes chosen for the workers, in order, and why fewer than wanted if so."""

    nodes: tuple[str, ...]
    wanted: int
    reason: str = ""

    @property
    def complete(self) -> bool:
        return len(self.nodes) >= self.wanted


def why_not(node: Node, dataset: Dataset, runtime: Runtime) -> str:
    """Why ``node`` cannot cache ``dataset`` (one word), or ``""`` when it can."""
    if node.unschedulable:
        return "unschedulable"
    selector = {**runtime.node_selector, **runtime.worker.node_selector}
    if any(node.labels.get(k) != v for k, v in selector.items()):
        return "nodeSelector"
    if dataset.node_terms and not any(
        all(r.matches(node.labels) for r in term) for term in dataset.node_terms
    ):
        return "nodeAffinity"
    for taint in node.taints:
        if taint.effect in ("NoSchedule", "NoExecute") and not any(
            t.tolerates(taint) for t in dataset.tolerations
        ):
            return "taints"
    mine = node.labels.get(dataset_label(dataset.meta)) == "true"
    if mine:
        return ""
    holder = node.labels.get(EXCLUSIVE_LABEL)
    if holder and holder != exclusive_value(dataset.meta):
        return "exclusive"  # held by another Exclusive dataset
    if dataset.placement == EXCLUSIVE and _dataset_num(node.labels) > 0:
        return "exclusive"  # an Exclusive dataset wants a node of its own
    return ""


def worker_ordinals(dataset: Dataset, pods: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Node name -> ordinal of the dataset's worker pod running there (StatefulSet pods are
    named ``<name>-worker-<ordinal>``)."""
    prefix = f"{dataset.meta.name}-worker-"
    out: dict[str, int] = {}
    for pod in pods:
        name, node = pod["metadata"]["name"], (pod.get("spec") or {}).get("nodeName")
        if node and name.startswith(prefix) and name[len(prefix) :].isdigit():
            out[node] = int(name[len(prefix) :])
    return out


def place(
    dataset: Dataset,
    runtime: Runtime,
    nodes: Iterable[Node],
    ordinals: Mapping[str, int] | None = None,
) -> Placement:
    """Choose ``runtime.replicas`` nodes: those already caching the dataset first (a scale-up
    never moves workers), then the others by name. Among caching nodes, those whose worker pod
    has the lowest ordinal (``ordinals``: node -> ordinal) come first, so a scale-down unlabels
    the node of the pod the StatefulSet removes. Deterministic for the same inputs."""
    rank = ordinals or {}
    wanted = runtime.replicas
    label = dataset_label(dataset.meta)
    ok: list[Node] = []
    excluded: dict[str, int] = {}
    for node in nodes:
        reason = why_not(node, dataset, runtime)
        if reason:
            excluded[reason] = excluded.get(reason, 0) + 1
        else:
            ok.append(node)
    ok.sort(key=lambda n: (n.labels.get(label) != "true", rank.get(n.name, 1 << 30), n.name))
    chosen = tuple(n.name for n in ok[:wanted])
    reason = ""
    if len(chosen) < wanted:
        why = ", ".join(f"{n} excluded by {r}" for r, n in sorted(excluded.items()))
        reason = f"{len(chosen)} of {wanted} workers placed: only {len(ok)} node(s) match" + (
            f" ({why})" if why else ""
        )
    return Placement(chosen, wanted, reason)


def master_node(
    dataset: Dataset, runtime: Runtime, nodes: Sequence[Node], placement: Placement
) -> str:
    """The node for the master: the one labelled for it already while it exists (its metadata
    is there, so it never moves), else the first worker node, else the first node by name that
    the runtime's selectors and the dataset's affinity and tolerations allow; ``""`` if none."""
    label = master_label(dataset.meta)
    for node in nodes:
        if node.labels.get(label) == "true":
            return node.name
    if placement.nodes:
        return placement.nodes[0]
    selector = runtime.master.node_selector
    for node in sorted(nodes, key=lambda n: n.name):
        if why_not(node, dataset, runtime) in ("", "exclusive") and all(
            node.labels.get(k) == v for k, v in selector.items()
        ):
            return node.name
    return ""


# ---- DataBackup's backupPath --------------------------------------------------------------------

BACKUP_PVC_ROOT = "/var/lib/fluidcache/backup-pvc"


@dataclasses.dataclass(frozen=True, slots=True)
class BackupTarget:
    """Where the master writes a DataBackup: ``directory`` as the master sees it; ``claim`` is
    the PVC mounted for it (pvc://), ``""`` for a directory on the master's node (local://)."""

    directory: str = ""
    claim: str = ""

    @property
    def root(self) -> str:
        """The directory the master is allowed to write under (its ``--backup-root``)."""
        return f"{BACKUP_PVC_ROOT}/{self.claim}" if self.claim else self.directory


def backup_target(backup: DataBackup, runtime: Runtime) -> BackupTarget:
    """Fluid's backupPath, ``local:///dir`` (a directory on the master's node) or
    ``pvc://CLAIM/subpath`` (in that claim, which the master pod mounts); ``BackupTarget()``
    for none (the master's backup dir). ValueError names ``spec.backupPath``."""
    uri = backup.backup_path
    if not uri:
        return BackupTarget()
    if uri.startswith("local://"):
        directory = uri[len("local://") :]
        claim = ""
    elif uri.startswith("pvc://"):
        claim, _, sub = uri[len("pvc://") :].partition("/")
        if not claim:
            raise ValueError(f"spec.backupPath: {uri!r} names no claim (pvc://CLAIM/subpath)")
        if runtime.master.endpoint:
            raise ValueError(
                f"spec.backupPath: {uri!r} needs a master run by the controller: the runtime's"
                f" master is {runtime.master.endpoint}, which cannot mount a claim"
            )
        directory = f"{BACKUP_PVC_ROOT}/{claim}/{sub}"
    else:
        raise ValueError(f"spec.backupPath: {uri!r} is neither local:///dir nor pvc://CLAIM/path")
    parts = [p for p in directory.split("/") if p]
    if not directory.startswith("/") or ".." in parts or "." in parts:
        raise ValueError(f"spec.backupPath: {uri!r} must be an absolute path without '..'")
    if not parts:
        raise ValueError(f"spec.backupPath: {uri!r} names the root directory")
    return BackupTarget("/" + "/".join(parts), claim)


def backup_location(
    target: BackupTarget, backup: DataBackup, result: str, node: str
) -> dict[str, Any]:
    """status.backupLocation (the file written, on ``node``) and Fluid 1.0's ``infos``
    (``BackupLocationPath``: the backupPath asked for; ``BackupLocationNodeName``: ``NA`` for a
    claim, as Fluid writes it)."""
    where = "NA" if target.claim else node
    path = backup.backup_path or f"local://{result.rsplit('/', 1)[0]}"
    return {
        "backupLocation": {"path": result, "nodeName": where},
        "infos": {"BackupLocationPath": path, "BackupLocationNodeName": where},
    }


def rolled_out(sts: Mapping[str, Any] | None, args: Sequence[str]) -> bool:
    """Whether the master StatefulSet's pod template passes ``args`` (consecutive) and its
    pod runs that template, ready."""
    if not sts:
        return False
    spec, status = sts.get("spec") or {}, sts.get("status") or {}
    containers = (((spec.get("template") or {}).get("spec") or {}).get("containers")) or [{}]
    have = list(containers[0].get("args") or [])
    n = len(args)
    if not any(have[i : i + n] == list(args) for i in range(len(have) - n + 1)):
        return False
    return (
        int(status.get("observedGeneration") or 0) >= int(sts["metadata"].get("generation") or 0)
        and status.get("updateRevision") == status.get("currentRevision")
        and int(status.get("readyReplicas") or 0) >= 1
        and int(status.get("updatedReplicas") or 0) >= 1
    )


def _backup_mounts(
    backups: Sequence[DataBackup], runtime: Runtime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """The master pod's volumes, mounts and ``--backup-root`` flags for the dataset's
    DataBackups: a hostPath at the same path for local://, the claim for pvc://."""
    targets: dict[str, BackupTarget] = {}
    for b in backups:
        try:
            t = backup_target(b, runtime)
        except ValueError:
            continue  # the DataBackup fails with the reason; the master does not change
        if t.directory:
            targets.setdefault(t.root, t)
    volumes, mounts, args = [], [], []
    for i, (root, t) in enumerate(sorted(targets.items())):
        name = f"backup-{i}"
        if t.claim:
            volumes.append({"name": name, "persistentVolumeClaim": {"claimName": t.claim}})
        else:
            volumes.append({"name": name, "hostPath": {"path": root, "type": "DirectoryOrCreate"}})
        mounts.append({"name": name, "mountPath": root})
        args += ["--backup-root", root]
    return volumes, mounts, args


# ---- objects ------------------------------------------------------------------------------------


def owner_ref(api_version: str, kind: str, meta: Meta) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": meta.name,
        "uid": meta.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def master_service_name(meta: Meta) -> str:
    return f"{meta.name}-master"


def token_secret_name(meta: Meta) -> str:
    return f"{meta.name}-fluidcache-token"


def pv_name(meta: Meta) -> str:
    """PersistentVolumes are cluster-wide: ``<ns>-<name>``, as Fluid names them."""
    return f"{meta.namespace}-{meta.name}"


def master_url(runtime: Runtime) -> str:
    """Where the controller, workers and FUSE reach the master."""
    if runtime.master.endpoint:
        return runtime.master.endpoint.rstrip("/")
    meta = runtime.meta
    return f"http://{master_service_name(meta)}.{meta.namespace}.svc:{runtime.master.port}"


def _labels(meta: Meta, role: str) -> dict[str, str]:
    return {APP_LABEL: "fluidcache", ROLE_LABEL: role, DATASET_LABEL: meta.name}


def _object(
    api_version: str, kind: str, name: str, meta: Meta, owner: dict[str, Any] | None, role: str
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": _labels(meta, role)}
    if kind != "PersistentVolume":
        metadata["namespace"] = meta.namespace
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata}


def _token_env() -> list[dict[str, Any]]:
    return [{"name": "FLUIDCACHE_TOKEN_FILE", "value": "/etc/fluidcache/token"}]


def _token_volume(meta: Meta) -> tuple[dict[str, Any], dict[str, Any]]:
    volume = {
        "name": "token",
        "secret": {
            "secretName": token_secret_name(meta),
            "items": [{"key": TOKEN_KEY, "path": "token"}],
            "defaultMode": 0o400,
        },
    }
    return volume, {"name": "token", "mountPath": "/etc/fluidcache", "readOnly": True}


def token_secret(runtime: Runtime, token: str) -> dict[str, Any]:
    """The cluster token every fluidcache process of the dataset reads."""
    meta = runtime.meta
    owner = owner_ref(API_VERSION, "FluidCacheRuntime", meta)
    obj = _object("v1", "Secret", token_secret_name(meta), meta, owner, "token")
    obj["type"] = "Opaque"
    obj["stringData"] = {TOKEN_KEY: token}
    return obj


CREDENTIALS_DIR = "/etc/fluidcache/credentials"


def mount_name(index: int, dataset: Dataset) -> str:
    m = dataset.mounts[index]
    return m.name or m.mount_point.split("://", 1)[1].strip("/").replace("/", "-") or "data"


def source_args(dataset: Dataset, credentials_dir: str = CREDENTIALS_DIR) -> list[str]:
    """The master's SOURCE arguments and ``--option`` flags; a mount with ``encryptOptions``
    gets ``credentials_file`` (``credentials_dir/<mount name>``, written by the credentials init
    container, or by ``fluidcache up -f``), never a secret."""
    args: list[str] = []
    named = len(dataset.mounts) > 1 or any(m.name for m in dataset.mounts)
    for i, m in enumerate(dataset.mounts):
        name = mount_name(i, dataset)
        options = dict(m.options)
        if m.secrets:
            options["credentials_file"] = f"{credentials_dir}/{name}"
        args.append(f"{name}={m.mount_point}" if named else m.mount_point)
        for key, value in sorted(options.items()):
            args += ["--option", f"{name}.{key}={value}" if named else f"{key}={value}"]
    return args


def _credentials(
    dataset: Dataset, image: str, pull: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(init containers, volumes, mounts) that turn ``encryptOptions`` into one credentials file
    per mount (``KEY=VALUE`` lines, mode 0600, in memory): the values reach the init container
    as env vars from the Secrets and never appear in an argument or the pod spec."""
    lines: list[str] = []
    env: list[dict[str, Any]] = []
    for i, m in enumerate(dataset.mounts):
        path = f"{CREDENTIALS_DIR}/{mount_name(i, dataset)}"
        for j, ref in enumerate(m.secrets):
            var = f"CRED_{i}_{j}"
            ref_spec = {"secretKeyRef": {"name": ref.secret, "key": ref.key}}
            env.append({"name": var, "valueFrom": ref_spec})
            lines.append(f"printf '%s=%s\\n' {shlex.quote(ref.option)} \"${var}\" >> {path}")
    if not env:
        return [], [], []
    volume = {"name": "credentials", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}
    mount = {"name": "credentials", "mountPath": CREDENTIALS_DIR}
    init = {
        "name": "credentials",
        "image": image,
        "imagePullPolicy": pull,
        "command": ["sh", "-c", "set -e; umask 077; " + "; ".join(lines)],
        "env": env,
        "volumeMounts": [mount],
    }
    return [init], [volume], [{**mount, "readOnly": True}]


def _container(
    name: str, image: str, pull: str, args: list[str], resources: Mapping[str, Any]
) -> dict[str, Any]:
    c: dict[str, Any] = {
        "name": name,
        "image": image,
        "imagePullPolicy": pull,
        "command": ["fluidcache"],
        "args": args,
    }
    if resources:
        c["resources"] = dict(resources)
    return c


def master_objects(
    dataset: Dataset, runtime: Runtime, backups: Sequence[DataBackup] = ()
) -> list[dict[str, Any]]:
    """The master StatefulSet (LMDB on a hostPath under /var/lib/fluidcache, pinned to the node
    labelled :func:`master_label`; the directories ``backups`` write to mounted) and its
    Service; none when the runtime names an existing master."""
    if runtime.master.endpoint:
        return []
    meta = runtime.meta
    owner = owner_ref(API_VERSION, "FluidCacheRuntime", meta)
    name = master_service_name(meta)
    selector = _labels(meta, "master")
    port = runtime.master.port
    service = _object("v1", "Service", name, meta, owner, "master")
    service["spec"] = {
        "selector": selector,
        "ports": [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}],
    }
    args = [
        "master",
        *source_args(dataset),
        "--dataset",
        meta.name,
        "--data-dir",
        "/var/lib/fluidcache/master",
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
    ]
    backup_volumes, backup_mounts, backup_args = _backup_mounts(backups, runtime)
    args += backup_args
    container = _container(
        "master", runtime.master.image, runtime.master.pull_policy, args, runtime.master.resources
    )
    token_volume, token_mount = _token_volume(meta)
    inits, cred_volumes, cred_mounts = _credentials(
        dataset, runtime.master.image, runtime.master.pull_policy
    )
    container["env"] = [*_token_env(), *runtime.master.env]
    container["ports"] = [{"name": "http", "containerPort": port}]
    container["volumeMounts"] = [
        token_mount,
        {"name": "data", "mountPath": "/var/lib/fluidcache"},
        *cred_mounts,
        *backup_mounts,
    ]
    sts = _object("apps/v1", "StatefulSet", name, meta, owner, "master")
    data_dir = f"/var/lib/fluidcache/{meta.namespace}/{meta.name}"
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": [
            token_volume,
            {"name": "data", "hostPath": {"path": data_dir, "type": "DirectoryOrCreate"}},
            *cred_volumes,
            *backup_volumes,
        ],
        "hostNetwork": runtime.host_network,
        "nodeSelector": {master_label(dataset.meta): "true", **runtime.master.node_selector},
    }
    if inits:
        pod_spec["initContainers"] = inits
    if dataset.raw_tolerations:
        pod_spec["tolerations"] = [dict(t) for t in dataset.raw_tolerations]
    sts["spec"] = {
        "serviceName": name,
        "replicas": 1,
        "selector": {"matchLabels": selector},
        "template": {"metadata": {"labels": selector}, "spec": pod_spec},
    }
    return [service, sts]


def _tier_volumes(runtime: Runtime) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Volumes, mounts and ``--tier`` values for the tiered store (one volume per path)."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    tiers: list[str] = []
    meta = runtime.meta
    for i, level in enumerate(runtime.levels):
        paths = []
        for j, path in enumerate(level.paths):
            vname = f"{level.medium.lower()}-{i}-{j}"
            inside = f"/cache/{vname}"
            if level.volume_type == "emptyDir":
                empty: dict[str, Any] = {"sizeLimit": str(level.quota // len(level.paths))}
                if level.medium == "MEM":
                    empty["medium"] = "Memory"
                volumes.append({"name": vname, "emptyDir": empty})
            else:
                host = f"{path.rstrip('/')}/{meta.namespace}/{meta.name}"
                volumes.append(
                    {"name": vname, "hostPath": {"path": host, "type": "DirectoryOrCreate"}}
                )
            mounts.append({"name": vname, "mountPath": inside})
            paths.append(inside)
        tier = f"{level.medium}:{','.join(paths)}:{level.quota}"
        if level.high and level.low:
            tier += f":{level.high}:{level.low}"
        tiers.append(tier)
    return volumes, mounts, tiers


def worker_statefulset(dataset: Dataset, runtime: Runtime, replicas: int) -> dict[str, Any]:
    """Worker pods pinned to the nodes labelled for the dataset, one per node."""
    meta = runtime.meta
    owner = owner_ref(API_VERSION, "FluidCacheRuntime", meta)
    selector = _labels(meta, "worker")
    port = runtime.worker.port
    volumes, mounts, tiers = _tier_volumes(runtime)
    token_volume, token_mount = _token_volume(meta)
    args = [
        "worker",
        "--master",
        master_url(runtime),
        "--id",
        "$(POD_NAME)",
        "--node",
        "$(NODE_NAME)",
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
        "--advertise",
        f"http://$(POD_IP):{port}",
    ]
    for t in tiers:
        args += ["--tier", t]
    container = _container(
        "worker", runtime.worker.image, runtime.worker.pull_policy, args, runtime.worker.resources
    )
    container["env"] = [
        *_token_env(),
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        *runtime.worker.env,
    ]
    # workers read the sources too: the master hands them each mount's credentials_file path
    inits, cred_volumes, cred_mounts = _credentials(
        dataset, runtime.worker.image, runtime.worker.pull_policy
    )
    container["ports"] = [{"name": "http", "containerPort": port}]
    container["volumeMounts"] = [token_mount, *mounts, *cred_mounts]
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": [token_volume, *volumes, *cred_volumes],
        "hostNetwork": runtime.host_network,
        "nodeSelector": {runtime_label(dataset.meta): "true"},
        "affinity": {
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "labelSelector": {"matchLabels": selector},
                        "topologyKey": "kubernetes.io/hostname",
                    }
                ]
            }
        },
    }
    if inits:
        pod_spec["initContainers"] = inits
    if dataset.raw_tolerations:
        pod_spec["tolerations"] = [dict(t) for t in dataset.raw_tolerations]
    sts = _object("apps/v1", "StatefulSet", f"{meta.name}-worker", meta, owner, "worker")
    sts["spec"] = {
        "serviceName": f"{meta.name}-worker",
        "replicas": replicas,
        "podManagementPolicy": "Parallel",
        "selector": {"matchLabels": selector},
        "template": {"metadata": {"labels": selector}, "spec": pod_spec},
    }
    return sts


def fuse_daemonset(dataset: Dataset, runtime: Runtime) -> dict[str, Any]:
    """FUSE on the nodes labelled ``fluid.io/f-<ns>-<name>`` (where an app mounts the dataset)."""
    meta = runtime.meta
    owner = owner_ref(API_VERSION, "FluidCacheRuntime", meta)
    selector = _labels(meta, "fuse")
    mountpoint = f"{FUSE_ROOT}/{meta.namespace}/{meta.name}"
    args = ["mount", meta.name, f"{mountpoint}/fluidcache-fuse", "--master", master_url(runtime)]
    args.append("--allow-other")
    container = _container(
        "fuse", runtime.fuse.image, runtime.fuse.pull_policy, args, runtime.fuse.resources
    )
    token_volume, token_mount = _token_volume(meta)
    container["env"] = [*_token_env(), *runtime.fuse.env]
    container["securityContext"] = {"privileged": True}
    container["volumeMounts"] = [
        token_mount,
        {"name": "fuse-mount", "mountPath": FUSE_ROOT, "mountPropagation": "Bidirectional"},
        {"name": "fuse-device", "mountPath": "/dev/fuse"},
    ]
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": [
            token_volume,
            {"name": "fuse-mount", "hostPath": {"path": FUSE_ROOT, "type": "DirectoryOrCreate"}},
            {"name": "fuse-device", "hostPath": {"path": "/dev/fuse", "type": "CharDevice"}},
        ],
        "hostNetwork": runtime.host_network,
        "nodeSelector": {fuse_label(dataset.meta): "true", **runtime.fuse.node_selector},
    }
    if dataset.raw_tolerations:
        pod_spec["tolerations"] = [dict(t) for t in dataset.raw_tolerations]
    ds = _object("apps/v1", "DaemonSet", f"{meta.name}-fuse", meta, owner, "fuse")
    ds["spec"] = {
        "selector": {"matchLabels": selector},
        "template": {"metadata": {"labels": selector}, "spec": pod_spec},
    }
    return ds


def volume_objects(dataset: Dataset) -> list[dict[str, Any]]:
    """The PersistentVolume (cluster-wide, ``<ns>-<name>``, removed by the finalizer: it cannot
    have a namespaced owner) and the PVC ``<name>`` that application pods mount."""
    meta = dataset.meta
    owner = owner_ref(API_VERSION, "Dataset", meta)
    modes = list(dataset.access_modes)
    pv = _object("v1", "PersistentVolume", pv_name(meta), meta, None, "volume")
    pv["metadata"]["labels"][dataset_label(meta)] = "true"
    pv["spec"] = {
        "capacity": {"storage": PV_CAPACITY},
        "accessModes": modes,
        "persistentVolumeReclaimPolicy": "Retain",
        "storageClassName": STORAGE_CLASS,
        "claimRef": {"namespace": meta.namespace, "name": meta.name},
        "csi": {
            "driver": CSI_DRIVER,
            "volumeHandle": pv_name(meta),
            "volumeAttributes": {
                "fluid_path": f"{FUSE_ROOT}/{meta.namespace}/{meta.name}/fluidcache-fuse",
                "mount_type": RUNTIME_TYPE,
            },
        },
    }
    pvc = _object("v1", "PersistentVolumeClaim", meta.name, meta, owner, "volume")
    pvc["spec"] = {
        "accessModes": modes,
        "storageClassName": STORAGE_CLASS,
        "volumeName": pv_name(meta),
        "resources": {"requests": {"storage": PV_CAPACITY}},
    }
    return [pv, pvc]


def desired_objects(
    dataset: Dataset, runtime: Runtime, placement: Placement, backups: Sequence[DataBackup] = ()
) -> list[dict[str, Any]]:
    """Every object the dataset and its runtime need, the token Secret aside."""
    return [
        *master_objects(dataset, runtime, backups),
        worker_statefulset(dataset, runtime, len(placement.nodes)),
        fuse_daemonset(dataset, runtime),
        *volume_objects(dataset),
    ]


# ---- status -------------------------------------------------------------------------------------


def condition(kind: str, ok: bool, reason: str, message: str, now: str) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
    }


def merge_conditions(
    old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """``new`` over ``old`` by type; a condition whose status is unchanged keeps its
    lastTransitionTime."""
    by_type = {str(c.get("type")): dict(c) for c in old}
    for c in new:
        prev = by_type.get(str(c["type"]))
        merged = dict(c)
        if prev is not None and prev.get("status") == c["status"]:
            merged["lastTransitionTime"] = prev.get("lastTransitionTime", c["lastTransitionTime"])
        by_type[str(c["type"])] = merged
    return list(by_type.values())


def _phase(ready: int, desired: int) -> str:
    if desired and ready >= desired:
        return "Ready"
    return "PartialReady" if ready else "NotReady"


def runtime_status(
    runtime: Runtime,
    placement: Placement,
    workers: Mapping[str, Any],
    master: Mapping[str, Any] | None,
    fuse: Mapping[str, Any],
) -> dict[str, Any]:
    """The runtime's status from its placement and its StatefulSets' and DaemonSet's status."""
    desired = placement.wanted
    ready = int(workers.get("readyReplicas") or 0)
    scheduled = int(workers.get("currentReplicas") or workers.get("replicas") or 0)
    if master is None:  # an existing master: counted as one, ready
        m_ready, m_desired = 1, 1
    else:
        m_ready, m_desired = int(master.get("readyReplicas") or 0), 1
    f_desired = int(fuse.get("desiredNumberScheduled") or 0)
    f_ready = int(fuse.get("numberReady") or 0)
    meta = runtime.meta
    return {
        "masterPhase": _phase(m_ready, m_desired),
        "masterNumberReady": m_ready,
        "desiredMasterNumberScheduled": m_desired,
        "currentMasterNumberScheduled": m_desired if master is None else m_ready,
        "workerPhase": _phase(ready, desired),
        "workerReason": placement.reason,
        "desiredWorkerNumberScheduled": desired,
        "currentWorkerNumberScheduled": scheduled,
        "workerNumberReady": ready,
        "workerNumberAvailable": int(workers.get("availableReplicas") or ready),
        "workerNumberUnavailable": max(0, desired - ready),
        "fusePhase": "Ready" if f_ready >= f_desired else "PartialReady",
        "desiredFuseNumberScheduled": f_desired,
        "currentFuseNumberScheduled": int(fuse.get("currentNumberScheduled") or 0),
        "fuseNumberReady": f_ready,
        "selector": f"{APP_LABEL}=fluidcache,{ROLE_LABEL}=worker,{DATASET_LABEL}={meta.name}",
        "nodes": list(placement.nodes),
        "cacheAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": dataset_label(meta), "operator": "In", "values": ["true"]}
                        ]
                    }
                ]
            }
        },
    }


def report_status(report: Report, dataset: str) -> dict[str, Any]:
    """``ufsTotal``, ``fileNum`` and Fluid's ``cacheStates`` (strings, as Fluid writes them) of
    ``dataset`` from the master's report (the cluster's figures if the master has no such name)."""
    fluid = report.fluid()
    entry = next((d for d in fluid["datasets"] if d["name"] == dataset), None)
    s = entry if entry is not None else fluid["cluster"]
    return {
        "ufsTotal": human_bytes(s["ufsTotal"]),
        "fileNum": str(s["fileNum"]),
        "cacheStates": {
            "cached": human_bytes(s["cached"]),
            "cacheCapacity": human_bytes(s["cacheCapacity"]),
            "cachedPercentage": f"{float(s['cachedPercentage']):.1f}%",
            "cacheHitRatio": f"{100 * float(s['cacheHitRatio']):.1f}%",
            "localHitRatio": f"{100 * float(s['localHitRatio']):.1f}%",
            "remoteHitRatio": f"{100 * float(s['remoteHitRatio']):.1f}%",
        },
    }


def dataset_phase(
    runtime_found: bool, placement: Placement | None, ready: int, master_ok: bool
) -> str:
    """Fluid's Dataset phase: NotBound without a runtime, Bound once a worker is ready and the
    master answers, Pending before that."""
    if not runtime_found:
        return "NotBound"
    if placement is not None and placement.nodes and ready > 0 and master_ok:
        return "Bound"
    return "Pending"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60}m"


def _rfc3339(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def job_status(jobs: Sequence[JobInfo]) -> dict[str, Any]:
    """A DataLoad's or DataBackup's status from its master jobs: Fluid's phase and duration and
    the jobs' byte-level progress, summed.

    Failed if any job failed, Complete once all are, Executing once one started. A scheduled
    (Cron) job returns to Pending between runs: its phase is then its last run's outcome.
    """
    phases = []
    for j in jobs:
        phase = j.phase
        if j.schedule and phase == PENDING and j.runs:
            phase = COMPLETE if j.last_success and j.last_success >= j.finished else FAILED
        phases.append(phase)
    if FAILED in phases:
        phase = FAILED
    elif phases and all(p == COMPLETE for p in phases):
        phase = COMPLETE
    elif EXECUTING in phases or COMPLETE in phases:
        phase = EXECUTING
    else:
        phase = PENDING
    bytes_total = sum(j.bytes_total for j in jobs)
    bytes_done = sum(j.bytes_done for j in jobs)
    started = [j.started for j in jobs if j.started]
    finished = [j.finished for j in jobs if j.finished]
    status: dict[str, Any] = {
        "phase": phase,
        "jobIds": [j.job_id for j in jobs],
        "progress": {
            "filesTotal": sum(j.files_total for j in jobs),
            "filesDone": sum(j.files_done for j in jobs),
            "bytesTotal": bytes_total,
            "bytesDone": bytes_done,
            "percentage": f"{100 * bytes_done / bytes_total:.1f}%" if bytes_total else "0.0%",
            "rate": human_bytes(sum(j.rate for j in jobs)) + "/s",
            "runs": max((j.runs for j in jobs), default=0),
        },
    }
    if started:
        end = max(finished) if phase in (COMPLETE, FAILED) and finished else None
        status["duration"] = _duration(
            (end if end is not None else max(j.started + j.duration for j in jobs if j.started))
            - min(started)
        )
        status["lastScheduleTime"] = _rfc3339(max(started))
    successes = [j.last_success for j in jobs if j.last_success]
    if successes and phase == COMPLETE:
        status["lastSuccessfulTime"] = _rfc3339(max(successes))
    errors = "; ".join(j.error for j in jobs if j.error)
    if errors:
        status["error"] = errors
    results = [j.result for j in jobs if j.result]
    if results:
        status["backupLocation"] = {"path": results[-1]}
    return status


def finished_at(status: Mapping[str, Any]) -> float:
    """When a finished operation finished (Unix seconds): its Complete or Failed condition's
    lastTransitionTime, else its completionTime; 0 while it has not finished."""
    times = [
        str(c.get("lastTransitionTime") or "")
        for c in status.get("conditions") or []
        if c.get("type") in (COMPLETE, FAILED) and c.get("status") == "True"
    ]
    times.append(str(status.get("completionTime") or ""))
    stamps = [
        datetime.datetime.strptime(t, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
        for t in times
        if t
    ]
    return max(stamps).timestamp() if stamps else 0.0


def expired(spec: Mapping[str, Any], status: Mapping[str, Any], now: float) -> bool:
    """Fluid's ``ttlSecondsAfterFinished``: whether a finished operation is due for deletion."""
    ttl = spec.get("ttlSecondsAfterFinished")
    if ttl is None or status.get("phase") not in (COMPLETE, FAILED):
        return False
    finished = finished_at(status)
    return bool(finished) and now >= finished + int(ttl)


def load_targets(load: DataLoad) -> list[tuple[int | str, list[str]]]:
    """The load's targets grouped by replicas, in order of first appearance: one master job each
    (a job has one replica count)."""
    groups: dict[str, tuple[int | str, list[str]]] = {}
    for t in load.targets:
        key = str(t.replicas)
        groups.setdefault(key, (t.replicas, []))[1].append(t.path)
    return list(groups.values())
