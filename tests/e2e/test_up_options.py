"""``fluidcache up`` with source options (an HTTP source behind Basic auth), its default sizing
(a MEM and an SSD level per worker) and its warning when the dataset exceeds the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fluidcache.client import AsyncClient
from fluidcache.common.protocol import Report
from tests.e2e.test_up import up_fails
from tests.procs import Proc, fluidcache, is_mounted, running, unmount
from tests.sources import BasicAuthSource, digests, make_dataset

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def auth_source(tmp_path: Path) -> Iterator[BasicAuthSource]:
    make_dataset(tmp_path / "www", big=3 * 2**20 + 5, small=6, seed=5)
    source = BasicAuthSource(tmp_path / "www", tmp_path / "nginx", "alice", "s3cret pass")
    try:
        yield source
    finally:
        source.stop()


def credentials(path: Path, password: str = "s3cret pass") -> Path:
    path.write_text(f"username=alice\npassword={password}\n")
    path.chmod(0o600)
    return path


def nothing_left(data: Path) -> None:
    leftover = subprocess.run(["pgrep", "-f", str(data)], capture_output=True, text=True)
    assert leftover.stdout == "", f"processes left behind: {leftover.stdout}"


async def report(master: str, token: str) -> Report:
    async with AsyncClient(master, token) as client:
        return await client.report()


def test_basic_auth_source_reads_through_the_mount(
    tmp_path: Path, auth_source: BasicAuthSource
) -> None:
    mnt, data = tmp_path / "mnt", tmp_path / "cluster"
    mnt.mkdir()
    common = ["--mountpoint", str(mnt), "--workers", "1", "--block-size", "1Mi"]
    refused = up_fails(f"web={auth_source.url}", *common, "--data-dir", str(data))
    assert "401" in refused.output or "denied" in refused.output.lower(), refused.output

    wrong = credentials(tmp_path / "wrong.cred", "not it")
    refused = up_fails(f"web={auth_source.url}", *common, f"--option=web.credentials_file={wrong}")
    assert auth_source.url in refused.output

    cred = credentials(tmp_path / "web.cred")
    up = fluidcache(
        "up",
        f"web={auth_source.url}",
        *common,
        "--data-dir",
        str(data),
        "--option",
        f"web.credentials_file={cred}",
        "--option",
        "web.retries=1",
    )
    with running(up, mnt):
        up.wait_for("mounted:")
        assert sorted(os.listdir(mnt)) == ["web"]
        assert digests(mnt / "web") == digests(auth_source.root)
        assert "s3cret" not in (data / "logs" / "master.log").read_text()
        up.popen.send_signal(signal.SIGINT)
        assert up.wait(30) == 0, up.output
    assert not is_mounted(mnt)
    nothing_left(data)


@pytest.mark.parametrize(
    ("option", "named"),
    [
        ("web.colour=red", "web.colour"),  # an option the HTTP adapter does not read
        ("zz.timeout=3", "'zz'"),  # no such source
        ("web.timeout", "web.timeout"),  # no value
        ("timeout=3", "'timeout'"),  # sources are named: NAME.KEY=VALUE
        ("web.password=hunter2", "web.password"),  # a credential inline
    ],
)
def test_bad_option_is_refused_naming_it(tmp_path: Path, option: str, named: str) -> None:
    (tmp_path / "mnt").mkdir()
    data = tmp_path / "cluster"
    proc = up_fails(
        "web=http://127.0.0.1:9/",
        "--mountpoint",
        str(tmp_path / "mnt"),
        "--data-dir",
        str(data),
        "--option",
        option,
    )
    assert named in proc.output, proc.output
    assert "hunter2" not in proc.output
    assert not data.exists(), "up started something before refusing"
    nothing_left(data)


def test_master_refuses_an_unknown_option(tmp_path: Path) -> None:
    proc = fluidcache(
        "master",
        f"local://{tmp_path}",
        "--data-dir",
        str(tmp_path / "m"),
        "--option",
        "timeout=3",
        env={"FLUIDCACHE_TOKEN": "t0ken"},
    )
    with running(proc):
        assert proc.wait(30) != 0
    assert "option timeout: local:// sources have no option 'timeout'" in proc.output
    assert not (tmp_path / "m").exists()


def mem_root(up: Proc) -> Path:
    """Where ``up`` keeps its workers' MEM levels."""
    return Path(f"/dev/shm/fluidcache-{up.popen.pid}")


def mount_options(path: Path) -> str:
    """The options of the mount at ``path`` (from /proc/mounts); "" if nothing is mounted there."""
    with open("/proc/mounts") as f:
        found = [line.split()[3] for line in f if line.split()[1] == str(path)]
    return found[-1] if found else ""


def test_default_up_has_an_ssd_level_removed_with_its_temporary_dir(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_dataset(src, big=2 * 2**20, small=3, seed=3)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    # The MEM tmpfs of an up killed before it could stop: the next up removes it.
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = Path(f"/dev/shm/fluidcache-{gone.pid}")
    stale.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1M", "fluidcache-mem", str(stale)], check=True
    )
    up = fluidcache("up", f"local://{src}", "--mountpoint", str(mnt), "--workers", "2")
    with contextlib.ExitStack() as cleanup, running(up, mnt):
        cleanup.callback(shutil.rmtree, stale, True)
        cleanup.callback(unmount, stale)
        master = up.wait_for("master:").split()[-1]
        cache = up.wait_for("cache:")
        m = re.search(r"SSD [\d.]+ [MG]B at (\S+)\)", cache)
        assert m, cache
        ssd = Path(m.group(1))
        assert ssd.parent.name.startswith("fluidcache-up-"), cache  # inside the temporary dir
        assert up.wait_for("dataset").startswith("dataset 2.") and "fits" in up.output
        token = (ssd.parent / "token").read_text().strip()
        r = asyncio.run(report(master, token))
        assert len(r.workers) == 2
        for w in r.workers:
            tiers = {t.medium: t.capacity for t in w.tiers}
            assert tiers.get("MEM") == 2**30, w
            assert tiers.get("SSD", 0) > 0, w
        assert sorted(p.name for p in ssd.iterdir()) == ["worker-0", "worker-1"]
        assert mount_options(stale) == "" and not stale.exists(), "a stale MEM tmpfs stayed"
        # As root, the MEM levels are on a tmpfs of up's own, with huge pages for whole ones.
        mem = mem_root(up)
        assert "huge=within_size" in mount_options(mem), mount_options(mem)
        assert (mnt / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
        assert any(f.stat().st_size == 2 * 2**20 for f in mem.rglob("*") if f.is_file())
        up.popen.send_signal(signal.SIGTERM)
        assert up.wait(30) == 0, up.output
    assert not ssd.exists(), "the temporary SSD level outlived up"
    assert mount_options(mem) == "" and not mem.exists(), "the MEM tmpfs outlived up"


def test_up_with_no_listing_lists_directories_only_when_used(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_dataset(src, big=2 * 2**20, small=6, seed=5)
    mnt, data = tmp_path / "mnt", tmp_path / "cluster"
    mnt.mkdir()
    argv = ["--mountpoint", str(mnt), "--data-dir", str(data), "--workers", "1", "--no-listing"]
    up = fluidcache("up", f"local://{src}", *argv, "--no-huge-pages")
    with running(up, mnt):
        master = up.wait_for("master:").split()[-1]
        up.wait_for("mounted:")
        assert mount_options(mem_root(up)) == ""  # --no-huge-pages: a plain /dev/shm directory
        assert (mnt / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
        with pytest.raises(AssertionError):
            up.wait_for("dataset", timeout=5)  # without --no-listing: within a second
        token = (data / "token").read_text().strip()
        # Only the root was listed: its two files, none of the six under imgs/.
        assert asyncio.run(report(master, token)).file_count == 2
    nothing_left(data)


def test_up_says_when_the_dataset_exceeds_the_cache(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_dataset(src, big=12 * 2**20, small=3, seed=4)
    size = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    mnt, data = tmp_path / "mnt", tmp_path / "cluster"
    mnt.mkdir()
    up = fluidcache(
        "up",
        f"local://{src}",
        "--mountpoint",
        str(mnt),
        "--data-dir",
        str(data),
        "--workers",
        "1",
        "--block-size",
        "1Mi",
        "--mem-quota",
        "4Mi",
        "--ssd-quota",
        "0",
    )
    with running(up, mnt):
        line = up.wait_for("dataset")
        fits = round(100 * 4 * 2**20 / size)
        assert line == (
            f"dataset {size / 1e6:.1f} MB > cache capacity {4 * 2**20 / 1e6:.1f} MB: "
            f"{fits}% fits; add room with --ssd-quota, --mem-quota or --workers"
        ), up.output
        assert "SSD" not in up.wait_for("cache:")
        assert not (data / "ssd").exists()
    nothing_left(data)


def test_up_with_mem_prealloc_writes_blocks_into_spares_and_removes_them(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_dataset(src, big=12 * 2**20 + 5, small=4, seed=9)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    argv = ["--mountpoint", str(mnt), "--workers", "1", "--mem-quota", "64Mi"]
    up = fluidcache("up", f"local://{src}", *argv, "--mem-prealloc", "24Mi")
    with running(up, mnt):
        up.wait_for("mounted:")
        level = mem_root(up) / "worker-0"
        spares = sorted(p.name for p in level.iterdir() if p.name.startswith(".spare-"))
        assert len(spares) == 6, spares  # 24 MiB of 4 MiB spares, made before the worker served
        assert digests(mnt) == digests(src)  # the big file's 4 MiB blocks went into 3 of them
        left = [p for p in level.iterdir() if p.name.startswith(".spare-")]
        assert len(left) == 3 and all(p.stat().st_size == 4 * 2**20 for p in left)
        up.popen.send_signal(signal.SIGTERM)
        assert up.wait(30) == 0, up.output
    assert not mem_root(up).exists()


def test_a_bad_mem_prealloc_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    proc = up_fails("local:///tmp", "--mountpoint", str(tmp_path / "mnt"), "--mem-prealloc", "lots")
    assert "mem-prealloc" in proc.output, proc.output
