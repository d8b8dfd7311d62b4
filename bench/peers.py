"""Peer systems mounted on the same bucket: rclone (``--vfs-cache-mode full``) and s3fs-fuse.

Each mount gets an empty cache directory when it starts, so its first read is cold; both are
otherwise run with their defaults, but for rclone's ``--use-server-modtime``. A peer whose
program is not installed is reported as skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from bench.procs import Proc, unmount, wait_mounted
from bench.s3 import S3Info

PEERS = ("rclone", "s3fs")


def available(name: str) -> str | None:
    """None if the peer can run here, else why not."""
    if shutil.which(name) is None:
        return f"{name} is not installed (Debian package {name}: make bootstrap installs it)"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    return None


def version(name: str) -> str:
    argv = {"rclone": ["rclone", "version"], "s3fs": ["s3fs", "--version"]}[name]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0].strip() if first else "unknown"


def _env_without_ca_bundle() -> dict[str, str]:
    # A CA bundle set for HTTPS elsewhere makes rclone's S3 client refuse to start, even for
    # the plain-HTTP endpoint used here.
    return {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}


def argv_for(name: str, s3: S3Info, mountpoint: Path, cache: Path, passwd: Path) -> list[str]:
    if name == "rclone":
        return [
            "rclone",
            "mount",
            f"bench:{s3.bucket}",
            str(mountpoint),
            "--read-only",
            "--vfs-cache-mode",
            "full",
            # Times from the listing: otherwise every stat costs a HEAD for the object's
            # mtime metadata (120 stats/s here), which is not what this comparison is about.
            "--use-server-modtime",
            "--cache-dir",
            str(cache),
        ]
    return [
        "s3fs",
        f"{s3.bucket}",
        str(mountpoint),
        "-f",
        "-o",
        f"url={s3.endpoint},use_path_request_style,passwd_file={passwd},use_cache={cache},ro",
    ]


@contextlib.contextmanager
def mounted(name: str, s3: S3Info, workdir: Path) -> Iterator[Path]:
    """Mount the bucket with ``name`` (rclone or s3fs) and a fresh cache; yields the mount point."""
    mountpoint = workdir / f"{name}-mnt"
    cache = workdir / f"{name}-cache"
    unmount(mountpoint)
    shutil.rmtree(cache, ignore_errors=True)
    mountpoint.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True)
    passwd = workdir / f"{name}-passwd"
    passwd.write_text(f"{s3.access_key}:{s3.secret_key}\n")
    passwd.chmod(0o600)
    env = _env_without_ca_bundle()
    env.update(
        {
            "RCLONE_CONFIG_BENCH_TYPE": "s3",
            "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
            "RCLONE_CONFIG_BENCH_ENDPOINT": s3.endpoint,
            "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": s3.access_key,
            "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": s3.secret_key,
            "RCLONE_CONFIG_BENCH_REGION": s3.region,
            "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
            "RCLONE_CONFIG": str(workdir / "rclone.conf"),  # none: config from the env only
        }
    )
    proc = Proc(argv_for(name, s3, mountpoint, cache, passwd), log=workdir / f"{name}.log", env=env)
    try:
        wait_mounted(mountpoint, proc)
        yield mountpoint
    finally:
        unmount(mountpoint)
        proc.stop()
        unmount(mountpoint)
        shutil.rmtree(cache, ignore_errors=True)
