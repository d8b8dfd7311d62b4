"""Source credentials and the cluster token never show: not in logs at any level (the processes,
masters, workers and a FUSE mount, run with debug logging), ``report``, the status JSON, both
/metrics, backups, the master's database or error messages. One dataset has three credentialed
sources, each read: a Basic-auth HTTP source (nginx) with a credentials file, an S3 bucket
(moto's server) with an access key id and secret in the s3 source's credentials file, and a Hub
repository (olah) through ``hf://`` with ``HF_TOKEN``. A second master is given a wrong password
and a repository the Hub refuses, so that the sources' refusals go through every error path.
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
from tests.hub import Olah
from tests.integration.ufs.conftest import s3_client, start_moto, stop
from tests.procs import mounted
from tests.sources import BasicAuthSource

GATED = "fc-test/private"  # olah answers 401 for it, as the Hub does for a repository not yours
FILES = {  # what the three credentialed sources serve, as read through the dataset
    "/web/f.bin": b"hello " * 1000,
    "/s3/o.bin": b"object " * 1000,
    "/hub/w.bin": b"weights " * 500,
}


def forms(secret: str) -> list[bytes]:
    """The ways a secret could leak: itself, and inside a Basic header."""
    return [secret.encode(), base64.b64encode(f"alice:{secret}".encode())]


def assert_absent(secret_forms: list[bytes], where: str, data: bytes) -> None:
    for form in secret_forms:
        at = data.find(form)
        assert at < 0, f"a secret shows in {where}: ...{data[max(0, at - 300) : at + 100]!r}"


@pytest.fixture
def web(workdir: Path) -> Iterator[tuple[BasicAuthSource, str]]:
    (workdir / "www").mkdir()
    (workdir / "www" / "f.bin").write_bytes(FILES["/web/f.bin"])
    password = "pw-" + secrets.token_hex(12)
    src = BasicAuthSource(workdir / "www", workdir / "nginx", "alice", password)
    try:
        yield src, password
    finally:
        src.stop()


def creds(path: Path, password: str) -> Path:
    return secret_file(path, f"username=alice\npassword={password}\n")


def secret_file(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[tuple[str, Path, list[bytes]]]:
    """moto's S3 server with ``data/set/o.bin``: its endpoint, a credentials file with a fresh
    key id and secret, and those two (the secrets)."""
    key, secret = "AKIA" + secrets.token_hex(8).upper(), "s3-" + secrets.token_hex(16)
    proc, endpoint = start_moto()
    try:
        client = s3_client(endpoint, key, secret)
        client.create_bucket(Bucket="data")
        client.put_object(Bucket="data", Key="set/o.bin", Body=FILES["/s3/o.bin"])
        text = f"aws_access_key_id={key}\naws_secret_access_key={secret}\n"
        yield endpoint, secret_file(tmp_path / "s3.cred", text), [key.encode(), secret.encode()]
    finally:
        stop(proc)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Olah]:
    """olah serving ``fc-test/m`` (an LFS file) and refusing :data:`GATED`."""
    olah = Olah(tmp_path / "olah", deny=(GATED,))
    try:
        repo = olah.repo("fc-test/m")
        repo.write("w.bin", FILES["/hub/w.bin"])
        repo.commit()
        gated = olah.repo(GATED)
        gated.write("w.bin", b"private " * 500)
        gated.commit()
        yield olah
    finally:
        olah.stop()


async def test_credentials_never_show(
    tmp_path: Path,
    web: tuple[BasicAuthSource, str],
    s3: tuple[str, Path, list[bytes]],
    hub: Olah,
) -> None:
    src, password = web
    s3_endpoint, s3_creds, s3_keys = s3
    hf_token = "hf_" + secrets.token_hex(16)
    wrong = "wrong-" + secrets.token_hex(12)
    secret_forms = forms(password) + forms(wrong) + s3_keys + [hf_token.encode()]
    good = creds(tmp_path / "good.cred", password)
    bad = creds(tmp_path / "bad.cred", wrong)
    outputs: list[tuple[str, bytes]] = []
    with cluster(tmp_path / "c") as c, cluster(tmp_path / "bad") as b:
        for cl in (c, b):
            cl.env["FLUIDCACHE_LOG"] = "DEBUG"
            cl.env["AWS_SECRET_ACCESS_KEY"] = password  # read by nothing here: never echoed
            cl.env["HF_ENDPOINT"] = hub.endpoint
            cl.env["HF_TOKEN"] = hf_token
            cl.env["HF_HOME"] = str(tmp_path / "hf-home")
        c.start_master(
            f"web={src.url}",
            "s3=s3://data/set",
            "hub=hf://fc-test/m",
            extra=(
                *("--option", f"web.credentials_file={good}"),
                *("--option", f"s3.credentials_file={s3_creds}"),
                *("--option", f"s3.endpoint_url={s3_endpoint}"),
            ),
        )
        c.start_worker("w1")
        b.start_master(
            f"web={src.url}",
            f"gated=hf://{GATED}",
            extra=("--option", f"web.credentials_file={bad}"),
        )
        b.start_worker("w1")
        secret_forms += [c.token.encode(), b.token.encode()]
        await exercise(c, outputs)
        mnt = tmp_path / "mnt"
        with mounted(c.master_url, mnt, c.env) as mount:
            for path, data in FILES.items():
                assert (mnt / path[1:]).read_bytes() == data, path
            assert not (mnt / "web" / "missing.bin").exists()
        outputs.append(("log of the mount", mount.output.encode()))
        for path in ("/web/f.bin", "/gated/w.bin"):
            with pytest.raises(errors.FluidcacheError) as failed:
                async with AsyncClient(b.master_url, b.token) as client:
                    await client.stat(path)
            outputs.append((f"error from a refused source ({path})", str(failed.value).encode()))
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
        for path, data in FILES.items():
            f = await client.open(path)
            assert await f.read() == data, path
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
