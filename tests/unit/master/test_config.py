"""MasterConfig.validate names the field that is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from fluidcache.common.errors import ConfigError
from fluidcache.master import MasterConfig


def good(tmp_path: Path) -> MasterConfig:
    return MasterConfig(data_dir=tmp_path, mounts=[("", "local:///data")], token="t")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"mounts": []}, "mounts"),
        ({"mounts": [("", "local:///a"), ("b", "local:///b")]}, "mounts"),
        ({"mounts": [("a", "local:///a"), ("a", "local:///b")]}, "mounts"),
        ({"mounts": [("a/b", "local:///a")]}, "mounts"),
        ({"mounts": [("", "/not/a/uri")]}, "mounts"),
        ({"dataset": "a/b"}, "dataset"),
        ({"port": 70000}, "port"),
        ({"token": ""}, "token"),
        ({"block_size": 100}, "block_size"),
        ({"sync_ttl": -1.0}, "sync_ttl"),
        ({"heartbeat_interval": 0.0}, "heartbeat_interval"),
        ({"worker_timeout": 1.0}, "worker_timeout"),
        ({"restore_from": Path("/nonexistent/backup")}, "restore_from"),
        ({"mount_options": {"zz": {}}}, "mount_options"),
        ({"mount_options": {"": {"secret_key": "x"}}}, "mount_options"),
    ],
)
def test_validate_names_the_field(tmp_path: Path, change: dict[str, object], field: str) -> None:
    cfg = good(tmp_path)
    for key, value in change.items():
        setattr(cfg, key, value)
    with pytest.raises(ConfigError, match=f"^{field}: "):
        cfg.validate()


def test_good_configs_pass(tmp_path: Path) -> None:
    good(tmp_path).validate()
    named = good(tmp_path)
    named.mounts = [("imgs", "local:///a"), ("labels", "https://h/l/")]
    named.mount_options = {"labels": {"region": "x", "credentials_file": "/etc/creds"}}
    named.validate()
