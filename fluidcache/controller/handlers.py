"""The thin loop: kopf handlers that read resources, call the pure reconcile functions, apply
what they return and write status. DataLoads and DataBackups become jobs on the dataset's master
through :class:`fluidcache.client.AsyncClient`; the controller runs no load loop of its own.

Run with ``python -m fluidcache.controller`` (see its ``--help``).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import logging
import os
import secrets
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

import kopf

from fluidcache.client import AsyncClient
from fluidcache.common import errors
from fluidcache.common.protocol import COMPLETE, FAILED, JOB_BACKUP, JobInfo, JobRequest
from fluidcache.controller import processing, webhook
from fluidcache.controller import reconcile as rc
from fluidcache.controller.admission import ServiceWebhookServer
from fluidcache.controller.kube import Kube, path, path_of
from fluidcache.controller.model import (
    API_VERSION,
    GROUP,
    VERSION,
    DataBackup,
    DataLoad,
    DataProcess,
    Dataset,
    Meta,
    Node,
    Runtime,
)

log = logging.getLogger(__name__)

INTERVAL = float(os.environ.get("FLUIDCACHE_CONTROLLER_INTERVAL", "10"))
JOB_POLL = float(os.environ.get("FLUIDCACHE_CONTROLLER_JOB_POLL", "2"))
MASTER_TIMEOUT = 10.0
FINAL = (COMPLETE, FAILED)

WEBHOOK_CONFIG = "fluidcache.data.fluidcache.io"

_kube: Kube | None = None
_locks: dict[tuple[str, str], asyncio.Lock] = {}


def kube() -> Kube:
    if _kube is None:
        raise kopf.TemporaryError("not connected to the API server yet", delay=1)
    return _kube


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _deleting(body: Mapping[str, Any] | None) -> bool:
    return body is None or bool(body.get("metadata", {}).get("deletionTimestamp"))


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _kube
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 60
    # A timer still running when its resource is deleted (the ttlSecondsAfterFinished timer
    # deletes its own resource) holds the finalizer until kopf looks again: every 60 s by
    # default, which kept expired DataLoads for a minute.
    settings.background.cancellation_polling = 2
    _kube = await Kube.connect(os.environ.get("KUBECONFIG") or None)
    port = os.environ.get("FLUIDCACHE_WEBHOOK_PORT")
    if port:
        host = os.environ.get("FLUIDCACHE_WEBHOOK_HOST", "127.0.0.1")
        tls: dict[str, Any] = {
            "addr": os.environ.get("FLUIDCACHE_WEBHOOK_ADDR", host),
            "port": int(port),
            "host": host,
            "certfile": os.environ["FLUIDCACHE_WEBHOOK_CERT"],
            "pkeyfile": os.environ["FLUIDCACHE_WEBHOOK_KEY"],
            "cafile": os.environ.get("FLUIDCACHE_WEBHOOK_CA") or None,
        }
        service = os.environ.get("FLUIDCACHE_WEBHOOK_SERVICE")
        settings.admission.server = (
            ServiceWebhookServer(service=service, **tls) if service else kopf.WebhookServer(**tls)
        )
        # kopf keeps a MutatingWebhookConfiguration of this name: our Service (or, off-cluster,
        # our URL) and the caBundle
        settings.admission.managed = WEBHOOK_CONFIG


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if _kube is not None:
        await _kube.aclose()


# ---- the master ---------------------------------------------------------------------------------


async def _token(k: Kube, runtime: Runtime, create: bool) -> str:
    """The dataset's cluster token, from its Secret (made with a random token if absent)."""
    secret = await k.get(path("Secret", runtime.meta.namespace, rc.token_secret_name(runtime.meta)))
    if secret is not None:
        data = secret.get("data") or {}
        if rc.TOKEN_KEY in data:
            return base64.b64decode(data[rc.TOKEN_KEY]).decode().strip()
    if not create:
        raise kopf.TemporaryError(f"no Secret {rc.token_secret_name(runtime.meta)} yet", delay=5)
    token = secrets.token_hex(32)
    await k.apply(rc.token_secret(runtime, token))
    return token


async def _master(namespace: str, dataset: str) -> tuple[Runtime, AsyncClient]:
    """A client of ``dataset``'s master; TemporaryError while there is none."""
    k = kube()
    body = await k.get(path("FluidCacheRuntime", namespace, dataset))
    if body is None:
        raise kopf.TemporaryError(f"dataset {namespace}/{dataset} has no runtime yet", delay=5)
    runtime = Runtime.parse(body)
    token = await _token(k, runtime, create=False)
    return runtime, AsyncClient(rc.master_url(runtime), token, dataset=dataset)


# ---- Dataset + FluidCacheRuntime ----------------------------------------------------------------


async def reconcile_dataset(namespace: str, name: str) -> None:
    """Bring the dataset's nodes, objects and both statuses to what its resources ask."""
    lock = _locks.setdefault((namespace, name), asyncio.Lock())
    async with lock:
        await _reconcile(kube(), namespace, name)


async def _reconcile(k: Kube, namespace: str, name: str) -> None:
    ds_body = await k.get(path("Dataset", namespace, name))
    if _deleting(ds_body):
        return
    assert ds_body is not None
    dataset = Dataset.parse(ds_body)
    rt_body = await k.get(path("FluidCacheRuntime", namespace, name))
    ds_url = path("Dataset", namespace, name)
    old_conditions = (ds_body.get("status") or {}).get("conditions") or []
    if rt_body is None and dataset.runtime_profile:
        profile = await k.get(path("RuntimeProfile", name=dataset.runtime_profile))
        if profile is not None:
            rt_body = await k.apply(processing.runtime_from_profile(dataset, profile))
    if _deleting(rt_body):
        why = (
            f"no FluidCacheRuntime, and no RuntimeProfile {dataset.runtime_profile}"
            if dataset.runtime_profile
            else "no FluidCacheRuntime"
        )
        cond = rc.condition("RuntimeScheduled", False, "NoRuntime", why, _now())
        await k.patch_status(
            ds_url,
            {"phase": "NotBound", "conditions": rc.merge_conditions(old_conditions, [cond])},
        )
        return
    assert rt_body is not None
    runtime = Runtime.parse(rt_body)
    owner = rc.owner_ref(API_VERSION, "Dataset", dataset.meta)
    if not any(
        o.get("uid") == dataset.meta.uid for o in rt_body["metadata"].get("ownerReferences") or []
    ):
        await k.patch(path_of(rt_body), {"metadata": {"ownerReferences": [owner]}})
    token = await _token(k, runtime, create=not runtime.master.endpoint)

    nodes = [Node.parse(n) for n in await k.list(path("Node"))]
    pods = await k.list(path("Pod", dataset.meta.namespace))
    placement = rc.place(dataset, runtime, nodes, rc.worker_ordinals(dataset, pods))
    for node in nodes:
        patch = rc.label_patch(node, dataset, runtime, node.name in placement.nodes)
        if patch:
            await k.patch(path("Node", name=node.name), patch)
    backups: list[DataBackup] = []
    if not runtime.master.endpoint:
        backups = [
            b
            for b in map(DataBackup.parse, await k.list(path("DataBackup", namespace)))
            if b.dataset == name
        ]
        chosen = rc.master_node(dataset, runtime, nodes, placement)
        label = rc.master_label(dataset.meta)
        if chosen and not any(n.name == chosen and n.labels.get(label) for n in nodes):
            await k.patch(path("Node", name=chosen), {"metadata": {"labels": {label: "true"}}})
    for obj in rc.desired_objects(dataset, runtime, placement, backups):
        await k.apply(obj)

    workers = await k.get(path("StatefulSet", namespace, f"{name}-worker")) or {}
    fuse = await k.get(path("DaemonSet", namespace, f"{name}-fuse")) or {}
    master = None
    if not runtime.master.endpoint:
        master = (
            await k.get(path("StatefulSet", namespace, rc.master_service_name(runtime.meta))) or {}
        ).get("status") or {}
    rstatus = rc.runtime_status(
        runtime, placement, workers.get("status") or {}, master, fuse.get("status") or {}
    )
    rt_conditions = (rt_body.get("status") or {}).get("conditions") or []
    now = _now()
    placed = rc.condition(
        "WorkersPlaced",
        placement.complete,
        "Placed" if placement.complete else "NotEnoughNodes",
        placement.reason or f"{len(placement.nodes)} node(s): {', '.join(placement.nodes)}",
        now,
    )
    rstatus["conditions"] = rc.merge_conditions(rt_conditions, [placed])
    rstatus["observedGeneration"] = rt_body["metadata"].get("generation", 0)
    await k.patch_status(path_of(rt_body), rstatus)

    report_fields: dict[str, Any] = {}
    master_error = ""
    try:
        async with AsyncClient(rc.master_url(runtime), token, dataset=name) as c:
            report = await asyncio.wait_for(c.report(), MASTER_TIMEOUT)
        report_fields = rc.report_status(report, name)
    except Exception as e:  # the master not (yet) up is a status, not a handler failure
        master_error = f"master {rc.master_url(runtime)}: {type(e).__name__}: {e}"
    ready = int(rstatus["workerNumberReady"])
    phase = rc.dataset_phase(True, placement, ready, not master_error)
    conditions = [
        rc.condition(
            "RuntimeScheduled",
            placement.complete,
            "Placed" if placement.complete else "NotEnoughNodes",
            placement.reason or f"workers on {', '.join(placement.nodes)}",
            now,
        ),
        rc.condition(
            "Ready",
            phase == "Bound",
            "Bound" if phase == "Bound" else "NotReady",
            master_error or f"{ready} of {placement.wanted} workers ready",
            now,
        ),
    ]
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": rc.merge_conditions(old_conditions, conditions),
        "runtimes": [
            {"name": name, "namespace": namespace, "category": "Accelerate", "type": "fluidcache"}
        ],
        "nodes": list(placement.nodes),
        "observedGeneration": ds_body["metadata"].get("generation", 0),
        **report_fields,
    }
    await k.patch_status(ds_url, status)


async def _unlabel(k: Kube, dataset: Dataset) -> None:
    label = rc.dataset_label(dataset.meta)
    for body in await k.list(path("Node"), label_selector=f"{label}=true"):
        node = Node.parse(body)
        patch = rc.label_patch(node, dataset, Runtime(dataset.meta), cache=False)
        if patch:
            await k.patch(path("Node", name=node.name), patch)
    master = rc.master_label(dataset.meta)
    for body in await k.list(path("Node"), label_selector=f"{master}=true"):
        where = path("Node", name=body["metadata"]["name"])
        await k.patch(where, {"metadata": {"labels": {master: None}}})


def _ds_key(body: Mapping[str, Any]) -> tuple[str, str]:
    meta = Meta.parse(body)
    return meta.namespace, meta.name


@kopf.on.resume(GROUP, VERSION, "datasets")
@kopf.on.create(GROUP, VERSION, "datasets")
@kopf.on.update(GROUP, VERSION, "datasets")
async def dataset_changed(body: kopf.Body, **_: Any) -> None:
    await reconcile_dataset(*_ds_key(body))


@kopf.on.resume(GROUP, VERSION, "fluidcacheruntimes")
@kopf.on.create(GROUP, VERSION, "fluidcacheruntimes")
@kopf.on.update(GROUP, VERSION, "fluidcacheruntimes")
async def runtime_changed(body: kopf.Body, **_: Any) -> None:
    await reconcile_dataset(*_ds_key(body))


@kopf.timer(GROUP, VERSION, "fluidcacheruntimes", interval=INTERVAL, initial_delay=INTERVAL)
async def runtime_tick(body: kopf.Body, **_: Any) -> None:
    """Nodes come and go, pods become ready, the cache fills: re-read them all."""
    await reconcile_dataset(*_ds_key(body))


@kopf.on.delete(GROUP, VERSION, "fluidcacheruntimes")
async def runtime_deleted(body: kopf.Body, **_: Any) -> None:
    """Unlabel the nodes; the garbage collector removes the runtime's objects (owner refs)."""
    namespace, name = _ds_key(body)
    k = kube()
    async with _locks.setdefault((namespace, name), asyncio.Lock()):
        ds_body = await k.get(path("Dataset", namespace, name))
        meta = Meta.parse(ds_body) if ds_body is not None else Meta(namespace, name)
        dataset = Dataset(meta, ())
        await _unlabel(k, dataset)
        if not _deleting(ds_body):
            await _reconcile(k, namespace, name)


@kopf.on.delete(GROUP, VERSION, "datasets")
async def dataset_deleted(body: kopf.Body, **_: Any) -> None:
    """Fluid's rule: a dataset mounted by a running pod stays. Else remove the PV (it cannot
    be owned by a namespaced object) and the node labels; owner refs take the rest."""
    namespace, name = _ds_key(body)
    k = kube()
    users = [
        p["metadata"]["name"]
        for p in await k.list(path("Pod", namespace))
        if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        and any(
            (v.get("persistentVolumeClaim") or {}).get("claimName") == name
            for v in (p.get("spec") or {}).get("volumes") or []
        )
    ]
    if users:
        cond = rc.condition(
            "Ready", False, "InUse", f"still mounted by pod(s) {', '.join(sorted(users))}", _now()
        )
        old = (body.get("status") or {}).get("conditions") or []
        await k.patch_status(
            path("Dataset", namespace, name),
            {"conditions": rc.merge_conditions(old, [cond])},
        )
        raise kopf.TemporaryError(
            f"dataset {namespace}/{name} is still mounted by {', '.join(sorted(users))}", delay=5
        )
    async with _locks.setdefault((namespace, name), asyncio.Lock()):
        dataset = Dataset.parse(body)
        await k.delete(path("PersistentVolume", name=rc.pv_name(dataset.meta)))
        await _unlabel(k, dataset)
    _locks.pop((namespace, name), None)


# ---- the cache-affinity webhook -----------------------------------------------------------------


async def _cached_datasets(
    k: Kube, namespace: str, claims: list[str]
) -> list[webhook.CachedDataset]:
    """The pod's claims that are datasets' PVCs, with where their caches are."""
    out = []
    for claim in dict.fromkeys(claims):
        pvc = await k.get(path("PersistentVolumeClaim", namespace, claim))
        name = ((pvc or {}).get("metadata", {}).get("labels") or {}).get(rc.DATASET_LABEL)
        if not name:
            continue
        body = await k.get(path("Dataset", namespace, name))
        meta = Meta.parse(body) if body is not None else Meta(namespace, name)
        label = rc.dataset_label(meta)
        nodes = [Node.parse(n) for n in await k.list(path("Node"), label_selector=f"{label}=true")]
        zones = {n.labels[webhook.ZONE_LABEL] for n in nodes if webhook.ZONE_LABEL in n.labels}
        regions = {
            n.labels[webhook.REGION_LABEL] for n in nodes if webhook.REGION_LABEL in n.labels
        }
        out.append(webhook.CachedDataset(name, claim, label, tuple(zones), tuple(regions)))
    return out


async def pod_cache_affinity(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    """Pods mounting a dataset's PVC get affinity to its cache nodes (see ``webhook``)."""
    claims = webhook.claims(body)
    if not claims:
        return
    namespace = body.get("metadata", {}).get("namespace") or "default"
    datasets = await _cached_datasets(kube(), namespace, claims)
    changes = webhook.mutate_pod(body, datasets)
    if changes:
        patch["spec"] = changes


if os.environ.get("FLUIDCACHE_WEBHOOK_PORT"):  # kopf refuses admission handlers without a server
    # failurePolicy Ignore: while the controller is away, pods are created without cache
    # affinity rather than refused (every pod creation in the cluster passes through here)
    kopf.on.mutate("v1", "pods", id="cache-affinity", operations=["CREATE"], ignore_failures=True)(
        pod_cache_affinity
    )


# ---- DataLoad, DataBackup: jobs on the master ----------------------------------------------------


async def _after(owner: str, meta: Meta, run_after: tuple[str, str, str] | None) -> str:
    """The master job that ``owner``'s runAfter names (its last): the master starts the new job
    once that one completes. A DataProcess runs no master job: ``""`` once it is Complete,
    TemporaryError before, and ``owner`` fails with it. ``""`` without a runAfter."""
    if run_after is None:
        return ""
    kind, namespace, name = run_after
    body = await kube().get(path(kind, namespace, name))
    status = (body or {}).get("status") or {}
    if kind == "DataProcess":
        if status.get("phase") == COMPLETE:
            return ""
        if status.get("phase") == FAILED:
            msg = f"runAfter {kind} {namespace}/{name} failed"
            raise await _refuse(owner, meta, "RunAfterFailed", msg)
        raise kopf.TemporaryError(f"waiting for {kind} {namespace}/{name} to complete", delay=5)
    ids = status.get("jobIds") or []
    if not ids:
        raise kopf.TemporaryError(f"waiting for {kind} {namespace}/{name} to start", delay=5)
    return str(ids[-1])


async def _refuse(kind: str, meta: Meta, reason: str, message: str) -> kopf.PermanentError:
    """Mark the resource Failed (what runs after it must learn that) and say why."""
    cond = rc.condition(FAILED, True, reason, message, _now())
    cond["type"] = "Failed"
    await kube().patch_status(
        path(kind, meta.namespace, meta.name),
        {"phase": FAILED, "error": message, "conditions": [cond]},
    )
    return kopf.PermanentError(message)


async def _submit(
    kind: str,
    body: Mapping[str, Any],
    requests: list[JobRequest],
    dataset: str,
    field: tuple[str, str] = ("", ""),
) -> None:
    """Submit the resource's jobs once. A refusal by the master is final; ``field`` renames
    the request field its message names (``directory:``) to the resource's (``spec.X:``)."""
    status = body.get("status") or {}
    if status.get("jobIds"):
        return  # submitted before (a restart, or a spec change: jobs are not resubmitted)
    meta = Meta.parse(body)
    runtime, client = await _master(meta.namespace, dataset)
    try:
        async with client:
            jobs = [await client.submit(r) for r in requests]
    except (errors.InvalidArgument, errors.NotFound, errors.NotADirectory) as e:
        # the master refuses the request itself (a target that does not exist): retrying
        # cannot help, and what runs after this resource must learn that it failed
        message = e.message
        if field[0] and message.startswith(field[0] + ":"):
            message = field[1] + message[len(field[0]) :]
        msg = f"master {client.master_url}: {message}"
        raise await _refuse(kind, meta, "JobRefused", msg) from e
    except Exception as e:
        raise kopf.TemporaryError(f"master {client.master_url}: {e}", delay=5) from e
    await kube().patch_status(
        path(kind, meta.namespace, meta.name),
        {
            "phase": "Pending",
            "jobIds": [j.job_id for j in jobs],
            "masterEndpoint": rc.master_url(runtime),
        },
    )


async def _poll(kind: str, body: Mapping[str, Any], dataset: str) -> None:
    status = body.get("status") or {}
    ids = status.get("jobIds") or []
    if not ids:
        return
    meta = Meta.parse(body)
    runtime, client = await _master(meta.namespace, dataset)
    async with client:
        jobs: list[JobInfo] = [await client.job(str(i)) for i in ids]
    new = rc.job_status(jobs)
    now = _now()
    if new["phase"] in FINAL:
        ok = new["phase"] == COMPLETE
        cond = rc.condition(
            new["phase"], True, new["phase"], new.get("error", "") or "job finished", now
        )
        new["conditions"] = rc.merge_conditions(status.get("conditions") or [], [cond])
        if not ok:
            new["conditions"][-1]["type"] = "Failed"
    if kind == "DataBackup":
        new.pop("progress", None)  # a backup has no byte count; its file is the result
        if "backupLocation" in new:
            backup = DataBackup.parse(body)
            target = rc.backup_target(backup, runtime)
            where = rc.backup_location(
                target, backup, new["backupLocation"]["path"], await _master_node(runtime)
            )
            new.update(where)
    await kube().patch_status(path(kind, meta.namespace, meta.name), new)


def _load_requests(load: DataLoad, after: str) -> list[JobRequest]:
    from fluidcache.client.api import replicas_value

    return [
        JobRequest(
            dataset=load.dataset,
            paths=paths,
            replicas=replicas_value(replicas),
            metadata=load.load_metadata,
            schedule=load.schedule,
            after=after,
        )
        for replicas, paths in rc.load_targets(load)
    ]


@kopf.on.resume(GROUP, VERSION, "dataloads")
@kopf.on.create(GROUP, VERSION, "dataloads")
async def dataload_created(body: kopf.Body, **_: Any) -> None:
    load = DataLoad.parse(body)
    if (body.get("status") or {}).get("jobIds"):
        return
    after = await _after("DataLoad", load.meta, load.run_after)
    await _submit("DataLoad", body, _load_requests(load, after), load.dataset)


@kopf.timer(GROUP, VERSION, "dataloads", interval=JOB_POLL, initial_delay=JOB_POLL)
async def dataload_tick(body: kopf.Body, spec: kopf.Spec, status: kopf.Status, **_: Any) -> None:
    if status.get("phase") in FINAL and spec.get("policy") != "Cron":
        await _expire("DataLoad", body)
        return
    await _poll("DataLoad", body, DataLoad.parse(body).dataset)


async def _expire(kind: str, body: Mapping[str, Any]) -> None:
    """Delete a finished operation once its ``ttlSecondsAfterFinished`` has passed (Fluid's
    automatic clean-up)."""
    if rc.expired(body.get("spec") or {}, body.get("status") or {}, time.time()):
        meta = Meta.parse(body)
        log.info("%s %s/%s: ttlSecondsAfterFinished passed", kind, meta.namespace, meta.name)
        await kube().delete(path(kind, meta.namespace, meta.name))


@kopf.on.delete(GROUP, VERSION, "dataloads")
async def dataload_deleted(body: kopf.Body, **_: Any) -> None:
    await _cancel(body, DataLoad.parse(body).dataset)


async def _backup_target(backup: DataBackup) -> rc.BackupTarget:
    """Where the backup goes; TemporaryError until a master run by the controller mounts it
    (the master StatefulSet re-rendered with the volume and rolled out)."""
    k = kube()
    rt_body = await k.get(path("FluidCacheRuntime", backup.meta.namespace, backup.dataset))
    if rt_body is None:
        raise kopf.TemporaryError(f"dataset {backup.dataset} has no runtime yet", delay=5)
    runtime = Runtime.parse(rt_body)
    try:
        target = rc.backup_target(backup, runtime)
    except ValueError as e:
        raise await _refuse("DataBackup", backup.meta, "InvalidBackupPath", str(e)) from e
    if target.directory and not runtime.master.endpoint:
        await reconcile_dataset(backup.meta.namespace, backup.dataset)
        sts = await k.get(
            path("StatefulSet", backup.meta.namespace, rc.master_service_name(runtime.meta))
        )
        if not rc.rolled_out(sts, ["--backup-root", target.root]):
            raise kopf.TemporaryError(f"master not yet restarted with {target.root}", delay=5)
    return target


@kopf.on.resume(GROUP, VERSION, "databackups")
@kopf.on.create(GROUP, VERSION, "databackups")
async def databackup_created(body: kopf.Body, **_: Any) -> None:
    backup = DataBackup.parse(body)
    if (body.get("status") or {}).get("jobIds"):
        return
    target = await _backup_target(backup)
    after = await _after("DataBackup", backup.meta, backup.run_after)
    request = JobRequest(
        kind=JOB_BACKUP,
        dataset=backup.dataset,
        paths=["/"],
        after=after,
        directory=target.directory,
    )
    await _submit("DataBackup", body, [request], backup.dataset, ("directory", "spec.backupPath"))


async def _master_node(runtime: Runtime) -> str:
    """The node the master runs on: its pod's, or the host of an existing master's URL."""
    if runtime.master.endpoint:
        return urllib.parse.urlsplit(runtime.master.endpoint).hostname or ""
    pod = await kube().get(
        path("Pod", runtime.meta.namespace, f"{rc.master_service_name(runtime.meta)}-0")
    )
    return str(((pod or {}).get("spec") or {}).get("nodeName") or "")


@kopf.timer(GROUP, VERSION, "databackups", interval=JOB_POLL, initial_delay=JOB_POLL)
async def databackup_tick(body: kopf.Body, status: kopf.Status, **_: Any) -> None:
    if status.get("phase") in FINAL:
        await _expire("DataBackup", body)
        return
    await _poll("DataBackup", body, DataBackup.parse(body).dataset)


async def _cancel(body: Mapping[str, Any], dataset: str) -> None:
    """Cancel the resource's unfinished jobs; a master that is gone has nothing to cancel."""
    ids = (body.get("status") or {}).get("jobIds") or []
    if not ids:
        return
    meta = Meta.parse(body)
    try:
        _, client = await _master(meta.namespace, dataset)
        async with client:
            for i in ids:
                job = await client.job(str(i))
                if job.phase not in FINAL or job.schedule:
                    await client.cancel(str(i))
    except Exception as e:  # no runtime, a master gone or refusing: nothing left to cancel
        log.info("cancelling jobs of %s/%s: %s", meta.namespace, meta.name, e)


# ---- DataProcess: a Job after its runAfter -------------------------------------------------------


async def reconcile_process(body: Mapping[str, Any]) -> None:
    k = kube()
    proc = DataProcess.parse(body)
    after = await k.get(path(*proc.run_after)) if proc.run_after else None
    job = await k.get(path("Job", proc.meta.namespace, processing.job_name(proc)))
    status, create = processing.process_step(proc, after, job, _now())
    if create:
        await k.apply(processing.process_job(proc))
    old = body.get("status") or {}
    status["conditions"] = rc.merge_conditions(
        old.get("conditions") or [], status.get("conditions") or []
    )
    if any(old.get(key) != value for key, value in status.items()):
        await k.patch_status(path("DataProcess", proc.meta.namespace, proc.meta.name), status)


@kopf.on.resume(GROUP, VERSION, "dataprocesses")
@kopf.on.create(GROUP, VERSION, "dataprocesses")
async def dataprocess_created(body: kopf.Body, **_: Any) -> None:
    await reconcile_process(body)


@kopf.timer(GROUP, VERSION, "dataprocesses", interval=JOB_POLL, initial_delay=JOB_POLL)
async def dataprocess_tick(body: kopf.Body, status: kopf.Status, **_: Any) -> None:
    if status.get("phase") in FINAL:
        await _expire("DataProcess", body)
        return
    await reconcile_process(body)
