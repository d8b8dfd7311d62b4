"""``fluidcache up -f``: the Kubernetes sample of a model cache (MEM + SSD levels, two workers),
run on this machine and read byte-exact through the FUSE mount, as the cluster's PVC shows it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.procs import fluidcache, running
from tests.sources import digests, make_dataset

pytestmark = pytest.mark.timeout(180)
SAMPLE = Path(__file__).resolve().parents[2] / "k8s/samples/model-cache.yaml"


def test_up_file_mounts_the_sample_dataset_byte_exact(tmp_path: Path) -> None:
    models = tmp_path / "models"
    make_dataset(models, big=3 * 2**20, small=8, seed=5)
    docs = list(yaml.safe_load_all(SAMPLE.read_text()))
    # the one change: the node's /mnt/models is this test's directory
    docs[0]["spec"]["mounts"][0]["mountPoint"] = f"local://{models}"
    spec = tmp_path / "models.yaml"
    spec.write_text(yaml.safe_dump_all(docs))
    mnt, data = tmp_path / "mnt", tmp_path / "cluster"
    mnt.mkdir()
    up = fluidcache("up", "-f", str(spec), "--mountpoint", str(mnt), "--data-dir", str(data))
    with running(up, mnt):
        assert up.wait_for("workers:").split()[-1] == "2"  # replicas
        up.wait_for("mounted:")
        expected = {f"models/{k}": v for k, v in digests(models).items()}
        assert digests(mnt) == expected  # cold: fetched from the source
        assert digests(mnt) == expected  # warm: from the cache
        # the runtime's second level (SSD) is each worker's second tier
        assert all((data / "ssd" / "ssd-1" / f"worker-{i}").is_dir() for i in range(2))
