"""``fluidcache up -f FILE``: the Kubernetes YAML of a Dataset and its runtime, run on this machine.

The file is what ``kubectl apply -f`` takes (a Dataset and a ``FluidCacheRuntime`` of the same
name, or a Dataset naming a ``RuntimeProfile`` found in the same file); it is parsed with the
controller's own model, so the laptop and the cluster read it alike: the mounts (with options)
become the master's sources, ``replicas`` the number of workers, the tiered store each worker's
levels. ``encryptOptions`` name Secrets, which a laptop does not have: each value comes from the
environment variable ``FLUIDCACHE_SECRET_<SECRET>_<KEY>`` (upper case, other characters as
``_``), else from the file ``<secrets dir>/<secret>/<key>`` (the layout of a mounted Secret), and
goes into a credentials file of mode 0600, never an argument.

Called by :mod:`fluidcache.cluster`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from fluidcache.common import errors
from fluidcache.controller.model import GROUP, Dataset, Runtime
from fluidcache.controller.processing import runtime_from_profile
from fluidcache.controller.reconcile import mount_name, source_args


@dataclasses.dataclass(frozen=True, slots=True)
class UpSpec:
    """A Dataset and its runtime, parsed."""

    dataset: Dataset
    runtime: Runtime


def _ours(doc: Mapping[str, Any], kind: str) -> bool:
    return doc.get("kind") == kind and str(doc.get("apiVersion", "")).startswith(f"{GROUP}/")


def load(text: str, name: str = "") -> UpSpec:
    """The Dataset (``name``, or the only one) and its runtime from a multi-document YAML;
    ConfigError naming what is missing."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    except yaml.YAMLError as e:
        raise errors.ConfigError(f"not YAML: {e}") from e
    datasets = [d for d in docs if _ours(d, "Dataset")]
    if name:
        datasets = [d for d in datasets if (d.get("metadata") or {}).get("name") == name]
    if len(datasets) != 1:
        found = len(datasets)
        raise errors.ConfigError(
            f"need exactly one Dataset{f' named {name}' if name else ''} ({GROUP}), found {found}"
        )
    dataset = Dataset.parse(datasets[0])
    if not dataset.mounts:
        raise errors.ConfigError(f"Dataset {dataset.meta.name} has no mounts")
    runtimes = [
        d
        for d in docs
        if _ours(d, "FluidCacheRuntime")
        and (d.get("metadata") or {}).get("name") == dataset.meta.name
    ]
    if runtimes:
        return UpSpec(dataset, Runtime.parse(runtimes[0]))
    profiles = [
        d
        for d in docs
        if _ours(d, "RuntimeProfile")
        and (d.get("metadata") or {}).get("name") == dataset.runtime_profile
    ]
    if dataset.runtime_profile and profiles:
        return UpSpec(dataset, Runtime.parse(runtime_from_profile(dataset, profiles[0])))
    raise errors.ConfigError(
        f"no FluidCacheRuntime {dataset.meta.name}"
        + (f" and no RuntimeProfile {dataset.runtime_profile}" if dataset.runtime_profile else "")
        + " in the file"
    )


def secret_env(secret: str, key: str) -> str:
    """``FLUIDCACHE_SECRET_<SECRET>_<KEY>``: where ``up -f`` looks for a Secret's value first."""
    return "FLUIDCACHE_SECRET_" + re.sub(r"[^A-Z0-9]", "_", f"{secret}_{key}".upper())


def secret_value(secret: str, key: str, secrets_dir: Path | None, env: Mapping[str, str]) -> str:
    var = secret_env(secret, key)
    if var in env:
        return env[var]
    if secrets_dir is not None and (secrets_dir / secret / key).is_file():
        return (secrets_dir / secret / key).read_text().rstrip("\n")
    where = f" or {secrets_dir / secret / key}" if secrets_dir else ""
    raise errors.ConfigError(f"Secret {secret} key {key}: set ${var}{where}")


def credentials(
    spec: UpSpec, secrets_dir: Path | None, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Mount name -> credentials file content (``option=value`` lines) for mounts with
    ``encryptOptions``."""
    env = os.environ if env is None else env
    out = {}
    for i, m in enumerate(spec.dataset.mounts):
        if m.secrets:
            out[mount_name(i, spec.dataset)] = "".join(
                f"{ref.option}={secret_value(ref.secret, ref.key, secrets_dir, env)}\n"
                for ref in m.secrets
            )
    return out


def sources_and_options(spec: UpSpec, credentials_dir: Path) -> tuple[list[str], list[str]]:
    """The master's SOURCE arguments and ``--option`` values, as the controller renders them."""
    sources: list[str] = []
    options: list[str] = []
    args = iter(source_args(spec.dataset, str(credentials_dir)))
    for arg in args:
        if arg == "--option":
            options.append(next(args))
        else:
            sources.append(arg)
    return sources, options


def worker_tiers(runtime: Runtime, index: int, mem_root: Path, disk_root: Path) -> list[str]:
    """Worker ``index``'s ``--tier`` values: each level's medium, quota and watermarks; its
    directories under ``mem_root`` (MEM) or ``disk_root`` (SSD, HDD), one per worker, since the
    workers share this machine."""
    tiers = []
    for j, level in enumerate(runtime.levels):
        root = mem_root if level.medium == "MEM" else disk_root
        path = root / f"{level.medium.lower()}-{j}" / f"worker-{index}"
        tier = f"{level.medium}:{path}:{level.quota}"
        if level.high and level.low:
            tier += f":{level.high}:{level.low}"
        tiers.append(tier)
    return tiers


__all__ = ["UpSpec", "credentials", "load", "secret_env", "sources_and_options", "worker_tiers"]
