"""Source credentials and the cluster token never show: not in logs at any level (the processes
run with debug logging), ``report``, the status JSON, metrics, backups, the master's database or
error messages. A Basic-auth HTTP source (nginx) is read with a credentials file; a second
master is given a wrong password so that the source's refusal goes through every error path.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from fluidcache.client import AsyncClient
from fluidcache.common import errors
from fluidcache.common.http import auth_headers
from fluidcache.common.protocol import METRICS, STATUS
from tests.cluster import Cluster, cluster
from tests.sources import BasicAuthSource


def forms(secret: str) -> list[bytes]:
    """The ways a secret could leak: itself, and inside a Basic header."""
    return [secret.encode(), base64.b64encode(f"alice:{secret}".encode())]


def assert_absent(secret_forms: list[bytes], where: str, data: bytes) -> None:
    for form in secret_forms:
        assert form not in data, f"a secret shows in {where}"


@pytest.fixture
def web(workdir: Path) -> Iterator[tuple[BasicAuthSource, str]]:
    (workdir / "www").mkdir()
    (workdir / "www" / "f.bin").write_bytes(b"hello " * 1000)
    password = "pw-" + secrets.token_hex(12)
    src = BasicAuthSource(workdir / "www", workdir / "nginx", "alice", password)
    try:
        yield src, password
    finally:
        src.stop()


def creds(path: Path, password: str) -> Path:
    path.write_text(f"username=alice\npassword={password}\n")
    path.chmod(0o600)
    return path


async def test_credentials_never_show(tmp_path: Path, web: tuple[BasicAuthSource, str]) -> None:
    src, password = web
    wrong = "wrong-" + secrets.token_hex(12)
    secret_forms = forms(password) + forms(wrong)
    good = creds(tmp_path / "good.cred", password)
    bad = creds(tmp_path / "bad.cred", wrong)
    outputs: list[tuple[str, bytes]] = []
    with cluster(tmp_path / "c") as c, cluster(tmp_path / "bad") as b:
        for cl in (c, b):
            cl.env["FLUIDCACHE_LOG"] = "DEBUG"
            cl.env["AWS_SECRET_ACCESS_KEY"] = password  # read by nothing here: never echoed
        c.start_master(f"web={src.url}", extra=("--option", f"web.credentials_file={good}"))
        c.start_worker("w1")
        b.start_master(f"web={src.url}", extra=("--option", f"web.credentials_file={bad}"))
        b.start_worker("w1")
        secret_forms += [c.token.encode(), b.token.encode()]
        await exercise(c, outputs)
        with pytest.raises(errors.FluidcacheError) as failed:
            async with AsyncClient(b.master_url, b.token) as client:
                await client.stat("/web/f.bin")
        outputs.append(("error from a refused source", str(failed.value).encode()))
        outputs.append(("report", cli(c, "report", "--master", c.master_url)))
        outputs.append(("report --json", cli(c, "report", "--json", "--master", c.master_url)))
        outputs.append(("backup", cli(c, "backup", "--master", c.master_url, "--name", "b1")))
        outputs.append(("bad report", cli(b, "report", "--master", b.master_url)))
        for cl in (c, b):
            for name, proc in cl.procs.items():
                outputs.append((f"log of {name}", proc.output.encode()))
        stored = [p for p in (tmp_path / "c" / "master").rglob("*") if p.is_file()]
        stored += [p for p in (tmp_path / "bad" / "master").rglob("*") if p.is_file()]
        assert any("backup" in str(p) for p in stored), stored
        for p in stored:
            outputs.append((str(p), p.read_bytes()))
    for where, data in outputs:
        # The cluster tokens are secrets too, but each cluster's own backup is not a log.
        assert_absent(secret_forms, where, data)


async def exercise(c: Cluster, outputs: list[tuple[str, bytes]]) -> None:
    async with AsyncClient(c.master_url, c.token) as client:
        f = await client.open("/web/f.bin")
        assert await f.read() == b"hello " * 1000
        with pytest.raises(errors.NotFound) as missing:
            await client.stat("/web/missing.bin")
        outputs.append(("error for a missing file", str(missing.value).encode()))
    async with aiohttp.ClientSession() as s:
        for url in (c.master_url + STATUS, c.master_url + METRICS, c.urls["w1"] + METRICS):
            async with s.get(url, headers=auth_headers(c.token)) as resp:
                assert resp.status == 200
                outputs.append((url, await resp.read()))
        async with s.get(c.master_url + STATUS, headers=auth_headers(c.token)) as resp:
            json.loads(await resp.read())


def cli(c: Cluster, *args: str) -> bytes:
    env = {**c.env, "FLUIDCACHE_LOG": "DEBUG"}
    done = subprocess.run(
        [sys.executable, "-m", "fluidcache", *args],
        env={**os.environ, **env},
        capture_output=True,
        timeout=60,
        check=False,
    )
    return done.stdout + done.stderr
