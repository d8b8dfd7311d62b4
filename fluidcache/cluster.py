"""``fluidcache up``: a whole cluster on one machine, as separate processes, stopped as one.

Every child runs in its own session (so a terminal's Ctrl-C reaches only this process, which
stops the children in order: mount, workers, master) and gets SIGTERM if this process dies.

``up`` supervises its children: one that exits is started again with the same arguments and
port (a worker keeps its SSD level and re-registers its blocks; the master keeps its LMDB and
resumes its jobs; the mount replaces a stale mount), with a line in the log. Only a crash loop,
:data:`CRASH_LOOP_RESTARTS` restarts of one child within :data:`CRASH_LOOP_WINDOW` seconds,
stops everything, saying why.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import aiohttp

from fluidcache import upfile
from fluidcache.client.fuse import check_mountpoint, clean_stale_mount, mounted_at
from fluidcache.common import errors
from fluidcache.common.config import (
    TOKEN_FILE_ENV,
    parse_options,
    parse_size,
    parse_source,
    refuse_secret_options,
    write_token,
)
from fluidcache.common.http import RpcClient
from fluidcache.common.protocol import (
    NS_LOAD_METADATA,
    REPORT,
    LoadMetadataReply,
    LoadMetadataRequest,
    Report,
)
from fluidcache.ufs import check_options, create_ufs
from fluidcache.upfile import UpSpec

START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
SSD_SHARE = 0.5  # of the free space of the SSD directory's file system, split across the workers
SSD_MAX = 100 * 2**30  # per worker
SSD_MIN = 64 * 2**20  # below this a default SSD level is left out
MEM_FS = "fluidcache-mem"  # the source name of up's MEM tmpfs in /proc/mounts
IMMUTABLE_TIMEOUT = 86400  # s the kernel keeps entries and attributes of a dataset never re-listed
_PR_SET_PDEATHSIG = 1
CRASH_LOOP_RESTARTS = 5  # restarts of one child ...
CRASH_LOOP_WINDOW = 60.0  # ... within this many seconds stop the cluster
RESTART_BACKOFF = (0.0, 1.0, 2.0, 4.0, 8.0)  # seconds before the n-th restart in the window


class _Stop(Exception):
    """SIGINT or SIGTERM arrived."""


def _die_with_parent() -> None:
    os.setsid()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def check_sources(
    specs: list[str], option_specs: list[str] | None = None, timeout: float = 15.0
) -> list[tuple[str, str]]:
    """Parse ``NAME=URI`` specs and their ``--option`` values, and make sure each source answers
    with its options; ConfigError says which source or option is wrong.
    """
    sources = [parse_source(s) for s in specs]
    names = [n for n, _ in sources]
    if len(sources) > 1 and not all(names):
        raise errors.ConfigError("sources: with several sources, name each one (NAME=URI)")
    if len(set(names)) != len(names):
        raise errors.ConfigError(f"sources: duplicate names in {names}")
    options = parse_options(option_specs or [], names)
    for name, uri in sources:
        refuse_secret_options(name, options.get(name, {}), "option")
        check_options(name, uri, options.get(name, {}))

    async def probe(name: str, uri: str) -> None:
        ufs = create_ufs(uri, options.get(name))
        try:
            info = await asyncio.wait_for(ufs.stat(""), timeout)
        except (TimeoutError, errors.FluidcacheError) as e:
            reason = e.message if isinstance(e, errors.FluidcacheError) else "timed out"
            raise errors.ConfigError(f"source {uri}: cannot be reached: {reason}") from None
        finally:
            await ufs.close()
        if not info.is_dir:
            raise errors.ConfigError(f"source {uri}: is not a directory")

    async def probe_all() -> None:
        for name, uri in sources:
            await probe(name, uri)

    asyncio.run(probe_all())
    return sources


def check_port(host: str, port: int, what: str) -> None:
    """ConfigError when a fixed port cannot be bound."""
    if port == 0:
        return
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise errors.ConfigError(f"{what}: {host}:{port} is already in use") from None
            raise errors.ConfigError(f"{what}: cannot bind {host}:{port}: {e.strerror}") from None


def mount_mem(root: Path) -> bool:
    """Mount a tmpfs at ``root`` for the MEM levels, as large as /dev/shm, with transparent
    huge pages for files that fill them (``huge=within_size``: a 4 MiB block takes two 2 MiB
    pages, a small file keeps 4 KiB ones). A block arriving from the source then costs two page
    faults, not a thousand: the workers' CPU per cold GiB falls by about a third. Needs root
    (else, or if the mount fails, the plain /dev/shm directory is used); True if mounted."""
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    fs = os.statvfs(root.parent)
    size = fs.f_blocks * fs.f_frsize
    opts = f"huge=within_size,size={size},mode=0755"
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, MEM_FS, str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        print(f"fluidcache up: MEM levels on /dev/shm pages ({done.stderr.strip()})", flush=True)
    return done.returncode == 0


def clean_stale_mem_mounts() -> None:
    """Unmount and remove the MEM tmpfs of an ``up`` that died without stopping (SIGKILL): its
    blocks would hold memory until the machine restarts."""
    with open("/proc/mounts") as f:
        stale = [
            Path(fields[1])
            for fields in (line.split() for line in f)
            if fields[0] == MEM_FS
            and fields[1].startswith("/dev/shm/fluidcache-")
            and not _alive(fields[1].rpartition("-")[2])
        ]
    for root in stale:
        print(f"fluidcache up: removing {root}, left by an up that is gone", flush=True)
        subprocess.run(["umount", "-l", str(root)], check=False)
        shutil.rmtree(root, ignore_errors=True)


def _alive(pid: str) -> bool:
    return pid.isdigit() and Path(f"/proc/{pid}").exists()


def ssd_level_size(directory: Path, workers: int) -> int:
    """The default SSD quota per worker: SSD_SHARE of the free space of the file system holding
    ``directory`` (its nearest existing ancestor), split across ``workers``, at most SSD_MAX
    each, in whole MiB; 0 (no SSD level) when that is under SSD_MIN.
    """
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    size = min(int(free * SSD_SHARE) // workers, SSD_MAX) // 2**20 * 2**20
    return size if size >= SSD_MIN else 0


def _size(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def log_tail(log: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file ("" if it cannot be read)."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _pin_port(child: Child) -> None:
    """Make a restart of ``child`` listen where it listened (clients and workers keep its
    URL): its ``--port`` becomes the port it was given."""
    if "--port" not in child.argv or not child.address:
        return
    port = child.address.rsplit(":", 1)[1].rstrip("/")
    child.argv[child.argv.index("--port") + 1] = port


def capacity_note(dataset: int, files: int, capacity: int) -> str:
    """How the dataset compares with the cache, with the flags that add room when it is bigger."""
    if dataset <= capacity:
        return (
            f"dataset {_size(dataset)} in {files} files fits the cache capacity {_size(capacity)}"
        )
    fits = 100 * capacity / dataset if dataset else 0.0
    return (
        f"dataset {_size(dataset)} > cache capacity {_size(capacity)}: "
        f"{fits:.0f}% fits; add room with --ssd-quota, --mem-quota or --workers"
    )


@dataclass
class Child:
    name: str
    argv: list[str]
    log: Path
    ready_file: Path
    proc: subprocess.Popen[bytes] | None = None
    address: str = ""
    restarts: deque[float] = field(default_factory=deque)  # monotonic times, in the window

    def tail(self, lines: int = 15) -> str:
        return log_tail(self.log, lines)


@dataclass
class LocalCluster:
    """Master, workers and a mount on this machine."""

    sources: list[str]
    mountpoint: Path
    options: list[str] = field(default_factory=list)
    workers: int = 2
    mem_quota: str = "1Gi"
    mem_prealloc: str = "0"
    ssd_dir: Path | None = None
    ssd_quota: str | None = None  # None: sized from free space (see ssd_level_size)
    data_dir: Path | None = None
    master_port: int = 0
    worker_port: int = 0
    block_size: str = ""  # "": each source's own
    dataset: str = "default"
    ttl: float = 0.0
    list_at_start: bool = True  # list the whole dataset once up, to say whether it fits
    huge_pages: bool = True  # the MEM levels on a tmpfs of their own with huge pages (as root)
    log_format: str = "text"
    host: str = "127.0.0.1"
    upfile: UpSpec | None = (
        None  # from ``up -f``: its runtime's levels replace the MEM/SSD defaults
    )
    secrets_dir: Path | None = None
    children: list[Child] = field(default_factory=list)
    _own_data_dir: bool = False
    _mem_root: Path | None = None  # the workers' MEM levels are under it
    _mem_mounted: bool = False
    _ssd_bytes: int = 0
    _stopping: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LocalCluster:
        if args.file:
            return cls.from_file(args)
        if not args.sources:
            raise errors.ConfigError("up: give SOURCE arguments or -f FILE")
        return cls(
            sources=args.sources,
            options=args.option or [],
            mountpoint=Path(args.mountpoint).absolute(),
            workers=args.workers,
            mem_quota=args.mem_quota,
            mem_prealloc=args.mem_prealloc,
            ssd_dir=Path(args.ssd_dir).absolute() if args.ssd_dir else None,
            ssd_quota=args.ssd_quota,
            data_dir=Path(args.data_dir).absolute() if args.data_dir else None,
            master_port=args.master_port,
            worker_port=args.worker_port,
            block_size=args.block_size,
            dataset=args.dataset,
            ttl=args.ttl,
            list_at_start=not args.no_listing,
            huge_pages=not args.no_huge_pages,
            log_format=args.log_format,
        )

    @classmethod
    def from_file(cls, args: argparse.Namespace) -> LocalCluster:
        """``up -f FILE``: the Dataset and runtime in FILE (see :mod:`fluidcache.upfile`)."""
        text = Path(args.file).read_text() if args.file != "-" else sys.stdin.read()
        spec = upfile.load(text, args.dataset if args.dataset != "default" else "")
        return cls(
            sources=[],
            mountpoint=Path(args.mountpoint).absolute(),
            workers=max(1, spec.runtime.replicas),
            mem_prealloc=args.mem_prealloc,
            ssd_dir=Path(args.ssd_dir).absolute() if args.ssd_dir else None,
            data_dir=Path(args.data_dir).absolute() if args.data_dir else None,
            master_port=args.master_port,
            worker_port=args.worker_port,
            block_size=args.block_size,
            dataset=spec.dataset.meta.name,
            ttl=args.ttl,
            list_at_start=not args.no_listing,
            huge_pages=not args.no_huge_pages,
            log_format=args.log_format,
            upfile=spec,
            secrets_dir=Path(args.secrets_dir).absolute() if args.secrets_dir else None,
        )

    def _from_upfile(self) -> None:
        """Sources, options and credential files of the ``-f`` file, once the data dir is known."""
        assert self.upfile is not None and self.data_dir is not None
        cred_dir = self.data_dir / "credentials"
        files = upfile.credentials(self.upfile, self.secrets_dir)
        if files:
            cred_dir.mkdir(mode=0o700, exist_ok=True)
        for mount, content in files.items():
            path = cred_dir / mount
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(content)
        self.sources, self.options = upfile.sources_and_options(self.upfile, cred_dir)

    def validate(self) -> None:
        """Everything that can be checked before a process starts."""
        if self.workers < 1:
            raise errors.ConfigError("workers: need at least 1")
        parse_size(self.mem_quota, "mem-quota")
        parse_size(self.mem_prealloc, "mem-prealloc")
        if self.ssd_quota is not None:
            parse_size(self.ssd_quota, "ssd-quota")
        if self.block_size:
            parse_size(self.block_size, "block-size")
        check_port(self.host, self.master_port, "master-port")
        for i in range(self.workers if self.worker_port else 0):
            check_port(self.host, self.worker_port + i, "worker-port")
        if self.mountpoint.exists():
            clean_stale_mount(self.mountpoint)
        check_mountpoint(self.mountpoint)
        if self.upfile is None:  # else checked once the credential files exist (_prepare)
            check_sources(self.sources, self.options)

    def run(self) -> int:
        """Start, wait for a signal or a failed child, stop. Returns the exit status."""
        self.validate()
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._prepare()
            self._start_all()
            print(f"master: {self.master_url}", flush=True)
            print(f"workers: {self.workers}", flush=True)
            print(f"cache: {self._sizing()}", flush=True)
            print(f"mounted: {self.mountpoint}", flush=True)
            print("fluidcache is up; Ctrl-C (SIGINT) or SIGTERM stops it", flush=True)
            if self.list_at_start:
                threading.Thread(target=self._check_capacity, daemon=True).start()
            return self._watch()
        except _Stop:
            return 0
        except errors.FluidcacheError as e:
            print(f"fluidcache up: {e.message}", file=sys.stderr, flush=True)
            return 1
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self.stop()
            for s, h in old.items():
                signal.signal(s, h)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        raise _Stop()

    def _prepare(self) -> None:
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="fluidcache-up-"))
            self._own_data_dir = True
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        (self.data_dir / "run").mkdir(exist_ok=True)
        self.token_file = self.data_dir / "token"
        write_token(self.token_file)
        self.env = {**os.environ, TOKEN_FILE_ENV: str(self.token_file)}
        self.env.pop("FLUIDCACHE_TOKEN", None)
        if self.ssd_dir is None:
            self.ssd_dir = self.data_dir / "ssd"
        if self.upfile is not None:
            self._from_upfile()
            check_sources(self.sources, self.options)
        elif self.ssd_quota is not None:
            self._ssd_bytes = parse_size(self.ssd_quota, "ssd-quota")
        else:
            self._ssd_bytes = ssd_level_size(self.ssd_dir, self.workers)

    def _child(self, name: str, args: list[str]) -> Child:
        assert self.data_dir is not None
        ready = self.data_dir / "run" / f"{name}.ready"
        ready.unlink(missing_ok=True)
        argv = [
            sys.executable,
            "-m",
            "fluidcache",
            *args,
            "--ready-file",
            str(ready),
            "--log-format",
            self.log_format,
        ]
        return Child(name, argv, self.data_dir / "logs" / f"{name}.log", ready)

    def _start(self, child: Child) -> str:
        self.children.append(child)
        child.address = self._launch(child)
        _pin_port(child)
        return child.address

    def _launch(self, child: Child) -> str:
        """Start ``child`` and wait until it says it is ready; its address (or "")."""
        child.ready_file.unlink(missing_ok=True)
        with open(child.log, "ab") as log:
            child.proc = subprocess.Popen(
                child.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if child.ready_file.exists():
                return child.ready_file.read_text().strip()
            if child.proc.poll() is not None:
                raise errors.FluidcacheError(
                    f"{child.name} exited with status {child.proc.returncode}:\n{child.tail()}"
                )
            time.sleep(0.05)
        raise errors.FluidcacheError(f"{child.name} did not start within {START_TIMEOUT:.0f} s")

    def _start_all(self) -> None:
        assert self.data_dir is not None
        self.master_url = self._start(
            self._child(
                "master",
                [
                    "master",
                    *self.sources,
                    "--data-dir",
                    str(self.data_dir / "master"),
                    "--host",
                    self.host,
                    "--port",
                    str(self.master_port),
                    f"--block-size={self.block_size}",
                    "--dataset",
                    self.dataset,
                    "--ttl",
                    str(self.ttl),
                    *[f"--option={spec}" for spec in self.options],
                ],
            )
        )
        mem_root = self._mem_root = Path(f"/dev/shm/fluidcache-{os.getpid()}")
        if self.huge_pages:
            clean_stale_mem_mounts()
            self._mem_mounted = mount_mem(mem_root)
        for i in range(self.workers):
            mem = mem_root / f"worker-{i}"
            port = self.worker_port + i if self.worker_port else 0
            self._start(
                self._child(
                    f"worker-{i}",
                    [
                        "worker",
                        "--master",
                        self.master_url,
                        "--id",
                        f"worker-{i}",
                        *self._tiers(i, mem),
                        "--host",
                        self.host,
                        "--port",
                        str(port),
                        "--mem-prealloc",
                        self.mem_prealloc,
                    ],
                )
            )
        self._start(
            self._child(
                "mount",
                [
                    "mount",
                    self.dataset,
                    str(self.mountpoint),
                    "--master",
                    self.master_url,
                    *self._mount_timeouts(),
                ],
            )
        )

    def _mount_timeouts(self) -> list[str]:
        """A dataset re-checked every ``ttl`` seconds is trusted no longer by the mount; an
        immutable one (``ttl`` 0: never re-listed) lets the kernel keep entries and attributes
        for a day (listing and stat of a warm tree then never reach the mount)."""
        if self.ttl <= 0:
            day = str(IMMUTABLE_TIMEOUT)
            return ["--attr-timeout", day, "--entry-timeout", day]
        t = str(self.ttl)
        return ["--meta-ttl", t, "--attr-timeout", t, "--entry-timeout", t]

    def _tiers(self, index: int, mem: Path) -> list[str]:
        if self.upfile is not None:
            assert self.ssd_dir is not None
            tiers = upfile.worker_tiers(self.upfile.runtime, index, mem.parent, self.ssd_dir)
            return [a for t in tiers for a in ("--tier", t)]
        return ["--tier", f"MEM:{mem}:{self.mem_quota}", *self._ssd_tier(index)]

    def _ssd_tier(self, index: int) -> list[str]:
        if self.ssd_dir is None or self._ssd_bytes <= 0:
            return []
        return ["--tier", f"SSD:{self.ssd_dir / f'worker-{index}'}:{self._ssd_bytes}"]

    def _sizing(self) -> str:
        """What the workers hold, e.g. ``2 workers x (MEM 1.1 GB + SSD 20.0 GB at DIR) = 42.2 GB``
        (the SSD part only when there is an SSD level).
        """
        mem = parse_size(self.mem_quota, "mem-quota")
        levels = f"MEM {_size(mem)}"
        if self._ssd_bytes > 0:
            levels += f" + SSD {_size(self._ssd_bytes)} at {self.ssd_dir}"
        total = self.workers * (mem + self._ssd_bytes)
        workers = f"{self.workers} worker{'s' if self.workers > 1 else ''}"
        return f"{workers} x ({levels}) = {_size(total)}"

    def _check_capacity(self) -> None:
        """List the dataset on the master and say whether it fits the cache (a background
        thread: a big listing never delays ``up``).
        """
        try:
            report = asyncio.run(self._dataset_report())
        except errors.FluidcacheError as e:
            if not self._stopping.is_set():
                print(f"fluidcache up: cannot size the dataset: {e.message}", flush=True)
            return
        if self._stopping.is_set():
            return
        note = capacity_note(report.ufs_total_bytes, report.file_count, report.cache_capacity)
        print(note, flush=True)

    async def _dataset_report(self) -> Report:
        async with aiohttp.ClientSession() as session:
            rpc = RpcClient(self.master_url, self._token(), session, timeout=24 * 3600)
            await rpc.call(
                NS_LOAD_METADATA, LoadMetadataRequest(path=f"/{self.dataset}"), LoadMetadataReply
            )
            return await rpc.call(REPORT, None, Report)

    def _token(self) -> str:
        return self.token_file.read_text().strip()

    def _watch(self) -> int:
        """Restart children that exit; 1 (after saying why) on a crash loop."""
        while True:
            for child in self.children:
                assert child.proc is not None
                status = child.proc.poll()
                if status is not None and not self._restart(child, status):
                    return 1
            time.sleep(0.2)

    def _restart(self, child: Child, status: int) -> bool:
        """Start ``child`` again until it is ready; False on a crash loop (reported)."""
        while True:
            now = time.monotonic()
            while child.restarts and now - child.restarts[0] > CRASH_LOOP_WINDOW:
                child.restarts.popleft()
            if len(child.restarts) >= CRASH_LOOP_RESTARTS:
                print(
                    f"fluidcache up: {child.name} exited with status {status}, after "
                    f"{len(child.restarts)} restarts within {CRASH_LOOP_WINDOW:.0f} s: a crash "
                    f"loop; stopping\n{child.tail()}",
                    file=sys.stderr,
                    flush=True,
                )
                return False
            child.restarts.append(now)
            print(
                f"fluidcache up: {child.name} exited with status {status}; restarting it "
                f"(restart {len(child.restarts)} within {CRASH_LOOP_WINDOW:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(RESTART_BACKOFF[min(len(child.restarts), len(RESTART_BACKOFF)) - 1])
            if child.name == "mount":
                clean_stale_mount(self.mountpoint)
            try:
                self._launch(child)
            except errors.FluidcacheError as e:
                print(f"fluidcache up: {e.message}", file=sys.stderr, flush=True)
                assert child.proc is not None
                if child.proc.poll() is None:  # started, never ready: stop it, count it
                    child.proc.kill()
                    child.proc.wait()
                status = child.proc.returncode
                continue
            print(f"fluidcache up: {child.name} restarted", flush=True)
            return True

    def stop(self) -> None:
        """Unmount, then stop workers and master; never leaves a process or a mount behind."""
        self._stopping.set()
        for child in reversed(self.children):
            proc = child.proc
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if mounted_at(self.mountpoint) is not None:
            subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)], check=False)
        if self._mem_root is not None:
            if self._mem_mounted:
                subprocess.run(["umount", "-l", str(self._mem_root)], check=False)
                self._mem_mounted = False
            shutil.rmtree(self._mem_root, ignore_errors=True)
        if self._own_data_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        self.children.clear()
