"""fsspec filesystem for protocol ``fluidcache``: ``fsspec.open("fluidcache://DATASET/path")``.

Registered through the ``fsspec.specs`` entry point. The master URL comes from the ``master``
storage option or ``$FLUIDCACHE_MASTER``; the token from ``token_file``, else
``$FLUIDCACHE_TOKEN_FILE`` / ``$FLUIDCACHE_TOKEN``. Read-only: writes raise ``PermissionError``.
"""

from __future__ import annotations

import os
from typing import Any

from fsspec.asyn import AsyncFileSystem, sync
from fsspec.spec import AbstractBufferedFile

from fluidcache.client.api import AsyncClient
from fluidcache.common import errors
from fluidcache.common.config import load_token
from fluidcache.common.protocol import FileInfo

MASTER_ENV = "FLUIDCACHE_MASTER"


def _oserror(e: errors.FluidcacheError, path: str) -> OSError:
    if isinstance(e, errors.NotFound):
        return FileNotFoundError(e.errno, e.message, path)
    if isinstance(e, errors.IsADirectory):
        return IsADirectoryError(e.errno, e.message, path)
    if isinstance(e, errors.NotADirectory):
        return NotADirectoryError(e.errno, e.message, path)
    return OSError(e.errno, e.message, path)


class FluidcacheFileSystem(AsyncFileSystem):  # type: ignore[misc]
    """Datasets of one fluidcache cluster; paths are ``DATASET/dir/file``."""

    protocol = "fluidcache"
    root_marker = ""
    async_impl = True

    def __init__(
        self,
        master: str | None = None,
        token_file: str | None = None,
        asynchronous: bool = False,
        loop: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(asynchronous=asynchronous, loop=loop, **kwargs)
        self.master = master or os.environ.get(MASTER_ENV, "")
        if not self.master:
            raise ValueError(f"fluidcache: pass master=URL or set ${MASTER_ENV}")
        self._token = load_token(token_file)
        self._clients: dict[str, AsyncClient] = {}

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        path = str(path)
        if path.startswith("fluidcache://"):
            path = path[len("fluidcache://") :]
        return path.strip("/")

    def _client(self, path: str) -> tuple[AsyncClient, str]:
        dataset, _, rest = self._strip_protocol(path).partition("/")
        if not dataset:
            raise ValueError("fluidcache: a path starts with the dataset name")
        client = self._clients.get(dataset)
        if client is None:
            client = self._clients[dataset] = AsyncClient(self.master, self._token, dataset=dataset)
        return client, "/" + rest

    def _entry(self, dataset: str, info: FileInfo) -> dict[str, Any]:
        name = f"{dataset}{info.path}" if info.path != "/" else dataset
        return {
            "name": name,
            "size": info.size,
            "type": "directory" if info.is_dir else "file",
            "mtime": info.mtime,
            "version": info.version,
        }

    async def _info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        client, rel = self._client(path)
        try:
            return self._entry(client.dataset, await client.stat(rel))
        except errors.FluidcacheError as e:
            raise _oserror(e, path) from None

    async def _ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        client, rel = self._client(path)
        try:
            info = await client.stat(rel)
            entries = [info] if not info.is_dir else await client.ls(rel)
        except errors.FluidcacheError as e:
            raise _oserror(e, path) from None
        out = [self._entry(client.dataset, e) for e in entries]
        return out if detail else [e["name"] for e in out]

    async def _cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        client, rel = self._client(path)
        try:
            info = await client.stat(rel)
            if info.is_dir:
                raise errors.IsADirectory(path)
            size = info.size
            lo = 0 if start is None else (start if start >= 0 else max(0, size + start))
            hi = size if end is None else (end if end >= 0 else max(0, size + end))
            return await client.pread(info, lo, max(0, min(hi, size) - lo))
        except errors.FluidcacheError as e:
            raise _oserror(e, path) from None

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> FluidcacheFile:
        if mode != "rb":
            raise PermissionError(f"fluidcache is read-only (mode {mode!r})")
        return FluidcacheFile(
            self, path, mode, block_size or 4 * 2**20, cache_options=cache_options, **kwargs
        )

    def close(self) -> None:
        """Close the connections of every dataset client (the filesystem stays usable)."""
        clients, self._clients = list(self._clients.values()), {}
        if clients:
            sync(self.loop, _close_all, clients)

    async def _pipe_file(self, path: str, value: bytes, **kwargs: Any) -> None:
        raise PermissionError("fluidcache is read-only")

    async def _rm_file(self, path: str, **kwargs: Any) -> None:
        raise PermissionError("fluidcache is read-only")

    async def _mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        raise PermissionError("fluidcache is read-only")

    async def _makedirs(self, path: str, exist_ok: bool = False) -> None:
        raise PermissionError("fluidcache is read-only")


async def _close_all(clients: list[AsyncClient]) -> None:
    for client in clients:
        await client.aclose()


class FluidcacheFile(AbstractBufferedFile):  # type: ignore[misc]
    """A buffered read-only file whose ranges come from the fluidcache client."""

    def _fetch_range(self, start: int, end: int) -> bytes:
        return self.fs.cat_file(self.path, start=start, end=end)  # type: ignore[no-any-return]
