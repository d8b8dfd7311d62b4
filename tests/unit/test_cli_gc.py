"""Servers collect cyclic garbage less often than Python does by default."""

from __future__ import annotations

import subprocess
import sys

from fluidcache.cli import GC_YOUNG

PROBE = """
import gc
from fluidcache import cli
before = gc.get_threshold()
cli.tune_gc()
print(before[0], gc.get_threshold()[0], gc.get_threshold()[1:] == before[1:], gc.get_freeze_count())
"""


def test_tune_gc_freezes_start_up_and_raises_the_young_threshold() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out[0] == "700"  # Python's default, which the servers do not keep
    assert int(out[1]) == GC_YOUNG
    assert out[2] == "True"  # the older generations' thresholds are left alone
    assert int(out[3]) > 1000  # the modules' objects, frozen out of collections
