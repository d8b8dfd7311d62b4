"""The status page in a real browser (Debian's chromium, driven by Playwright) on a real cluster.

Screenshots go to ``$FLUIDCACHE_TEST_ARTIFACTS`` (default: the test's tmp_path). Playwright
never downloads a browser here: it launches /usr/bin/chromium, which bootstrap installs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from bench.shaper import shaped
from fluidcache.client import Client
from fluidcache.common.protocol import (
    EXECUTING,
    STATUS,
)
from tests.cluster import Cluster, cluster
from tests.sources import HttpSource

pytestmark = pytest.mark.timeout(180)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SUMMARY = ("ufs_total_bytes", "cached_bytes", "cache_capacity", "cached_percent", "file_count")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: make bootstrap installs apt chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    out = Path(os.environ.get("FLUIDCACHE_TEST_ARTIFACTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def get_status(url: str, token: str | None) -> tuple[int, Any]:
    """GET /v1/status as a browser would: (HTTP status, JSON body)."""
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url + STATUS, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def wait_until(check: Any, what: str, timeout: float = 20.0, page: Page | None = None) -> Any:
    """``check()`` once true; with ``page``, its events (requests...) are handled meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        if page is not None:
            page.wait_for_timeout(200)  # the sync API dispatches events only inside its calls
        else:
            time.sleep(0.2)


def shown(page: Page, selector: str, attr: str) -> str | None:
    loc = page.locator(selector)
    return loc.first.get_attribute(attr) if loc.count() else None


def no_data(page: Page) -> None:
    """The locked state: the banner says why, and nothing of the cluster is on the page."""
    page.wait_for_selector("#banner.unauthorized", timeout=10_000)
    assert "Wrong or missing token" in page.inner_text("#banner")
    assert page.is_visible("#login") and page.is_hidden("#data")
    assert page.locator("[data-key], [data-worker], [data-job]").count() == 0


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A master and a worker on a local source, all of which has been read once."""
    root = tmp_path_factory.mktemp("status")
    src = root / "src"
    (src / "models").mkdir(parents=True)
    (src / "models" / "weights.bin").write_bytes(os.urandom(5 * 2**20 + 17))
    for i in range(12):
        (src / f"part-{i:02d}.csv").write_bytes(os.urandom(10_000 + i))
    with cluster(root / "cluster") as c:
        c.start_master(f"local://{src}")
        c.start_worker("w1")
        with Client(c.master_url, c.token) as fc:
            files = list(fc.walk("/"))
            for f in files:
                assert len(fc.cat(f.path)) == f.size
            total = sum(f.size for f in files)
            # Usage reaches the master with the worker's next heartbeat.
            wait_until(lambda: fc.report().cached_bytes >= total, "the worker's usage")
        yield c


def test_status_page_shows_datasets_and_workers(
    warm: Cluster, browser: Browser, artifacts: Path
) -> None:
    code, status = get_status(warm.master_url, warm.token)
    assert code == 200
    report = status["report"]
    assert report["cached_bytes"] > 0 and report["file_count"] == 13

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url + " " + json.dumps(r.headers)))
    page.goto(f"{warm.master_url}/#token={warm.token}")

    total = '[data-dataset="*"] [data-key="{}"]'
    for key in SUMMARY:
        wait_until(
            lambda key=key: shown(page, total.format(key), "data-value") is not None, key, 10, page
        )
        assert float(shown(page, total.format(key), "data-value") or "nan") == report[key], key
    assert page.inner_text(total.format("file_count")) == "13"
    assert page.inner_text(total.format("cached_percent")) == f"{report['cached_percent']:.2f} %"

    worker = report["workers"][0]
    for tier in worker["tiers"]:
        row = f'[data-worker="{worker["worker_id"]}"] .tier[data-medium="{tier["medium"]}"]'
        assert int(shown(page, row, "data-used") or -1) == tier["used"] > 0
        assert int(shown(page, row, "data-capacity") or -1) == tier["capacity"]
        assert "of 256.0 MiB" in page.inner_text(row)
    assert "No job running." in page.inner_text("#jobs-running")

    # The fragment never reaches the server and is gone from the address bar once read.
    assert "#" not in page.url
    assert not [s for s in sent if f"token={warm.token}" in s]
    page.screenshot(path=str(artifacts / "status-page.png"), full_page=True)

    # The page refreshes itself: new usage shows up without a reload.
    polls = lambda: sum(STATUS in s for s in sent)  # noqa: E731
    seen = polls()
    with Client(warm.master_url, warm.token) as fc:
        fc.cat("/models/weights.bin")  # already cached: the figure must stay equal
    wait_until(lambda: polls() >= seen + 2, "two more refreshes", 10, page)
    stamp = page.inner_text("#updated")
    wait_until(lambda: page.inner_text("#updated") != stamp, "a redraw", 10, page)
    assert (
        float(shown(page, total.format("cached_bytes"), "data-value") or 0)
        == report["cached_bytes"]
    )
    context.close()


def test_status_page_without_or_with_a_wrong_token_shows_no_data(
    warm: Cluster, browser: Browser, artifacts: Path
) -> None:
    assert get_status(warm.master_url, None)[0] == 401
    code, body = get_status(warm.master_url, "not-the-token")
    assert code == 401 and body["code"] == "unauthorized"

    wrong = browser.new_context()
    page = wrong.new_page()
    page.goto(f"{warm.master_url}/#token=not-the-token")
    no_data(page)
    assert "#" not in page.url
    assert page.evaluate("sessionStorage.length") == 0  # a refused token is not kept
    page.screenshot(path=str(artifacts / "status-page-wrong-token.png"))
    wrong.close()

    context = browser.new_context()
    page = context.new_page()
    page.goto(warm.master_url + "/")
    no_data(page)

    # The login form with the right token opens the page, and "Forget token" locks it again.
    page.fill("#token", warm.token)
    page.click("#login button[type=submit]")
    page.wait_for_selector('[data-dataset="*"] [data-key="file_count"]', timeout=10_000)
    assert page.is_hidden("#login")
    page.click("#signout")
    page.wait_for_selector("#login", state="visible", timeout=5_000)
    assert page.locator("[data-key], [data-worker]").count() == 0
    context.close()


def test_status_page_shows_a_running_load(
    tmp_path: Path, browser: Browser, artifacts: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    size = 48 * 2**20
    (src / "big.bin").write_bytes(os.urandom(size))
    http = HttpSource(src)
    try:
        # 4 MB/s: the load takes about 12 s, long enough to be seen Executing.
        with (
            shaped(http.url, 4e6, 0.0, tmp_path / "shaper.log") as url,
            cluster(tmp_path / "cluster") as c,
        ):
            c.start_master(url)
            c.start_worker("w1")
            load = ["load", "/", "--master", c.master_url, "--detach"]
            out = subprocess.run(
                [sys.executable, "-m", "fluidcache", *load],
                env={**os.environ, **c.env},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.returncode == 0, out.stderr
            job_id = out.stdout.split()[-1]

            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{c.master_url}/#token={c.token}")
            row = f'#jobs-running tr[data-job="{job_id}"][data-phase="{EXECUTING}"]'
            page.wait_for_selector(row, timeout=20_000)
            wait_until(
                lambda: int(shown(page, row, "data-bytes-done") or 0) > 0, "progress", 30, page
            )
            assert int(shown(page, row, "data-bytes-total") or 0) == size
            assert f"of {48.0:.1f} MiB" in page.inner_text(row)
            assert page.inner_text(f'{row} [data-key="rate"]').endswith("/s")
            page.screenshot(path=str(artifacts / "status-page-load.png"), full_page=True)
            page.close()
    finally:
        http.stop()
