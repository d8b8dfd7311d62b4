"""Source adapters by URI scheme; heavy adapters are imported only when used."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from urllib.parse import urlsplit

from fluidcache.common.errors import ConfigError
from fluidcache.ufs.base import UnderFileSystem

# scheme -> (module, class, extra package a user installs if the import fails)
_ADAPTERS: dict[str, tuple[str, str, str]] = {
    "local": ("fluidcache.ufs.local", "LocalUfs", ""),
    "file": ("fluidcache.ufs.local", "LocalUfs", ""),
    "hostpath": ("fluidcache.ufs.local", "LocalUfs", ""),
    "http": ("fluidcache.ufs.http", "HttpUfs", "aiohttp"),
    "https": ("fluidcache.ufs.http", "HttpUfs", "aiohttp"),
    "s3": ("fluidcache.ufs.s3", "S3Ufs", "aiobotocore"),
    "hf": ("fluidcache.ufs.hf", "HfUfs", "huggingface_hub"),
    "pvc": ("fluidcache.ufs.local", "PvcUfs", ""),
    "nfs": ("fluidcache.ufs.local", "NfsUfs", ""),
}


def supported_schemes() -> list[str]:
    return sorted(_ADAPTERS)


def adapter_class(uri: str) -> type[UnderFileSystem]:
    """The adapter class serving ``uri``; ConfigError names the problem when there is none."""
    scheme = urlsplit(uri).scheme.lower()
    if not scheme or "://" not in uri:
        raise ConfigError(
            f"source {uri!r}: not a URI (expected e.g. local:///data, https://host/dir/)"
        )
    try:
        module, cls, extra = _ADAPTERS[scheme]
    except KeyError:
        supported = ", ".join(supported_schemes())
        raise ConfigError(
            f"source {uri!r}: unsupported scheme {scheme!r} (supported: {supported})"
        ) from None
    try:
        adapter: type[UnderFileSystem] = getattr(importlib.import_module(module), cls)
    except ImportError as e:
        raise ConfigError(f"source {uri!r}: needs the package {extra!r} ({e})") from None
    return adapter


def create_ufs(uri: str, options: Mapping[str, str] | None = None) -> UnderFileSystem:
    """The adapter for ``uri``; ConfigError names the problem when the URI cannot be served."""
    return adapter_class(uri)(uri, options)


def check_options(name: str, uri: str, options: Mapping[str, str]) -> None:
    """ConfigError naming ``NAME.KEY`` when the adapter of ``uri`` does not read option KEY."""
    adapter = adapter_class(uri)
    for key in options:
        if key not in adapter.option_keys:
            scheme = urlsplit(uri).scheme.lower()
            known = ", ".join(sorted(adapter.option_keys)) or "none"
            label = f"{name}.{key}" if name else key
            raise ConfigError(
                f"option {label}: {scheme}:// sources have no option {key!r} (theirs: {known})"
            )
