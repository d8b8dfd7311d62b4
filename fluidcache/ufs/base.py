"""The one interface every source adapter honours.

A :class:`UnderFileSystem` is rooted at a URI (a dataset mount). Paths are relative POSIX strings
without a leading slash; ``""`` is the root. Every method may be retried (reads are idempotent) and
raises only :mod:`fluidcache.common.errors` classes:

- ``NotFound`` / ``NotADirectory`` / ``IsADirectory`` for what is not there or of the wrong kind,
- ``PermissionDenied`` when the source refuses access,
- ``InvalidArgument`` for a path that escapes the root,
- ``SourceError`` for a malformed answer, ``SourceUnavailable`` once bounded retries are spent,
  ``SourceChanged`` when a read names a ``version`` the file no longer has.
"""

from __future__ import annotations

import abc
import os
import posixpath
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import ClassVar, Protocol, Self, TypeAlias

from fluidcache.common.config import DEFAULT_BLOCK_SIZE
from fluidcache.common.errors import InvalidArgument, IsADirectory


@dataclass(frozen=True, slots=True)
class UfsStatus:
    """What a source says about one entry. ``version`` changes whenever the content does; a
    file listed without checking its version (a listing that gives exact sizes, no more) has
    ``version == ""``, and :meth:`UnderFileSystem.stat` gives it before the file is read."""

    name: str
    is_dir: bool
    size: int = 0
    mtime: float = 0.0
    version: str = ""


def check_span(path: str, offset: int, length: int, chunk: int | None = None) -> None:
    """``InvalidArgument`` for a read of ``path`` with a negative offset or length (or, for a
    streaming read, a chunk size below 1): what every adapter checks before any I/O."""
    if chunk is None:
        if offset < 0 or length < 0:
            raise InvalidArgument(f"{path}: negative offset or length")
    elif offset < 0 or length < 0 or chunk <= 0:
        raise InvalidArgument(f"{path}: negative offset, length or chunk")


@dataclass(frozen=True, slots=True)
class FileRegion:
    """Bytes ``[offset, offset + length)`` of an open file as the target of a read: what a
    worker gives for a block going to memory, so that a source's bytes can be spliced into the
    file (no page of it zeroed first, no copy through Python). Sliced and assigned like a
    memoryview, so an adapter fills either alike."""

    fd: int
    offset: int
    length: int

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, span: slice) -> FileRegion:
        start, stop, step = span.indices(self.length)
        if step != 1:
            raise ValueError("a file region is sliced with step 1 only")
        return FileRegion(self.fd, self.offset + start, max(0, stop - start))

    def __setitem__(self, span: slice, data: bytes | bytearray | memoryview) -> None:
        region = self[span]
        if len(data) != region.length:
            raise ValueError(f"{len(data)} bytes for a region of {region.length}")
        view, at = memoryview(data), region.offset
        while view:
            n = os.pwrite(self.fd, view, at)
            view, at = view[n:], at + n


Into: TypeAlias = memoryview | FileRegion
"""Where :meth:`UnderFileSystem.read_into` puts the bytes it reads."""


class ReadPool(Protocol):
    """The threads an adapter's reads run on (adapters of one repository may share them)."""

    @property
    def threads(self) -> int:
        """How many reads run at once; further ones wait for a thread."""
        ...


class UnderFileSystem(abc.ABC):
    """A source rooted at ``root_uri``."""

    schemes: ClassVar[tuple[str, ...]] = ()
    option_keys: ClassVar[frozenset[str]] = frozenset()
    """The option keys this adapter reads; ``check_options`` refuses any other."""
    empty_directories: ClassVar[bool] = True
    """Whether the source can hold an empty directory (a git tree cannot)."""
    block_size: ClassVar[int] = DEFAULT_BLOCK_SIZE
    """The block size of a dataset that mounts this source and sets none: a block is one
    ranged read of the source, so a source whose every request is costly reads larger ones."""

    def __init__(self, root_uri: str, options: Mapping[str, str] | None = None) -> None:
        self.root_uri = root_uri.rstrip("/") if not root_uri.endswith(":///") else root_uri
        self.options = dict(options or {})

    @abc.abstractmethod
    def uri(self, path: str) -> str:
        """The full URI of ``path``: the source URI used in block ids."""

    @abc.abstractmethod
    def relpath(self, uri: str) -> str:
        """Inverse of :meth:`uri`; ``InvalidArgument`` if ``uri`` is not under the root."""

    def for_uri(self, uri: str) -> tuple[UnderFileSystem, str]:
        """The adapter that reads ``uri`` and its relative path: ``self`` unless the URI names
        another snapshot of the same source (an ``hf://`` URI of another commit); raises like
        :meth:`relpath`.
        """
        return self, self.relpath(uri)

    @property
    def snapshot(self) -> str | None:
        """The snapshot of a moving source this adapter serves once resolved (an ``hf://``
        branch's commit); None for sources read as they are (every other adapter)."""
        return None

    def keep_snapshot(self, snapshot: str | None, ttl: float) -> None:
        """Serve ``snapshot`` (one :attr:`snapshot` gave before, e.g. before a restart) rather
        than resolving the revision again, until ``ttl`` seconds after it is taken up; then, and
        every ``ttl`` seconds, resolve the revision again (0: never). Never does I/O; a no-op
        for sources read as they are."""
        return  # an optional capability: a no-op unless the adapter serves snapshots

    @abc.abstractmethod
    async def stat(self, path: str) -> UfsStatus:
        """Status of ``path`` (``name`` is its last component, ``""`` for the root)."""

    @abc.abstractmethod
    def list(self, path: str) -> AsyncIterator[UfsStatus]:
        """The entries of directory ``path``, streamed (never the whole listing at once)."""

    read_piece: ClassVar[int] = 1 << 20
    """Chunk size :meth:`read` asks of :meth:`read_stream` by default."""

    async def read(self, path: str, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes from ``offset``, fewer only at end of file.

        By default the pieces of :meth:`read_stream`, joined; adapters with a cheaper whole read
        override it.
        """
        check_span(path, offset, length)
        if length == 0:
            return b""
        async with aclosing(self.read_stream(path, offset, length, self.read_piece)) as pieces:
            return b"".join([piece async for piece in pieces])

    @abc.abstractmethod
    def read_stream(
        self, path: str, offset: int, length: int, chunk: int = 1 << 20, version: str = ""
    ) -> AsyncGenerator[bytes, None]:
        """The same bytes as :meth:`read`, as chunks of at most ``chunk`` bytes.

        With ``version`` (a :class:`UfsStatus` version), ``SourceChanged`` is raised instead of
        bytes of another version, where the source can tell (a local file is checked before and
        after the read, HTTP sends ``If-Match`` with an ETag, S3 ``IfMatch``): a block is never
        built from two versions of a file. Chunks already given are of ``version``.
        """

    reads_into: ClassVar[bool] = False
    """Whether :meth:`read_into` is cheaper than :meth:`read_stream` (declared, not probed)."""

    @property
    def read_pool(self) -> ReadPool | None:
        """The threads :meth:`read_into` runs on, None when its reads wait for no thread: a
        worker counts a read as under way only once it has one (``Slots`` per pool), or else
        a waiting read-ahead would hold up a reader's read queued behind it."""
        return None

    async def read_into(self, path: str, offset: int, buf: Into, version: str = "") -> int:
        """Fill ``buf`` (memory, or a :class:`FileRegion`) with the bytes from ``offset``; how
        many (fewer only at end of file).

        Same errors and ``version`` check as :meth:`read_stream`; by default its pieces, copied
        in. Adapters that can receive straight into ``buf`` set :attr:`reads_into`."""
        got = 0
        stream = self.read_stream(path, offset, len(buf), self.read_piece, version)
        async with aclosing(stream) as pieces:
            async for piece in pieces:
                buf[got : got + len(piece)] = piece
                got += len(piece)
        return got

    async def read_head(
        self, path: str, buf: memoryview, on_status: Callable[[UfsStatus], None] | None = None
    ) -> tuple[UfsStatus, int]:
        """The file's status as the source has it now and its first bytes, of that version,
        in ``buf`` (how many: ``min(len(buf), size)``): what opening a file listed without
        its version needs. Same errors as :meth:`stat` and :meth:`read_stream` (NotFound
        when the file is gone). ``on_status``, if given, is told the status as soon as it is
        known, before the bytes (from any thread; once more if a request is retried). By
        default a ``stat`` then a read naming its version; adapters whose read answers tell
        the version (HTTP, S3) do it in one request."""
        status = await self.stat(path)
        if status.is_dir:
            raise IsADirectory(f"{path}: is a directory")
        if on_status is not None:
            on_status(status)
        want = min(len(buf), status.size)
        got = await self.read_into(path, 0, buf[:want], status.version) if want else 0
        return status, got

    async def prepare(self) -> None:
        """Make ready what the first request would need (a client), so that the first read
        does not wait for it: called once a worker learns the source. Never raises; a failure
        is left to that first request to report."""
        return  # an optional capability: most adapters have nothing to set up

    async def close(self) -> None:
        """Release connections; the object is unusable afterwards."""
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def clean_path(path: str) -> str:
    """Normalise a relative path; refuse one that climbs out of the root."""
    if "\0" in path:
        raise InvalidArgument(f"path {path!r} contains a NUL byte")
    norm = posixpath.normpath("/" + path.strip("/")).lstrip("/")
    parts = path.strip("/").split("/")
    if ".." in parts:
        raise InvalidArgument(f"path {path!r} escapes the mount root")
    return "" if norm == "." else norm
