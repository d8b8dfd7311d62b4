"""TLS between every component and clients, from configuration, with a CA made in the test.

Master and workers run as real processes with ``--tls-cert/--tls-key/--tls-ca``; workers
register https addresses, fetch from peers and report to the master over TLS; a client that
trusts the CA reads byte-exact, one that does not (system store, another CA, plain HTTP) is
refused before any request reaches a handler.
"""

from __future__ import annotations

import random
import ssl
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from fluidcache.client import AsyncClient
from fluidcache.common import errors
from fluidcache.common.http import auth_headers
from fluidcache.common.protocol import HEALTH, METRICS
from tests.cluster import Cluster, cluster
from tests.pki import make_pki


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def tls_cluster(tmp_path: Path, pki: dict[str, Path]) -> Iterator[tuple[Cluster, bytes]]:
    src = tmp_path / "src"
    src.mkdir()
    data = random.Random(5).randbytes(3 * 2**20 + 99)
    (src / "f.bin").write_bytes(data)
    with cluster(tmp_path / "c") as c:
        flags = ("--tls-cert", str(pki["chain"]), "--tls-key", str(pki["key"]))
        ca = ("--tls-ca", str(pki["ca"]))
        c.start_master(f"local://{src}", extra=(*flags, *ca, "--block-size", "1Mi"))
        c.env["FLUIDCACHE_TLS_CERT"] = str(pki["chain"])
        c.env["FLUIDCACHE_TLS_KEY"] = str(pki["key"])
        c.env["FLUIDCACHE_TLS_CA"] = str(pki["ca"])
        c.start_worker("a", node="node-a")
        c.start_worker("b", node="node-b")
        yield c, data


async def test_components_and_client_speak_tls(
    tls_cluster: tuple[Cluster, bytes], pki: dict[str, Path]
) -> None:
    c, data = tls_cluster
    assert c.master_url.startswith("https://")
    assert all(url.startswith("https://") for url in c.urls.values())
    async with AsyncClient(c.master_url, c.token, ca=str(pki["ca"]), short_circuit=False) as cl:
        report = await cl.report()
        assert sorted(w.address[:8] for w in report.workers) == ["https://"] * 2
        f = await cl.open("/f.bin")
        assert await f.read() == data
    ctx = ssl.create_default_context(cafile=str(pki["ca"]))
    async with aiohttp.ClientSession() as s:
        for url in c.urls.values():
            async with s.get(url + METRICS, headers=auth_headers(c.token), ssl=ctx) as resp:
                assert resp.status == 200


@pytest.mark.parametrize("trust", ["system", "other_ca"])
async def test_a_client_that_does_not_trust_the_ca_is_refused(
    tls_cluster: tuple[Cluster, bytes], pki: dict[str, Path], trust: str
) -> None:
    c, _ = tls_cluster
    ca = "" if trust == "system" else str(pki["other_ca"])
    async with AsyncClient(c.master_url, c.token, ca=ca) as cl:
        with pytest.raises(errors.Unavailable, match=r"(?i)certificate"):
            await cl.stat("/f.bin")
    ctx = ssl.create_default_context(cafile=ca) if ca else True
    async with aiohttp.ClientSession() as s:
        for url in c.urls.values():
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with s.get(url + HEALTH, ssl=ctx):
                    pass


async def test_plain_http_to_a_tls_port_gets_nothing(tls_cluster: tuple[Cluster, bytes]) -> None:
    c, _ = tls_cluster
    async with aiohttp.ClientSession() as s:
        for url in c.urls.values():
            plain = url.replace("https://", "http://")
            with pytest.raises(aiohttp.ClientError):
                async with s.get(plain + HEALTH, headers=auth_headers(c.token)) as resp:
                    assert resp.status >= 400  # never a 200 over plain HTTP
                    raise aiohttp.ClientError("refused")
