"""Fixtures shared by every suite."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.reliability import RESULTS, Scenario, write_report


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A scratch directory nginx's unprivileged workers can read (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="fluidcache-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reliability-report",
        default="",
        metavar="PATH",
        help="write the reliability scenarios run to PATH (Markdown)",
    )
    parser.addoption(
        "--soak-seconds",
        type=float,
        default=float(os.environ.get("FLUIDCACHE_SOAK_SECONDS", "60")),
        help="how long the soak test reads (default 60, or $FLUIDCACHE_SOAK_SECONDS)",
    )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> Iterator[Scenario]:
    """A scenario of the reliability report, its outcome taken from the test's."""
    found = Scenario(title=request.node.name)
    started = time.monotonic()
    yield found
    found.seconds = time.monotonic() - started
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.skipped:
        found.outcome = "skipped"
    elif rep.passed:
        found.outcome = "pass"
    else:
        found.outcome = "FAIL"
        found.error = str(rep.longrepr)[-3000:]
    RESULTS.append(found)


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("--reliability-report")
    if path and RESULTS:
        write_report(Path(path), RESULTS)
