"""The S3 source of the benchmarks: s3rver (npm), which keeps objects as files.

Why s3rver: stock moto answers a ranged GET by first materialising the whole object (8 MiB
ranges of a 1 GiB object come back at ~9 MB/s), which would make every cache look good. s3rver
streams a range straight from the object's file (``fs.createReadStream(path, {start, end})``),
so a range costs in proportion to its size. It is pinned (``bench/s3rver/package-lock.json``) and
installed on first use with ``npm ci`` into ``bench/s3rver/node_modules``.

The bucket is seeded by placing files in s3rver's store, in its own layout
(``BUCKET/KEY._S3rver_object`` with ``.md5`` and ``._S3rver_metadata.json`` beside it): hard
links of the data files, so seeding gigabytes takes no time and no space, where PUTs through
s3rver run at ~50 MB/s. Everything else (listing, HEAD, GET, ranges, SigV4) is s3rver's own.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.data import Data
from bench.procs import Proc
from bench.sources import free_port

S3RVER_DIR = Path(__file__).parent / "s3rver"
BUCKET = "bench"
ACCESS_KEY = "S3RVER"  # s3rver's built-in credentials
SECRET_KEY = "S3RVER"
REGION = "us-east-1"
EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"
METADATA = json.dumps({"content-type": "application/octet-stream"})


class Unavailable(Exception):
    """The S3 server cannot be run here; the message says why."""


@dataclass(frozen=True)
class S3Info:
    """Where the bucket is, and how to sign for it."""

    endpoint: str
    bucket: str = BUCKET
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION

    def env(self) -> dict[str, str]:
        """Environment for processes that read it through botocore (fluidcache's S3 adapter)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
        }


def s3rver_binary() -> Path:
    """s3rver's launcher, installed with ``npm ci`` on first use; Unavailable if it cannot be."""
    binary = S3RVER_DIR / "node_modules" / ".bin" / "s3rver"
    if binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise Unavailable("node and npm are not installed (Debian: apt-get install nodejs npm)")
    proc = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=S3RVER_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0 or not binary.exists():
        raise Unavailable(f"npm ci of s3rver failed: {proc.stderr.strip()[-500:]}")
    return binary


def s3rver_version() -> str:
    try:
        meta = json.loads((S3RVER_DIR / "node_modules" / "s3rver" / "package.json").read_text())
        return str(meta["version"])
    except (OSError, ValueError, KeyError):
        return "unknown"


def _put(store: Path, key: str, source: Path | None, digest: str) -> bool:
    obj = store / BUCKET / f"{key}._S3rver_object"
    if obj.exists():
        return False
    obj.parent.mkdir(parents=True, exist_ok=True)
    if source is None:
        obj.touch()
    else:
        os.link(source, obj)
    Path(f"{obj}.md5").write_text(digest)
    (store / BUCKET / f"{key}._S3rver_metadata.json").write_text(METADATA)
    return True


def seed(store: Path, data: Data, prefix: str = "") -> int:
    """Put every data file under ``prefix`` in the bucket; the number of objects added.

    Each directory also gets an empty folder-marker object (``dir/``, as the S3 console's
    "create folder" makes): s3rver 3.7.1 finds a common prefix only through an object directly
    under it, so without markers ``small/`` (which holds only ``part-NN/`` prefixes) would not
    be listed at the bucket's root.
    """
    added = 0
    dirs: set[str] = set()
    for key, digest in data.md5.items():
        if prefix and not key.startswith(prefix):
            continue
        added += _put(store, key, data.root / key, digest)
        parts = key.split("/")[:-1]
        dirs.update("/".join(parts[: i + 1]) + "/" for i in range(len(parts)))
    for d in sorted(dirs):
        added += _put(store, d, None, EMPTY_MD5)
    return added


@contextlib.contextmanager
def s3rver(store: Path, log: Path) -> Iterator[str]:
    """s3rver serving ``store`` on a free port of 127.0.0.1; yields its endpoint URL."""
    binary = s3rver_binary()
    (store / BUCKET).mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [str(binary), "-d", str(store), "-a", "127.0.0.1", "-p", str(port), "--silent"]
    # s3rver makes ListObjectsV2 continuation tokens with DES, which Node 17+ (OpenSSL 3) only
    # offers through the legacy provider: without it every listing past one page fails (500).
    env = {**os.environ, "NODE_OPTIONS": "--openssl-legacy-provider"}
    proc = Proc(argv, log=log, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if not proc.alive() or time.monotonic() > deadline:
                raise Unavailable(f"s3rver did not start: {proc.tail()}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()
