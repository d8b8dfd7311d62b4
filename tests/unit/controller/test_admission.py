"""The webhook registered by Service in a cluster: the server's client config, and the deploy
manifests' Deployment, Service and TLS Secret agreeing with each other."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import kopf
import pytest
import trustme
import yaml

from fluidcache.controller.admission import ServiceWebhookServer, parse_service

ROOT = Path(__file__).resolve().parents[3]


async def _never_called(*_: Any, **__: Any) -> Any:
    raise AssertionError("no admission request is sent in this test")


async def test_the_server_registers_its_service_and_ca(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("fluidcache-controller.fluidcache-system.svc")
    cert.private_key_pem.write_to_path(str(tmp_path / "tls.key"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "tls.crt"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    server = ServiceWebhookServer(
        service="fluidcache-system/fluidcache-controller:443",
        addr="127.0.0.1",
        port=0,
        certfile=tmp_path / "tls.crt",
        pkeyfile=tmp_path / "tls.key",
        cafile=tmp_path / "ca.crt",
    )
    configs = server(_never_called)
    try:
        config = await anext(configs)
    finally:
        await configs.aclose()
    assert "url" not in config
    assert config["service"] == kopf.WebhookClientConfigService(
        namespace="fluidcache-system", name="fluidcache-controller", port=443, path=""
    )
    assert base64.b64decode(config.get("caBundle") or "") == ca.cert_pem.bytes()


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("ns/name", ("ns", "name", 443)),
        (
            "fluidcache-system/fluidcache-controller:8443",
            ("fluidcache-system", "fluidcache-controller", 8443),
        ),
    ],
)
def test_service_references(text: str, want: tuple[str, str, int]) -> None:
    assert parse_service(text) == want


@pytest.mark.parametrize("text", ["name", "/name", "ns/", "ns/a/b", "ns/name:0", "ns/name:https"])
def test_bad_service_references_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="webhook service"):
        parse_service(text)


def test_deploy_manifests_register_the_webhook_by_their_service() -> None:
    docs = list(yaml.safe_load_all((ROOT / "k8s/deploy/controller.yaml").read_text()))
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    service = next(d for d in docs if d["kind"] == "Service")
    pod = deploy["spec"]["template"]["spec"]
    c = pod["containers"][0]
    args = dict(a.removeprefix("--").split("=", 1) for a in c["args"])
    namespace, name, port = parse_service(args["webhook-service"])
    assert (namespace, name) == (service["metadata"]["namespace"], service["metadata"]["name"])
    assert service["spec"]["selector"] == deploy["spec"]["selector"]["matchLabels"]
    sport = next(p for p in service["spec"]["ports"] if p["port"] == port)
    cport = next(p for p in c["ports"] if p["name"] == sport["targetPort"])
    assert cport["containerPort"] == int(args["webhook-port"])
    assert args["webhook-addr"] == "0.0.0.0"
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    secret = next(v for v in pod["volumes"] if "secret" in v)
    for key in ("webhook-cert", "webhook-key", "webhook-ca"):
        assert Path(args[key]).parent == Path(mounts[secret["name"]])
