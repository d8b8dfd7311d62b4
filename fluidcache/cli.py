"""The ``fluidcache`` command: ``master``, ``worker``, ``mount``, ``report`` and ``up``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from fluidcache import __version__
from fluidcache.common import errors, logs
from fluidcache.common.config import DEFAULT_BLOCK_SIZE, TOKEN_FILE_ENV, load_token, parse_size

if TYPE_CHECKING:
    from fluidcache.client import AsyncClient
    from fluidcache.common.protocol import JobInfo, Message, Report

M = TypeVar("M", bound="Message")
T = TypeVar("T")

EXIT_CONFIG = 2
MEM_PREALLOC_HELP = (
    "memory of each worker's MEM level allocated before it serves, up to the level's low "
    "watermark, so that a cold read does not allocate its pages (default 0)"
)
BLOCK_SIZE_HELP = (
    "the dataset's block size, one ranged read of its source (default: each source's own, "
    f"{DEFAULT_BLOCK_SIZE // 2**20}Mi, or 16Mi for s3://)"
)


def _ready_writer(path: str | None, log_format: str = "text") -> Callable[[str], None]:
    """A callback that records where a process serves, for whoever started it: a ``ready:``
    line on stdout (a log record in JSON mode, so every line stays JSON) and the ready file.
    """

    def ready(address: str) -> None:
        if log_format == "json":
            logging.getLogger("fluidcache").info("ready: %s", address)
        else:
            print(f"ready: {address}", flush=True)
        if path:
            tmp = f"{path}.tmp"
            Path(tmp).write_text(address + "\n")
            os.replace(tmp, path)

    return ready


GC_YOUNG = 10_000
"""Allocations between collections of the youngest generation in a server (Python's: 700)."""


def tune_gc() -> None:
    """Collect cyclic garbage less often in a long-running server: what start-up made (modules,
    configuration) is frozen out of every collection, and the youngest generation waits for
    :data:`GC_YOUNG` allocations. Over a cold epoch of 2,000 small files, collections took 31-33
    ms of each worker's CPU and 49 ms of the mount's, with a full collection of 50-70k objects
    in each (a pause of the mount's one loop); 2 and 11 ms tuned, no full collection."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])


def _run(coro_fn: Callable[[], object]) -> None:
    tune_gc()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(coro_fn())  # type: ignore[arg-type]


def cmd_master(args: argparse.Namespace) -> None:
    from fluidcache.common.config import parse_options, parse_source
    from fluidcache.master import MasterConfig, serve
    from fluidcache.ufs import check_options

    mounts = [parse_source(s) for s in args.sources]
    config = MasterConfig(
        data_dir=Path(args.data_dir),
        mounts=mounts,
        mount_options=parse_options(args.option or [], [name for name, _ in mounts]),
        host=args.host,
        port=args.port,
        token=load_token(args.token_file),
        block_size=parse_size(args.block_size, "block-size") if args.block_size else 0,
        dataset=args.dataset,
        sync_ttl=args.ttl,
        heartbeat_interval=args.heartbeat_interval,
        worker_timeout=args.worker_timeout,
        restore_from=Path(args.restore_from) if args.restore_from else None,
        backup_dir=Path(args.backup_dir) if args.backup_dir else None,
        backup_roots=[Path(d) for d in args.backup_root or []],
    )
    config.validate()
    for name, uri in mounts:
        check_options(name, uri, config.mount_options.get(name, {}))
    _run(lambda: serve(config, ready=_ready_writer(args.ready_file, args.log_format)))


def cmd_worker(args: argparse.Namespace) -> None:
    from fluidcache.worker import LevelConfig, WorkerConfig, serve

    specs = args.tier or [f"MEM:/dev/shm/fluidcache/{args.id}:1Gi"]
    config = WorkerConfig(
        worker_id=args.id,
        master_url=args.master,
        levels=[LevelConfig.parse(spec, i) for i, spec in enumerate(specs)],
        host=args.host,
        port=args.port,
        token=load_token(args.token_file),
        mem_prealloc=parse_size(args.mem_prealloc, "mem-prealloc"),
    )
    if args.node:
        config.node = args.node
    if args.advertise:
        config.advertise = args.advertise
    config.validate()
    _run(lambda: serve(config, ready=_ready_writer(args.ready_file, args.log_format)))


def cmd_mount(args: argparse.Namespace) -> None:
    from fluidcache.client import AsyncClient
    from fluidcache.client.fuse import MountOptions, run_mount

    options = MountOptions(
        attr_timeout=args.attr_timeout,
        entry_timeout=args.entry_timeout,
        kernel_cache=not args.no_kernel_cache,
        allow_other=args.allow_other,
        read_ahead_kb=args.read_ahead_kb,
    )
    mountpoint = Path(args.mountpoint).absolute()
    token = load_token(args.token_file)
    ready = _ready_writer(args.ready_file, args.log_format)

    async def main() -> None:
        async with AsyncClient(
            args.master,
            token,
            dataset=args.dataset,
            meta_ttl=args.meta_ttl,
            dir_prefetch=not args.no_dir_prefetch,
        ) as client:
            await run_mount(client, mountpoint, options, ready=lambda: ready(str(mountpoint)))

    _run(main)


def cmd_report(args: argparse.Namespace) -> None:
    import json

    from fluidcache.client import AsyncClient

    async def main() -> None:
        async with AsyncClient(args.master, load_token(args.token_file)) as client:
            r = await client.report()
        print(json.dumps(r.fluid(), indent=2) if args.json else format_report(r))

    asyncio.run(main())


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _table(rows: list[list[str]]) -> list[str]:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def format_report(r: Report) -> str:
    """``fluidcache report`` as text: Fluid's dataset columns and hit ratios, then workers."""
    lines = _table(
        [
            ["DATASET", "UFS TOTAL SIZE", "CACHED", "CACHE CAPACITY", "CACHED %", "FILES"],
            *[
                [
                    d.name,
                    _mb(d.ufs_total_bytes),
                    _mb(d.cached_bytes),
                    _mb(d.cache_capacity),
                    f"{d.cached_percent:.1f}%",
                    str(d.file_count),
                ]
                for d in r.datasets
            ],
        ]
    )
    lines.append("")
    lines += _table(
        [
            ["DATASET", "CACHE HIT RATIO", "LOCAL HIT RATIO", "REMOTE HIT RATIO"],
            *[
                [
                    d.name,
                    f"{100 * d.cache_hit_ratio:.1f}%",
                    f"{100 * d.local_hit_ratio:.1f}%",
                    f"{100 * d.remote_hit_ratio:.1f}%",
                ]
                for d in r.datasets
            ],
        ]
    )
    b = r.reads
    lines.append(
        f"bytes read: {_mb(b.local)} local, {_mb(b.remote)} remote, {_mb(b.source)} from "
        f"the sources"
    )
    if r.shared_bytes:
        lines.append(
            f"bytes saved by sharing: {_mb(r.shared_bytes)} (identical content under several "
            "paths, cached once)"
        )
    for d in r.datasets:
        for name, uri in sorted(d.snapshots.items()):
            lines.append(f"{d.name}/{name}: serves {uri}")
    for d in r.datasets:
        if d.shortfall is not None:
            lines.append(f"{d.name}: does not fit: {d.shortfall.advice}")
    lines.append("")
    lines.append(f"workers: {len(r.workers)} live, {r.lost_workers} lost")
    rows = [["WORKER", "NODE", "TIER", "USED", "CAPACITY", "USED %", "BLOCKS"]]
    for w in r.workers:
        for t in w.tiers:
            pct = 100 * t.used / t.capacity if t.capacity else 0.0
            row = [w.worker_id, w.node, t.medium, _mb(t.used), _mb(t.capacity), f"{pct:.1f}%"]
            rows.append([*row, str(t.blocks)])
    if len(rows) > 1:
        lines += _table(rows)
    return "\n".join(lines)


def _admin(args: argparse.Namespace, path: str, request: Message, reply: type[M]) -> M:
    """One control call to the master, for the admin commands."""
    from fluidcache.common.http import RpcClient, client_session

    async def main() -> M:
        async with client_session() as session:
            rpc = RpcClient(args.master, load_token(args.token_file), session, timeout=3600)
            return await rpc.call(path, request, reply)

    return asyncio.run(main())


def _client_call(args: argparse.Namespace, call: Callable[[AsyncClient], Awaitable[T]]) -> T:
    """Run ``call`` with a client of the master in ``args``."""
    from fluidcache.client import AsyncClient

    async def main() -> T:
        dataset = getattr(args, "dataset", "default")
        async with AsyncClient(args.master, load_token(args.token_file), dataset=dataset) as c:
            return await call(c)

    return asyncio.run(main())


def _job_line(job: JobInfo) -> str:
    """One line of a job's state: phase, counts, rate, ETA, error."""
    line = (
        f"{job.job_id}  {job.phase:<9} {job.files_done}/{job.files_total} files  "
        f"{_done_of(job.bytes_done, job.bytes_total)}"
    )
    if job.phase == "Executing":
        eta = f"{job.eta:.0f} s" if job.eta >= 0 else "?"
        line += f"  {job.rate / 1e6:.1f} MB/s  ETA {eta}"
    if job.error:
        line += f"  error: {job.error}"
    return line


def _done_of(done: int, total: int) -> str:
    return f"{done / 1e6:.1f}/{_mb(total)}"


async def _watch(client: AsyncClient, job: JobInfo, interval: float) -> JobInfo:
    """Follow a job until its run is over: a live bar on a terminal, else a line every
    ``interval`` seconds."""
    if not sys.stdout.isatty():
        last = 0.0
        while job.phase not in ("Complete", "Failed") or not job.finished:
            if time.monotonic() - last >= interval:
                print(_job_line(job), flush=True)
                last = time.monotonic()
            await asyncio.sleep(0.2)
            job = await client.job(job.job_id)
        return job
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("{task.fields[files]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(job.job_id, total=None, files="")
        while True:
            bar.update(
                task,
                description=f"{job.job_id} {job.phase}",
                completed=job.bytes_done,
                total=job.bytes_total or None,
                files=f"{job.files_done}/{job.files_total} files",
            )
            if job.phase in ("Complete", "Failed") and job.finished:
                return job
            await asyncio.sleep(0.2)
            job = await client.job(job.job_id)


def _submit(args: argparse.Namespace, submit: Callable[[AsyncClient], Awaitable[JobInfo]]) -> None:
    """Submit a job; with --detach (or a schedule) print its id, else follow it to its end."""

    async def run(client: AsyncClient) -> JobInfo:
        job = await submit(client)
        if args.detach or job.schedule:
            return job
        return await _watch(client, job, args.interval)

    job = _client_call(args, run)
    if args.detach or job.schedule:
        print(job.job_id)
        if job.schedule:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.next_run))
            print(f"scheduled {job.schedule!r}: next run at {when}", file=sys.stderr)
        return
    print(_job_line(job))
    if job.phase != "Complete":
        raise errors.FluidcacheError(f"job {job.job_id} failed: {job.error}")
    if job.result:
        print(f"{job.kind}: {job.result}")


def cmd_load(args: argparse.Namespace) -> None:
    _submit(
        args,
        lambda c: c.load(
            args.paths or ["/"],
            replicas=args.replicas,
            metadata=args.metadata,
            pin=args.pin,
            schedule=args.schedule or "",
            after=args.after or "",
        ),
    )


def cmd_backup(args: argparse.Namespace) -> None:
    _submit(
        args,
        lambda c: c.backup(
            args.name or "",
            directory=args.directory or "",
            schedule=args.schedule or "",
            after=args.after or "",
        ),
    )


def cmd_free(args: argparse.Namespace) -> None:
    r = _client_call(args, lambda c: c.free(args.paths or ["/"]))
    print(f"freed {r.blocks} blocks ({_mb(r.bytes)}) of {r.files} files")


def _print_job(job: JobInfo, as_json: bool) -> None:
    if as_json:
        print(json.dumps(job.to_wire()))
        return
    started = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.started)) if job.started else "-"
    )
    print(f"{'job':<12}{job.job_id}")
    print(f"{'kind':<12}{job.kind} {' '.join(job.paths)} (dataset {job.dataset})")
    print(f"{'phase':<12}{job.phase}")
    print(f"{'started':<12}{started}")
    print(f"{'duration':<12}{job.duration:.1f} s")
    print(f"{'files':<12}{job.files_done}/{job.files_total}")
    print(f"{'bytes':<12}{job.bytes_done}/{job.bytes_total}")
    if job.kind == "load":
        replicas = "all" if job.replicas < 0 else str(job.replicas)
        print(f"{'replicas':<12}{replicas}{'  pinned' if job.pin else ''}")
        for t in job.targets:
            files, size = f"{t.files_done}/{t.files_total}", f"{t.bytes_done}/{t.bytes_total}"
            print(f"  {t.path}: {files} files, {size} bytes")
    for label, value in (
        ("schedule", job.schedule),
        ("after", job.after),
        ("result", job.result),
        ("error", job.error),
    ):
        if value:
            print(f"{label:<12}{value}")
    if job.next_run:
        print(f"{'next run':<12}{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(job.next_run))}")


def cmd_job(args: argparse.Namespace) -> None:
    if args.action == "ls":
        jobs = _client_call(args, lambda c: c.jobs(args.phase or ""))
        if args.json:
            print(json.dumps([j.to_wire() for j in jobs]))
            return
        print(
            f"{'ID':<18}{'KIND':<8}{'PHASE':<11}{'FILES':>13}{'BYTES':>21}{'DURATION':>10}  TARGETS"
        )
        for j in jobs:
            files = f"{j.files_done}/{j.files_total}"
            size = _done_of(j.bytes_done, j.bytes_total)
            print(
                f"{j.job_id:<18}{j.kind:<8}{j.phase:<11}{files:>13}{size:>21}"
                f"{j.duration:>9.1f}s  {' '.join(j.paths)}{'  ' + j.error if j.error else ''}"
            )
        return
    if not args.job_id:
        raise errors.InvalidArgument(f"job {args.action}: give a job id")
    if args.action == "status":
        _print_job(_client_call(args, lambda c: c.job(args.job_id)), args.json)
    else:
        job = _client_call(args, lambda c: c.cancel(args.job_id))
        print(f"{job.job_id} {job.phase}: {job.error}")


def cmd_load_metadata(args: argparse.Namespace) -> None:
    from fluidcache.common.protocol import (
        NS_LOAD_METADATA,
        LoadMetadataReply,
        LoadMetadataRequest,
    )

    request = LoadMetadataRequest(path=args.path, force=args.force, wait=True)
    r = _admin(args, NS_LOAD_METADATA, request, LoadMetadataReply)
    print(
        f"{r.state}: {r.path}: {r.dirs_listed} directories listed, {r.files} files, "
        f"{r.dirs} directories, {r.bytes / 1e6:.1f} MB in {r.seconds:.1f} s"
    )
    if r.state != "done":
        raise errors.SourceError(r.error or r.state)


def cmd_bench(args: argparse.Namespace) -> None:
    """Run the benchmark harness of a source checkout (``bench/`` beside the package)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    if not (root / "bench" / "__main__.py").exists():
        raise errors.ConfigError(
            "bench: the benchmark harness ships with the source checkout (run it there: make bench)"
        )
    forwarded = args.bench_args[1:] if args.bench_args[:1] == ["--"] else args.bench_args
    sys.exit(subprocess.call([sys.executable, "-m", "bench", *forwarded], cwd=root))


def cmd_fluid(args: argparse.Namespace) -> None:
    """Upstream Fluid's CacheRuntimeClass entries (see :mod:`fluidcache.fluid`)."""
    from fluidcache import fluid
    from fluidcache.client import AsyncClient

    dataset = os.environ.get("FLUID_DATASET_NAME", "")
    config: dict[str, object] = {}
    if args.entry == "mount-ufs":
        path = args.config or os.environ.get("FLUID_RUNTIME_CONFIG_PATH", "")
        if not path:
            raise errors.ConfigError("mount-ufs: no --config and no $FLUID_RUNTIME_CONFIG_PATH")
        config = json.loads(Path(path).read_text())

    async def main() -> int:
        async with AsyncClient(args.master, load_token(args.token_file), dataset=dataset) as c:
            if args.entry == "mount-ufs":
                out: object = await fluid.mount_ufs(c, config)
            elif args.entry == "report-summary":
                out = fluid.report_summary(await c.report(), dataset)
            else:
                return 0 if await fluid.dataload(c, os.environ, dataset) else 1
        print(json.dumps(out))
        return 0

    sys.exit(asyncio.run(main()))


def cmd_up(args: argparse.Namespace) -> None:
    from fluidcache.cluster import LocalCluster

    cluster = LocalCluster.from_args(args)
    sys.exit(cluster.run())


def _job_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--schedule", metavar="CRON", help="run on a cron schedule, e.g. '0 */6 * * *'")
    p.add_argument("--after", metavar="JOB", help="start only once job JOB has completed")
    p.add_argument("--detach", action="store_true", help="print the job id and return at once")
    p.add_argument(
        "--interval",
        type=float,
        default=5.0,
        metavar="S",
        help="without a terminal, print a progress line every S seconds (default 5)",
    )
    p.add_argument("--token-file")
    _tls(p, serving=False)


def _log_format(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        default="text",
        help="one line per event: text, or a JSON object with time, level, logger, process, "
        "message and exception (default text)",
    )


def _tls(p: argparse.ArgumentParser, serving: bool = True) -> None:
    """``--tls-cert``/``--tls-key`` (serve HTTPS) and ``--tls-ca`` (verify the cluster's
    servers); each defaults to its environment variable, which the flag sets for children."""
    from fluidcache.common import tls

    if serving:
        p.add_argument(
            "--tls-cert",
            default=os.environ.get(tls.CERT_ENV, ""),
            help=f"serve HTTPS with this certificate chain (PEM; default ${tls.CERT_ENV})",
        )
        p.add_argument(
            "--tls-key",
            default=os.environ.get(tls.KEY_ENV, ""),
            help=f"the certificate's private key (PEM; default ${tls.KEY_ENV})",
        )
    p.add_argument(
        "--tls-ca",
        default=os.environ.get(tls.CA_ENV, ""),
        help=f"CA file the cluster's HTTPS servers are verified against (default ${tls.CA_ENV}, "
        "else the system's trust store)",
    )


def _apply_tls(args: argparse.Namespace) -> None:
    """Make the TLS flags the process's settings (and its children's)."""
    from fluidcache.common.tls import TlsConfig

    if hasattr(args, "tls_ca"):
        cert, key = getattr(args, "tls_cert", ""), getattr(args, "tls_key", "")
        TlsConfig(cert, key, args.tls_ca).export()


def _common(p: argparse.ArgumentParser) -> None:
    _tls(p, serving=p.prog.split()[-1] != "mount")
    p.add_argument(
        "--token-file",
        help=f"file holding the cluster token (else ${TOKEN_FILE_ENV} or $FLUIDCACHE_TOKEN)",
    )
    p.add_argument("--ready-file", help="write the served address here once ready")
    _log_format(p)


def _source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--option",
        action="append",
        metavar="NAME.KEY=VALUE",
        help="an option of the source NAME (KEY=VALUE for a single unnamed source), e.g. "
        "web.credentials_file=/etc/fc/web.cred; repeat for more; README lists each source's "
        "keys. Secrets go in a file named by credentials_file, never here",
    )


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="fluidcache",
        description="A distributed cache that puts remote datasets close to the compute.",
    )
    ap.add_argument("--version", action="version", version=__version__)
    sub = ap.add_subparsers(dest="command", required=True)

    m = sub.add_parser("master", help="run the master (namespace, block map, workers)")
    m.add_argument("sources", nargs="+", metavar="SOURCE", help="URI or NAME=URI")
    m.add_argument("--data-dir", required=True, help="directory for the master's LMDB files")
    m.add_argument("--dataset", default="default", help="dataset name (default: default)")
    m.add_argument("--host", default="127.0.0.1")
    m.add_argument("--port", type=int, default=0, help="0 picks a free port")
    m.add_argument("--block-size", default="", help=BLOCK_SIZE_HELP)
    m.add_argument(
        "--ttl",
        type=float,
        default=0.0,
        metavar="S",
        help="re-list a directory from its source on access once its listing is S seconds old "
        "(default 0: never re-check)",
    )
    m.add_argument("--heartbeat-interval", type=float, default=2.0, metavar="S")
    m.add_argument(
        "--worker-timeout",
        type=float,
        default=20.0,
        metavar="S",
        help="a worker silent this long is lost and its blocks forgotten (default 20)",
    )
    m.add_argument(
        "--restore-from",
        metavar="FILE",
        help="load the namespace from this backup when the data dir is empty",
    )
    m.add_argument("--backup-dir", help="where backups are written (default DATA_DIR/backups)")
    m.add_argument(
        "--backup-root",
        action="append",
        metavar="DIR",
        help="a directory under which a backup job may write (a DataBackup's backupPath);"
        " repeatable",
    )
    _source_options(m)
    _common(m)
    m.set_defaults(fn=cmd_master)

    w = sub.add_parser("worker", help="run a worker (block cache)")
    w.add_argument("--master", required=True, help="master URL, e.g. http://127.0.0.1:7000")
    w.add_argument("--id", required=True, help="worker id, unique in the cluster")
    w.add_argument(
        "--tier",
        action="append",
        metavar="MEDIUM:PATH[,PATH]:QUOTA[:HIGH:LOW]",
        help="a storage level, top first; repeat for more (e.g. MEM:/dev/shm/fc:2Gi "
        "SSD:/var/cache/fc:50Gi:0.9:0.7); default MEM:/dev/shm/fluidcache/ID:1Gi",
    )
    w.add_argument("--node", help="node name reported to the master (default: host name)")
    w.add_argument(
        "--advertise",
        metavar="URL",
        help="the URL the master, clients and peers reach this worker at (default: the "
        "address it listens on; needed with --host 0.0.0.0, e.g. http://POD_IP:PORT)",
    )
    w.add_argument("--host", default="127.0.0.1")
    w.add_argument("--port", type=int, default=0, help="0 picks a free port")
    w.add_argument("--mem-prealloc", default="0", help=MEM_PREALLOC_HELP)
    _common(w)
    w.set_defaults(fn=cmd_worker)

    f = sub.add_parser("mount", help="mount a dataset with FUSE (read-only)")
    f.add_argument("dataset", help="dataset name (as given to the master)")
    f.add_argument("mountpoint")
    f.add_argument("--master", required=True, help="master URL")
    f.add_argument("--attr-timeout", type=float, default=60.0, help="kernel attribute cache, s")
    f.add_argument("--entry-timeout", type=float, default=60.0, help="kernel entry cache, s")
    f.add_argument(
        "--meta-ttl",
        type=float,
        default=60.0,
        help="how long the mount trusts metadata and block locations it learnt, s (default 60)",
    )
    f.add_argument("--no-kernel-cache", action="store_true", help="drop page cache on open")
    f.add_argument(
        "--no-dir-prefetch",
        action="store_true",
        help="never open a directory's small files ahead of readers opening it cold",
    )
    f.add_argument("--allow-other", action="store_true", help="let other users read the mount")
    f.add_argument(
        "--read-ahead-kb",
        type=int,
        default=4096,
        help="kernel read-ahead for the mount in KiB (default 4096; needs root)",
    )
    _common(f)
    f.set_defaults(fn=cmd_mount)

    r = sub.add_parser("report", help="dataset statistics: UFS size, cached bytes, cached %%")
    r.add_argument("--master", required=True, help="master URL")
    r.add_argument("--json", action="store_true", help="print Fluid's key names as JSON")
    r.add_argument("--token-file")
    _tls(r, serving=False)
    r.set_defaults(fn=cmd_report)

    fl = sub.add_parser(
        "fluid",
        help="upstream Fluid's CacheRuntimeClass entries: mount-ufs, report-summary, dataload",
        description="Run by Fluid's generic cache runtime (k8s/fluid/cacheruntimeclass.yaml): "
        "JSON on stdout as Fluid parses it, messages on stderr.",
    )
    fl.add_argument("entry", choices=["mount-ufs", "report-summary", "dataload"])
    fl.add_argument(
        "--master",
        default=os.environ.get("FLUIDCACHE_MASTER", "http://127.0.0.1:7000"),
        help="master URL (default $FLUIDCACHE_MASTER, else http://127.0.0.1:7000)",
    )
    fl.add_argument("--config", help="Fluid's runtime.json (default $FLUID_RUNTIME_CONFIG_PATH)")
    fl.add_argument("--token-file")
    _tls(fl, serving=False)
    fl.set_defaults(fn=cmd_fluid)

    b = sub.add_parser("backup", help="write a metadata backup (namespace, mounts, statistics)")
    b.add_argument("--master", required=True, help="master URL")
    b.add_argument("--name", help="file name in the master's backup directory")
    b.add_argument(
        "--directory",
        help="write there instead (absolute, under one of the master's --backup-root)",
    )
    _job_options(b)
    b.set_defaults(fn=cmd_backup)

    ld = sub.add_parser(
        "load",
        help="warm the cache: cache files or directories on N workers each (a job)",
        description="Cache the target paths (dataset-relative; default the whole dataset) on "
        "--replicas distinct workers each, following the job's progress until it ends.",
    )
    ld.add_argument("paths", nargs="*", metavar="PATH", help="file or directory (default /)")
    ld.add_argument("--master", required=True, help="master URL")
    ld.add_argument("--dataset", default="default", help="dataset name (default: default)")
    ld.add_argument(
        "--replicas",
        default="1",
        help="workers that hold each block (default 1); 'all': every worker, the source "
        "read once and the copies made from peer to peer",
    )
    ld.add_argument(
        "--metadata", action="store_true", help="list the targets from the sources first"
    )
    ld.add_argument("--pin", action="store_true", help="keep the blocks from eviction until freed")
    _job_options(ld)
    ld.set_defaults(fn=cmd_load)

    fr = sub.add_parser("free", help="evict files or directories from every worker (pins too)")
    fr.add_argument("paths", nargs="*", metavar="PATH", help="file or directory (default /)")
    fr.add_argument("--master", required=True, help="master URL")
    fr.add_argument("--dataset", default="default", help="dataset name (default: default)")
    fr.add_argument("--token-file")
    _tls(fr, serving=False)
    fr.set_defaults(fn=cmd_free)

    jb = sub.add_parser("job", help="list, show or cancel jobs (loads, backups)")
    jb.add_argument("action", choices=("ls", "status", "cancel"))
    jb.add_argument("job_id", nargs="?", help="job id (status, cancel)")
    jb.add_argument("--master", required=True, help="master URL")
    jb.add_argument("--phase", choices=("Pending", "Executing", "Complete", "Failed"))
    jb.add_argument("--json", action="store_true", help="machine-readable output")
    jb.add_argument("--token-file")
    _tls(jb, serving=False)
    jb.set_defaults(fn=cmd_job)

    lm = sub.add_parser(
        "load-metadata", help="list a dataset or subtree from its sources into the namespace now"
    )
    lm.add_argument("path", nargs="?", default="/", help="namespace path, e.g. /default/imgs")
    lm.add_argument("--master", required=True, help="master URL")
    lm.add_argument("--force", action="store_true", help="re-list directories still fresh")
    lm.add_argument("--token-file")
    _tls(lm, serving=False)
    lm.set_defaults(fn=cmd_load_metadata)

    bn = sub.add_parser(
        "bench",
        help="run the benchmark harness (python -m bench; e.g. fluidcache bench --quick)",
        add_help=False,
    )
    bn.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments for python -m bench")
    bn.set_defaults(fn=cmd_bench)

    u = sub.add_parser(
        "up",
        help="run a whole cluster on this machine: master, workers and a FUSE mount",
        description=(
            "Start a master, N workers and a FUSE mount of the given sources; stay in the "
            "foreground; stop everything and unmount on SIGINT or SIGTERM. Each worker has a "
            "MEM level (--mem-quota) and an SSD level under --ssd-dir (default DATA_DIR/ssd, "
            "removed at exit with a temporary DATA_DIR) sized, unless --ssd-quota says, at half "
            "the free space of that file system split across the workers, at most 100Gi each. "
            "Once up, the dataset is listed (in the background; not with --no-listing) and up says "
            "whether it fits the cache capacity."
        ),
    )
    u.add_argument(
        "sources",
        nargs="*",
        metavar="SOURCE",
        help="URI (local:///path, http(s)://host/dir/) or NAME=URI; a single unnamed source "
        "sits at the root, named ones appear as top-level directories",
    )
    u.add_argument(
        "-f",
        "--file",
        help="a Kubernetes YAML holding a Dataset and its FluidCacheRuntime (or RuntimeProfile), "
        "as kubectl applies it: its mounts, replicas (workers) and tiered store replace SOURCE "
        "and the sizing flags; encryptOptions come from $FLUIDCACHE_SECRET_<SECRET>_<KEY> or "
        "--secrets-dir; --dataset picks one of several Datasets",
    )
    u.add_argument(
        "--secrets-dir",
        help="with -f: Secret values as files SECRETS_DIR/<secret>/<key> (a mounted Secret)",
    )
    u.add_argument("--mountpoint", required=True, help="existing empty directory to mount on")
    u.add_argument("--workers", type=int, default=2, help="number of workers (default 2)")
    u.add_argument("--mem-quota", default="1Gi", help="MEM level quota per worker (default 1Gi)")
    u.add_argument("--mem-prealloc", default="0", help=MEM_PREALLOC_HELP)
    u.add_argument(
        "--ssd-dir",
        help="where the SSD level lives, one subdirectory per worker (default: DATA_DIR/ssd)",
    )
    u.add_argument(
        "--ssd-quota",
        help="SSD level quota per worker; 0 leaves the level out (default: half the free space "
        "of the SSD directory's file system, split across the workers, at most 100Gi each)",
    )
    u.add_argument(
        "--data-dir", help="master data, logs and token (default: a temporary directory)"
    )
    u.add_argument("--master-port", type=int, default=0, help="master port (default: free)")
    u.add_argument("--worker-port", type=int, default=0, help="first worker port, next ones follow")
    u.add_argument("--block-size", default="", help=BLOCK_SIZE_HELP)
    u.add_argument("--dataset", default="default", help="dataset name (default: default)")
    u.add_argument(
        "--ttl",
        type=float,
        default=0.0,
        help="re-list a directory from its source once its listing is this old, in seconds "
        "(default 0: never, for immutable datasets)",
    )
    u.add_argument(
        "--no-listing",
        action="store_true",
        help="do not list the whole dataset once up to say whether it fits the cache; "
        "directories are then listed when first used (for a dataset of millions of files)",
    )
    u.add_argument(
        "--no-huge-pages",
        action="store_true",
        help="keep the MEM levels in a directory of /dev/shm; by default (as root) up mounts "
        "them a tmpfs of their own with transparent huge pages (huge=within_size), which "
        "makes cold reads cheaper",
    )
    _source_options(u)
    _log_format(u)
    _tls(u)
    u.set_defaults(fn=cmd_up)
    return ap


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # every further argument is the harness's, --help included
        argv = ["bench", "--", *argv[1:]]
    args = parser().parse_args(argv)
    log_format = getattr(args, "log_format", "text")
    logs.setup(args.command, fmt=log_format)
    try:
        _apply_tls(args)
        args.fn(args)
    except errors.FluidcacheError as e:
        if log_format == "json":
            logging.getLogger("fluidcache").error("fluidcache %s: %s", args.command, e.message)
        else:
            print(f"fluidcache {args.command}: {e.message}", file=sys.stderr)
        sys.exit(EXIT_CONFIG if isinstance(e, errors.InvalidArgument) else 1)
    except KeyboardInterrupt:
        sys.exit(130)
