"""The custom resources as typed values, parsed from the dicts the API server sends.

Parsing is total and pure: a field the CRD schema let through always parses (the API server
validated it); defaults are Fluid's. Everything in :mod:`fluidcache.controller.reconcile` works on
these values, never on raw dicts.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

GROUP = "data.fluidcache.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
RUNTIME_TYPE = "fluidcache"  # the <runtime> in Fluid's label formats

EXCLUSIVE, SHARED = "Exclusive", "Shared"
MASTER_PORT = 7000
WORKER_PORT = 7001

_UNITS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")


def parse_quantity(text: str) -> int:
    """Bytes of a Kubernetes quantity (``100Gi``, ``1.5G``, ``512``); ValueError if malformed."""
    m = _QUANTITY.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a quantity such as 10Gi")
    return int(float(m.group(1)) * _UNITS[m.group(2) or ""])


def _obj(data: Any) -> Mapping[str, Any]:
    return data if isinstance(data, Mapping) else {}


@dataclasses.dataclass(frozen=True, slots=True)
class Meta:
    namespace: str
    name: str
    uid: str = ""
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> Meta:
        m = _obj(body.get("metadata"))
        return cls(
            namespace=str(m.get("namespace") or "default"),
            name=str(m.get("name", "")),
            uid=str(m.get("uid", "")),
            labels=dict(_obj(m.get("labels"))),
            annotations=dict(_obj(m.get("annotations"))),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class SecretRef:
    option: str  # the source option it fills (e.g. access_key)
    secret: str
    key: str


@dataclasses.dataclass(frozen=True, slots=True)
class Mount:
    mount_point: str
    name: str = ""
    path: str = ""
    options: Mapping[str, str] = dataclasses.field(default_factory=dict)
    secrets: tuple[SecretRef, ...] = ()

    @classmethod
    def parse(cls, data: Mapping[str, Any], shared: Mapping[str, Any]) -> Mount:
        options = {**_obj(shared.get("sharedOptions")), **_obj(data.get("options"))}
        encrypt = [*(shared.get("sharedEncryptOptions") or []), *(data.get("encryptOptions") or [])]
        secrets = tuple(
            SecretRef(
                str(e["name"]),
                str(e["valueFrom"]["secretKeyRef"]["name"]),
                str(e["valueFrom"]["secretKeyRef"]["key"]),
            )
            for e in encrypt
        )
        return cls(
            mount_point=str(data["mountPoint"]),
            name=str(data.get("name", "")),
            path=str(data.get("path", "")),
            options={str(k): str(v) for k, v in options.items()},
            secrets=secrets,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Toleration:
    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""

    def tolerates(self, taint: Taint) -> bool:
        """Kubernetes' rule: an empty key with Exists matches every taint."""
        if self.effect and self.effect != taint.effect:
            return False
        if not self.key:
            return self.operator == "Exists"
        if self.key != taint.key:
            return False
        return self.operator == "Exists" or self.value == taint.value


@dataclasses.dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.operator == "In":
            return value is not None and value in self.values
        if self.operator == "NotIn":
            return value is None or value not in self.values
        if self.operator == "Exists":
            return value is not None
        if self.operator == "DoesNotExist":
            return value is None
        if self.operator in ("Gt", "Lt") and value is not None and self.values:
            try:
                a, b = int(value), int(self.values[0])
            except ValueError:
                return False
            return a > b if self.operator == "Gt" else a < b
        return False


@dataclasses.dataclass(frozen=True, slots=True)
class Dataset:
    meta: Meta
    mounts: tuple[Mount, ...]
    # OR of terms, each an AND of requirements (a NodeSelector); empty: every node
    node_terms: tuple[tuple[Requirement, ...], ...] = ()
    tolerations: tuple[Toleration, ...] = ()
    access_modes: tuple[str, ...] = ("ReadOnlyMany",)
    placement: str = EXCLUSIVE
    raw_node_affinity: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    raw_tolerations: tuple[Mapping[str, Any], ...] = ()
    runtime_profile: str = ""  # a RuntimeProfile to make the runtime from when there is none

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> Dataset:
        spec = _obj(body.get("spec"))
        required = _obj(_obj(spec.get("nodeAffinity")).get("required"))
        terms = tuple(
            tuple(
                Requirement(str(r["key"]), str(r["operator"]), tuple(r.get("values") or ()))
                for r in term.get("matchExpressions") or []
            )
            for term in required.get("nodeSelectorTerms") or []
        )
        tols = tuple(spec.get("tolerations") or ())
        return cls(
            meta=Meta.parse(body),
            mounts=tuple(Mount.parse(m, spec) for m in spec.get("mounts") or []),
            node_terms=terms,
            tolerations=tuple(
                Toleration(
                    str(t.get("key", "")),
                    str(t.get("operator", "Equal")),
                    str(t.get("value", "")),
                    str(t.get("effect", "")),
                )
                for t in tols
            ),
            access_modes=tuple(spec.get("accessModes") or ("ReadOnlyMany",)),
            placement=str(spec.get("placement") or EXCLUSIVE),
            raw_node_affinity=dict(required),
            raw_tolerations=tols,
            runtime_profile=str(spec.get("runtimeProfile") or ""),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Level:
    medium: str  # MEM | SSD | HDD
    paths: tuple[str, ...]
    quota: int  # bytes, over all paths
    high: str = ""
    low: str = ""
    volume_type: str = ""  # hostPath | emptyDir; default: emptyDir for MEM, hostPath otherwise

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Level:
        medium = str(data["mediumtype"])
        paths = tuple(p for p in str(data.get("path") or "").split(",") if p)
        quota_list = str(data.get("quotaList") or "")
        quota = (
            sum(parse_quantity(q) for q in quota_list.split(","))
            if quota_list
            else parse_quantity(str(data["quota"]))
        )
        return cls(
            medium=medium,
            paths=paths or ("/dev/shm/fluidcache" if medium == "MEM" else "/var/lib/fluidcache",),
            quota=quota,
            high=str(data.get("high", "")),
            low=str(data.get("low", "")),
            volume_type=str(
                data.get("volumeType") or ("emptyDir" if medium == "MEM" else "hostPath")
            ),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Component:
    image: str = "fluidcache:latest"
    pull_policy: str = "IfNotPresent"
    resources: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    node_selector: Mapping[str, str] = dataclasses.field(default_factory=dict)
    env: tuple[Mapping[str, Any], ...] = ()
    port: int = 0
    endpoint: str = ""  # master only: an existing master; the controller deploys none

    @classmethod
    def parse(cls, data: Any, port: int = 0) -> Component:
        d = _obj(data)
        image = str(d.get("image") or "fluidcache")
        if d.get("imageTag"):
            image = f"{image}:{d['imageTag']}"
        elif ":" not in image.rsplit("/", 1)[-1]:
            image = f"{image}:latest"
        return cls(
            image=image,
            pull_policy=str(d.get("imagePullPolicy") or "IfNotPresent"),
            resources=dict(_obj(d.get("resources"))),
            node_selector={str(k): str(v) for k, v in _obj(d.get("nodeSelector")).items()},
            env=tuple(d.get("env") or ()),
            port=int(d.get("port") or port),
            endpoint=str(d.get("endpoint") or ""),
        )


DEFAULT_LEVELS = (Level("MEM", ("/dev/shm/fluidcache",), 2**30, volume_type="emptyDir"),)


@dataclasses.dataclass(frozen=True, slots=True)
class Runtime:
    meta: Meta
    replicas: int = 1
    levels: tuple[Level, ...] = DEFAULT_LEVELS
    master: Component = Component(port=MASTER_PORT)
    worker: Component = Component(port=WORKER_PORT)
    fuse: Component = Component()
    node_selector: Mapping[str, str] = dataclasses.field(default_factory=dict)
    host_network: bool = False

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> Runtime:
        spec = _obj(body.get("spec"))
        levels = tuple(Level.parse(x) for x in _obj(spec.get("tieredstore")).get("levels") or [])
        return cls(
            meta=Meta.parse(body),
            replicas=int(spec.get("replicas", 1)),
            levels=levels or DEFAULT_LEVELS,
            master=Component.parse(spec.get("master"), MASTER_PORT),
            worker=Component.parse(spec.get("worker"), WORKER_PORT),
            fuse=Component.parse(spec.get("fuse")),
            node_selector={str(k): str(v) for k, v in _obj(spec.get("nodeSelector")).items()},
            host_network=spec.get("networkmode") == "HostNetwork",
        )

    def capacity(self, medium: str) -> int:
        return sum(level.quota for level in self.levels if level.medium == medium)


@dataclasses.dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str = ""
    effect: str = "NoSchedule"


@dataclasses.dataclass(frozen=True, slots=True)
class Node:
    name: str
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    unschedulable: bool = False
    resource_version: str = ""

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> Node:
        spec = _obj(body.get("spec"))
        meta = _obj(body.get("metadata"))
        return cls(
            name=str(meta.get("name", "")),
            labels={str(k): str(v) for k, v in _obj(meta.get("labels")).items()},
            taints=tuple(
                Taint(str(t["key"]), str(t.get("value", "")), str(t.get("effect", "NoSchedule")))
                for t in spec.get("taints") or []
            ),
            unschedulable=bool(spec.get("unschedulable")),
            resource_version=str(meta.get("resourceVersion", "")),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    path: str
    replicas: int | str = 1  # a count, or "all"


@dataclasses.dataclass(frozen=True, slots=True)
class DataLoad:
    meta: Meta
    dataset: str
    dataset_namespace: str
    targets: tuple[Target, ...] = (Target("/"),)
    load_metadata: bool = False
    schedule: str = ""  # set for policy Cron
    run_after: tuple[str, str, str] | None = None  # kind, namespace, name

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> DataLoad:
        meta = Meta.parse(body)
        spec = _obj(body.get("spec"))
        ref = _obj(spec.get("dataset"))
        targets = tuple(
            Target(str(t["path"]), t.get("replicas", 1)) for t in spec.get("target") or []
        )
        return cls(
            meta=meta,
            dataset=str(ref.get("name", "")),
            dataset_namespace=str(ref.get("namespace") or meta.namespace),
            targets=targets or (Target("/"),),
            load_metadata=bool(spec.get("loadMetadata")),
            schedule=str(spec.get("schedule") or "") if spec.get("policy") == "Cron" else "",
            run_after=_run_after(spec, meta.namespace),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class DataBackup:
    meta: Meta
    dataset: str
    backup_path: str = ""
    run_after: tuple[str, str, str] | None = None

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> DataBackup:
        meta = Meta.parse(body)
        spec = _obj(body.get("spec"))
        return cls(
            meta=meta,
            dataset=str(spec.get("dataset", "")),
            backup_path=str(spec.get("backupPath") or ""),
            run_after=_run_after(spec, meta.namespace),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class DataProcess:
    """A Job with the dataset's PVC at ``mount_path``: a pod spec, or a script in an image."""

    meta: Meta
    dataset: str
    mount_path: str
    sub_path: str = ""
    run_after: tuple[str, str, str] | None = None
    pod_spec: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    script: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    service_account: str = ""
    pod_labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    pod_annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> DataProcess:
        meta = Meta.parse(body)
        spec = _obj(body.get("spec"))
        ref = _obj(spec.get("dataset"))
        proc = _obj(spec.get("processor"))
        pod_meta = _obj(proc.get("podMetadata"))
        return cls(
            meta=meta,
            dataset=str(ref.get("name", "")),
            mount_path=str(ref.get("mountPath") or "/data"),
            sub_path=str(ref.get("subPath") or ""),
            run_after=_run_after(spec, meta.namespace),
            pod_spec=dict(_obj(_obj(proc.get("job")).get("podSpec"))),
            script=dict(_obj(proc.get("script"))),
            service_account=str(proc.get("serviceAccountName") or ""),
            pod_labels={str(k): str(v) for k, v in _obj(pod_meta.get("labels")).items()},
            pod_annotations={str(k): str(v) for k, v in _obj(pod_meta.get("annotations")).items()},
        )


def _run_after(spec: Mapping[str, Any], namespace: str) -> tuple[str, str, str] | None:
    ref = _obj(spec.get("runAfter"))
    if not ref:
        return None
    return str(ref["kind"]), str(ref.get("namespace") or namespace), str(ref["name"])
