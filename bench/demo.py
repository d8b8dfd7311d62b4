"""``make demo``: a local cluster with a FUSE mount over a sample dataset; cold and warm reads.

It makes a sample dataset (one large file and a few hundred small ones), serves it with nginx on
127.0.0.1 behind ``bench/shaper.py`` so that it behaves like a remote object store or hub CDN
(each connection capped at 100 MB/s, 10 ms to every first byte; ``--per-conn``, ``--latency``),
starts ``fluidcache up`` (master, 2 workers, a FUSE mount), reads the whole dataset from the
source directly, then twice through the mount (cold, warm), prints a table with the speed-ups,
and stops everything — also on Ctrl-C or error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import aiohttp

from bench.readers import drop_caches
from bench.shaper import shaped
from bench.sources import make_sample, nginx
from fluidcache.client import AsyncClient
from fluidcache.common.protocol import Report

CHUNK = 1 << 20
READERS = 8


def read_file(path: str) -> int:
    n = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(CHUNK):
            n += len(chunk)
    return n


def read_tree(root: Path) -> tuple[int, float]:
    """Read every file under ``root`` with READERS threads, like a data loader; (bytes, s)."""
    start = time.perf_counter()
    paths = [os.path.join(d, name) for d, _dirs, files in os.walk(root) for name in files]
    with ThreadPoolExecutor(READERS) as pool:
        total = sum(pool.map(read_file, paths))
    return total, time.perf_counter() - start


def relative_files(root: Path) -> list[str]:
    """The data files under ``root`` (not the sample's marker), relative to it."""
    paths = [os.path.relpath(os.path.join(d, n), root) for d, _, fs in os.walk(root) for n in fs]
    return [p for p in paths if not p.startswith(".")]


async def read_source(url: str, paths: list[str]) -> tuple[int, float]:
    """The baseline: the same files straight from the source over HTTP, no cache."""
    sem = asyncio.Semaphore(READERS)
    start = time.perf_counter()
    async with aiohttp.ClientSession() as session:

        async def get(rel: str) -> int:
            n = 0
            async with sem, session.get(url + quote(rel)) as resp:
                resp.raise_for_status()
                async for chunk in resp.content.iter_chunked(CHUNK):
                    n += len(chunk)
            return n

        total = sum(await asyncio.gather(*(get(p) for p in paths)))
    return total, time.perf_counter() - start


class Up:
    """``fluidcache up`` as a child process, stopped (and unmounted) on exit."""

    def __init__(self, source: str, mountpoint: Path, data_dir: Path) -> None:
        self.mountpoint = mountpoint
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fluidcache", "up", f"sample={source}",
             "--mountpoint", str(mountpoint), "--workers", "2", "--mem-quota", "1Gi",
             "--data-dir", str(data_dir)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            print(f"  | {line.rstrip()}", flush=True)

    def wait_for(self, prefix: str, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if line.startswith(prefix):
                    return line
            if self.proc.poll() is not None:
                raise RuntimeError(f"fluidcache up exited with status {self.proc.returncode}")
            time.sleep(0.05)
        raise RuntimeError(f"fluidcache up: no {prefix!r} within {timeout} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        with open("/proc/mounts") as f:
            if any(line.split()[1] == str(self.mountpoint) for line in f):
                subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)], check=False)


async def fetch_report(master: str, token: str, total: int) -> Report:
    """The dataset's statistics, once the workers' usage reports (heartbeats) caught up."""
    async with AsyncClient(master, token, dataset="default") as client:
        for _ in range(50):
            report = await client.report()
            if report.cached_bytes >= total:
                break
            await asyncio.sleep(0.1)
        return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.demo", description=__doc__)
    ap.add_argument("--large-mb", type=int, default=200, help="size of the large file (MiB)")
    ap.add_argument("--small", type=int, default=300, help="number of small files")
    ap.add_argument("--small-kb", type=int, default=256, help="size of each small file (KiB)")
    ap.add_argument("--per-conn", type=float, default=100.0, help="source MB/s per connection")
    ap.add_argument("--latency", type=float, default=10.0, help="source ms to first byte")
    ap.add_argument("--aggregate", type=float, default=1000.0, help="source MB/s in all")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "fluidcache-demo"))
    args = ap.parse_args(argv)

    work = Path(args.workdir)
    data = work / "data"
    print(f"sample dataset in {data} ...", flush=True)
    total = make_sample(data, args.large_mb, args.small, args.small_kb)
    mnt = work / "mnt"
    mnt.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="fluidcache-demo-") as run_dir,
        nginx(data, Path(run_dir) / "nginx") as raw,
        shaped(
            raw,
            args.aggregate * 1e6,
            args.latency / 1000,
            Path(run_dir) / "shaper.log",
            per_conn=args.per_conn * 1e6,
        ) as url,
    ):
        print(
            f"source: nginx at {raw} ({total / 1e6:.0f} MB), seen at {url} as a remote store: "
            f"{args.per_conn:.0f} MB/s per connection, {args.latency:.0f} ms to first byte, "
            f"{args.aggregate:.0f} MB/s in all",
            flush=True,
        )
        up = Up(url, mnt, Path(run_dir) / "cluster")
        try:
            master = up.wait_for("master:").split()[-1]
            up.wait_for("mounted:")
            token = (Path(run_dir) / "cluster" / "token").read_text().strip()
            drop_caches()
            src_bytes, src_s = asyncio.run(read_source(url, relative_files(data)))
            drop_caches()
            cold_bytes, cold_s = read_tree(mnt / "sample")
            dropped = drop_caches()
            warm_bytes, warm_s = read_tree(mnt / "sample")
            report = asyncio.run(fetch_report(master, token, total))
        finally:
            up.stop()
    if cold_bytes != total or warm_bytes != total:
        print(f"read {cold_bytes} and {warm_bytes} bytes, expected {total}", file=sys.stderr)
        return 1
    cold, warm = cold_bytes / cold_s / 1e6, warm_bytes / warm_s / 1e6
    direct = src_bytes / src_s / 1e6
    print()
    print(f"{READERS} concurrent readers, kernel page cache dropped before each pass")
    print(f"{'pass':<28}{'MB':>8}{'seconds':>10}{'MB/s':>10}{'vs source':>11}")
    rows = [
        ("source directly (no cache)", src_bytes, src_s, direct),
        ("cold (through the mount)", cold_bytes, cold_s, cold),
        ("warm (through the mount)", warm_bytes, warm_s, warm),
    ]
    for name, n, s, rate in rows:
        print(f"{name:<28}{n / 1e6:>8.0f}{s:>10.2f}{rate:>10.0f}{rate / direct:>10.1f}x")
    print()
    print(
        f"speed-up: warm / source directly {warm / direct:.1f}x, cold / source directly "
        f"{cold / direct:.2f}x, warm / cold {warm / cold:.1f}x"
    )
    print(
        f"bytes cached: {report.cached_bytes / 1e6:.0f} MB of {report.ufs_total_bytes / 1e6:.0f} MB"
    )
    print(f"cached: {report.cached_percent:.1f} %")
    if not dropped:
        print("(the kernel page cache could not be dropped: the warm pass may include it)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
