"""Master at scale: eager metadata load of a million files, memory, stat latency, big listings.

    .venv/bin/python -m bench.master_scale [--dirs 1000] [--files 1000] [--big 100000]

It makes (once, reused afterwards) a local source under ``--root``: ``files/`` with DIRS
directories of FILES empty files each, and ``big/`` with BIG entries. Then it starts
``fluidcache master`` as a child process on a fresh data dir and measures:

- ``load_metadata`` of ``files/``: files per second, the master's anonymous memory (RssAnon, so
  LMDB's file-backed pages do not count) sampled during the load and after it;
- stat latency over HTTP on loopback (p50/p99 of sequential calls on random files);
- listing ``big/`` in pages of 1000 (the first page includes listing it from the source), then
  again, and again without decoding the answers into dataclasses (server and wire alone);
- after stopping the child, the same stats in-process (the service without HTTP).

Prints a Markdown table; ``--json FILE`` also writes the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import msgpack

from fluidcache.common.config import TOKEN_FILE_ENV, write_token
from fluidcache.common.http import RpcClient
from fluidcache.common.protocol import (
    NS_LIST,
    NS_LOAD_METADATA,
    NS_LOAD_STATUS,
    NS_STAT,
    REPORT,
    FileInfo,
    ListReply,
    ListRequest,
    LoadMetadataReply,
    LoadMetadataRequest,
    LoadStatusRequest,
    Report,
    StatRequest,
)
from fluidcache.master import MasterConfig
from fluidcache.master.service import MasterService


def make_source(src: Path, dirs: int, files: int, big: int) -> None:
    """Create the tree once; a marker records its shape so a rerun reuses it."""
    marker = src.with_suffix(".done")
    shape = f"{dirs} {files} {big}"
    if marker.exists() and marker.read_text() == shape:
        return
    shutil.rmtree(src, ignore_errors=True)
    start = time.perf_counter()
    for d in range(dirs):
        base = src / "files" / f"d{d:04d}"
        base.mkdir(parents=True)
        for f in range(files):
            os.close(os.open(base / f"f{f:06d}", os.O_CREAT | os.O_WRONLY, 0o644))
    (src / "big").mkdir(parents=True)
    for f in range(big):
        os.close(os.open(src / "big" / f"e{f:06d}", os.O_CREAT | os.O_WRONLY, 0o644))
    marker.write_text(shape)
    print(f"made the source in {time.perf_counter() - start:.0f} s", flush=True)


def rss_anon_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return 0.0


class RssSampler:
    """Samples a process's RssAnon in a thread; keeps the peak."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        self.pid, self.every, self.peak = pid, every, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, rss_anon_mib(self.pid))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    q = statistics.quantiles(samples, n=100)
    return q[49] * 1000, q[98] * 1000


async def timed_pages(list_page: object, path: str) -> tuple[int, int, float, float]:
    """Page through ``path``: (entries, pages, first page s, total s)."""
    fn = list_page  # an async callable taking a ListRequest
    cursor, entries, pages, first = "", 0, 0, 0.0
    start = time.perf_counter()
    while True:
        page: ListReply = await fn(ListRequest(path=path, cursor=cursor, limit=1000))  # type: ignore[operator]
        pages += 1
        entries += len(page.entries)
        if pages == 1:
            first = time.perf_counter() - start
        if not page.cursor:
            return entries, pages, first, time.perf_counter() - start
        cursor = page.cursor


async def over_http(url: str, token: str, args: argparse.Namespace, pid: int) -> dict[str, float]:
    out: dict[str, float] = {}
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        rpc = RpcClient(url, token, session, timeout=3600)
        out["rss_start_mib"] = rss_anon_mib(pid)
        sampler = RssSampler(pid)
        job = await rpc.call(
            NS_LOAD_METADATA, LoadMetadataRequest("/default/files", wait=False), LoadMetadataReply
        )
        status = job
        while status.state == "running":
            await asyncio.sleep(2)
            status = await rpc.call(
                NS_LOAD_STATUS, LoadStatusRequest(job.job_id), LoadMetadataReply
            )
            print(
                f"  {status.seconds:6.0f} s  {status.files:>9} files  {status.dirs_listed:>5} dirs"
                f"  RssAnon {rss_anon_mib(pid):.0f} MiB",
                flush=True,
            )
        if status.state != "done":
            raise SystemExit(f"load failed: {status.error}")
        out["load_files"] = status.files
        out["load_seconds"] = status.seconds
        out["load_files_per_s"] = status.files / status.seconds
        out["rss_peak_during_load_mib"] = sampler.stop()
        await asyncio.sleep(1)
        out["rss_after_load_mib"] = rss_anon_mib(pid)
        report = await rpc.call(REPORT, None, Report)
        out["report_file_count"] = report.file_count

        paths = sample_paths(args)
        latencies = []
        for p in paths:
            t = time.perf_counter()
            await rpc.call(NS_STAT, StatRequest(path=p), FileInfo)
            latencies.append(time.perf_counter() - t)
        out["http_stat_p50_ms"], out["http_stat_p99_ms"] = percentiles(latencies)

        sampler = RssSampler(pid)

        async def list_page(req: ListRequest) -> ListReply:
            return await rpc.call(NS_LIST, req, ListReply)

        async def raw_page(req: ListRequest) -> ListReply:
            # The server and the wire only: msgpack without building FileInfo objects.
            async with session.post(url + NS_LIST, data=req.encode(), headers=rpc.headers) as resp:
                body = msgpack.unpackb(await resp.read())
            return ListReply([None] * len(body["entries"]), body["cursor"])  # type: ignore[list-item]

        entries, pages, first, total = await timed_pages(list_page, "/default/big")
        out["big_entries"], out["big_pages"] = entries, pages
        out["http_big_first_page_s"], out["http_big_all_pages_s"] = first, total
        entries, pages, _, total = await timed_pages(list_page, "/default/big")
        out["http_big_pages_again_s"] = total
        entries, pages, _, total = await timed_pages(raw_page, "/default/big")
        out["http_big_pages_undecoded_s"] = total
        out["rss_peak_during_big_list_mib"] = sampler.stop()
        out["rss_end_mib"] = rss_anon_mib(pid)
    return out


def sample_paths(args: argparse.Namespace) -> list[str]:
    rng = random.Random(1)
    return [
        f"/default/files/d{rng.randrange(args.dirs):04d}/f{rng.randrange(args.files):06d}"
        for _ in range(args.stats)
    ]


async def in_process(config: MasterConfig, args: argparse.Namespace) -> dict[str, float]:
    out: dict[str, float] = {}
    service = MasterService.open(config)
    try:
        latencies = []
        for p in sample_paths(args):
            t = time.perf_counter()
            await service.stat(StatRequest(path=p))
            latencies.append(time.perf_counter() - t)
        out["inproc_stat_p50_ms"], out["inproc_stat_p99_ms"] = percentiles(latencies)
        _, _, _, total = await timed_pages(service.list_page, "/default/big")
        out["inproc_big_all_pages_s"] = total
        out["inproc_listings"] = service.sync.listings
    finally:
        await service.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--root", default="/tmp/fluidcache-scale", type=Path)
    ap.add_argument("--dirs", type=int, default=1000)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--big", type=int, default=100_000)
    ap.add_argument("--stats", type=int, default=5000, help="stat calls to time")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    src, data = args.root / "src", args.root / "data"
    make_source(src, args.dirs, args.files, args.big)
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    token_file = args.root / "token"
    token = write_token(token_file)
    ready = args.root / "ready"
    ready.unlink(missing_ok=True)
    log = (args.root / "master.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fluidcache", "master", f"local://{src}", "--data-dir", str(data),
         "--ready-file", str(ready)],
        env={**os.environ, TOKEN_FILE_ENV: str(token_file), "FLUIDCACHE_LOG": "WARNING"},
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"master did not start; see {args.root / 'master.log'}")
            time.sleep(0.05)
        url = ready.read_text().strip()
        print(f"master {url} (pid {proc.pid}); loading {args.dirs * args.files} files", flush=True)
        figures = asyncio.run(over_http(url, token, args, proc.pid))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
    config = MasterConfig(data_dir=data, mounts=[("", f"local://{src}")], token=token)
    figures.update(asyncio.run(in_process(config, args)))
    figures["lmdb_mib"] = sum(f.stat().st_size for f in (data / "master.lmdb").iterdir()) / 2**20

    print("\n| measure | value |\n| --- | --- |")
    for key, value in figures.items():
        print(f"| {key} | {value:.3f} |" if isinstance(value, float) else f"| {key} | {value} |")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
