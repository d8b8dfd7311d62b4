"""Fluid 1.0's additions, as pure functions: a runtime made from a ``RuntimeProfile``, and the
Job and status of a ``DataProcess``.

Called by :mod:`fluidcache.controller.handlers`, which reads the resources and applies what
these return.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from fluidcache.controller.model import API_VERSION, DataProcess, Dataset
from fluidcache.controller.reconcile import DATASET_LABEL, condition, owner_ref

PROFILE_LABEL = "data.fluidcache.io/runtime-profile"
PROCESS_LABEL = "data.fluidcache.io/dataprocess"
DATASET_VOLUME = "fluidcache-dataset"
PENDING, EXECUTING, COMPLETE, FAILED = "Pending", "Executing", "Complete", "Failed"


def runtime_from_profile(dataset: Dataset, profile: Mapping[str, Any]) -> dict[str, Any]:
    """The ``FluidCacheRuntime`` a Dataset gets from the profile it names: the profile's spec
    (its description aside), named after the Dataset and owned by it, so it goes with it."""
    spec = copy.deepcopy(dict(profile.get("spec") or {}))
    spec.pop("description", None)
    meta = dataset.meta
    return {
        "apiVersion": API_VERSION,
        "kind": "FluidCacheRuntime",
        "metadata": {
            "name": meta.name,
            "namespace": meta.namespace,
            "labels": {
                PROFILE_LABEL: str((profile.get("metadata") or {}).get("name", "")),
                DATASET_LABEL: meta.name,
            },
            "ownerReferences": [owner_ref(API_VERSION, "Dataset", meta)],
        },
        "spec": spec,
    }


def job_name(proc: DataProcess) -> str:
    return f"{proc.meta.name}-process"[:63]


def _with_dataset(container: Mapping[str, Any], proc: DataProcess) -> dict[str, Any]:
    c = copy.deepcopy(dict(container))
    mount: dict[str, Any] = {"name": DATASET_VOLUME, "mountPath": proc.mount_path}
    if proc.sub_path:
        mount["subPath"] = proc.sub_path.lstrip("/")
    c["volumeMounts"] = [*(c.get("volumeMounts") or []), mount]
    return c


def process_job(proc: DataProcess) -> dict[str, Any]:
    """The Job that runs the processor once, the dataset's PVC (named after the dataset) at
    ``mountPath`` in every container. No retries: a failed run fails the DataProcess."""
    if proc.pod_spec:
        pod: dict[str, Any] = copy.deepcopy(dict(proc.pod_spec))
        pod["containers"] = [_with_dataset(c, proc) for c in pod.get("containers") or []]
        pod.setdefault("restartPolicy", "Never")
    else:
        s = proc.script
        image = str(s["image"]) + (f":{s['imageTag']}" if s.get("imageTag") else "")
        container: dict[str, Any] = {
            "name": "script",
            "image": image,
            "command": list(s.get("command") or ["bash", "-c"]),
            "args": [str(s["source"])],
        }
        for key in ("env", "resources", "volumeMounts", "imagePullPolicy"):
            if s.get(key):
                container[key] = copy.deepcopy(s[key])
        pod = {
            "containers": [_with_dataset(container, proc)],
            "restartPolicy": str(s.get("restartPolicy") or "Never"),
        }
        if s.get("volumes"):
            pod["volumes"] = copy.deepcopy(list(s["volumes"]))
    pod["volumes"] = [
        *(pod.get("volumes") or []),
        {"name": DATASET_VOLUME, "persistentVolumeClaim": {"claimName": proc.dataset}},
    ]
    if proc.service_account:
        pod["serviceAccountName"] = proc.service_account
    meta = proc.meta
    labels = {DATASET_LABEL: proc.dataset, PROCESS_LABEL: meta.name}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(proc),
            "namespace": meta.namespace,
            "labels": labels,
            "ownerReferences": [owner_ref(API_VERSION, "DataProcess", meta)],
        },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {
                    "labels": {**proc.pod_labels, **labels},
                    "annotations": dict(proc.pod_annotations),
                },
                "spec": pod,
            },
        },
    }


def _job_phase(job: Mapping[str, Any]) -> str:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("status") == "True" and c.get("type") in ("Complete", "Failed"):
            return COMPLETE if c["type"] == "Complete" else FAILED
    return EXECUTING


# Fluid's status.waitingFor: whether the runAfter operation has completed (the Waiting condition
# says which one it is and its phase)
WAITING: dict[str, Any] = {"operationComplete": False}
DONE: dict[str, Any] = {"operationComplete": True}


def process_step(
    proc: DataProcess,
    after: Mapping[str, Any] | None,
    job: Mapping[str, Any] | None,
    now: str,
) -> tuple[dict[str, Any], bool]:
    """The DataProcess's status, and whether its Job is to be created now.

    ``after`` is the runAfter resource (None: absent), ``job`` the Job (None: not yet made).
    Pending while runAfter is not Complete, Failed when it failed; then the Job's outcome.
    """
    if job is not None:
        phase = _job_phase(job)
        js = job.get("status") or {}
        status: dict[str, Any] = {"phase": phase, "jobName": job_name(proc), "waitingFor": DONE}
        if js.get("startTime"):
            status["startTime"] = js["startTime"]
        if js.get("completionTime"):
            status["completionTime"] = js["completionTime"]
        if phase in (COMPLETE, FAILED):
            status["conditions"] = [
                condition(phase, True, f"Job{phase}", f"job {job_name(proc)}: {phase}", now)
            ]
        return status, False
    if proc.run_after is not None:
        kind, namespace, name = proc.run_after
        ref = f"{kind} {namespace}/{name}"
        phase = str(((after or {}).get("status") or {}).get("phase") or "")
        if after is None or phase != COMPLETE:
            if phase == FAILED:
                msg = f"runAfter {ref} failed"
                return {
                    "phase": FAILED,
                    "waitingFor": WAITING,
                    "conditions": [condition(FAILED, True, "RunAfterFailed", msg, now)],
                }, False
            waiting = f"{ref} ({'not found' if after is None else phase or 'not started'})"
            return {
                "phase": PENDING,
                "waitingFor": WAITING,
                "conditions": [
                    condition("Waiting", True, "RunAfterNotComplete", f"waiting for {waiting}", now)
                ],
            }, False
    return {"phase": EXECUTING, "jobName": job_name(proc), "waitingFor": DONE}, True


__all__ = ["process_job", "process_step", "runtime_from_profile"]
