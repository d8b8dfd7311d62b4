"""The blocking client: :class:`AsyncClient` driven from ordinary code through one background
event-loop thread (fsspec's shared loop, the way fsspec's async filesystems do it)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from fsspec.asyn import get_loop, sync

from fluidcache.client.api import AsyncClient, AsyncFile
from fluidcache.common.protocol import FileInfo, FreeReply, JobInfo, Report

T = TypeVar("T")


class Client:
    """Blocking twin of :class:`AsyncClient`; same arguments, same paths (dataset-relative).

    Use as ``with Client(url, token, dataset="imgs") as fc: fc.open("/a.jpg").read()``.
    """

    def __init__(self, master_url: str, token: str, **options: Any) -> None:
        self._loop = get_loop()
        self.aio: AsyncClient = self._run(_make(master_url, token, options))

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return sync(self._loop, lambda: coro)  # type: ignore[no-any-return]

    def stat(self, path: str) -> FileInfo:
        return self._run(self.aio.stat(path))

    def ls(self, path: str) -> list[FileInfo]:
        return self._run(self.aio.ls(path))

    def walk(self, path: str = "/") -> Iterator[FileInfo]:
        """Every file under ``path``, depth first (a directory is listed when reached)."""
        for entry in self.ls(path):
            if entry.is_dir:
                yield from self.walk(entry.path)
            else:
                yield entry

    def cat(self, path: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes ``[start, end)`` of a file (``end`` None: to its end)."""
        return self._run(self._cat(path, start, end))

    async def _cat(self, path: str, start: int, end: int | None) -> bytes:
        info = await self.aio.stat(path)
        stop = info.size if end is None else min(end, info.size)
        return await self.aio.pread(info, start, max(0, stop - start))

    def open(self, path: str) -> File:
        return File(self, self._run(self.aio.open(path)))

    def report(self) -> Report:
        return self._run(self.aio.report())

    def load(self, paths: Sequence[str] = ("/",), **options: Any) -> JobInfo:
        """Warm ``paths``; the options of :meth:`AsyncClient.load` (replicas, pin, wait, ...)."""
        return self._run(self.aio.load(paths, **options))

    def backup(self, name: str = "", **options: Any) -> JobInfo:
        return self._run(self.aio.backup(name, **options))

    def job(self, job_id: str) -> JobInfo:
        return self._run(self.aio.job(job_id))

    def jobs(self, phase: str = "", limit: int = 100) -> list[JobInfo]:
        return self._run(self.aio.jobs(phase, limit))

    def cancel(self, job_id: str) -> JobInfo:
        return self._run(self.aio.cancel(job_id))

    def wait(self, job_id: str, poll: float = 0.5, timeout: float = 86400.0) -> JobInfo:
        """The job once its run is over; TimeoutError after ``timeout`` seconds."""
        return self._run(asyncio.wait_for(self.aio.wait(job_id, poll), timeout))

    def free(self, paths: Sequence[str] = ("/",)) -> FreeReply:
        return self._run(self.aio.free(paths))

    def close(self) -> None:
        self._run(self.aio.aclose())

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _make(master_url: str, token: str, options: dict[str, Any]) -> AsyncClient:
    return AsyncClient(master_url, token, **options)  # its session is bound to this loop


class File(io.RawIOBase):
    """A read-only, seekable binary file (wrap it in ``io.BufferedReader`` if you like)."""

    def __init__(self, client: Client, handle: AsyncFile) -> None:
        super().__init__()
        self._client = client
        self._handle = handle

    @property
    def size(self) -> int:
        return self._handle.size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()

    def read(self, size: int = -1) -> bytes:
        return self._client._run(self._handle.read(-1 if size is None else size))

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buf: Any) -> int:
        return self._client._run(self._handle.readinto(memoryview(buf).cast("B")))

    def pread(self, offset: int, size: int) -> bytes:
        return self._client._run(self._handle.pread(offset, size))
