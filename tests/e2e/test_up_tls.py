"""``fluidcache up --tls-cert/--tls-key/--tls-ca`` end to end, with a CA made in the test: the
master, the workers and the mount speak HTTPS to each other; the FUSE mount and a client that
trusts the CA read byte-exact; a client that does not trust it, and plain HTTP, are refused.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest

from fluidcache.client import AsyncClient
from fluidcache.common import errors
from fluidcache.common.http import auth_headers
from fluidcache.common.protocol import HEALTH
from tests.e2e.test_up import client_digests
from tests.e2e.test_up_options import nothing_left
from tests.pki import make_pki
from tests.procs import fluidcache, is_mounted, running
from tests.sources import digests, make_dataset

pytestmark = pytest.mark.timeout(180)


async def worker_addresses(master: str, token: str, ca: str) -> list[str]:
    async with AsyncClient(master, token, ca=ca) as client:
        return [w.address for w in (await client.report()).workers]


async def refused_without_the_ca(master: str, token: str, other_ca: str) -> None:
    for ca in ("", other_ca):  # the system's trust store, then a CA that signed nothing here
        async with AsyncClient(master, token, ca=ca) as client:
            with pytest.raises(errors.Unavailable, match=r"(?i)certificate"):
                await client.stat("/")


async def plain_http_gets_nothing(urls: list[str], token: str) -> None:
    async with aiohttp.ClientSession() as s:
        for url in urls:
            plain = url.replace("https://", "http://")
            with pytest.raises(aiohttp.ClientError):
                async with s.get(plain + HEALTH, headers=auth_headers(token)) as resp:
                    assert resp.status >= 400  # never a 200 over plain HTTP
                    raise aiohttp.ClientError("refused")


def test_up_with_tls_serves_the_mount_and_trusting_clients_only(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    src = tmp_path / "src"
    make_dataset(src, big=3 * 2**20 + 7, small=4, seed=3)
    mnt, data = tmp_path / "mnt", tmp_path / "cluster"
    mnt.mkdir()
    tls = (
        "--tls-cert",
        str(pki["chain"]),
        "--tls-key",
        str(pki["key"]),
        "--tls-ca",
        str(pki["ca"]),
    )
    up = fluidcache(
        "up",
        f"data=local://{src}",
        *("--mountpoint", str(mnt), "--workers", "2", "--block-size", "1Mi"),
        *("--data-dir", str(data), *tls),
    )
    ca = str(pki["ca"])
    with running(up, mnt):
        master = up.wait_for("master:").split()[-1]
        up.wait_for("mounted:")
        assert master.startswith("https://"), master
        token = (data / "token").read_text().strip()
        workers = asyncio.run(worker_addresses(master, token, ca))
        assert len(workers) == 2 and all(w.startswith("https://") for w in workers), workers

        expected = digests(src)
        assert digests(mnt / "data") == expected  # FUSE -> master and workers over TLS
        got = asyncio.run(client_digests(master, token, "default", ca))
        assert got == {f"data/{k}": v for k, v in expected.items()}

        asyncio.run(refused_without_the_ca(master, token, str(pki["other_ca"])))
        asyncio.run(plain_http_gets_nothing([master, *workers], token))
        up.popen.send_signal(signal.SIGINT)
        assert up.wait(30) == 0, up.output
    assert not is_mounted(mnt)
    nothing_left(data)
