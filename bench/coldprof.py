"""Profile a cold read: ``python -m bench.coldprof FILE|DIR [--fuse] [--conn|--link]``.

A DIR is a cold epoch instead: every file under it read once, in the shuffled order of bench's
small-files scenario, by 16 readers (``--readers``: tasks of one client, or threads on the mount
with ``--fuse``). With
``--hub``, DIR is a safetensors model (scenario 4's): published as ``hf://bench/model`` the way
the hub scenario does (olah behind nginx redirecting to ranged files, behind the
per-connection shaper of ``--conn``), and loaded cold through the mount: a model cold start.

Serves FILE's directory with an unshaped nginx on loopback (with ``--conn``: behind bench's
per-connection shaper, and also read directly with ``--readers`` ranged streams; with
``--link``: behind bench's shared link, 200 MB/s and 5 ms per request), starts
``fluidcache up`` over it, reads FILE cold once through the client library (or the FUSE mount
with ``--fuse``) and prints MB/s beside nginx read directly, the CPU seconds of each process
and how busy the machine's CPUs were (and how much the hypervisor took). With ``--profile
DIR``, ``py-spy record`` samples every fluidcache process (and, for the client library, the
reader) during the cold read and writes collapsed stacks there; ``--top N`` prints the
heaviest frames of each. With ``--perf FILE``, ``perf record -a -g`` samples the whole machine
(the kernel's share, the sources' too) meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import cluster
from bench import readers as rd
from bench.config import Shaping
from bench.shaper import EARLY, link_use, shaped, shaped_per_conn
from bench.sources import nginx

WARM_LOADS = 3  # warm loads of the model with --hub --warm, and as many from the page cache


def top_frames(collapsed: Path, n: int) -> list[str]:
    """The frames with the most samples anywhere on the stack ("inclusive"), and the leaves."""
    incl: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        total += int(count)
        for f in set(frames):
            incl[f] += int(count)
        leaf[frames[-1]] += int(count)
    out = [f"{collapsed.name}: {total} samples"]
    out += [f"  self {c / total:5.1%}  {f}" for f, c in leaf.most_common(n)]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.coldprof", description=__doc__)
    ap.add_argument("file", type=Path)
    ap.add_argument("--fuse", action="store_true")
    ap.add_argument("--profile", type=Path)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument(
        "--perf",
        type=Path,
        help="``perf record -a -g`` of the whole machine during the cold read, into this file "
        "(``perf report -i FILE --sort comm,dso``)",
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--readers", type=int, default=16)
    ap.add_argument(
        "--warm",
        action="store_true",
        help="with --fuse: read it (a DIR: the epoch) again, warm, with its CPU seconds; with "
        "--hub: load it warm, and from the local page cache (the loader's own time), "
        f"{WARM_LOADS} times each",
    )
    ap.add_argument("--work", type=Path, default=Path("/tmp/fluidcache-coldprof"))
    ap.add_argument("--hub", action="store_true", help="FILE is a model directory: load it")
    ap.add_argument(
        "--conn",
        action="store_true",
        help="the source behind the per-connection shaper (as bench's); a FILE is then also "
        "read directly with --readers ranged streams",
    )
    ap.add_argument(
        "--link",
        action="store_true",
        help="the source behind bench's shared link (200 MB/s, 5 ms per request) instead",
    )
    args = ap.parse_args(argv)
    if args.link and args.conn:
        ap.error("--link and --conn are two different sources: one of them")
    if not args.file.exists():
        ap.error(f"{args.file}: no such file or directory")
    if args.hub:
        if not (args.file / "model.safetensors.index.json").is_file():
            ap.error(f"--hub: {args.file} has no model.safetensors.index.json (a sharded model)")
        return _hub(args)
    if args.file.is_dir():
        return _epoch(args)
    size = args.file.stat().st_size
    name = args.file.name
    shutil.rmtree(args.work, ignore_errors=True)
    rd.read_file(args.file)  # nginx serves from the page cache: the cache's own path is measured
    with nginx(args.file.parent, args.work / "nginx") as raw, _conn(raw, args) as url:
        n, t = asyncio.run(rd.atimed(rd.http_read([url + name])))
        print(f"nginx directly: {n / t / 1e6:.0f} MB/s")
        if args.conn:
            streams = rd.http_parallel([(url + name, size)], args.readers)
            n, t = asyncio.run(rd.atimed(streams))
            print(f"nginx directly, {args.readers} ranged streams: {n / t / 1e6:.0f} MB/s")
        with _cluster(args, url, size) as c, _watched(c, args) as spies:
            assert c.mountpoint is not None
            if args.fuse:
                n, t = rd.timed(lambda: rd.read_file(c.mountpoint / "web" / name))  # type: ignore[operator]
            else:
                n, t = _client_read(c, args, [f"/web/{name}"], 1, spies)
            what = "FUSE" if args.fuse else "client library"
            print(f"cold through the {what}: {n / t / 1e6:.0f} MB/s ({n} bytes)")
            if args.fuse and args.warm:
                rd.drop_caches()
                n, t = rd.timed(lambda: rd.read_file(c.mountpoint / "web" / name))  # type: ignore[operator]
                print(f"warm through the FUSE: {n / t / 1e6:.0f} MB/s ({n} bytes)")
    _print_profiles(args)
    return 0


def _epoch(args: argparse.Namespace) -> int:
    """A cold epoch over the files under directory ``args.file`` (its subdirectories too), in
    the shuffled order of bench's small-files scenario, directly and through the client library
    (or FUSE, with ``--fuse``)."""
    names = sorted(str(p.relative_to(args.file)) for p in args.file.rglob("*") if p.is_file())
    random.Random(7).shuffle(names)
    size = sum((args.file / n).stat().st_size for n in names)
    shutil.rmtree(args.work, ignore_errors=True)
    for n in names:
        rd.read_file(args.file / n)
    spans: dict[str, tuple[float, float]] = {}  # what -> its (start, end), for the link's use
    with (
        nginx(args.file, args.work / "nginx") as raw,
        _conn(raw, args) as url,
    ):
        urls = [url + n for n in names]
        start = time.monotonic()
        with _used():
            n, t = asyncio.run(rd.atimed(rd.http_read(urls, args.readers)))
            print(f"nginx directly, {args.readers} readers: {len(names) / t:.0f} files/s")
        spans["nginx directly"] = (start, time.monotonic())
        with _cluster(args, url, size) as c:
            with _watched(c, args) as spies:
                assert c.mountpoint is not None
                paths = [c.mountpoint / "web" / n for n in names]
                start = time.monotonic()
                if args.fuse:
                    n, t = rd.timed(lambda: rd.read_files(paths, args.readers))
                else:
                    n, t = _client_read(c, args, [f"/web/{n}" for n in names], args.readers, spies)
                what = "FUSE" if args.fuse else "the client library"
                spans[f"cold epoch through {what}"] = (start, time.monotonic())
                print(
                    f"cold epoch through {what}, {args.readers} readers: {len(names) / t:.0f} "
                    "files/s"
                )
            if args.fuse and args.warm:
                rd.drop_caches()
                with _used():  # not sampled: --profile and --perf are of the cold epoch
                    n, t = rd.timed(lambda: rd.read_files(paths, args.readers))
                    print(
                        f"warm epoch through FUSE, {args.readers} readers: {len(names) / t:.0f} "
                        "files/s"
                    )
    if args.link:
        _print_link(args.work / LINK_TRACE, spans)
    _print_profiles(args)
    return 0


LINK_TRACE = "link.trace"


def _print_link(trace: Path, spans: dict[str, tuple[float, float]]) -> None:
    """How each of ``spans`` used the shared link (the shaper's ``--trace``): the time to its
    first byte, the link's idle time between its first and last byte (and in its first
    moments), and the time after its last byte."""
    for what, (start, end) in spans.items():
        use = link_use(trace, start, end)
        if use is None:
            print(f"link, {what}: no byte crossed it")
            continue
        print(
            f"link, {what}: first byte after {use.first * 1000:.0f} ms, idle "
            f"{use.idle * 1000:.0f} ms ({use.idle_early * 1000:.0f} in the first "
            f"{EARLY * 1000:.0f} ms), last byte {use.after * 1000:.0f} ms before the end"
        )


def _client_read(
    c: cluster.Cluster, args: argparse.Namespace, paths: list[str], readers: int, spies: list[Any]
) -> tuple[int, float]:
    """``paths`` read through the client library, ``readers`` at once, by a process of its own
    (sampled with ``--profile``): bytes and seconds."""
    reader = [sys.executable, "-m", "bench.coldprof_read", c.master_url, str(readers), *paths]
    env = {**os.environ, "FLUIDCACHE_TOKEN": c.token}
    proc = subprocess.Popen(reader, stdout=subprocess.PIPE, text=True, env=env)
    if args.profile:
        spies.append(_spy(proc.pid, args.profile / "client.txt", False))
    out, _ = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"bench.coldprof_read exited {proc.returncode}")
    return int(out.split()[0]), float(out.split()[1])


def _hub(args: argparse.Namespace) -> int:
    """A cold start of the safetensors model in directory ``args.file`` from a shaped Hub."""
    from bench.scenarios.hub import REPO, hub

    index = json.loads((args.file / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    size = sum((args.file / s).stat().st_size for s in shards)
    shutil.rmtree(args.work, ignore_errors=True)
    log = args.work / "shaper.log"
    with (
        hub(args.file, args.work / "hub") as raw,
        shaped_per_conn(raw, Shaping(), log) as url,  # the hub scenario's source
    ):
        env = {"HF_ENDPOINT": url, "HF_HOME": str(args.work / "hf"), "HF_HUB_DISABLE_XET": "1"}
        quota = 2 * size // 2**20 + 64
        up = cluster.up(
            [f"model=hf://{REPO}"],
            args.work / "c",
            workers=args.workers,
            mem_quota_mib=quota,
            env=env,
        )
        with up as c, _watched(c, args):
            assert c.mountpoint is not None
            paths = [c.mountpoint / "model" / s for s in shards]
            rd.drop_caches()
            n, t = rd.timed(lambda: rd.load_safetensors(paths))
            print(f"cold model start through FUSE: {t:.1f} s ({n} bytes of tensors)")
            if args.warm:
                _warm_loads(paths, [args.file / s for s in shards])
    _print_profiles(args)
    return 0


def _warm_loads(paths: list[Path], local: list[Path]) -> None:
    """The model loaded warm through the mount, then from the local page cache (the loader's
    own time, the floor of any warm load), ``WARM_LOADS`` times each."""
    for _ in range(WARM_LOADS):
        rd.drop_caches()
        _, t = rd.timed(lambda: rd.load_safetensors(paths))
        print(f"warm model start through FUSE: {t:.2f} s")
    rd.read_files(local)
    for _ in range(WARM_LOADS):
        _, t = rd.timed(lambda: rd.load_safetensors(local))
        print(f"model start from the local page cache: {t:.2f} s")


def _conn(url: str, args: argparse.Namespace) -> contextlib.AbstractContextManager[str]:
    """``url`` behind the per-connection shaper with ``--conn`` (50 MB/s per connection,
    20 ms to the first byte, 1 GB/s in all: bench's object-store-like source), behind the
    shared link with ``--link`` (200 MB/s, 5 ms: bench's default source), else as is."""
    if args.link:
        s = Shaping()
        trace = args.work / LINK_TRACE
        return shaped(url, s.bandwidth, s.latency, args.work / "shaper.log", trace=trace)
    if not args.conn:
        return contextlib.nullcontext(url)
    return shaped_per_conn(url, Shaping(), args.work / "shaper.log")


def _cluster(args: argparse.Namespace, url: str, size: int) -> Any:
    quota = size // 2**20 + 64
    return cluster.up([f"web={url}"], args.work / "c", workers=args.workers, mem_quota_mib=quota)


@contextlib.contextmanager
def _watched(c: cluster.Cluster, args: argparse.Namespace) -> Iterator[list[Any]]:
    """py-spy on every process of the cluster (with ``--profile``) while the block runs, and
    the CPU seconds each process of the run spent, printed after it (:func:`_used`)."""
    assert c.proc is not None
    pid = c.proc.popen.pid
    spies = []
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        spies.append(_spy(pid, args.profile / "cluster.txt", True))
    if args.perf:
        record = ["perf", "record", "-a", "-g", "-q", "-o", str(args.perf)]
        spies.append(subprocess.Popen(record, stdin=subprocess.DEVNULL))
    try:
        with _used():
            yield spies
    finally:
        for spy in spies:
            spy.send_signal(2)
            spy.wait(30)


@contextlib.contextmanager
def _used() -> Iterator[None]:
    """The CPU seconds each process of the run (cluster, sources, shaper, readers) spent while
    the block ran, and how busy the machine was, printed after it."""
    before = cpu_seconds(os.getpid())
    busy_before = _machine_busy()
    try:
        yield
    finally:
        used = {k: v - before.get(k, 0.0) for k, v in cpu_seconds(os.getpid()).items()}
        print("CPU seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(used.items())))
        busy, steal, total = (a - b for a, b in zip(_machine_busy(), busy_before, strict=True))
        total = max(total, 1)
        print(
            f"machine: {os.cpu_count()} CPUs {busy / total:.0%} busy, "
            f"{steal / total:.0%} taken by the hypervisor (steal), meanwhile"
        )


def _print_profiles(args: argparse.Namespace) -> None:
    if args.profile:
        for f in sorted(args.profile.glob("*.txt")):
            print("\n".join(top_frames(f, args.top)))


def _machine_busy() -> tuple[int, int, int]:
    """The machine's busy, stolen and total CPU ticks so far (``/proc/stat``: user, nice,
    system, idle, iowait, irq, softirq, steal; guest time is inside user already)."""
    line = Path("/proc/stat").read_text().split("\n", 1)[0]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in line.split()[1:9])
    busy = user + nice + system + irq + softirq
    return busy, steal, busy + steal + idle + iowait


def cpu_seconds(root: int) -> dict[str, float]:
    """CPU seconds (user + system) of ``root`` and every process under it, by what it is;
    ``root``'s own count takes in its children that exited and were waited for."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    stack = [root]
    while stack:
        pid = stack.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            for task in Path(f"/proc/{pid}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        ticks = sum(int(f) for f in fields[11 : 15 if pid == root else 13])
        name = "readers (this process)" if pid == root else _what(cmd)
        out[name] = out.get(name, 0.0) + ticks / tick
    return out


def _what(cmdline: list[bytes]) -> str:
    """A process's name in the CPU report: ``fluidcache worker worker-0``, ``bench.shaper``,
    ``nginx``."""
    words = [w.decode() for w in cmdline if w]
    if len(words) > 2 and words[1] == "-m":
        if words[2] != "fluidcache" or len(words) < 4:
            return words[2]
        if words[3] == "worker" and "--id" in words[:-1]:
            return "fluidcache worker " + words[words.index("--id") + 1]
        return "fluidcache " + words[3]
    return Path(words[0].split(":")[0]).name if words else "?"


def _spy(pid: int, out: Path, subprocesses: bool) -> subprocess.Popen[bytes]:
    argv = [
        str(Path(sys.executable).parent / "py-spy"),
        "record",
        "--pid",
        str(pid),
        "--format",
        "raw",
        "-o",
        str(out),
        "-r",
        "200",
    ]
    argv += ["--nonblocking"]
    if subprocesses:
        argv.append("--subprocesses")
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    return spy


if __name__ == "__main__":
    sys.exit(main())
