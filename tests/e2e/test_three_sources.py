"""One dataset with a local, an HTTP and an S3 mount, read end to end through FUSE."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from tests.integration.ufs.conftest import ACCESS_KEY, SECRET_KEY, s3_client, start_moto, stop
from tests.procs import fluidcache, running
from tests.sources import HttpSource, digests

pytestmark = pytest.mark.timeout(180)


def test_local_http_and_s3_mounts_read_correctly(tmp_path: Path) -> None:
    rng = random.Random(21)
    local, web = tmp_path / "local", tmp_path / "web"
    for root in (local, web):
        (root / "sub").mkdir(parents=True)
        (root / "a.bin").write_bytes(rng.randbytes(2 * 2**20 + 11))
        (root / "sub" / "b c.txt").write_bytes(rng.randbytes(5000))
    objects = {"x.bin": rng.randbytes(3 * 2**20 + 5), "deep/y.txt": b"why\n", "deep/z": b""}

    moto, endpoint = start_moto()
    http = HttpSource(web)
    try:
        s3 = s3_client(endpoint)
        s3.create_bucket(Bucket="data")
        for key, body in objects.items():
            s3.put_object(Bucket="data", Key=f"set/{key}", Body=body)
        env = {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
        }
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        up = fluidcache(
            "up", f"disk=local://{local}", f"web={http.url}", "objects=s3://data/set",
            "--mountpoint", str(mnt), "--block-size", "1Mi", "--data-dir", str(tmp_path / "c"),
            env=env,
        )  # fmt: skip
        with running(up, mnt):
            up.wait_for("mounted:")
            assert sorted(os.listdir(mnt)) == ["disk", "objects", "web"]
            want = {
                **{f"disk/{k}": v for k, v in digests(local).items()},
                **{f"web/{k}": v for k, v in digests(web).items()},
                **{f"objects/{k}": hashlib.sha256(v).hexdigest() for k, v in objects.items()},
            }
            assert digests(mnt) == want
    finally:
        http.stop()
        stop(moto)
