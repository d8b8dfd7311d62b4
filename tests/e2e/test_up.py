"""``fluidcache up`` end to end: real master, two workers and a FUSE mount over real sources."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fluidcache.client import AsyncClient
from tests.procs import Proc, fluidcache, is_mounted, running, unmount
from tests.sources import HttpSource, digests, make_dataset

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def http_source(tmp_path: Path) -> Iterator[HttpSource]:
    make_dataset(tmp_path / "http-data")
    source = HttpSource(tmp_path / "http-data")
    try:
        yield source
    finally:
        source.stop()


def mount_digests(root: Path) -> dict[str, str]:
    return digests(root)


async def client_digests(master: str, token: str, dataset: str, ca: str = "") -> dict[str, str]:
    out = {}
    async with AsyncClient(master, token, dataset=dataset, ca=ca) as client:
        async for info in client.walk("/"):
            f = await client.open(info.path)
            h = hashlib.sha256()
            while chunk := await f.read(1_000_003):
                h.update(chunk)
            out[info.path.lstrip("/")] = h.hexdigest()
    return out


def test_up_reads_every_byte_and_second_pass_hits_cache(
    tmp_path: Path, http_source: HttpSource
) -> None:
    local = tmp_path / "local-data"
    make_dataset(local, big=3 * 2**20, small=5, seed=11)
    mnt, data = tmp_path / "mnt", tmp_path / "cluster"
    mnt.mkdir()
    up = fluidcache(
        "up",
        f"web={http_source.url}",
        f"disk=local://{local}",
        "--mountpoint",
        str(mnt),
        "--workers",
        "2",
        "--block-size",
        "1Mi",
        "--data-dir",
        str(data),
    )
    with running(up, mnt):
        master = up.wait_for("master:").split()[-1]
        up.wait_for("mounted:")
        token = (data / "token").read_text().strip()
        expected = {
            **{f"web/{k}": v for k, v in digests(http_source.root).items()},
            **{f"disk/{k}": v for k, v in digests(local).items()},
        }
        assert sorted(os.listdir(mnt)) == ["disk", "web"]
        assert sorted(os.listdir(mnt / "web" / "imgs")) == ["part 0", "part 1", "part 2"]
        assert (mnt / "web" / "big.bin").stat().st_size == (
            http_source.root / "big.bin"
        ).stat().st_size

        assert mount_digests(mnt) == expected
        cold_gets = http_source.file_gets()
        assert cold_gets > 0

        assert asyncio.run(client_digests(master, token, "default")) == expected
        subprocess.run(["sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"], check=False)
        assert mount_digests(mnt) == expected
        assert http_source.file_gets() == cold_gets, "the second pass went to the source"

        report = subprocess.run(
            [sys.executable, "-m", "fluidcache", "report", "--json", "--master", master],
            env={**os.environ, "FLUIDCACHE_TOKEN_FILE": str(data / "token")},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert report.returncode == 0, report.stderr
        figures = json.loads(report.stdout)["datasets"][0]
        assert figures["name"] == "default"
        assert figures["cached"] > 0 and figures["ufsTotal"] > 0

        up.popen.send_signal(signal.SIGINT)
        assert up.wait(30) == 0, up.output
    assert not is_mounted(mnt)
    leftover = subprocess.run(["pgrep", "-f", str(data)], capture_output=True, text=True)
    assert leftover.stdout == "", f"processes left behind: {leftover.stdout}"


def up_fails(*args: str) -> Proc:
    proc = fluidcache("up", *args)
    with running(proc):
        code = proc.wait(60)
    assert code != 0, proc.output
    return proc


def test_unparseable_source_is_refused(tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    proc = up_fails("not a uri", "--mountpoint", str(tmp_path / "mnt"))
    assert "not a uri" in proc.output


def test_unreachable_source_is_refused(tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        proc = up_fails(f"http://127.0.0.1:{port}/", "--mountpoint", str(tmp_path / "mnt"))
    assert f"127.0.0.1:{port}" in proc.output
    assert not is_mounted(tmp_path / "mnt")


def test_missing_mountpoint_is_refused(tmp_path: Path) -> None:
    proc = up_fails(f"local://{tmp_path}", "--mountpoint", str(tmp_path / "nowhere"))
    assert "mountpoint" in proc.output and "does not exist" in proc.output


def test_busy_mountpoint_is_refused(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "busy", str(mnt)], check=True)
    try:
        proc = up_fails(f"local://{tmp_path}", "--mountpoint", str(mnt))
        assert "busy" in proc.output
    finally:
        unmount(mnt)
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_port_in_use_is_refused(tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = up_fails(
            f"local://{tmp_path}", "--mountpoint", str(tmp_path / "mnt"), "--master-port", str(port)
        )
    assert f"{port} is already in use" in proc.output
