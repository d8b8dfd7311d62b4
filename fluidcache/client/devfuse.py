"""The FUSE mount made here, so that the kernel runs lookups in one directory in parallel.

libfuse 3.14 (Debian's, which pyfuse3 is built against) sets ``FUSE_CAP_PARALLEL_DIROPS`` in
what it wants of the kernel but never copies it into its answer to the kernel's INIT (3.17
does). Without it the kernel holds a directory's lock over every LOOKUP in it: readers opening
cold files of one directory wait in line behind the one whose lookup waits for the source's
listing (four lookups of 50 ms in one directory: 206 ms, against 55 ms with the flag).

As root, :meth:`DeviceRelay.mount` therefore mounts with mount(2) itself, as libfuse would (its
source, type, flags and options), and hands libfuse one end of a socket pair as its device
(``/dev/fd/N``: libfuse's way of serving a mount made by someone else). The kernel's INIT is
passed to libfuse there; libfuse's answer comes back, gets the flag, and goes to the kernel;
then the socket's descriptor number is made to refer to /dev/fuse (dup2) before libfuse reads
again, so that every later request and answer goes between the kernel and libfuse directly.
Without the right to mount (not root), libfuse mounts as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import select
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

log = logging.getLogger(__name__)

FUSE_PARALLEL_DIROPS = 1 << 18  # the INIT flag (include/uapi/linux/fuse.h)
_INIT_FLAGS = struct.Struct("<I")
_INIT_FLAGS_AT = 16 + 12  # fuse_out_header (len, error, unique), then major, minor, max_readahead
_HEADER = struct.Struct("<Ii")  # fuse_out_header's len and error
_READ_BUFFER = 1 << 17  # the kernel refuses reads of /dev/fuse into less than 8 KiB
INIT_TIMEOUT_MS = 10_000  # the kernel queues INIT when mounted: at once in practice
MS_RDONLY, MS_NOSUID, MS_NODEV = 1, 2, 4
MNT_DETACH = 2
_KERNEL_OPTIONS = {"allow_other", "default_permissions"}  # passed in mount(2)'s data as they are
_LIBFUSE_OPTIONS = {"debug"}  # libfuse's own, not the kernel's


def libc() -> ctypes.CDLL:
    """The C library, with errno kept for ``ctypes.get_errno()`` (mount(2) and its kin)."""
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def mount_arguments(options: set[str]) -> tuple[str, str, int, list[str]] | None:
    """(source, type, flags, data options) of mount(2) for libfuse ``options``, as libfuse
    would mount; None for an option this does not know (libfuse mounts, then)."""
    source, fstype, flags, data = "fuse", "fuse", MS_NOSUID | MS_NODEV, []
    for option in sorted(options):
        name, _, value = option.partition("=")
        if name == "fsname" and value:
            source = value
        elif name == "subtype" and value:
            fstype = f"fuse.{value}"
        elif option == "ro":
            flags |= MS_RDONLY
        elif option in _KERNEL_OPTIONS:
            data.append(option)
        elif option not in _LIBFUSE_OPTIONS:
            return None
    return source, fstype, flags, data


class DeviceRelay:
    """A mount made with mount(2), whose INIT answer from libfuse asks for parallel lookups."""

    def __init__(self, mountpoint: Path, device: int) -> None:
        self.mountpoint = mountpoint
        self._device = device  # /dev/fuse, as mounted
        self._ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._theirs = theirs.detach()  # a number libfuse closes once it has its session
        self.path = f"/dev/fd/{self._theirs}"  # libfuse's device: a socket until INIT is done
        self.answered = False

    @classmethod
    def mount(cls, mountpoint: Path, options: set[str]) -> DeviceRelay | None:
        """Mount ``mountpoint`` with libfuse ``options``; None when mount(2) is not allowed
        here (not root) or an option is not one this knows: libfuse then mounts itself."""
        args = mount_arguments(options)
        if args is None:
            return None
        source, fstype, flags, extra = args
        try:
            device = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            log.info("opening /dev/fuse here: %s; libfuse mounts %s", e.strerror, mountpoint)
            return None
        data = [f"fd={device}", "rootmode=40000", f"user_id={os.getuid()}"]
        data += [f"group_id={os.getgid()}", *extra]
        target = os.fsencode(mountpoint)
        if libc().mount(source.encode(), target, fstype.encode(), flags, ",".join(data).encode()):
            err = ctypes.get_errno()
            os.close(device)
            log.info("mounting %s here: %s; libfuse mounts it", mountpoint, os.strerror(err))
            return None
        relay = cls(mountpoint, device)
        try:
            relay._pass_init()
        except BaseException:
            relay.close(libfuse_has_it=False)
            raise
        return relay

    def _pass_init(self) -> None:
        poll = select.poll()
        poll.register(self._device, select.POLLIN)
        if not poll.poll(INIT_TIMEOUT_MS):
            raise OSError(f"{self.mountpoint}: no INIT from the kernel")
        self._ours.send(os.read(self._device, _READ_BUFFER))

    def waiting(self, wait: Callable[[int], Awaitable[None]]) -> RelayedWait:
        """``wait`` (pyfuse3's wait for its device to be readable), first passing libfuse's
        answer to INIT on to the kernel once libfuse has given it."""
        return RelayedWait(self, wait)

    def pass_answer(self) -> None:
        """libfuse's INIT answer, if given, to the kernel with parallel lookups asked for; then
        libfuse's device descriptor made /dev/fuse's."""
        try:
            answer = bytearray(self._ours.recv(_READ_BUFFER, socket.MSG_DONTWAIT))
        except BlockingIOError:
            return  # libfuse has not read INIT yet
        length, error = _HEADER.unpack_from(answer)
        if error == 0 and length >= _INIT_FLAGS_AT + _INIT_FLAGS.size:
            (flags,) = _INIT_FLAGS.unpack_from(answer, _INIT_FLAGS_AT)
            _INIT_FLAGS.pack_into(answer, _INIT_FLAGS_AT, flags | FUSE_PARALLEL_DIROPS)
        os.write(self._device, answer)
        os.dup2(self._device, self._theirs, inheritable=False)  # the socket's end closes here
        self._ours.close()
        self.answered = True

    def close(self, libfuse_has_it: bool = True) -> None:
        """Unmount (lazily when busy) and close what is open here; libfuse's descriptor too
        unless ``libfuse_has_it`` (a session made on it closes it)."""
        target = os.fsencode(self.mountpoint)
        c = libc()
        if c.umount2(target, 0) and c.umount2(target, MNT_DETACH):
            err = ctypes.get_errno()
            if err not in (errno.EINVAL, errno.ENOENT):  # not mounted (any more): nothing to do
                log.warning("unmounting %s: %s", self.mountpoint, os.strerror(err))
        with contextlib.suppress(OSError):
            os.close(self._device)
        self._ours.close()
        if not libfuse_has_it:
            with contextlib.suppress(OSError):
                os.close(self._theirs)


class RelayedWait:
    """pyfuse3's wait for its device, passing libfuse's INIT answer on first (see
    :meth:`DeviceRelay.waiting`)."""

    def __init__(self, relay: DeviceRelay, wait: Callable[[int], Awaitable[None]]) -> None:
        self._relay, self._wait = relay, wait

    async def __call__(self, fd: int) -> None:
        if not self._relay.answered:
            self._relay.pass_answer()
        await self._wait(fd)
