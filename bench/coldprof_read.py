"""The reader of ``bench.coldprof``: reads paths cold through the client library, ``READERS`` at
once, and prints ``bytes seconds``:

    python -m bench.coldprof_read MASTER READERS PATH [PATH ...]

Token from $FLUIDCACHE_TOKEN."""

from __future__ import annotations

import asyncio
import os
import sys

from bench import readers as rd
from fluidcache.client import AsyncClient


async def main(master: str, readers: int, paths: list[str]) -> None:
    async with AsyncClient(master, os.environ["FLUIDCACHE_TOKEN"], dataset="default") as fc:
        n, t = await rd.atimed(rd.fc_read(fc, paths, readers))
    print(n, t)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3:]))
