"""The mount made with mount(2) (:mod:`fluidcache.client.devfuse`): the kernel runs lookups in
one directory at once, and the mount is gone when its process is done."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fluidcache.client.devfuse import MS_NODEV, MS_NOSUID, MS_RDONLY, DeviceRelay, mount_arguments

ROOT = Path(__file__).resolve().parents[3]


def _mounted(mountpoint: Path) -> bool:
    return f" {mountpoint} " in Path("/proc/mounts").read_text()


def test_lookups_in_one_directory_are_under_way_at_once(tmp_path: Path) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tests.fuse_probe", str(mountpoint), "4"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        if _mounted(mountpoint):
            subprocess.run(["umount", "-l", str(mountpoint)], check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["4"]  # one at a time (libfuse 3.14's own mount) gives 1
    assert not _mounted(mountpoint)


def test_options_become_the_mount_libfuse_would_make() -> None:
    got = mount_arguments(
        {"fsname=fluidcache", "subtype=fluidcache", "ro", "default_permissions", "allow_other"}
    )
    assert got == (
        "fluidcache",
        "fuse.fluidcache",
        MS_NOSUID | MS_NODEV | MS_RDONLY,
        ["allow_other", "default_permissions"],
    )
    assert mount_arguments({"debug"}) == ("fuse", "fuse", MS_NOSUID | MS_NODEV, [])


@pytest.mark.parametrize("option", ["auto_unmount", "max_read=4096", "fsname="])
def test_an_option_it_does_not_know_leaves_the_mount_to_libfuse(option: str) -> None:
    assert mount_arguments({"ro", option}) is None


def test_a_refused_mount_leaves_it_to_libfuse_and_nothing_open(tmp_path: Path) -> None:
    before = set(os.listdir("/proc/self/fd"))
    assert DeviceRelay.mount(tmp_path / "missing", {"ro"}) is None  # mount(2): ENOENT
    assert set(os.listdir("/proc/self/fd")) <= before
