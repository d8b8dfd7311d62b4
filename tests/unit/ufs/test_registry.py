"""Adapters are found by scheme, imported lazily, and a missing extra names its package."""

from __future__ import annotations

import pytest

from fluidcache.common import errors
from fluidcache.ufs import create_ufs, registry, supported_schemes
from fluidcache.ufs.http import HttpUfs
from fluidcache.ufs.local import LocalUfs, NfsUfs, PvcUfs
from fluidcache.ufs.s3 import S3Ufs


@pytest.mark.parametrize(
    ("uri", "cls"),
    [
        ("local:///data", LocalUfs),
        ("file:///data", LocalUfs),
        ("hostpath:///data", LocalUfs),
        ("pvc://claim/sub", PvcUfs),
        ("nfs://server/export", NfsUfs),
        ("http://host/dir/", HttpUfs),
        ("HTTPS://host/dir/", HttpUfs),
        ("s3://bucket/prefix", S3Ufs),
    ],
)
def test_scheme_picks_the_adapter(uri: str, cls: type) -> None:
    assert type(create_ufs(uri)) is cls


def test_supported_schemes() -> None:
    assert set(supported_schemes()) >= {"local", "hostpath", "pvc", "nfs", "http", "https", "s3"}


@pytest.mark.parametrize("uri", ["/just/a/path", "gopher://x/y", "nothing"])
def test_unusable_uris(uri: str) -> None:
    with pytest.raises(errors.ConfigError):
        create_ufs(uri)


def test_missing_extra_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        registry._ADAPTERS, "s3", ("fluidcache_missing_module", "S3Ufs", "aiobotocore")
    )
    with pytest.raises(errors.ConfigError, match="aiobotocore"):
        create_ufs("s3://bucket/prefix")
