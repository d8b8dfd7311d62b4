"""Local directories: ``local:///abs/path``, ``file:///abs/path``, ``hostpath:///abs/path``.

Symlinks are followed only while their target stays inside the root; anything that resolves
outside it is refused, never read.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat as st
from collections.abc import AsyncIterator, Iterator, Mapping
from urllib.parse import quote, unquote, urlsplit

from fluidcache.common import errors
from fluidcache.ufs.base import UfsStatus, UnderFileSystem, clean_path

_LIST_BATCH = 512


def _oserror(e: OSError, path: str) -> errors.FluidcacheError:
    cls: type[errors.FluidcacheError] = {
        errno.ENOENT: errors.NotFound,
        errno.ENOTDIR: errors.NotADirectory,
        errno.EISDIR: errors.IsADirectory,
        errno.EACCES: errors.PermissionDenied,
        errno.EPERM: errors.PermissionDenied,
    }.get(e.errno or 0, errors.SourceError)
    return cls(f"{path}: {e.strerror}")


def _status(name: str, s: os.stat_result) -> UfsStatus:
    is_dir = st.S_ISDIR(s.st_mode)
    return UfsStatus(
        name=name,
        is_dir=is_dir,
        size=0 if is_dir else s.st_size,
        mtime=s.st_mtime,
        version="" if is_dir else f"{s.st_size}-{s.st_mtime_ns}",
    )


class LocalUfs(UnderFileSystem):
    """A directory on this node."""

    schemes = ("local", "file", "hostpath")

    def __init__(self, root_uri: str, options: Mapping[str, str] | None = None) -> None:
        super().__init__(root_uri, options)
        parts = urlsplit(root_uri)
        if parts.netloc:
            raise errors.ConfigError(
                f"source {root_uri!r}: a local path needs three slashes ({parts.scheme}:///abs/path)"
            )
        self.scheme = parts.scheme
        self.root = os.path.realpath(unquote(parts.path) or "/")

    def uri(self, path: str) -> str:
        full = os.path.join(self.root, clean_path(path)).rstrip("/") or "/"
        return f"{self.scheme}://{quote(full)}"

    def relpath(self, uri: str) -> str:
        parts = urlsplit(uri)
        full = unquote(parts.path)
        if parts.scheme != self.scheme or parts.netloc:
            raise errors.InvalidArgument(f"{uri!r} is not under {self.root_uri!r}")
        if full != self.root and not full.startswith(self.root.rstrip("/") + "/"):
            raise errors.InvalidArgument(f"{uri!r} is not under {self.root_uri!r}")
        return clean_path(full[len(self.root) :])

    def _real(self, path: str) -> str:
        """The real path of ``path``, refusing anything that resolves outside the root."""
        joined = os.path.join(self.root, clean_path(path))
        real = os.path.realpath(joined)
        if real != self.root and not real.startswith(self.root.rstrip("/") + "/"):
            raise errors.PermissionDenied(f"{path}: resolves outside the mount root")
        return real

    async def stat(self, path: str) -> UfsStatus:
        return await asyncio.to_thread(self._stat, path)

    def _stat(self, path: str) -> UfsStatus:
        real = self._real(path)
        try:
            return _status(os.path.basename(clean_path(path)), os.stat(real))
        except OSError as e:
            raise _oserror(e, path) from None

    async def list(self, path: str) -> AsyncIterator[UfsStatus]:
        it = await asyncio.to_thread(self._open_dir, path)
        try:
            while batch := await asyncio.to_thread(self._next_batch, it, path):
                for entry in batch:
                    yield entry
        finally:
            it.close()

    def _open_dir(self, path: str) -> os._ScandirIterator[str]:  # type: ignore[name-defined]
        try:
            return os.scandir(self._real(path))
        except OSError as e:
            raise _oserror(e, path) from None

    def _next_batch(self, it: Iterator[os.DirEntry[str]], path: str) -> list[UfsStatus]:
        out: list[UfsStatus] = []
        for entry in it:
            try:
                self._real(os.path.join(path, entry.name))
                out.append(_status(entry.name, entry.stat(follow_symlinks=True)))
            except (OSError, errors.PermissionDenied):
                continue  # dangling or escaping links are not part of the dataset
            if len(out) >= _LIST_BATCH:
                break
        return out

    async def read(self, path: str, offset: int, length: int) -> bytes:
        return await asyncio.to_thread(self._read, path, offset, length)

    def _read(self, path: str, offset: int, length: int) -> bytes:
        real = self._real(path)
        try:
            fd = os.open(real, os.O_RDONLY)
        except OSError as e:
            raise _oserror(e, path) from None
        try:
            if st.S_ISDIR(os.fstat(fd).st_mode):
                raise errors.IsADirectory(path)
            chunks = []
            while length > 0:
                data = os.pread(fd, length, offset)
                if not data:
                    break
                chunks.append(data)
                offset += len(data)
                length -= len(data)
            return b"".join(chunks)
        except OSError as e:
            raise _oserror(e, path) from None
        finally:
            os.close(fd)

    async def read_stream(
        self, path: str, offset: int, length: int, chunk: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        end = offset + length
        while offset < end:
            data = await self.read(path, offset, min(chunk, end - offset))
            if not data:
                return
            offset += len(data)
            yield data
