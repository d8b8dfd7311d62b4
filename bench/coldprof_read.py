"""The reader of ``bench.coldprof``: reads one path cold through the client library and prints
``bytes seconds``. Token from $FLUIDCACHE_TOKEN."""

from __future__ import annotations

import asyncio
import os
import sys

from bench import readers as rd
from fluidcache.client import AsyncClient


async def main(master: str, path: str) -> None:
    async with AsyncClient(master, os.environ["FLUIDCACHE_TOKEN"], dataset="default") as fc:
        n, t = await rd.atimed(rd.fc_get(fc, path))
    print(n, t)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
