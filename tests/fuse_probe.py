"""A tiny pyfuse3 file system mounted as fluidcache's mount is
(:func:`fluidcache.client.fuse.fuse_session`, through its ``DeviceRelay``), run as its own
process (pyfuse3 has one session per process):

    python -m tests.fuse_probe MOUNTPOINT N

N threads look up N different names in its root at once; every lookup waits (at most
``HOLD`` seconds) until all N are under way in the file system, then answers ENOENT. Prints
the most lookups seen under way at once, then unmounts. With lookups run one at a time in a
directory (libfuse's own mount), that is 1; with the relay's, N.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sys
import threading
from pathlib import Path
from typing import Any

import pyfuse3
import pyfuse3.asyncio

from fluidcache.client.fuse import fuse_session

HOLD = 10.0  # s a lookup waits for the others


class Probe(pyfuse3.Operations):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.under_way, self.most = n, 0, 0
        self.all_there = asyncio.Event()

    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino, attrs.st_mode = inode, 0o40755
        return attrs

    async def lookup(self, parent: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        self.under_way += 1
        self.most = max(self.most, self.under_way)
        if self.under_way == self.n:
            self.all_there.set()
        try:
            await asyncio.wait_for(self.all_there.wait(), HOLD)
        except TimeoutError:
            pass
        finally:
            self.under_way -= 1
        raise pyfuse3.FUSEError(errno.ENOENT)


def _stat_all(mountpoint: Path, n: int) -> None:
    def one(i: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.stat(mountpoint / f"name-{i}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


async def _serve(mountpoint: Path, n: int) -> int:
    ops = Probe(n)
    options = {"fsname=probe", "subtype=probe", "ro", "default_permissions"}
    with fuse_session(ops, mountpoint, options) as relay:
        if relay is None:
            raise SystemExit("mount(2) refused: run as root")

        async def probe() -> None:
            await asyncio.to_thread(_stat_all, mountpoint, n)
            pyfuse3.terminate()

        task = asyncio.ensure_future(probe())
        await pyfuse3.main()
        await task
    return ops.most


def main() -> None:
    pyfuse3.asyncio.enable()
    print(asyncio.run(_serve(Path(sys.argv[1]), int(sys.argv[2]))))


if __name__ == "__main__":
    main()
