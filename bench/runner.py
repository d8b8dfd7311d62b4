"""``make bench`` / ``python -m bench``: the benchmark harness.

It makes the data sets (kept between runs under ``--workdir``), starts the sources on 127.0.0.1
(nginx with autoindex, s3rver, each behind a shaper that makes it look remote), runs every
scenario — each one runs its baselines and fluidcache in the same run, alternating, ``reps``
times — stops everything, and writes ``bench/results/<timestamp>/`` with ``results.json``,
``report.md`` and PNG plots, then prints a summary. ``--quick`` shrinks the sizes (every scenario
still runs) for a CI smoke run of 5-7 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

from bench import peers, report, s3, scenarios
from bench.config import FULL, QUICK, Params, Shaping
from bench.context import Bench
from bench.data import Data
from bench.results import Result
from bench.shaper import shaped, shaped_per_conn
from bench.sources import nginx, resident

RESULTS = Path(__file__).parent / "results"
# The data sets read for their bytes, kept in memory (not meta's 110,000 names: a mapping each).
RESIDENT = ("large", "small", "model", "p2p", "scale", "evict")


class Interrupted(Exception):
    """SIGTERM arrived: stop everything and write what was measured."""


def _on_term(signum: int, frame: FrameType | None) -> None:
    raise Interrupted()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small sizes, 2 repetitions (CI smoke)")
    ap.add_argument("--reps", type=int, help="repetitions per scenario (default: 3, quick: 2)")
    ap.add_argument(
        "--scenarios",
        default=",".join(scenarios.NAMES),
        help=f"comma-separated subset of {','.join(scenarios.NAMES)}",
    )
    ap.add_argument(
        "--bandwidth",
        type=float,
        default=200.0,
        help="MB/s of each source's emulated link, 0 for none (default 200)",
    )
    ap.add_argument(
        "--latency", type=float, default=5.0, help="ms added per request, 0 for none (default 5)"
    )
    ap.add_argument(
        "--conn-bandwidth",
        type=float,
        default=50.0,
        help="MB/s of each connection to the object-store-like source, 0 for no such source "
        "(default 50)",
    )
    ap.add_argument(
        "--conn-latency", type=float, default=20.0, help="its ms to first byte (default 20)"
    )
    ap.add_argument(
        "--conn-aggregate", type=float, default=1000.0, help="its MB/s in all (default 1000)"
    )
    ap.add_argument(
        "--workdir",
        default="/tmp/fluidcache-bench",
        help="data sets (kept between runs) and scratch space (default /tmp/fluidcache-bench)",
    )
    ap.add_argument("--out", help="results directory (default bench/results/<timestamp>)")
    args = ap.parse_args(argv)
    unknown = set(args.scenarios.split(",")) - set(scenarios.NAMES)
    if unknown:
        ap.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return args


def _cmd(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"


def _pkg(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "kernel": platform.release(),
        "load_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "disk_workdir": "",
    }


def versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "fluidcache": _pkg("fluidcache"),
        "aiohttp": _pkg("aiohttp"),
        "aiobotocore": _pkg("aiobotocore"),
        "uvloop": _pkg("uvloop"),
        "pyfuse3": _pkg("pyfuse3"),
        "numpy": _pkg("numpy"),
        "safetensors": _pkg("safetensors"),
        "matplotlib": _pkg("matplotlib"),
        "nginx": _cmd([shutil.which("nginx") or "/usr/sbin/nginx", "-v"]),
        "node": _cmd(["node", "--version"]),
        "s3rver": s3.s3rver_version(),
        "rclone": peers.version("rclone") if shutil.which("rclone") else "not installed",
        "s3fs": peers.version("s3fs") if shutil.which("s3fs") else "not installed",
        "fuse3": _cmd(["fusermount3", "--version"]),
    }


def check_traversable(path: Path) -> None:
    """nginx's workers run as an unprivileged user: every directory above the data must let
    others through (pytest's and mkdtemp's 0700 directories do not)."""
    for p in [path.absolute(), *path.absolute().parents]:
        if p.exists() and not p.stat().st_mode & 0o001:
            raise SystemExit(
                f"--workdir: {p} is not searchable by other users (mode "
                f"{p.stat().st_mode & 0o777:o}); nginx's workers could not read the data sets"
            )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.datetime.now()
    t0 = time.perf_counter()
    sizes = QUICK if args.quick else FULL
    if args.reps:
        sizes = type(sizes)(**{**sizes.__dict__, "reps": args.reps})
    shaping = Shaping(
        bandwidth=args.bandwidth * 1e6,
        latency=args.latency / 1000,
        conn_bandwidth=args.conn_bandwidth * 1e6,
        conn_latency=args.conn_latency / 1000,
        conn_aggregate=args.conn_aggregate * 1e6,
    )
    names = [n for n in scenarios.NAMES if n in args.scenarios.split(",")]
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    check_traversable(workdir)
    params = Params(sizes=sizes, shaping=shaping, scenarios=tuple(names), workdir=str(workdir))
    out = Path(args.out) if args.out else RESULTS / started.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    work = workdir / "run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)

    meta: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "command": shlex.join(
            [os.path.basename(sys.executable), "-m", "bench", *(argv or sys.argv[1:])]
        ),
        "machine": machine(),
        "versions": versions(),
        "params": params.as_dict(),
        "setup": [],
        "wall_seconds": 0.0,
    }
    results: list[Result] = []
    old_term = signal.signal(signal.SIGTERM, _on_term)
    code = 0
    try:
        data = Data(workdir / f"data-{sizes.mode}", sizes)
        spent = data.ensure(log)
        if spent:
            log(f"data sets made in {spent:.0f} s")
        with contextlib.ExitStack() as stack:
            raw_http = stack.enter_context(nginx(data.root, work / "nginx"))
            http_url = stack.enter_context(
                shaped(raw_http, shaping.bandwidth, shaping.latency, work / "shaper-http.log")
            )
            conn_url = None
            if shaping.conn_bandwidth > 0:
                conn_url = stack.enter_context(
                    shaped_per_conn(raw_http, shaping, work / "shaper-conn.log")
                )
            s3_info, s3_reason, store = None, None, None
            try:
                store = workdir / f"s3store-{sizes.mode}"
                s3.seed(store, data)
                raw_s3 = stack.enter_context(s3.s3rver(store, work / "s3rver.log"))
                endpoint = stack.enter_context(
                    shaped(raw_s3, shaping.bandwidth, shaping.latency, work / "shaper-s3.log")
                )
                s3_info = s3.S3Info(endpoint)
            except s3.Unavailable as e:
                s3_reason, store = f"S3 source not available: {e}", None
                log(s3_reason)
            meta["versions"]["s3rver"] = s3.s3rver_version()
            kept = [data.root / d for d in RESIDENT]
            kept += [store / s3.BUCKET / d for d in RESIDENT] if store is not None else []
            in_memory = stack.enter_context(resident(kept, work / "vmtouch.log"))
            peer_reasons = {p: peers.available(p) for p in peers.PEERS}
            meta["setup"] = setup_lines(data, raw_http, s3_info, s3_reason, peer_reasons, shaping)
            meta["setup"].insert(2, in_memory)
            bench = Bench(
                params,
                data,
                work,
                http_url,
                s3_info,
                store,
                s3_reason,
                peer_reasons,
                log,
                conn_url,
                raw_http,
            )
            for name in names:
                module = scenarios.load(name)
                log(f"scenario {module.TITLE}")
                start = time.perf_counter()
                try:
                    result: Result = module.run(bench)
                except (KeyboardInterrupt, Interrupted):
                    raise
                except Exception:
                    log(f"scenario {name} failed:\n{traceback.format_exc()}")
                    result = Result(name, module.TITLE, error=traceback.format_exc())
                    code = 1
                result.seconds = time.perf_counter() - start
                results.append(result)
                log(f"scenario {name}: {result.seconds:.0f} s")
                meta["wall_seconds"] = time.perf_counter() - t0
                report.write_json(out / "results.json", meta, results)
    except (KeyboardInterrupt, Interrupted):
        log("interrupted: everything stopped; writing what was measured")
        code = 130
    finally:
        signal.signal(signal.SIGTERM, old_term)
        meta["wall_seconds"] = time.perf_counter() - t0
        meta["machine"]["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        report.write_json(out / "results.json", meta, results)
        plots = report.plot_all(results, out)
        report.write_markdown(out / "report.md", meta, results, plots)
    print()
    print(report.terminal_summary(results))
    print()
    skipped = {k: v for r in results for k, v in r.skipped.items()}
    for system, reason in skipped.items():
        print(f"skipped {system}: {reason}")
    failed = [r.name for r in results if r.error]
    if failed:
        print(f"failed scenarios: {', '.join(failed)} (see report.md)")
    print(f"wall time {meta['wall_seconds']:.0f} s; results in {out}")
    return code


def setup_lines(
    data: Data,
    raw_http: str,
    s3_info: s3.S3Info | None,
    s3_reason: str | None,
    peer_reasons: dict[str, str | None],
    shaping: Shaping,
) -> list[str]:
    lines = [
        f"Data sets: {data.root} (random bytes; made once per size set, kept between runs).",
        f"HTTP source: nginx with autoindex on {raw_http}, serving the data sets (sendfile on).",
    ]
    if s3_info is not None:
        lines.append(
            f"S3 source: s3rver {s3.s3rver_version()} (npm) on loopback, bucket "
            f"`{s3_info.bucket}`; it keeps objects as files and streams a ranged GET from the "
            "file, so a range costs in proportion to its size (stock moto materialises the "
            "whole object for every range). Seeded by hard-linking the data files into its "
            "store layout."
        )
    else:
        lines.append(f"S3 source: not run ({s3_reason}); S3 systems are reported as skipped.")
    lines.append(
        "Shaping (a remote store emulated on loopback, `bench/shaper.py`, a TCP proxy in front "
        f"of each source): {shaping.describe()}. Traffic between fluidcache's own processes "
        "is not shaped."
    )
    if shaping.conn_bandwidth > 0:
        lines.append(
            "Per-connection source (`conn`, the object-store / hub CDN model: the same nginx "
            f"behind `bench/shaper.py --per-conn`): {shaping.describe_conn()}. Its baselines "
            f"are one stream (`conn-direct`) and {shaping.parallel_streams} concurrent ranged "
            "GETs per file (`conn-parallel`, the best a careful user can do without a cache)."
        )
    for name, reason in peer_reasons.items():
        lines.append(f"Peer {name}: " + (reason or "installed, mounted on the same bucket"))
    lines.append(
        "Kernel page cache dropped (`/proc/sys/vm/drop_caches`) before every cold and warm "
        "measurement; hot measurements follow the previous read at once."
    )
    lines.append(
        "Each repetition starts a fresh fluidcache cluster (`fluidcache up web=HTTP s3=S3`, "
        "2 workers unless said otherwise, MEM tier in /dev/shm, 4 MiB blocks; P2P starts "
        "`fluidcache master` and `worker --node` itself) and fresh peer caches, so every cold "
        "read is cold. Within one repetition, systems that must each start cold read "
        "hard-linked copies of the data (`views/NAME/...`), which every cache keys apart."
    )
    if s3_info is not None:
        lines.append(
            "fluidcache reads the bucket with its own S3 adapter (source `s3=s3://bench`, "
            "endpoint and keys from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
            "AWS_REGION)."
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
