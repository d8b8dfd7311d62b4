"""Shared by the master's tests: a clock under the test's control, a master to talk to."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer
from aiohttp.web import Application

from fluidcache.common.http import RpcClient
from fluidcache.master import MasterConfig, make_app
from fluidcache.master.service import MasterService

TOKEN = "test-token"


class Clock:
    """A clock that only moves when told to."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def config(data: Path, src: Path, **kw: object) -> MasterConfig:
    cfg = MasterConfig(data_dir=data, mounts=[("", f"local://{src}")], token=TOKEN)
    for key, value in kw.items():
        setattr(cfg, key, value)
    cfg.validate()
    return cfg


class Master:
    """A master app on a real port with an RPC client for it."""

    def __init__(self, server: TestServer, rpc: RpcClient, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.rpc = rpc
        self.session = session

    @property
    def app(self) -> Application:
        return self.server.app

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


@contextlib.asynccontextmanager
async def running_master(
    cfg: MasterConfig, clock: Callable[[], float] | None = None
) -> AsyncIterator[Master]:
    """A master serving ``cfg`` on 127.0.0.1, stopped (LMDB closed) on the way out."""
    server = TestServer(make_app(cfg, clock=clock), host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            yield Master(server, RpcClient(str(server.make_url("")), TOKEN, session), session)
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def open_service(
    cfg: MasterConfig, clock: Callable[[], float] | None = None
) -> AsyncIterator[MasterService]:
    """The master's service without HTTP, closed (LMDB too) on the way out."""
    service = MasterService.open(cfg, clock)
    try:
        yield service
    finally:
        await service.close()


def make_tree(root: Path) -> None:
    """A small source: nested directories, files of known sizes."""
    (root / "a" / "b").mkdir(parents=True)
    (root / "c").mkdir()
    (root / "top.txt").write_bytes(b"x" * 10)
    (root / "a" / "one.bin").write_bytes(b"y" * 100)
    (root / "a" / "b" / "deep.txt").write_bytes(b"z" * 1000)
    (root / "c" / "empty").write_bytes(b"")
