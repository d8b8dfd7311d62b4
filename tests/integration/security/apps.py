"""A real master and a real worker app on 127.0.0.1 for the security tests, and their routes."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestServer

from fluidcache.master import make_app as master_app
from fluidcache.worker.config import LevelConfig, WorkerConfig
from fluidcache.worker.server import make_app as worker_app
from tests.unit.master.helpers import TOKEN, config, make_tree

BLOCK_ID = "0" * 16


@dataclass
class Apps:
    """The master's and a worker's servers, each on its own port."""

    master: TestServer
    worker: TestServer

    def url(self, which: str) -> str:
        server = self.master if which == "master" else self.worker
        return str(server.make_url("")).rstrip("/")


def routes(app: web.Application) -> list[tuple[str, str]]:
    """Every (method, concrete path) ``app`` serves, path parameters filled in."""
    found = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter", "")
        path = re.sub(r"\{[^}]+\}", BLOCK_ID, path)
        found.append((route.method, path))
    return sorted(set(found))


@contextlib.asynccontextmanager
async def running_apps(root: Path) -> AsyncIterator[Apps]:
    """A master over a small local source and a worker (not registered), stopped on exit."""
    make_tree(root / "src")
    cfg = config(root / "master", root / "src")
    level = LevelConfig("MEM", (root / "mem",), 64 << 20)
    wcfg = WorkerConfig("w1", "http://127.0.0.1:9", [level], TOKEN)
    wcfg.validate()
    master = TestServer(master_app(cfg), host="127.0.0.1", port=0)
    worker = TestServer(worker_app(wcfg), host="127.0.0.1", port=0)
    await master.start_server()
    try:
        await worker.start_server()
        try:
            yield Apps(master, worker)
        finally:
            await worker.close()
    finally:
        await master.close()
