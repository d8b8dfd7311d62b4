"""``fluidcache worker`` refuses a bad tier configuration at start, naming the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    ("tier", "field"),
    [
        ("MEM:{d}:2Gi:0.5:0.7", "tier[0].low"),
        ("MEM:{d}:2Gi:1.2:0.7", "tier[0].high"),
        ("MEM:{d}:two-gigs", "tier[0].quota"),
        ("SSD:/proc/no-such-dir:1Gi", "tier[0].path"),
        ("RAM:{d}:1Gi", "tier[0].mediumtype"),
    ],
)
def test_bad_tier_is_refused_at_start(tmp_path: Path, tier: str, field: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fluidcache", "worker", "--master", "http://127.0.0.1:9",
         "--id", "w", "--tier", tier.format(d=tmp_path / "t")],
        capture_output=True, text=True, timeout=30,
        env={"FLUIDCACHE_TOKEN": "t", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert field in out.stderr
