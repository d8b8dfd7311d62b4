"""Every sample in k8s/samples/ applies to the real control plane, unchanged, and reaches its
expected phase.

kwok runs no containers, so the masters the controller deploys never answer: once a sample is
applied, the test points each runtime at the fluidcache master running on the host
(``spec.master.endpoint``, with its token in the Secret the controller would otherwise make).
That master serves the ``models`` dataset the DataLoad and DataProcess samples use.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import NS, ROOT, Env, running_env, wait_for

SAMPLES = ROOT / "k8s/samples"
FILES = {f"llama/shard-{i}.safetensors": os.urandom(150_000 + i) for i in range(3)}
DATASETS = ("hbase", "imagenet", "models", "docs", "llm")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("samples")
    # the samples' runtimes have 8 workers in all; Exclusive placement (Fluid's default) gives
    # each node one dataset's workers
    with running_env(root, FILES, master_dataset="models", nodes=8) as e:
        e.fc.start_worker("w2", f"MEM:{root / 'w2'}:64Mi", node="host2")  # replicas: 2
        e.token_secrets(*DATASETS)
        yield e


def apply_sample(env: Env, name: str) -> None:
    out = env.cp.kubectl("apply", "-n", NS, "-f", str(SAMPLES / name), check=False)
    assert out.returncode == 0, out.stderr


def use_host_master(env: Env, name: str) -> None:
    wait_for(f"runtime {name}", lambda: env.get("fluidcacheruntime", name, "-n", NS))
    patch = json.dumps({"spec": {"master": {"endpoint": env.fc.master_url}}})
    env.kubectl("patch", "fluidcacheruntime", name, "-n", NS, "--type=merge", "-p", patch)


def reaches(env: Env, kind: str, name: str, phase: str, timeout: float = 120) -> Any:
    def check() -> Any:
        obj = env.get(kind, name, "-n", NS)
        return obj.get("status", {}).get("phase") == phase and obj

    return wait_for(f"{kind} {name} {phase}", check, timeout=timeout)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("sample", "dataset"),
    [
        ("model-cache.yaml", "models"),
        ("http-dataset.yaml", "hbase"),
        ("s3-dataset.yaml", "imagenet"),
        ("runtimeprofile.yaml", "docs"),
        ("hf-model.yaml", "llm"),
    ],
)
def test_dataset_samples_are_bound(env: Env, sample: str, dataset: str) -> None:
    apply_sample(env, sample)
    use_host_master(env, dataset)
    ds = reaches(env, "dataset", dataset, "Bound", timeout=180)
    rt = wait_for(
        f"{dataset}'s workers Ready",
        lambda: (
            (r := env.get("fluidcacheruntime", dataset, "-n", NS))["status"].get("workerPhase")
            == "Ready"
            and r
        ),
    )
    assert len(ds["status"]["nodes"]) == rt["spec"]["replicas"]


@pytest.mark.timeout(200)
def test_dataload_sample_completes_and_its_cron_load_is_scheduled(env: Env) -> None:
    apply_sample(env, "dataload.yaml")
    load = reaches(env, "dataload", "models-warmup", "Complete")
    total = sum(len(b) for b in FILES.values())
    assert load["status"]["progress"]["bytesDone"] == total
    nightly = wait_for(
        "the cron load's job",
        lambda: (
            (d := env.get("dataload", "models-nightly", "-n", NS))["status"].get("jobIds") and d
        ),
    )
    assert nightly["status"]["phase"] == "Pending"  # waits for 02:00


@pytest.mark.timeout(200)
def test_dataprocess_sample_runs_after_its_load(env: Env) -> None:
    apply_sample(env, "dataprocess.yaml")
    reaches(env, "dataload", "models-load", "Complete")
    proc = reaches(env, "dataprocess", "models-check", "Complete")
    assert proc["status"]["jobName"] == "models-check-process"


def test_every_sample_is_covered() -> None:
    tested = {
        "model-cache.yaml",
        "http-dataset.yaml",
        "s3-dataset.yaml",
        "runtimeprofile.yaml",
        "hf-model.yaml",
        "dataload.yaml",
        "dataprocess.yaml",
    }
    assert {p.name for p in Path(SAMPLES).glob("*.yaml")} == tested
