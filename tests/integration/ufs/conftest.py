"""Real servers for the UFS suites: nginx (autoindex), ``python -m http.server`` and moto's S3.

Each server starts once per session on 127.0.0.1 and is always stopped in ``finally``. A test gets
a :class:`Source`: a fresh directory (or key prefix) on one of them, something to put files there
the way the source's owner would, and the adapter that reads it.
"""

from __future__ import annotations

import abc
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from fluidcache.ufs import UnderFileSystem, create_ufs
from tests.hub import HubRepo, Olah
from tests.sources import NGINX_CONF, free_port, wait_port

BUCKET = "fluidcache-test"
ACCESS_KEY, SECRET_KEY = "AKIAFLUIDCACHETEST", "fluidcache-secret-key"


class Output:
    """Collects a child's output lines on a thread (so a full pipe never stalls the child)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.proc, self.lines = proc, list[str]()
        self._stream = proc.stdout
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in iter(self._stream.readline, b""):
                self.lines.append(line.decode(errors="replace"))
        except (OSError, ValueError):
            return  # the stream was closed by stop()

    def wait_for(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        """The first line matching ``pattern``; AssertionError if the child exits or is silent."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if m := re.search(pattern, line):
                    return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"{self.proc.args!r}: no line like {pattern!r} in {self.lines!r}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate ``proc``'s whole process group, then kill it if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


class Server(abc.ABC):
    """A running source server; :meth:`source` carves out a fresh root for one test."""

    kind: str

    @abc.abstractmethod
    def source(self) -> Source: ...


class Source(abc.ABC):
    """A fresh, empty root on a server, the writer of its content and its adapter's URI."""

    uri: str
    options: dict[str, str]

    @abc.abstractmethod
    def write(self, path: str, data: bytes) -> None:
        """Create or replace file ``path`` (parents are created)."""

    @abc.abstractmethod
    def mkdir(self, path: str) -> None:
        """Create an empty directory ``path``."""

    def ufs(self, **options: str) -> UnderFileSystem:
        return create_ufs(self.uri, {**self.options, **options})


class DiskSource(Source):
    """A directory on disk, read directly or published by an HTTP server."""

    def __init__(self, root: Path, uri: str) -> None:
        self.root, self.uri, self.options = root, uri, {}
        root.mkdir(parents=True)

    def write(self, path: str, data: bytes) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        old = target.stat().st_mtime if target.exists() else None
        target.write_bytes(data)
        if old is not None:  # sources that version by mtime see seconds, not nanoseconds
            os.utime(target, (old + 10, old + 10))

    def mkdir(self, path: str) -> None:
        (self.root / path).mkdir(parents=True, exist_ok=True)


class LocalServer(Server):
    kind = "local"

    def __init__(self, base: Path) -> None:
        self.base = base
        self._n = itertools.count()

    def source(self) -> Source:
        root = self.base / f"t{next(self._n)}"
        return DiskSource(root, f"local://{root}")


class HttpServer(Server):
    """Serves ``www`` over HTTP on ``port``; each test gets a subdirectory."""

    def __init__(self, kind: str, www: Path, port: int) -> None:
        self.kind, self.www, self.port = kind, www, port
        self._n = itertools.count()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def source(self) -> Source:
        name = f"t{next(self._n)}"
        return DiskSource(self.www / name, f"{self.url}{name}/")


@pytest.fixture(scope="session")
def nginx_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """Debian's nginx-light with autoindex on, on a free port, stopped in ``finally``."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(binary, os.X_OK):
        pytest.fail("nginx is not installed: run scripts/bootstrap.sh (Debian package nginx-light)")
    base = tmp_path_factory.mktemp("nginx")
    www = base / "www"
    www.mkdir()
    (base / "tmp").mkdir()
    for _ in range(5):  # the free port may be taken before nginx binds it
        port = free_port()
        conf = base / "nginx.conf"
        user = "user root;" if os.geteuid() == 0 else ""
        conf.write_text(NGINX_CONF.format(user=user, base=base, port=port, www=www, extra=""))
        proc = subprocess.Popen(
            [binary, "-p", str(base), "-c", str(conf), "-e", "stderr", "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            if wait_port(proc, port):
                yield HttpServer("http-nginx", www, port)
                return
            assert proc.stderr is not None
            error = proc.stderr.read().decode(errors="replace")
            if "Address already in use" not in error:
                pytest.fail(f"nginx did not start: {error}")
        finally:
            stop(proc)
    pytest.fail("nginx: no free port after 5 tries")


@pytest.fixture(scope="session")
def python_http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """``python -m http.server`` (no Range support, no ETag) on an ephemeral port."""
    www = tmp_path_factory.mktemp("pyhttp")
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "-d", str(www)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        port = int(Output(proc).wait_for(r"port (\d+)").group(1))
        yield HttpServer("http-python", www, port)
    finally:
        stop(proc)


class S3Source(Source):
    """A fresh key prefix in the test bucket."""

    def __init__(self, client: Any, prefix: str, options: dict[str, str]) -> None:
        self.client, self.prefix, self.options = client, prefix, options
        self.uri = f"s3://{BUCKET}/{prefix}"

    def write(self, path: str, data: bytes) -> None:
        self.client.put_object(Bucket=BUCKET, Key=f"{self.prefix}/{path}", Body=data)

    def mkdir(self, path: str) -> None:
        self.client.put_object(Bucket=BUCKET, Key=f"{self.prefix}/{path}/", Body=b"")


class MotoServer(Server):
    kind = "s3-moto"

    def __init__(self, endpoint: str, credentials_file: Path) -> None:
        import boto3  # type: ignore[import-untyped]  # the tests' writer; the adapter: aiobotocore

        self.endpoint = endpoint
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )
        self.options = {
            "endpoint_url": endpoint,
            "region": "us-east-1",
            "addressing_style": "path",
            "credentials_file": str(credentials_file),
        }

    def source(self) -> S3Source:
        return S3Source(self.client, f"t-{uuid.uuid4().hex[:8]}", dict(self.options))


SEEDED_KEYS = 1_050  # under s3://BUCKET/seeded/big/, plus SEEDED_DIRS one-key prefixes
SEEDED_DIRS = 3
_MOTO_SEED = f"""
from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends
backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
backend.create_bucket({BUCKET!r}, "us-east-1")
for i in range({SEEDED_KEYS}):
    backend.put_object({BUCKET!r}, f"seeded/big/k{{i:05d}}", b"x")
for i in range({SEEDED_DIRS}):
    backend.put_object({BUCKET!r}, f"seeded/big/d{{i}}/x", b"x")
"""
_MOTO_MAIN = """
import sys
from moto.server import main
main(["-H", "127.0.0.1", "-p", "0"])
"""


def s3_client(endpoint: str, key: str = ACCESS_KEY, secret: str = SECRET_KEY) -> Any:
    """A boto3 S3 client of moto's server, for a test to put objects the way their owner would."""
    import boto3  # type: ignore[import-untyped]

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )


def start_moto(seed: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    """A moto S3 server process on an ephemeral port, and its endpoint URL.

    With ``seed``, the test bucket is created and holds more keys than one listing page, put
    through moto's backend before the server starts (one PUT at a time takes moto seconds).
    """
    proc = subprocess.Popen(
        [sys.executable, "-u", "-c", (_MOTO_SEED if seed else "") + _MOTO_MAIN],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        port = Output(proc).wait_for(r"Running on http://127\.0\.0\.1:(\d+)").group(1)
    except BaseException:
        stop(proc)
        raise
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """moto's S3 server in a subprocess (its global state stays out of the test process)."""
    proc, endpoint = start_moto(seed=True)
    try:
        creds = tmp_path_factory.mktemp("s3") / "credentials"
        creds.write_text(f"aws_access_key_id={ACCESS_KEY}\naws_secret_access_key={SECRET_KEY}\n")
        creds.chmod(0o600)
        yield MotoServer(endpoint, creds)
    finally:
        stop(proc)


class HubSource(Source):
    """A fresh repository on olah; writes are committed before the adapter first reads, then
    one commit per write (on branch ``main``, which the adapter re-resolves every call)."""

    def __init__(self, repo: HubRepo, endpoint: str) -> None:
        self.repo = repo
        self.uri = repo.uri()
        self.options = {"endpoint": endpoint, "revision_ttl": "0", "retries": "1"}
        self._reading = False

    def write(self, path: str, data: bytes) -> None:
        self.repo.write(path, data)
        if self._reading:
            self.repo.commit()

    def mkdir(self, path: str) -> None:
        return None  # a git tree holds no empty directory (HfUfs.empty_directories is False)

    def ufs(self, **options: str) -> UnderFileSystem:
        if self.repo.pending:
            self.repo.commit()
        self._reading = True
        return super().ufs(**options)


class OlahServer(Server):
    kind = "hf-olah"

    def __init__(self, olah: Olah) -> None:
        self.olah = olah

    def source(self) -> HubSource:
        return HubSource(self.olah.repo(), self.olah.endpoint)


@pytest.fixture(scope="session")
def olah_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OlahServer]:
    """olah offline, serving git repositories made under its mirrors path."""
    olah = Olah(tmp_path_factory.mktemp("olah"))
    try:
        yield OlahServer(olah)
    finally:
        olah.stop()


@pytest.fixture(scope="session")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> LocalServer:
    return LocalServer(tmp_path_factory.mktemp("local"))


ADAPTERS = {
    "local": "local_server",
    "http-nginx": "nginx_server",
    "http-python": "python_http_server",
    "s3-moto": "moto_server",
    "hf-olah": "olah_server",
}


@pytest.fixture(params=list(ADAPTERS))
def source(request: pytest.FixtureRequest) -> Source:
    """A fresh, empty root on each kind of source in turn."""
    server: Server = request.getfixturevalue(ADAPTERS[request.param])
    return server.source()


@pytest.fixture
async def ufs(source: Source) -> AsyncIterator[UnderFileSystem]:
    """The adapter for ``source``, closed after the test."""
    adapter = source.ufs()
    try:
        yield adapter
    finally:
        await adapter.close()


@pytest.fixture
def block_fd(tmp_path: Path) -> Iterator[int]:
    """An open, empty file: the target of reads into a FileRegion (a worker's block file)."""
    fd = os.open(tmp_path / "block", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        yield fd
    finally:
        os.close(fd)
