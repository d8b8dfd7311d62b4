"""Upstream Fluid's CacheRuntimeClass entries (``fluidcache fluid ...``) against a real master
and worker: the JSON Fluid parses, and a DataLoad from Fluid's environment variables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fluidcache.fluid import dataload_requests, mount_paths
from tests.cluster import Cluster

pytestmark = pytest.mark.timeout(120)
FILES = {"a/x.bin": os.urandom(300_000), "a/y.bin": os.urandom(5000), "b/z.bin": os.urandom(7)}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    for rel, blob in FILES.items():
        (tmp_path / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / rel).write_bytes(blob)
    fc = Cluster(tmp_path / "fc")
    try:
        fc.start_master(f"models=local://{tmp_path / 'src'}", extra=("--dataset", "models"))
        fc.start_worker("w1", f"MEM:{tmp_path / 'w1'}:64Mi")
        fc.start_worker("w2", f"MEM:{tmp_path / 'w2'}:64Mi")
        yield fc
    finally:
        fc.stop()


def entry(fc: Cluster, name: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    token = fc.root / "token.txt"
    token.write_text(fc.token)
    return subprocess.run(
        [sys.executable, "-m", "fluidcache", "fluid", name, "--master", fc.master_url, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "FLUIDCACHE_TOKEN_FILE": str(token),
            "FLUID_DATASET_NAME": "models",
            **env,
        },
    )


def test_mount_ufs_prints_the_mounted_paths(cluster: Cluster, tmp_path: Path) -> None:
    config = {  # Fluid's runtime.json, as its docs show it
        "mounts": [
            {"name": "models", "mountPoint": "https://files.example/models", "path": "/models"},
            {"name": "gone", "mountPoint": "s3://nowhere", "path": "/gone"},
            # Fluid's native scheme: Fluid checks no path for it, so none is listed
            {"name": "host", "mountPoint": f"local://{tmp_path}/src", "path": "/host"},
        ],
        "master": {"name": "models-master", "replicas": 1},
    }
    (tmp_path / "runtime.json").write_text(json.dumps(config))
    out = entry(cluster, "mount-ufs", "--config", str(tmp_path / "runtime.json"))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"mounted": ["/models"]}
    assert "not mounted: /gone" in out.stderr
    assert "/host" not in out.stderr


def test_dataload_from_fluid_env_then_report_summary(cluster: Cluster) -> None:
    out = entry(
        cluster,
        "dataload",
        FLUID_DATALOAD_METADATA="true",
        FLUID_DATALOAD_DATA_PATH="/models/a:/models/b",
        FLUID_DATALOAD_PATH_REPLICAS="2:1",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""  # messages only on stderr
    assert "load /models/a: Complete" in out.stderr
    summary = entry(cluster, "report-summary")
    assert summary.returncode == 0, summary.stderr
    report = json.loads(summary.stdout)
    assert set(report) == {
        "cached",
        "cacheCapacity",
        "cachedPercentage",
        "cacheHitRatio",
        "fileNum",
        "ufsTotal",
    }
    assert all(isinstance(v, str) for v in report.values())  # Fluid's struct: strings
    assert report["fileNum"] == "3"
    assert report["cachedPercentage"] == "100.0"
    assert report["cacheCapacity"] == "128.00MiB"


def test_a_failed_dataload_exits_non_zero(cluster: Cluster) -> None:
    out = entry(cluster, "dataload", FLUID_DATALOAD_DATA_PATH="/models/nope")
    assert out.returncode != 0


def test_fluid_env_parsing() -> None:
    reqs = dataload_requests(
        {"FLUID_DATALOAD_DATA_PATH": "/a:/b", "FLUID_DATALOAD_PATH_REPLICAS": "all:3"}, "d"
    )
    assert [(r.paths, r.replicas) for r in reqs] == [(["/a"], -1), (["/b"], 3)]
    assert mount_paths({"mounts": [{"mountPoint": "s3://b/x"}]}) == ["/"]
    named = [
        {"mountPoint": "s3://b/x", "name": "x", "path": "relative"},  # Fluid: /<name>
        {"mountPoint": "https://h/y", "name": "y", "path": "/data/y"},
        {"mountPoint": "local:///z", "name": "z"},
        {"mountPoint": "pvc://claim/w", "name": "w"},
    ]
    assert mount_paths({"mounts": named}) == ["/x", "/data/y"]
