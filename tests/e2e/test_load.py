"""Warm-up jobs on a real cluster: replicas, peer fan-out, pin and free, schedules, ordering,
a master killed mid-load, progress output and bad input. The source is nginx, whose access log
(method, path, status, bytes sent, Range) tells exactly which bytes each read cost."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import pty
import random
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from bench.sources import nginx
from fluidcache.client import Client
from fluidcache.common.http import RpcClient
from fluidcache.common.protocol import BLOCK_LOCATIONS, LocationsReply, LocationsRequest
from tests.cluster import Cluster, cluster
from tests.procs import mounted

pytestmark = pytest.mark.timeout(240)
BLOCK = 1 << 20


def make_source(root: Path) -> dict[str, bytes]:
    """A few multi-block files and small ones in a subdirectory; returns path -> bytes."""
    rng = random.Random(11)
    files = {
        "/big.bin": rng.randbytes(5 * BLOCK + 777),
        "/mid.bin": rng.randbytes(2 * BLOCK),
        **{f"/small/s{i}.bin": rng.randbytes(rng.randint(1, 200_000)) for i in range(12)},
    }
    for path, data in files.items():
        (root / path[1:]).parent.mkdir(parents=True, exist_ok=True)
        (root / path[1:]).write_bytes(data)
    return files


def access(workdir: Path) -> list[tuple[str, str, int, int, str]]:
    """nginx's log: (method, path, status, bytes sent, Range header) per request."""
    out = []
    for line in (workdir / "access.log").read_text().splitlines():
        method, path, status, sent, rng = line.split(" ", 4)
        out.append((method, path, int(status), int(sent), rng.strip('"')))
    return out


def file_bytes_served(workdir: Path) -> dict[str, list[tuple[int, int]]]:
    """Path -> the byte ranges nginx sent for it (GETs of files only)."""
    out: dict[str, list[tuple[int, int]]] = {}
    for method, path, _status, sent, rng in access(workdir):
        if method != "GET" or path.endswith("/") or sent == 0:
            continue
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng)
        start = int(m.group(1)) if m else 0
        out.setdefault(path, []).append((start, start + sent))
    return out


def block_files(c: Cluster, worker: str) -> dict[str, int]:
    """Block id -> size of the block files on ``worker``'s disk."""
    held = {}
    for path in (c.root / worker).rglob("*"):
        if path.is_file() and not path.name.startswith(".tmp-"):
            held[path.name.split(".")[0]] = path.stat().st_size
    return held


def block_ids(client: Client, files: dict[str, bytes]) -> dict[str, int]:
    """Block id -> length, over every block of ``files``."""
    out = {}
    for path in files:
        info = client.stat(path)
        for i in range(info.block_count):
            ref = info.block(i)
            out[ref.id] = ref.length
    return out


def locations(c: Cluster, ids: list[str]) -> dict[str, list[str]]:
    async def ask() -> dict[str, list[str]]:
        async with aiohttp.ClientSession() as s:
            rpc = RpcClient(c.master_url, c.token, s)
            return (
                await rpc.call(BLOCK_LOCATIONS, LocationsRequest(ids), LocationsReply)
            ).locations

    return asyncio.run(ask())


def cli(c: Cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "fluidcache", *args, "--master", c.master_url],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **c.env},
    )
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


@contextlib.contextmanager
def three_workers(
    workdir: Path, rate: str = "0"
) -> Iterator[tuple[Cluster, Path, dict[str, bytes]]]:
    src = workdir / "src"
    src.mkdir()
    files = make_source(src)
    web = workdir / "nginx"
    with nginx(src, web, rate) as url, cluster(workdir / "c") as c:
        c.start_master(url, extra=("--block-size", "1Mi"))
        for w in ("w1", "w2", "w3"):
            c.start_worker(w)
        yield c, web, files


def test_replicas_two_puts_every_block_on_two_workers_and_reads_skip_the_source(
    workdir: Path,
) -> None:
    with three_workers(workdir) as (c, web, files):
        out = cli(c, "load", "/big.bin", "/small", "--replicas", "2")
        assert "Complete" in out.stdout, out.stdout
        with Client(c.master_url, c.token) as fc:
            ids = block_ids(fc, {p: d for p, d in files.items() if p != "/mid.bin"})
            mid = block_ids(fc, {"/mid.bin": files["/mid.bin"]})
        where = locations(c, list(ids))
        on_disk = {w: block_files(c, w) for w in ("w1", "w2", "w3")}
        for block_id, length in ids.items():
            assert len(set(where.get(block_id, []))) == 2, block_id
            holders = [w for w, held in on_disk.items() if block_id in held]
            assert sorted(holders) == sorted(where[block_id])
            assert all(on_disk[w][block_id] == length for w in holders)
        assert not set(mid) & {b for held in on_disk.values() for b in held}  # not a target

        before = len(access(web))
        mnt = workdir / "mnt"
        with mounted(c.master_url, mnt, c.env):
            for path, data in files.items():
                if path != "/mid.bin":
                    assert (mnt / path[1:]).read_bytes() == data
        reads = [a for a in access(web)[before:] if a[0] == "GET" and not a[1].endswith("/")]
        assert reads == []


def test_replicas_all_reads_the_source_once_and_fills_every_worker(workdir: Path) -> None:
    with three_workers(workdir) as (c, web, files):
        out = cli(c, "load", "--replicas", "all")
        assert "Complete" in out.stdout, out.stdout
        with Client(c.master_url, c.token) as fc:
            ids = block_ids(fc, files)
            job = fc.jobs()[0]
        assert job.bytes_done == job.bytes_total == sum(map(len, files.values()))
        assert job.files_done == job.files_total == len(files)
        for w in ("w1", "w2", "w3"):
            held = block_files(c, w)
            assert {b: held.get(b) for b in ids} == ids, w
        served = file_bytes_served(web)
        for path, data in files.items():
            ranges = sorted(served[path])
            # Every byte exactly once: the ranges tile the file without overlap.
            assert ranges[0][0] == 0 and ranges[-1][1] == len(data), path
            assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges)), path


def test_pin_survives_eviction_and_free_removes_blocks(workdir: Path) -> None:
    src = workdir / "src"
    src.mkdir()
    files = make_source(src)
    with cluster(workdir / "c") as c:
        c.start_master(f"local://{src}", extra=("--block-size", "1Mi"))
        c.start_worker("w1", f"MEM:{c.root / 'w1' / 'mem'}:6Mi:0.99:0.5")
        cli(c, "load", "/mid.bin", "--pin")
        with Client(c.master_url, c.token) as fc:
            pinned = block_ids(fc, {"/mid.bin": files["/mid.bin"]})
            assert fc.cat("/big.bin") == files["/big.bin"]  # 5 MiB more through a 6 MiB level
        held = block_files(c, "w1")
        assert set(pinned) <= set(held)
        out = cli(c, "free", "/mid.bin")
        assert "freed 2 blocks" in out.stdout, out.stdout
        assert not set(pinned) & set(block_files(c, "w1"))
        assert locations(c, list(pinned)) == {}

        # --metadata lists the targets from the source first: a file added since is loaded too.
        cli(c, "load", "/small")
        (src / "small" / "new.bin").write_bytes(b"n" * 5000)
        with Client(c.master_url, c.token) as fc:
            again = fc.load(["/small"], wait=True)
            assert again.files_total == 12  # the namespace's listing, made before the file came
            listed = fc.load(["/small"], metadata=True, wait=True)
            assert (listed.phase, listed.files_total, listed.files_done) == ("Complete", 13, 13)
            assert listed.targets[0].bytes_total == again.bytes_total + 5000


def test_schedule_fires_and_after_waits_then_follows_its_predecessor(workdir: Path) -> None:
    with (
        three_workers(workdir, rate="2m") as (c, _web, _files),
        Client(c.master_url, c.token) as fc,
    ):
        every = fc.load(["/small"], schedule="* * * * * */2")
        deadline = time.monotonic() + 30
        while fc.job(every.job_id).runs < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert fc.job(every.job_id).runs >= 2
        fc.cancel(every.job_id)

        slow = fc.load(["/big.bin"])  # ~2 s at 2 MB/s per connection
        then = fc.load(["/mid.bin"], after=slow.job_id)
        assert fc.job(then.job_id).phase == "Pending"
        assert fc.job(slow.job_id).phase == "Executing"
        assert fc.wait(slow.job_id, timeout=60).phase == "Complete"
        assert fc.wait(then.job_id, timeout=60).phase == "Complete"

        first = fc.load(["/big.bin"], schedule="0 0 1 1 *")  # Pending until New Year
        second = fc.load(["/mid.bin"], after=first.job_id)
        fc.cancel(first.job_id)
        failed = fc.wait(second.job_id, timeout=30)
        assert failed.phase == "Failed"
        assert f"predecessor {first.job_id} failed: cancelled" in failed.error


def test_a_load_survives_a_master_killed_with_sigkill(workdir: Path) -> None:
    with three_workers(workdir, rate="256k") as (c, _web, files):
        with Client(c.master_url, c.token) as fc:
            job = fc.load(["/big.bin", "/mid.bin"], replicas=2)
            time.sleep(1.0)  # blocks take ~4 s each at 256 KB/s: the load is mid-way
            assert fc.job(job.job_id).phase == "Executing"
        c.kill("master", 9)
        c.restart_master()
        with Client(c.master_url, c.token) as fc:
            found = fc.job(job.job_id)
            assert found.phase == "Executing", found  # resumed, not lost
            done = fc.wait(job.job_id, timeout=120)
            assert done.phase == "Complete", done.error
            assert done.bytes_done == len(files["/big.bin"]) + len(files["/mid.bin"])
            ids = block_ids(fc, {p: files[p] for p in ("/big.bin", "/mid.bin")})
        assert all(len(ws) == 2 for ws in locations(c, list(ids)).values())
        assert len(locations(c, list(ids))) == len(ids)


def test_progress_bar_on_a_terminal_and_plain_lines_without(workdir: Path) -> None:
    with three_workers(workdir, rate="1m") as (c, _web, _files):
        args = [sys.executable, "-m", "fluidcache", "load", "/big.bin", "--master", c.master_url]
        env = {**os.environ, **c.env, "COLUMNS": "120"}
        primary, secondary = pty.openpty()
        with subprocess.Popen(args, stdout=secondary, stderr=secondary, env=env) as proc:
            os.close(secondary)
            seen = b""
            with contextlib.suppress(OSError):
                while chunk := os.read(primary, 4096):
                    seen += chunk
            assert proc.wait(60) == 0
        os.close(primary)
        text = seen.decode(errors="replace")
        assert "━" in text and "MB" in text, text  # rich's bar and its byte counts
        assert "\x1b[" in text  # redrawn in place

        freed = cli(c, "free", "/").stdout
        assert freed.startswith("freed 6 blocks"), freed
        out = cli(c, "load", "/big.bin", "--interval", "0.5")
        lines = out.stdout.strip().splitlines()
        assert len(lines) >= 3, out.stdout
        assert all(re.match(r"load-\w+ +(Pending|Executing|Complete) ", ln) for ln in lines)
        assert "━" not in out.stdout and "\x1b[" not in out.stdout
        assert lines[-1].split()[1] == "Complete"


def test_bad_input_is_refused_and_changes_nothing(workdir: Path) -> None:
    with three_workers(workdir) as (c, _web, _files):
        done = cli(c, "load", "/mid.bin").stdout.split()[0]
        before = cli(c, "job", "ls", "--json").stdout
        cases = [
            (["load", "/nope"], "no such file"),
            (["load", "--replicas", "0"], "replicas: 0"),
            (["load", "--replicas", "4"], "more than the 3 live workers"),
            (["load", "--replicas", "two"], "not a number or 'all'"),
            (["load", "--schedule", "61 * * * *"], "not a cron expression"),
            (["load", "--after", "load-unknown"], "no job 'load-unknown'"),
            (["job", "cancel", done], "already Complete"),
            (["job", "status", "load-unknown"], "no job"),
            (["free", "/nope"], "no such file"),
        ]
        for args, message in cases:
            out = cli(c, *args, check=False)
            assert out.returncode != 0, args
            assert message in out.stderr, (args, out.stderr)
            assert "Traceback" not in out.stderr
        assert cli(c, "job", "ls", "--json").stdout == before
