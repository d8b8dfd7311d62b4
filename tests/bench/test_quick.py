"""``python -m bench --quick`` end to end: every scenario reports numbers, and plots are drawn.

The figures themselves are not asserted (they depend on the machine); only that the harness
runs, measures every scenario, and writes what it promises.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.results import BASELINES
from bench.scenarios import NAMES
from tests.procs import Proc

ROOT = Path(__file__).resolve().parents[2]
GUARD = 720.0  # seconds: a hang guard; the run takes 320-410 s on 2 cores
STOP_GRACE = 120.0  # seconds the bench gets to stop what it started once told to


def _errors(out: Path) -> str:
    """The failed scenarios' errors (their tracebacks and the end of their clusters' logs)."""
    try:
        scenarios = json.loads((out / "results.json").read_text())["scenarios"]
    except (OSError, ValueError, KeyError):
        return ""
    return "".join(f"\n{name}: {s['error']}" for name, s in scenarios.items() if s["error"])


def run_bench(argv: list[str]) -> tuple[int, str]:
    """Run the bench: its exit code and output. Past :data:`GUARD` it gets SIGTERM (it then stops
    its clusters, mounts and sources) and the test fails: nothing it started outlives the test."""
    proc = Proc(argv, cwd=ROOT)
    try:
        return proc.wait(GUARD), proc.output
    except subprocess.TimeoutExpired:
        proc.stop(signal.SIGTERM, STOP_GRACE)
        pytest.fail(f"still running after {GUARD:.0f} s, stopped:\n{proc.output[-8000:]}")
    finally:
        proc.stop()


@pytest.mark.timeout(GUARD + STOP_GRACE + 60)
def test_quick_run_reports_every_scenario(workdir: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    code, output = run_bench(
        [sys.executable, "-m", "bench", "--quick", "--workdir", str(workdir), "--out", str(out)]
    )
    assert code == 0, output[-8000:] + _errors(out)
    doc = json.loads((out / "results.json").read_text())
    assert doc["params"]["sizes"]["mode"] == "quick"
    assert doc["machine"]["cores"] and doc["versions"]["fluidcache"]
    # The sources stand for remote servers: their files stay in memory through the cache drops.
    assert any("`vmtouch -l`" in line for line in doc["setup"]), doc["setup"]
    assert set(doc["scenarios"]) == set(NAMES)
    for name, scenario in doc["scenarios"].items():
        assert scenario["error"] is None, f"{name}: {scenario['error']}"
        assert scenario["series"], f"{name}: no measurements"
        for s in scenario["series"]:
            assert s["values"], f"{name}/{s['case']}/{s['system']}: no values"
            assert all(math.isfinite(v) and v >= 0 for v in s["values"]), s
        fluidcache = [s for s in scenario["series"] if s["system"].startswith("fc-")]
        baseline = [s for s in scenario["series"] if s["system"] in BASELINES]
        assert fluidcache and baseline, f"{name}: needs fluidcache and a baseline side by side"
    report = (out / "report.md").read_text()
    plots = sorted(out.glob("*.png"))
    assert plots
    for name in NAMES:
        assert any(p.name.startswith(name) for p in plots), f"no plot for {name}"
    for p in plots:
        assert p.stat().st_size > 5000
        assert f"]({p.name})" in report
    assert "## Summary" in report and "## Machine" in report
    assert "wall time" in output
