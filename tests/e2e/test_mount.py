"""The FUSE mount against its source: bytes, listings, concurrency, errno, xattrs, fio, recovery."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fluidcache.client.fuse import MAX_BACKGROUND, fusectl
from tests.procs import Proc, fluidcache, is_mounted, running, unmount
from tests.sources import HttpSource, NginxSource, digests

pytestmark = pytest.mark.timeout(180)
FIO = shutil.which("fio")


@dataclass
class Mounted:
    src: Path
    mnt: Path
    data: Path
    master: str
    up: Proc


def make_source(root: Path) -> None:
    rng = random.Random(5)
    (root / "nested" / "deeper").mkdir(parents=True)
    (root / "big.bin").write_bytes(rng.randbytes(7 * 2**20 + 4321))
    (root / "nested" / "small.txt").write_text("hello fluidcache\n")
    (root / "nested" / "deeper" / "x y#z%.dat").write_bytes(rng.randbytes(70_000))
    (root / "empty").write_bytes(b"")
    wide = root / "wide"
    wide.mkdir()
    for i in range(2500):
        (wide / f"f{i:05d}").write_bytes(i.to_bytes(4, "big"))
    if FIO:
        for rw in ("seq", "rand"):
            subprocess.run(
                [FIO, f"--name={rw}", f"--filename={root / f'fio-{rw}.dat'}", "--rw=write",
                 "--bs=64k", "--size=8m", "--verify=crc32c", "--do_verify=0",
                 "--output-format=terse", "--verify_state_save=0"],
                check=True, capture_output=True, cwd=root,
            )  # fmt: skip


@pytest.fixture(scope="module")
def mounted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mounted]:
    root = tmp_path_factory.mktemp("mount")
    src, mnt, data = root / "src", root / "mnt", root / "cluster"
    src.mkdir()
    mnt.mkdir()
    make_source(src)
    up = fluidcache(
        "up", f"local://{src}", "--mountpoint", str(mnt), "--block-size", "1Mi",
        "--data-dir", str(data),
    )  # fmt: skip
    with running(up, mnt):
        master = up.wait_for("master:").split()[-1]
        up.wait_for("mounted:")
        yield Mounted(src, mnt, data, master, up)


def test_listing_and_sizes_equal_the_source(mounted: Mounted) -> None:
    def tree(root: Path) -> dict[str, int]:
        out = {}
        for dirpath, dirs, files in os.walk(root):
            for name in dirs + files:
                p = Path(dirpath) / name
                out[str(p.relative_to(root))] = -1 if p.is_dir() else p.stat().st_size
        return out

    assert tree(mounted.mnt) == tree(mounted.src)
    assert sorted(os.listdir(mounted.mnt / "wide")) == sorted(os.listdir(mounted.src / "wide"))


def test_sequential_reads_are_byte_exact(mounted: Mounted) -> None:
    assert digests(mounted.mnt) == digests(mounted.src)


def test_random_offset_reads_are_byte_exact(mounted: Mounted) -> None:
    rng = random.Random(1)
    name = "big.bin"
    size = (mounted.src / name).stat().st_size
    fd_m = os.open(mounted.mnt / name, os.O_RDONLY)
    fd_s = os.open(mounted.src / name, os.O_RDONLY)
    try:
        for _ in range(300):
            off = rng.randrange(0, size + 10)
            n = rng.choice([1, 17, 4096, 65536, 300_000, 2**20 + 3])
            assert os.pread(fd_m, n, off) == os.pread(fd_s, n, off), (off, n)
    finally:
        os.close(fd_m)
        os.close(fd_s)


def test_concurrent_threads_and_processes_read_the_same_bytes(mounted: Mounted) -> None:
    want = hashlib.sha256((mounted.src / "big.bin").read_bytes()).hexdigest()
    script = "import hashlib,sys;print(hashlib.sha256(open(sys.argv[1],'rb').read()).hexdigest())"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(mounted.mnt / "big.bin")],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    got: list[str] = []

    def read(offset: int) -> None:
        with open(mounted.mnt / "big.bin", "rb") as f:
            f.seek(offset)
            head = f.read(offset)
            f.seek(0)
            got.append(hashlib.sha256(f.read()).hexdigest() if head is not None else "")

    threads = [threading.Thread(target=read, args=(i * 100_000,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert outs == [want] * 4
    assert got == [want] * 8


def err(fn: object, *args: object) -> int:
    try:
        fn(*args)  # type: ignore[operator]
    except OSError as e:
        return e.errno or 0
    return 0


def test_errno(mounted: Mounted) -> None:
    m = mounted.mnt
    assert err(os.stat, m / "missing") == errno.ENOENT
    assert err(open, m / "nested" / "missing.txt", "rb") == errno.ENOENT
    assert err(os.listdir, m / "big.bin") == errno.ENOTDIR
    assert err(os.stat, m / "big.bin" / "x") == errno.ENOTDIR
    fd = os.open(m / "nested", os.O_RDONLY)
    try:
        assert err(os.read, fd, 10) == errno.EISDIR
    finally:
        os.close(fd)
    assert err(open, m / "big.bin", "r+b") == errno.EROFS
    assert err(open, m / "new.txt", "wb") == errno.EROFS
    assert err(os.mkdir, m / "newdir") == errno.EROFS
    assert err(os.unlink, m / "empty") == errno.EROFS
    assert err(os.rename, m / "empty", m / "empty2") == errno.EROFS
    assert (m / "empty").read_bytes() == b""


def test_cached_fraction_xattr(mounted: Mounted) -> None:
    path = mounted.mnt / "nested" / "deeper" / "x y#z%.dat"
    assert "user.fluidcache.cached" in os.listxattr(path)
    path.read_bytes()
    deadline = 50
    for _ in range(deadline):
        if float(os.getxattr(path, "user.fluidcache.cached")) == 1.0:
            break
        threading.Event().wait(0.1)
    assert float(os.getxattr(path, "user.fluidcache.cached")) == 1.0
    assert err(os.getxattr, path, "user.other") == errno.ENODATA


def test_statfs_reports_capacity(mounted: Mounted) -> None:
    st = os.statvfs(mounted.mnt)
    assert st.f_blocks * st.f_frsize >= 2 * 2**30  # two workers with 1 GiB MEM each
    assert st.f_files >= 2500


def test_the_kernel_keeps_many_read_ahead_requests_in_flight(mounted: Mounted) -> None:
    """Past 9 background requests (the kernel's default) 16 readers of small files read 4 KiB
    pages one at a time; the mount raises the bound (and the read-ahead, 128 KiB by default),
    and leaves no fusectl mounted behind."""
    assert "fluidcache-fusectl" not in Path("/proc/mounts").read_text()
    dev = os.stat(mounted.mnt).st_dev
    bdi = Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}")
    assert int((bdi / "read_ahead_kb").read_text()) == 4096
    with fusectl() as ctl:
        conn = ctl / str(os.minor(dev))
        assert int((conn / "max_background").read_text()) == MAX_BACKGROUND
        assert int((conn / "congestion_threshold").read_text()) == MAX_BACKGROUND * 3 // 4


@pytest.mark.skipif(FIO is None, reason="fio is installed by scripts/bootstrap.sh")
@pytest.mark.parametrize(("name", "rw"), [("seq", "read"), ("rand", "randread")])
def test_fio_verifies_reads(mounted: Mounted, name: str, rw: str) -> None:
    assert FIO is not None
    out = subprocess.run(
        [FIO, f"--name={name}", f"--filename={mounted.mnt / f'fio-{name}.dat'}", f"--rw={rw}",
         "--bs=64k", "--size=8m", "--verify=crc32c", "--numjobs=4", "--group_reporting",
         "--readonly", "--verify_state_save=0"],
        capture_output=True, text=True, timeout=120, cwd=mounted.src.parent,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "verify failed" not in out.stdout + out.stderr
    assert "err= 0" in out.stdout


def test_stale_mount_is_cleaned_up_by_the_next_mount(mounted: Mounted, tmp_path: Path) -> None:
    mnt = tmp_path / "again"
    mnt.mkdir()
    env = {"FLUIDCACHE_TOKEN_FILE": str(mounted.data / "token")}
    args = ("mount", "default", str(mnt), "--master", mounted.master)
    first = fluidcache(*args, env=env)
    with running(first, mnt):
        first.wait_for("ready:")
        assert (mnt / "nested" / "small.txt").read_text() == "hello fluidcache\n"
        first.stop(signal.SIGKILL)
        assert err(os.statvfs, mnt) == errno.ENOTCONN
        second = fluidcache(*args, env=env)
        with running(second, mnt):
            second.wait_for("ready:")
            assert (mnt / "nested" / "small.txt").read_text() == "hello fluidcache\n"
            second.popen.send_signal(signal.SIGTERM)
            assert second.wait(20) == 0
        assert not is_mounted(mnt)
    unmount(mnt)


@contextlib.contextmanager
def up_over(http: HttpSource | NginxSource, tmp_path: Path) -> Iterator[Path]:
    """``fluidcache up`` over the HTTP source ``http``, mounted; yields the mount point. The
    source is stopped at the end."""
    mnt, data = tmp_path / "mnt", tmp_path / "cluster"
    mnt.mkdir()
    try:
        up = fluidcache("up", http.url, "--mountpoint", str(mnt), "--data-dir", str(data))
        with running(up, mnt):
            up.wait_for("mounted:")
            yield mnt
    finally:
        http.stop()


def test_unreachable_source_gives_eio_not_a_hang(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(100_000))
    (src / "b.bin").write_bytes(os.urandom(100_000))
    http = HttpSource(src)
    with up_over(http, tmp_path) as mnt:
        assert sorted(os.listdir(mnt)) == ["a.bin", "b.bin"]
        assert (mnt / "a.bin").read_bytes() == (src / "a.bin").read_bytes()
        http.stop()
        assert (mnt / "a.bin").read_bytes() == (src / "a.bin").read_bytes()  # cached
        assert err((mnt / "b.bin").read_bytes) == errno.EIO


def test_a_changed_source_file_is_seen_after_the_ttl(tmp_path: Path) -> None:
    src, mnt = tmp_path / "src", tmp_path / "mnt"
    src.mkdir()
    mnt.mkdir()
    (src / "f.txt").write_bytes(b"old contents\n" * 100)
    up = fluidcache(
        "up", f"local://{src}", "--mountpoint", str(mnt), "--ttl", "1",
        "--data-dir", str(tmp_path / "cluster"),
    )  # fmt: skip
    with running(up, mnt):
        up.wait_for("mounted:")
        assert (mnt / "f.txt").read_bytes() == b"old contents\n" * 100
        new = b"new, longer contents\n" * 150
        (src / "f.txt").write_bytes(new)
        seen = b""
        for _ in range(100):  # the master's TTL, then the mount's metadata TTL
            seen = (mnt / "f.txt").read_bytes()
            if seen == new:
                break
            threading.Event().wait(0.2)
        assert seen == new
        assert (mnt / "f.txt").stat().st_size == len(new)


def test_a_file_changed_after_listing_is_read_whole_at_its_new_version(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "g.bin").write_bytes(b"listed\n" * 1000)
    http = NginxSource(src, tmp_path / "nginx")  # exact sizes: listed without versions
    with up_over(http, tmp_path) as mnt:
        assert (mnt / "g.bin").stat().st_size == 7000  # as listed: the kernel keeps it
        new = os.urandom(20_000)
        (src / "g.bin").write_bytes(new)  # grown before anyone opens it
        assert (mnt / "g.bin").read_bytes() == new
        assert (mnt / "g.bin").stat().st_size == len(new)
