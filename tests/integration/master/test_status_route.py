"""The status page's routes over real HTTP: a shell without data, JSON only with the token."""

from __future__ import annotations

from pathlib import Path

from fluidcache.common.http import auth_headers
from fluidcache.common.protocol import (
    JSON,
    MSGPACK,
    NS_LOAD_METADATA,
    REPORT,
    STATUS,
    STATUS_PAGE,
    ErrorReply,
    LoadMetadataReply,
    LoadMetadataRequest,
    Report,
    Status,
)
from fluidcache.master.server import STATIC_FILES
from tests.unit.master.helpers import TOKEN, config, make_tree, running_master

ACCEPT_JSON = {"Accept": JSON}


async def test_shell_is_public_and_holds_no_data(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    async with running_master(config(tmp_path / "data", src)) as m:
        for route in STATIC_FILES:
            async with m.session.get(m.url + route) as resp:  # no token
                assert resp.status == 200, route
                assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
                assert resp.headers["Referrer-Policy"] == "no-referrer"
                body = await resp.text()
                assert str(src) not in body and "one.bin" not in body
        async with m.session.get(m.url + STATUS_PAGE) as resp:
            assert resp.content_type == "text/html"
            assert '<script src="/static/status.js"' in await resp.text()
        # Public means exactly those paths: a neighbour of the shell still needs the token.
        async with m.session.get(m.url + "/static/other.js") as resp:
            assert resp.status == 401


async def test_status_json_needs_the_token(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    async with running_master(config(tmp_path / "data", src)) as m:
        for headers in ({}, auth_headers("wrong"), {"Authorization": TOKEN}):
            async with m.session.get(m.url + STATUS, headers={**headers, **ACCEPT_JSON}) as resp:
                assert resp.status == 401
                assert resp.content_type == JSON
                body = await resp.json()
                assert body == {"code": "unauthorized", "message": "missing or wrong cluster token"}
        async with m.session.get(m.url + STATUS) as resp:  # a msgpack caller gets msgpack
            assert resp.status == 401 and resp.content_type == MSGPACK
            assert ErrorReply.decode(await resp.read()).code == "unauthorized"


async def test_status_is_the_report_and_the_jobs(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    async with running_master(config(tmp_path / "data", src)) as m:
        await m.rpc.call(NS_LOAD_METADATA, LoadMetadataRequest("/"), LoadMetadataReply)
        async with m.session.get(m.url + STATUS, headers=auth_headers(TOKEN)) as resp:
            assert resp.status == 200 and resp.content_type == JSON
            assert resp.headers["Cache-Control"] == "no-store"
            status = Status.from_wire(await resp.json())
        assert status.report == await m.rpc.call(REPORT, None, Report)
        assert (status.report.file_count, status.report.ufs_total_bytes) == (4, 1110)
        assert isinstance(status.jobs, list) and status.time > 0
        query = "?limit=5&phase=Executing"
        async with m.session.get(m.url + STATUS + query, headers=auth_headers(TOKEN)) as resp:
            assert resp.status == 200


async def test_bad_queries_and_routes_are_4xx_with_a_message(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    headers = {**auth_headers(TOKEN), **ACCEPT_JSON}
    async with running_master(config(tmp_path / "data", src)) as m:
        for query, words in [
            ("?limit=abc", "limit 'abc'"),
            ("?limit=0", "limit '0'"),
            ("?limit=-3", "limit '-3'"),
            ("?limit=99999999999999999999", "limit"),
            ("?phase=Sleeping", "phase 'Sleeping'"),
            ("?colour=blue", "unknown query parameter 'colour'"),
            ("?%zz=1", "unknown query parameter"),
        ]:
            async with m.session.get(m.url + STATUS + query, headers=headers) as resp:
                assert resp.status == 400, query
                body = await resp.json()
                assert body["code"] == "invalid" and words in body["message"], (query, body)
        for method, route, code in [
            ("GET", "/v1/nope", 404),
            ("GET", "/v1/status/extra", 404),
            ("POST", STATUS, 400),  # method not allowed, in the error tree as invalid
            ("GET", "/static/../../etc/passwd", 404),
        ]:
            async with m.session.request(method, m.url + route, headers=headers) as resp:
                assert resp.status == code, (method, route)
                assert (await resp.json())["message"]
