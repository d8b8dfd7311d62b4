"""Directories on this node: ``local:///abs/path``, ``file:///``, ``hostpath:///``, ``pvc://`` and ``nfs://``.

``pvc://NAME/SUB`` and ``nfs://SERVER/EXPORT/SUB`` name storage that Kubernetes mounted into the
pod at a known place: ``$FLUIDCACHE_PVC_ROOT/NAME/SUB`` (default ``/mnt/pvc``) and
``$FLUIDCACHE_NFS_ROOT/SERVER/EXPORT/SUB`` (default ``/mnt/nfs``); the options ``pvc_root`` and
``nfs_root`` override them. URIs keep the logical form, so block ids are the same on every node.

Confinement: paths are resolved one component at a time from a directory descriptor of the
dataset root (``openat`` with ``O_NOFOLLOW``). A relative symlink is followed only while it stays
below that root; an absolute symlink or one that climbs out is refused (``PermissionDenied``),
never followed, and left out of listings. ``SUB`` itself is resolved the same way below the
PVC / NFS mount.
"""

from __future__ import annotations

import asyncio
import builtins
import errno
import os
import re
import stat as st
from collections.abc import AsyncGenerator, Iterator, Mapping
from typing import ClassVar, Protocol
from urllib.parse import quote, unquote, urlsplit

from fluidcache.common import errors
from fluidcache.ufs.base import UfsStatus, UnderFileSystem, check_span, clean_path

_LIST_BATCH = 512
_MAX_LINKS = 40
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class _DirIterator(Protocol):
    def __iter__(self) -> Iterator[os.DirEntry[str]]: ...
    def close(self) -> None: ...


def _oserror(e: OSError, path: str) -> errors.FluidcacheError:
    cls: type[errors.FluidcacheError] = {
        errno.ENOENT: errors.NotFound,
        errno.ENOTDIR: errors.NotADirectory,
        errno.EISDIR: errors.IsADirectory,
        errno.EACCES: errors.PermissionDenied,
        errno.EPERM: errors.PermissionDenied,
        errno.ELOOP: errors.PermissionDenied,  # a symlink appeared where O_NOFOLLOW forbids one
    }.get(e.errno or 0, errors.SourceError)
    return cls(f"{path or '/'}: {e.strerror}")


def _status(name: str, s: os.stat_result) -> UfsStatus:
    is_dir = st.S_ISDIR(s.st_mode)
    return UfsStatus(
        name=name,
        is_dir=is_dir,
        size=0 if is_dir else s.st_size,
        mtime=s.st_mtime,
        version="" if is_dir else f"{s.st_size}-{s.st_mtime_ns}",
    )


def walk(base: int, path: str, display: str) -> int:
    """A new descriptor for ``path`` below directory ``base`` (borrowed, not closed).

    Relative symlinks are expanded component by component and must stay below ``base``;
    absolute ones are refused. Only directories and regular files are opened.
    """
    stack = [os.dup(base)]  # descriptors of the directories walked through; [0] is the root
    todo = [p for p in path.split("/") if p][::-1]
    links = 0
    try:
        while todo:
            name = todo.pop()
            if name == ".":
                continue
            if name == "..":
                if len(stack) == 1:
                    raise errors.PermissionDenied(f"{display}: resolves outside the mount root")
                os.close(stack.pop())
                continue
            info = os.stat(name, dir_fd=stack[-1], follow_symlinks=False)
            if st.S_ISLNK(info.st_mode):
                links += 1
                if links > _MAX_LINKS:
                    raise errors.SourceError(f"{display}: too many levels of symbolic links")
                target = os.readlink(name, dir_fd=stack[-1])
                if target.startswith("/"):
                    raise errors.PermissionDenied(
                        f"{display}: {name!r} is an absolute symlink (to {target}); refused"
                    )
                todo.extend(p for p in reversed(target.split("/")) if p)
                continue
            if todo and not st.S_ISDIR(info.st_mode):
                raise errors.NotADirectory(f"{display}: {name!r} is not a directory")
            if not (st.S_ISDIR(info.st_mode) or st.S_ISREG(info.st_mode)):
                raise errors.PermissionDenied(f"{display}: not a regular file or directory")
            stack.append(os.open(name, _OPEN_FLAGS, dir_fd=stack[-1]))
        return stack.pop()
    except OSError as e:
        raise _oserror(e, display) from None
    finally:
        for fd in stack:
            os.close(fd)


class LocalUfs(UnderFileSystem):
    """A directory on this node."""

    schemes: ClassVar[tuple[str, ...]] = ("local", "file", "hostpath")

    def __init__(self, root_uri: str, options: Mapping[str, str] | None = None) -> None:
        super().__init__(root_uri, options)
        parts = urlsplit(root_uri)
        self.scheme = parts.scheme.lower()
        self._netloc = ""
        self._locate(parts)

    def _locate(self, parts: tuple[str, str, str, str, str]) -> None:
        """Set ``mount`` (trusted, resolved), ``sub`` (walked below it) and the logical path."""
        _scheme, netloc, path, _q, _f = parts
        if netloc:
            raise errors.ConfigError(
                f"source {self.root_uri!r}: a local path needs three slashes "
                f"({self.scheme}:///abs/path)"
            )
        self.mount = os.path.realpath(unquote(path) or "/")
        self.sub = ""
        self._logical = self.mount

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri('')!r})"

    @property
    def root(self) -> str:
        """Where the dataset root is on this node (before resolving symlinks inside ``sub``)."""
        return os.path.join(self.mount, self.sub).rstrip("/") or "/"

    def uri(self, path: str) -> str:
        full = os.path.join(self._logical, clean_path(path)).rstrip("/") or "/"
        return f"{self.scheme}://{self._netloc}{quote(full, errors='surrogateescape')}"

    def relpath(self, uri: str) -> str:
        parts = urlsplit(uri)
        full = unquote(parts.path, errors="surrogateescape")
        logical = self._logical.rstrip("/")
        if (
            parts.scheme.lower() != self.scheme
            or parts.netloc != self._netloc
            or parts.query
            or parts.fragment
            or (full != self._logical and not full.startswith(logical + "/"))
        ):
            raise errors.InvalidArgument(f"{uri!r} is not under {self.uri('')!r}")
        return clean_path(full[len(logical) :])

    # -- descriptors ---------------------------------------------------------------------------

    def _root_fd(self) -> int:
        try:
            mount = os.open(self.mount, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise self._mount_error(e) from None
        if not self.sub:
            return mount
        try:
            fd = walk(mount, self.sub, self.uri(""))
        finally:
            os.close(mount)
        if not st.S_ISDIR(os.fstat(fd).st_mode):
            os.close(fd)
            raise errors.NotADirectory(f"{self.uri('')}: the dataset root is not a directory")
        return fd

    def _mount_error(self, e: OSError) -> errors.FluidcacheError:
        return _oserror(e, f"{self.uri('')} ({self.mount})")

    def _open(self, path: str) -> int:
        """A descriptor for ``path`` (a directory or a regular file), confined to the root."""
        path = clean_path(path)
        root = self._root_fd()
        if not path:
            return root
        try:
            return walk(root, path, path)
        finally:
            os.close(root)

    # -- operations ----------------------------------------------------------------------------

    async def stat(self, path: str) -> UfsStatus:
        return await asyncio.to_thread(self._stat, path)

    def _stat(self, path: str) -> UfsStatus:
        fd = self._open(path)
        try:
            return _status(clean_path(path).rpartition("/")[2], os.fstat(fd))
        finally:
            os.close(fd)

    async def list(self, path: str) -> AsyncGenerator[UfsStatus, None]:
        fd, it = await asyncio.to_thread(self._open_dir, path)
        try:
            while batch := await asyncio.to_thread(self._next_batch, path, it):
                for entry in batch:
                    yield entry
        finally:
            it.close()
            os.close(fd)

    def _open_dir(self, path: str) -> tuple[int, _DirIterator]:
        fd = self._open(path)
        try:
            if not st.S_ISDIR(os.fstat(fd).st_mode):
                raise errors.NotADirectory(f"{clean_path(path)}: not a directory")
            return fd, os.scandir(fd)
        except OSError as e:
            os.close(fd)
            raise _oserror(e, path) from None
        except BaseException:
            os.close(fd)
            raise

    def _next_batch(self, path: str, it: _DirIterator) -> builtins.list[UfsStatus]:
        out: builtins.list[UfsStatus] = []
        for entry in it:
            try:
                if entry.is_symlink():
                    # resolved from the root: a link may climb above this directory, not out
                    target = self._open(f"{path}/{entry.name}")
                    try:
                        info = os.fstat(target)
                    finally:
                        os.close(target)
                else:
                    info = entry.stat(follow_symlinks=False)
            except (OSError, errors.FluidcacheError):
                continue  # dangling or escaping links are not part of the dataset
            if st.S_ISDIR(info.st_mode) or st.S_ISREG(info.st_mode):
                out.append(_status(entry.name, info))
            if len(out) >= _LIST_BATCH:
                break
        return out

    async def read(self, path: str, offset: int, length: int) -> bytes:
        check_span(path, offset, length)
        fd = await asyncio.to_thread(self._open_file, path)
        try:
            return await asyncio.to_thread(self._pread, fd, path, offset, length)
        finally:
            os.close(fd)

    def _open_file(self, path: str) -> int:
        fd = self._open(path)
        if st.S_ISDIR(os.fstat(fd).st_mode):
            os.close(fd)
            raise errors.IsADirectory(f"{clean_path(path) or '/'}: is a directory")
        return fd

    @staticmethod
    def _pread(fd: int, path: str, offset: int, length: int) -> bytes:
        chunks = []
        try:
            while length > 0:
                data = os.pread(fd, length, offset)
                if not data:
                    break
                chunks.append(data)
                offset += len(data)
                length -= len(data)
        except OSError as e:
            raise _oserror(e, path) from None
        return b"".join(chunks)

    async def read_stream(
        self, path: str, offset: int, length: int, chunk: int = 1 << 20, version: str = ""
    ) -> AsyncGenerator[bytes, None]:
        check_span(path, offset, length, chunk)
        fd = await asyncio.to_thread(self._open_file, path)
        try:
            _check_version(fd, path, version)
            end = offset + length
            while offset < end:
                data = await asyncio.to_thread(
                    self._pread, fd, path, offset, min(chunk, end - offset)
                )
                # A change during the read would mix versions in what was read so far.
                _check_version(fd, path, version)
                if not data:
                    return
                offset += len(data)
                yield data
        finally:
            os.close(fd)


def _check_version(fd: int, path: str, version: str) -> None:
    """SourceChanged unless the open file is still ``version`` (no check when it is "")."""
    if not version:
        return
    s = os.fstat(fd)
    if f"{s.st_size}-{s.st_mtime_ns}" != version:
        raise errors.SourceChanged(f"{clean_path(path)}: changed at the source (not {version})")


_NAME = re.compile(r"[A-Za-z0-9[]([A-Za-z0-9._:[\]-]*[A-Za-z0-9\]])?")


class _MountedUfs(LocalUfs):
    """A volume Kubernetes mounted into the pod under ``$ENV/<netloc>``."""

    env: str = ""
    default_root: str = ""
    option: str = ""
    form: str = ""

    def _locate(self, parts: tuple[str, str, str, str, str]) -> None:
        _scheme, netloc, path, query, fragment = parts
        if not netloc or not _NAME.fullmatch(netloc) or query or fragment:
            raise errors.ConfigError(f"source {self.root_uri!r}: expected {self.form}")
        base = self.options.get(self.option) or os.environ.get(self.env) or self.default_root
        if not os.path.isabs(base):
            raise errors.ConfigError(f"option {self.option}: {base!r} is not an absolute path")
        try:
            sub = clean_path(unquote(path))
        except errors.InvalidArgument:
            raise errors.ConfigError(
                f"source {self.root_uri!r}: the path must stay inside the volume"
            ) from None
        self._netloc = netloc
        self.mount = os.path.join(os.path.realpath(base), netloc)
        self.sub = sub
        self._logical = "/" + sub

    def _mount_error(self, e: OSError) -> errors.FluidcacheError:
        err = super()._mount_error(e)
        if isinstance(err, errors.NotFound):
            return errors.NotFound(
                f"{self.uri('')}: {self.mount} does not exist; is the volume mounted there? "
                f"(set {self.env} or the option {self.option})"
            )
        return err


class PvcUfs(_MountedUfs):
    """``pvc://NAME/SUB``: a PersistentVolumeClaim mounted at ``$FLUIDCACHE_PVC_ROOT/NAME``."""

    schemes = ("pvc",)
    option_keys = frozenset({"pvc_root"})
    env, default_root, option = "FLUIDCACHE_PVC_ROOT", "/mnt/pvc", "pvc_root"
    form = "pvc://NAME/SUB"


class NfsUfs(_MountedUfs):
    """``nfs://SERVER/EXPORT/SUB``: an export mounted at ``$FLUIDCACHE_NFS_ROOT/SERVER/EXPORT``."""

    schemes = ("nfs",)
    option_keys = frozenset({"nfs_root"})
    env, default_root, option = "FLUIDCACHE_NFS_ROOT", "/mnt/nfs", "nfs_root"
    form = "nfs://SERVER/EXPORT/SUB"
