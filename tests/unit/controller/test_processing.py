"""RuntimeProfile and DataProcess: the runtime a profile makes, the Job and the status steps;
every rendered object validates for the pinned Kubernetes."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from fluidcache.controller.model import DataProcess, Runtime
from fluidcache.controller.processing import process_job, process_step, runtime_from_profile
from tests.unit.controller.samples import dataset
from tests.unit.controller.test_render import k8s_version

NOW = "2026-01-01T00:00:00Z"


def proc(**spec: Any) -> DataProcess:
    body = {
        "metadata": {"name": "count", "namespace": "ml", "uid": "u-1"},
        "spec": {
            "dataset": {"name": "demo", "mountPath": "/data"},
            "processor": {"script": {"image": "python", "imageTag": "3.11", "source": "ls /data"}},
            **spec,
        },
    }
    return DataProcess.parse(body)


AFTER = {"runAfter": {"kind": "DataLoad", "name": "warm"}}


def test_runtime_from_profile_is_owned_named_and_parses() -> None:
    profile = {
        "metadata": {"name": "mem-small"},
        "spec": {
            "description": "x",
            "replicas": 3,
            "tieredstore": {"levels": [{"mediumtype": "MEM", "quota": "2Gi"}]},
        },
    }
    body = runtime_from_profile(dataset(), profile)
    assert body["metadata"]["name"] == "demo"
    assert body["metadata"]["ownerReferences"][0]["kind"] == "Dataset"
    assert "description" not in body["spec"]
    rt = Runtime.parse(body)
    assert rt.replicas == 3 and rt.capacity("MEM") == 2 * 2**30


@pytest.mark.parametrize(
    ("spec", "after", "job", "phase", "create"),
    [
        ({}, None, None, "Executing", True),
        (AFTER, None, None, "Pending", False),
        (AFTER, {"status": {"phase": "Executing"}}, None, "Pending", False),
        (AFTER, {"status": {"phase": "Failed"}}, None, "Failed", False),
        (AFTER, {"status": {"phase": "Complete"}}, None, "Executing", True),
        (AFTER, {"status": {"phase": "Complete"}}, {"status": {"active": 1}}, "Executing", False),
        (
            AFTER,
            {"status": {"phase": "Complete"}},
            {"status": {"conditions": [{"type": "Complete", "status": "True"}]}},
            "Complete",
            False,
        ),
        (
            {},
            None,
            {"status": {"conditions": [{"type": "Failed", "status": "True"}]}},
            "Failed",
            False,
        ),
    ],
    ids=[
        "no-after",
        "after-missing",
        "after-running",
        "after-failed",
        "after-done",
        "job-running",
        "job-complete",
        "job-failed",
    ],
)
def test_process_step(spec: dict[str, Any], after: Any, job: Any, phase: str, create: bool) -> None:
    status, made = process_step(proc(**spec), after, job, NOW)
    assert (status["phase"], made) == (phase, create)
    if phase == "Pending":
        assert status["waitingFor"] == {"operationComplete": False}  # Fluid's shape
        assert "DataLoad ml/warm" in status["conditions"][0]["message"]
    elif made or job:
        assert status["waitingFor"] == {"operationComplete": True}


@pytest.mark.parametrize(
    "processor",
    [
        {"script": {"image": "python", "imageTag": "3.11", "source": "ls /data"}},
        {"job": {"podSpec": {"containers": [{"name": "c", "image": "busybox", "args": ["ls"]}]}}},
    ],
    ids=["script", "podSpec"],
)
def test_process_job_mounts_the_dataset_and_validates(processor: dict[str, Any]) -> None:
    job = process_job(proc(processor=processor))
    pod = job["spec"]["template"]["spec"]
    assert pod["volumes"][-1]["persistentVolumeClaim"]["claimName"] == "demo"
    assert all(c["volumeMounts"][-1]["mountPath"] == "/data" for c in pod["containers"])
    assert job["metadata"]["ownerReferences"][0]["kind"] == "DataProcess"
    kubernetes_validate.validate(job, k8s_version(), strict=True)
