"""The webhook server for a real cluster: kopf's TLS server, registered by Service.

kopf's :class:`kopf.WebhookServer` registers its webhooks by URL (``clientConfig.url``), which
suits an API server that can dial the controller's address (the test control plane on the host).
In a cluster the API server reaches the controller through its Service: this server yields a
``clientConfig.service`` (namespace, name, port) with the caBundle instead, and kopf appends the
handler id to the service path as it does to a URL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import kopf


class ServiceWebhookServer(kopf.WebhookServer):
    """Serves like :class:`kopf.WebhookServer`; registers ``service`` (``NAMESPACE/NAME:PORT``)."""

    def __init__(self, *, service: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service_namespace, self.service_name, self.service_port = parse_service(service)

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        async for served in super().__call__(fn):
            config = kopf.WebhookClientConfig(
                service=kopf.WebhookClientConfigService(
                    namespace=self.service_namespace,
                    name=self.service_name,
                    port=self.service_port,
                    path=(self.path or "").rstrip("/"),
                )
            )
            if served.get("caBundle"):
                config["caBundle"] = served["caBundle"]
            yield config


def parse_service(text: str) -> tuple[str, str, int]:
    """``NAMESPACE/NAME[:PORT]`` (port 443 by default); ValueError names the part that is wrong."""
    ref, _, port = text.partition(":")
    namespace, _, name = ref.partition("/")
    if not namespace or not name or "/" in name:
        raise ValueError(f"webhook service {text!r}: expected NAMESPACE/NAME[:PORT]")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"webhook service {text!r}: port {port!r} is not 1..65535")
    return namespace, name, int(port or 443)
