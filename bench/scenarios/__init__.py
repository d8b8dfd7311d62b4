"""The benchmark scenarios, in the order they run: each module has NAME, TITLE and run(bench)."""

from __future__ import annotations

import importlib
from types import ModuleType

NAMES = ("large", "small", "metadata", "model", "p2p", "scaling", "eviction", "hub")


def load(name: str) -> ModuleType:
    return importlib.import_module(f"bench.scenarios.{name}")
