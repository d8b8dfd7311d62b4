"""The ``fluidcache`` command: ``master``, ``worker``, ``mount``, ``report`` and ``up``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from fluidcache import __version__
from fluidcache.common import errors, logs
from fluidcache.common.config import DEFAULT_BLOCK_SIZE, TOKEN_FILE_ENV, load_token, parse_size

if TYPE_CHECKING:
    from fluidcache.common.protocol import Message

M = TypeVar("M", bound="Message")

EXIT_CONFIG = 2


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


def _run(coro_fn: Callable[[], object]) -> None:
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
        block_size=parse_size(args.block_size, "block-size"),
        dataset=args.dataset,
        sync_ttl=args.ttl,
        heartbeat_interval=args.heartbeat_interval,
        worker_timeout=args.worker_timeout,
        restore_from=Path(args.restore_from) if args.restore_from else None,
        backup_dir=Path(args.backup_dir) if args.backup_dir else None,
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
    )
    if args.node:
        config.node = args.node
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
            args.master, token, dataset=args.dataset, meta_ttl=args.meta_ttl
        ) as client:
            await run_mount(client, mountpoint, options, ready=lambda: ready(str(mountpoint)))

    _run(main)


def cmd_report(args: argparse.Namespace) -> None:
    from fluidcache.client import AsyncClient

    async def main() -> None:
        async with AsyncClient(args.master, load_token(args.token_file)) as client:
            r = await client.report()
        print(f"{'UFS total size':<18}{r.ufs_total_bytes / 1e6:>12.1f} MB")
        print(f"{'files':<18}{r.file_count:>12}")
        print(f"{'cached':<18}{r.cached_bytes / 1e6:>12.1f} MB")
        print(f"{'cache capacity':<18}{r.cache_capacity / 1e6:>12.1f} MB")
        print(f"{'cached %':<18}{r.cached_percent:>12.1f}")
        for w in r.workers:
            for t in w.tiers:
                print(
                    f"  {w.worker_id:<10} {t.medium:<4} {t.used / 1e6:>10.1f} / "
                    f"{t.capacity / 1e6:.1f} MB  {t.blocks} blocks"
                )

    asyncio.run(main())


def _admin(args: argparse.Namespace, path: str, request: Message, reply: type[M]) -> M:
    """One control call to the master, for the admin commands."""
    import aiohttp

    from fluidcache.common.http import RpcClient

    async def main() -> M:
        async with aiohttp.ClientSession() as session:
            rpc = RpcClient(args.master, load_token(args.token_file), session, timeout=3600)
            return await rpc.call(path, request, reply)

    return asyncio.run(main())


def cmd_backup(args: argparse.Namespace) -> None:
    from fluidcache.common.protocol import BACKUP, BackupReply, BackupRequest

    r = _admin(args, BACKUP, BackupRequest(args.name or ""), BackupReply)
    print(f"backup: {r.path} ({r.size} bytes, {r.inodes} inodes, xxh3 {r.checksum})")


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


def cmd_up(args: argparse.Namespace) -> None:
    from fluidcache.cluster import LocalCluster

    cluster = LocalCluster.from_args(args)
    sys.exit(cluster.run())


def _log_format(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        default="text",
        help="one line per event: text, or a JSON object with time, level, logger, process, "
        "message and exception (default text)",
    )


def _common(p: argparse.ArgumentParser) -> None:
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
    m.add_argument("--block-size", default=f"{DEFAULT_BLOCK_SIZE // 2**20}Mi")
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
    w.add_argument("--host", default="127.0.0.1")
    w.add_argument("--port", type=int, default=0, help="0 picks a free port")
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
    r.add_argument("--token-file")
    r.set_defaults(fn=cmd_report)

    b = sub.add_parser("backup", help="write a metadata backup (namespace, mounts, statistics)")
    b.add_argument("--master", required=True, help="master URL")
    b.add_argument("--name", help="file name in the master's backup directory")
    b.add_argument("--token-file")
    b.set_defaults(fn=cmd_backup)

    lm = sub.add_parser(
        "load-metadata", help="list a dataset or subtree from its sources into the namespace now"
    )
    lm.add_argument("path", nargs="?", default="/", help="namespace path, e.g. /default/imgs")
    lm.add_argument("--master", required=True, help="master URL")
    lm.add_argument("--force", action="store_true", help="re-list directories still fresh")
    lm.add_argument("--token-file")
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
            "Once up, the dataset is listed and up says whether it fits the cache capacity."
        ),
    )
    u.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="URI (local:///path, http(s)://host/dir/) or NAME=URI; a single unnamed source "
        "sits at the root, named ones appear as top-level directories",
    )
    u.add_argument("--mountpoint", required=True, help="existing empty directory to mount on")
    u.add_argument("--workers", type=int, default=2, help="number of workers (default 2)")
    u.add_argument("--mem-quota", default="1Gi", help="MEM level quota per worker (default 1Gi)")
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
    u.add_argument("--block-size", default=f"{DEFAULT_BLOCK_SIZE // 2**20}Mi")
    u.add_argument("--dataset", default="default", help="dataset name (default: default)")
    u.add_argument(
        "--ttl",
        type=float,
        default=0.0,
        help="re-list a directory from its source once its listing is this old, in seconds "
        "(default 0: never, for immutable datasets)",
    )
    _source_options(u)
    _log_format(u)
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
        args.fn(args)
    except errors.FluidcacheError as e:
        if log_format == "json":
            logging.getLogger("fluidcache").error("fluidcache %s: %s", args.command, e.message)
        else:
            print(f"fluidcache {args.command}: {e.message}", file=sys.stderr)
        sys.exit(EXIT_CONFIG if isinstance(e, errors.InvalidArgument) else 1)
    except KeyboardInterrupt:
        sys.exit(130)
