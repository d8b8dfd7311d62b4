"""No token or a wrong token: 401 on every route of the master and the workers.

Routes come from the apps' routers, so a route added later is covered without editing this
file. Public without the token, by design: health, and the status page's shell (``/`` and its
static files), which hold no data; the data behind the page (``/v1/status``) needs the token.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from fluidcache.common.protocol import HEALTH, STATUS, STATUS_PAGE, STATUS_STATIC
from tests.integration.security.apps import routes, running_apps
from tests.unit.master.helpers import TOKEN

PUBLIC = {HEALTH, STATUS_PAGE}

BAD_AUTH = [
    {},
    {"Authorization": ""},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer "},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Bearer {TOKEN[:-1]}"},
    {"Authorization": f"bearer {TOKEN}"},
    {"Authorization": TOKEN},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": f"Bearer  {TOKEN}"},
    {"Authorization": "Bearer \u00e9\u00e9"},
]


def is_public(path: str) -> bool:
    return path in PUBLIC or path.startswith(STATUS_STATIC)


async def test_every_route_wants_the_token(tmp_path: Path) -> None:
    async with running_apps(tmp_path) as apps, aiohttp.ClientSession() as s:
        checked = 0
        for which, server in (("master", apps.master), ("worker", apps.worker)):
            found = routes(server.app)
            assert len(found) >= 8, found
            for method, path in found:
                if is_public(path):
                    continue
                for headers in BAD_AUTH:
                    url = apps.url(which) + path
                    async with s.request(method, url, headers=headers, data=b"\x80") as resp:
                        body = await resp.read()
                        assert resp.status == 401, (which, method, path, headers, body)
                        if method != "HEAD":
                            assert b"unauthorized" in body.lower() or b"token" in body, body
                        checked += 1
                # The right token gets past the guard (whatever the handler then says).
                url = apps.url(which) + path
                good = {"Authorization": f"Bearer {TOKEN}"}
                async with s.request(method, url, headers=good, data=b"\x80") as resp:
                    assert resp.status != 401, (which, method, path)
        assert checked > 200


async def test_data_metrics_and_status_json_are_not_public(tmp_path: Path) -> None:
    async with running_apps(tmp_path) as apps, aiohttp.ClientSession() as s:
        for which, path in (("master", STATUS), ("master", "/metrics"), ("worker", "/metrics")):
            async with s.get(apps.url(which) + path) as resp:
                assert resp.status == 401, (which, path)


@pytest.mark.parametrize("which", ["master", "worker"])
async def test_unknown_paths_do_not_reveal_routes(tmp_path: Path, which: str) -> None:
    async with running_apps(tmp_path) as apps, aiohttp.ClientSession() as s:
        for path in ("/v1/nope", "/admin", "/v1/blocks/x/y/z", "/static/../v1/status"):
            async with s.get(apps.url(which) + path) as resp:
                assert resp.status == 401, path


async def test_public_paths_hold_no_data(tmp_path: Path) -> None:
    async with running_apps(tmp_path) as apps, aiohttp.ClientSession() as s:
        public = [p for _, p in routes(apps.master.app) if is_public(p)]
        assert HEALTH in public and STATUS_PAGE in public
        for path in public:
            async with s.get(apps.url("master") + path) as resp:
                assert resp.status == 200, path
                text = await resp.text()
                # No figures, names or sources of the dataset in the shell.
                assert "local://" not in text and str(tmp_path) not in text, path
