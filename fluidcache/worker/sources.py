"""The sources a worker may read: the mounts the master announced, one adapter each."""

from __future__ import annotations

import asyncio

from fluidcache.common import errors
from fluidcache.common.protocol import MountInfo
from fluidcache.ufs import UnderFileSystem, create_ufs


class SourceMap:
    """Finds the adapter that serves a source URI; refuses URIs outside every mount."""

    def __init__(self) -> None:
        self._ufs: dict[str, UnderFileSystem] = {}

    async def update(self, mounts: list[MountInfo]) -> None:
        """Add adapters for new mounts (known ones are kept, with their connections), each
        made ready for its first read."""
        added = []
        for m in mounts:
            if m.uri not in self._ufs:
                self._ufs[m.uri] = ufs = create_ufs(m.uri, m.options)
                added.append(ufs)
        await asyncio.gather(*(ufs.prepare() for ufs in added))

    def resolve(self, uri: str) -> tuple[UnderFileSystem, str]:
        """The adapter and relative path of ``uri``; InvalidArgument if no mount holds it."""
        for ufs in self._ufs.values():
            try:
                return ufs.for_uri(uri)
            except errors.InvalidArgument:
                continue
        raise errors.InvalidArgument(f"{uri!r} is not under any mount of this cluster")

    async def close(self) -> None:
        for ufs in self._ufs.values():
            await ufs.close()
        self._ufs.clear()
