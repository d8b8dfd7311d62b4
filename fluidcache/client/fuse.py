"""The FUSE mount: pyfuse3 operations that only translate to :class:`AsyncClient` calls.

Inode numbers are the master's (the root is 1 on both sides), so the mount holds no inode table
of its own; errors are mapped to errno in one place, :func:`_errno`.

Extended attributes (read-only): ``user.fluidcache.cached`` (the fraction of the file cached),
``user.fluidcache.version`` (the source version read) and, under an ``hf://`` source,
``user.fluidcache.commit`` (the commit the mount serves, on its directories and files).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import logging
import os
import re
import select
import signal
import stat
import subprocess
import tempfile
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import pyfuse3
import pyfuse3.asyncio

from fluidcache.client.api import AsyncClient, AsyncFile
from fluidcache.client.devfuse import DeviceRelay, libc
from fluidcache.common import errors
from fluidcache.common.protocol import FileInfo

log = logging.getLogger(__name__)

CACHED_XATTR = b"user.fluidcache.cached"
VERSION_XATTR = b"user.fluidcache.version"
COMMIT_XATTR = b"user.fluidcache.commit"
_HF_COMMIT = re.compile(r"hf://(?:datasets/|models/)?[^/]+/[^/@]+@([0-9a-f]{40})(?:/|$)")
VERSIONS_KEPT = 100_000
DIR_PAGE = 1000  # entries per listing call; the master never returns fewer unless at the end
P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class MountOptions:
    """FUSE options, named as in Fluid's fuse spec."""

    attr_timeout: float = 60.0
    entry_timeout: float = 60.0
    kernel_cache: bool = True
    allow_other: bool = False
    read_ahead_kb: int = 4096
    debug: bool = False

    def fuse_options(self) -> set[str]:
        opts = set(pyfuse3.default_options) | {"fsname=fluidcache", "subtype=fluidcache", "ro"}
        if self.allow_other:
            opts.add("allow_other")
        if self.debug:
            opts.add("debug")
        return opts


def described(info: FileInfo) -> dict[bytes, bytes]:
    """The attributes that describe ``info`` beside the cached fraction: its version, and the
    commit an ``hf://`` entry is read at (file URIs of the Hub name it)."""
    out = {}
    if info.version:
        out[VERSION_XATTR] = info.version.encode()
    if m := _HF_COMMIT.match(info.uri):
        out[COMMIT_XATTR] = m.group(1).encode()
    return out


def _errno(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Turn fluidcache errors into FUSEError with their errno; anything else is EIO."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except errors.FluidcacheError as e:
            raise pyfuse3.FUSEError(e.errno) from None
        except Exception:
            log.exception("%s failed", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


@dataclass
class _DirHandle:
    """An open directory, streamed a page at a time.

    Offsets handed to the kernel are entry indexes; page ``i`` holds indexes ``i * PAGE`` on,
    and ``cursors[i]`` is the name it starts after, so any offset can be resumed without
    keeping more than one page of entries.
    """

    ino: int
    cursors: list[str] = field(default_factory=lambda: [""])
    page_index: int = -1
    page: list[FileInfo] = field(default_factory=list)


class FluidcacheOperations(pyfuse3.Operations):  # type: ignore[misc]
    """Read-only POSIX view of a dataset."""

    enable_writeback_cache = False

    def __init__(self, client: AsyncClient, options: MountOptions) -> None:
        super().__init__()
        self.client = client
        self.options = options
        self._files: dict[int, AsyncFile] = {}
        self._dirs: dict[int, _DirHandle] = {}
        self._next_fh = 1
        self._uid, self._gid = os.getuid(), os.getgid()
        # inode -> version whose pages the kernel may keep; bounded (a forgotten inode simply
        # has its pages dropped at its next open)
        self._versions: OrderedDict[int, str] = OrderedDict()

    def _fh(self) -> int:
        self._next_fh += 1
        return self._next_fh

    def _attr(self, info: FileInfo) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = info.ino
        a.generation = 0
        a.entry_timeout = self.options.entry_timeout
        a.attr_timeout = self.options.attr_timeout
        a.st_mode = (stat.S_IFDIR | 0o555) if info.is_dir else (stat.S_IFREG | 0o444)
        a.st_nlink = 2 if info.is_dir else 1
        a.st_uid, a.st_gid = self._uid, self._gid
        a.st_rdev = 0
        a.st_size = info.size
        a.st_blksize = 128 * 1024
        a.st_blocks = (info.size + 511) // 512
        ns = int(info.mtime * 1e9)
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = ns
        return a

    @_errno
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> Any:
        text = os.fsdecode(name)
        if text == ".":
            return self._attr(await self.client.getattr(parent_inode))
        if text == "..":
            info = await self.client.getattr(parent_inode)
            return self._attr(await self.client.getattr(info.parent or info.ino))
        return self._attr(await self.client.lookup(parent_inode, text))

    @_errno
    async def getattr(self, inode: int, ctx: Any = None) -> Any:
        return self._attr(await self.client.getattr(inode))

    @_errno
    async def opendir(self, inode: int, ctx: Any) -> int:
        info = await self.client.getattr(inode)
        if not info.is_dir:
            raise errors.NotADirectory(info.path)
        fh = self._fh()
        self._dirs[fh] = _DirHandle(inode)
        return fh

    @_errno
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        handle = self._dirs[fh]
        index = start_id
        while True:
            number, offset = divmod(index, DIR_PAGE)
            if number != handle.page_index:
                if number >= len(handle.cursors):
                    return  # past the last page
                page = await self.client.list_page(handle.ino, handle.cursors[number], DIR_PAGE)
                handle.page_index, handle.page = number, page.entries
                if page.cursor and len(handle.cursors) == number + 1:
                    handle.cursors.append(page.cursor)
            if offset >= len(handle.page):
                return
            entry = handle.page[offset]
            if not pyfuse3.readdir_reply(
                token, os.fsencode(entry.name), self._attr(entry), index + 1
            ):
                return
            index += 1

    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    @_errno
    async def open(self, inode: int, flags: int, ctx: Any) -> Any:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise errors.ReadOnly("fluidcache mounts are read-only")
        known = await self.client.getattr(inode)
        info = await self.client.validate(known)
        if info.is_dir:
            raise errors.IsADirectory(info.path)
        fh = self._fh()
        self._files[fh] = AsyncFile(self.client, info)
        self.client.opened(info)
        # Keep the kernel's pages across opens only while the source version is unchanged.
        seen = self._versions.pop(inode, None)
        unchanged = seen == info.version
        self._versions[inode] = info.version
        if len(self._versions) > VERSIONS_KEPT:
            self._versions.popitem(last=False)
        if (seen is not None and not unchanged) or info.size != known.size:
            # The source changed (or was listed at another size than it has now): drop the
            # kernel's attributes too, not only its pages, so reads go to the new size.
            with contextlib.suppress(OSError):
                pyfuse3.invalidate_inode(inode, attr_only=False)
        return pyfuse3.FileInfo(fh=fh, keep_cache=self.options.kernel_cache and unchanged)

    @_errno
    # pyfuse3 replies from any buffer (its stub says bytes): a view of a block file held on
    # this node goes to the kernel without a copy in between.
    async def read(  # type: ignore[override]
        self, fh: int, off: int, size: int
    ) -> bytes | memoryview:
        return await self._files[fh].pread_buffer(off, size)

    async def release(self, fh: int) -> None:
        self._files.pop(fh, None)

    @_errno
    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        info = await self.client.getattr(inode)
        if name == CACHED_XATTR:
            return f"{await self.client.cached_fraction(info):.4f}".encode()
        value = described(info).get(name)
        if value is None:
            raise pyfuse3.FUSEError(errno.ENODATA)
        return value

    @_errno
    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        return [CACHED_XATTR, *described(await self.client.getattr(inode))]

    @_errno
    async def statfs(self, ctx: Any) -> Any:
        report = await self.client.report()
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = max(report.cache_capacity, report.ufs_total_bytes) // 4096
        s.f_bfree = s.f_bavail = max(0, report.cache_capacity - report.cached_bytes) // 4096
        s.f_files = report.file_count
        s.f_ffree = s.f_favail = 0
        s.f_namemax = 255
        return s


def mounted_at(mountpoint: Path) -> str | None:
    """The file system type mounted at ``mountpoint`` (from /proc/mounts), or None."""
    target = str(mountpoint).replace(" ", "\\040")
    found = None
    with open("/proc/mounts") as f:
        for line in f:
            fields = line.split()
            if fields[1] == target:
                found = fields[2]  # the last one mounted there is the one seen
    return found


def is_stale_mount(mountpoint: Path) -> bool:
    """A FUSE mount whose server is gone ("Transport endpoint is not connected").

    ``statfs`` is never answered from the kernel's caches, unlike ``stat``.
    """
    fstype = mounted_at(mountpoint)
    if fstype is None or not fstype.startswith("fuse"):
        return False
    try:
        os.statvfs(mountpoint)
    except OSError as e:
        return e.errno == errno.ENOTCONN
    return False


def clean_stale_mount(mountpoint: Path) -> None:
    """Unmount a mount point left by a crashed process."""
    if is_stale_mount(mountpoint):
        log.warning("%s: stale FUSE mount found, unmounting it", mountpoint)
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)


def check_mountpoint(mountpoint: Path) -> None:
    """ConfigError unless ``mountpoint`` is an existing directory that is not mounted already."""
    if not mountpoint.is_dir():
        raise errors.ConfigError(f"mountpoint: {mountpoint} does not exist or is not a directory")
    if os.path.ismount(mountpoint):
        raise errors.ConfigError(f"mountpoint: {mountpoint} is busy (something is mounted there)")


READY_STREAK = 8  # waits for the device in a row that may skip the event loop


class DeviceWait:
    """pyfuse3's wait for its device to be readable, cheaper while requests are queued.

    Under asyncio pyfuse3 waits for every request by registering a reader on the event loop
    and removing it once woken: under uvloop seven system calls (``strace -c`` of a cold epoch:
    58,089 ``epoll_ctl``, 9,822 ``ioctl`` and 9,689 ``io_uring_enter`` for 11,002 requests). A
    zero-timeout ``poll`` comes first here; the event loop's wait only when nothing is queued,
    and after :data:`READY_STREAK` requests taken in a row, so that the mount's other tasks
    (answers from workers) run under a steady stream of requests as well.
    """

    def __init__(self, wait: Callable[[Any], Awaitable[None]]) -> None:
        self._wait = wait
        self._polls: dict[Any, select.poll] = {}
        self._streak = 0

    async def __call__(self, fd: Any) -> None:
        if self._streak < READY_STREAK:
            poll = self._polls.get(fd)
            if poll is None:
                poll = self._polls[fd] = select.poll()
                poll.register(fd, select.POLLIN)
            if poll.poll(0):
                self._streak += 1
                return
        self._streak = 0
        await self._wait(fd)


_LOOP_WAIT = pyfuse3.asyncio.wait_readable


def set_read_ahead(mountpoint: Path, dev: int, kb: int) -> None:
    """Raise the kernel's read-ahead for the mount on device ``dev`` (its ``st_dev``; default
    128 KiB).

    Sequential reads then reach us as 1 MiB requests with several in flight: the largest single
    win on the FUSE read path. Needs root; without it the kernel default stays.
    """
    if kb <= 0:
        return
    try:
        bdi = Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}")
        (bdi / "read_ahead_kb").write_text(f"{kb}\n")
    except OSError as e:
        log.warning("cannot set read-ahead of %s to %d KiB: %s", mountpoint, kb, e.strerror)


MAX_BACKGROUND = 64  # read-ahead requests the kernel keeps in flight (its default: 12)
FUSECTL = Path("/sys/fs/fuse/connections")


@contextlib.contextmanager
def fusectl() -> Iterator[Path]:
    """The FUSE control file system: the system's, else mounted for the while and unmounted."""
    if os.path.ismount(FUSECTL):
        yield FUSECTL
        return
    c = libc()
    with tempfile.TemporaryDirectory(prefix="fluidcache-fusectl-") as tmp:
        if c.mount(b"fusectl", tmp.encode(), b"fusectl", 0, None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), "fusectl")
        try:
            yield Path(tmp)
        finally:
            if c.umount2(tmp.encode(), 0) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), f"unmount {tmp}")


def set_background(mountpoint: Path, dev: int, requests: int) -> None:
    """Let the kernel keep ``requests`` background (read-ahead) requests in flight for the mount
    on device ``dev`` (its ``st_dev``).

    Past its congestion threshold (9 of 12 by default) the kernel stops reading ahead and reads
    page by page: 16 readers of cold 128 KiB files then cost 2.3 READs a file, most of 4 KiB,
    where one READ of 128 KiB does. Set through fusectl, the threshold at three quarters as the
    kernel's default; needs root, as :func:`set_read_ahead` does.
    """
    if requests <= 0 or os.major(dev) != 0:
        return
    try:
        with fusectl() as ctl:
            conn = ctl / str(os.minor(dev))
            (conn / "max_background").write_text(f"{requests}\n")
            (conn / "congestion_threshold").write_text(f"{requests * 3 // 4}\n")
    except OSError as e:
        log.warning("cannot let %s read ahead %d requests at once: %s", mountpoint, requests, e)


async def run_mount(
    client: AsyncClient,
    mountpoint: Path,
    options: MountOptions,
    ready: Callable[[], None] | None = None,
) -> None:
    """Mount, serve until SIGINT/SIGTERM, then unmount. ``ready`` is called once mounted."""
    clean_stale_mount(mountpoint)
    check_mountpoint(mountpoint)
    await client.stat("/")  # fail before mounting when the master cannot be reached
    pyfuse3.asyncio.enable()
    ops = FluidcacheOperations(client, options)
    with fuse_session(ops, mountpoint, options.fuse_options()):
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, pyfuse3.terminate)

        async def after_init() -> None:
            # The kernel sets the read-ahead from the INIT reply: change it once INIT is done,
            # which a first stat of the mount point (answered by our own loop) proves.
            st = await asyncio.to_thread(os.stat, mountpoint)
            set_read_ahead(mountpoint, st.st_dev, options.read_ahead_kb)
            set_background(mountpoint, st.st_dev, MAX_BACKGROUND)
            log.info("mounted on %s", mountpoint)
            if ready is not None:
                ready()

        started = asyncio.ensure_future(after_init())
        try:
            await pyfuse3.main()
        finally:
            started.cancel()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
    log.info("unmounted %s", mountpoint)


@contextlib.contextmanager
def fuse_session(
    ops: pyfuse3.Operations, mountpoint: Path, options: set[str]
) -> Iterator[DeviceRelay | None]:
    """pyfuse3's session for ``ops`` on ``mountpoint``, mounted through a
    :class:`~fluidcache.client.devfuse.DeviceRelay` where allowed (yielded; lookups in one
    directory at once), else by libfuse (None); pyfuse3 waits for its device through
    :class:`DeviceWait`. Closed and unmounted on exit."""
    relay = DeviceRelay.mount(mountpoint, options)
    try:
        pyfuse3.init(ops, relay.path if relay else str(mountpoint), options)
    except BaseException:
        if relay is not None:
            relay.close(libfuse_has_it=False)
        raise
    wait = DeviceWait(_LOOP_WAIT)
    pyfuse3.asyncio.wait_readable = relay.waiting(wait) if relay is not None else wait
    try:
        yield relay
    finally:
        pyfuse3.close(unmount=True)
        if relay is not None:
            relay.close()
