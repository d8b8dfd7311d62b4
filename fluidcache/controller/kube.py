"""A small async Kubernetes API client: get, list, server-side apply, merge patch, delete.

Built on ``kubernetes_asyncio`` for its configuration loading (in-cluster service account or a
kubeconfig) and transport; requests go by path, so one call applies any kind. Used only by
:mod:`fluidcache.controller.handlers`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from fluidcache.controller.model import GROUP, VERSION

FIELD_MANAGER = "fluidcache-controller"

# kind -> (api prefix, plural, namespaced)
KINDS: dict[str, tuple[str, str, bool]] = {
    "Node": ("/api/v1", "nodes", False),
    "Pod": ("/api/v1", "pods", True),
    "Secret": ("/api/v1", "secrets", True),
    "Service": ("/api/v1", "services", True),
    "PersistentVolume": ("/api/v1", "persistentvolumes", False),
    "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims", True),
    "StatefulSet": ("/apis/apps/v1", "statefulsets", True),
    "DaemonSet": ("/apis/apps/v1", "daemonsets", True),
    "Dataset": (f"/apis/{GROUP}/{VERSION}", "datasets", True),
    "FluidCacheRuntime": (f"/apis/{GROUP}/{VERSION}", "fluidcacheruntimes", True),
    "DataLoad": (f"/apis/{GROUP}/{VERSION}", "dataloads", True),
    "DataBackup": (f"/apis/{GROUP}/{VERSION}", "databackups", True),
    "DataProcess": (f"/apis/{GROUP}/{VERSION}", "dataprocesses", True),
    "RuntimeProfile": (f"/apis/{GROUP}/{VERSION}", "runtimeprofiles", False),
    "Job": ("/apis/batch/v1", "jobs", True),
}


def path(kind: str, namespace: str = "", name: str = "") -> str:
    prefix, plural, namespaced = KINDS[kind]
    p = (
        f"{prefix}/namespaces/{namespace}/{plural}"
        if namespaced and namespace
        else f"{prefix}/{plural}"
    )
    return f"{p}/{name}" if name else p


def path_of(obj: Mapping[str, Any]) -> str:
    meta = obj["metadata"]
    return path(str(obj["kind"]), str(meta.get("namespace", "")), str(meta["name"]))


class Kube:
    """One API connection. ``async with await Kube.connect() as kube: ...``"""

    def __init__(self, api: client.ApiClient) -> None:
        self._api = api

    @classmethod
    async def connect(cls, kubeconfig: str | None = None) -> Kube:
        """In a pod: its service account; else ``kubeconfig``, ``$KUBECONFIG`` or ~/.kube/config."""
        cfg = client.Configuration()
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        else:
            await config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        return cls(client.ApiClient(configuration=cfg))

    async def aclose(self) -> None:
        await self._api.close()

    async def __aenter__(self) -> Kube:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _call(
        self,
        method: str,
        url: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        result = await self._api.call_api(
            url,
            method,
            query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            response_types_map={200: "object", 201: "object", 202: "object"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
        )
        return result if isinstance(result, dict) else {}

    async def get(self, url: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return await self._call("GET", url)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    async def list(self, url: str, label_selector: str = "") -> list[dict[str, Any]]:
        query = [("labelSelector", label_selector)] if label_selector else []
        items = (await self._call("GET", url, query=query)).get("items") or []
        return [i for i in items if isinstance(i, dict)]

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply: the fields in ``obj`` become ours; others' fields stay."""
        query = [("fieldManager", FIELD_MANAGER), ("force", "true")]
        return await self._call(
            "PATCH", path_of(obj), dict(obj), query, "application/apply-patch+yaml"
        )

    async def patch(self, url: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (``None`` removes a key)."""
        return await self._call("PATCH", url, dict(body), None, "application/merge-patch+json")

    async def patch_status(self, url: str, status: Mapping[str, Any]) -> dict[str, Any]:
        return await self.patch(f"{url}/status", {"status": dict(status)})

    async def delete(self, url: str) -> bool:
        """Delete in the background (the garbage collector takes dependents); False if absent."""
        try:
            await self._call("DELETE", url, {"propagationPolicy": "Background"})
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        return True


__all__ = ["KINDS", "ApiException", "Kube", "path", "path_of"]
