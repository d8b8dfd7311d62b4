"""The benchmark's emulated remote source (``bench/shaper.py``) in front of a real nginx: bytes
pass unchanged, every request is late by the latency, each connection and the shared link are
capped, and nothing is left running.

Only lower bounds on time are asserted (a cap or a delay that does not hold makes a request
too fast, which a loaded machine cannot cause); how fast it goes is the benchmark's business.
"""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bench.shaper import LinkUse, link_use, shaped
from tests.sources import NginxSource, free_port

SIZE = 3 * 2**20 + 17


@pytest.fixture
def nginx(workdir: Path) -> Iterator[tuple[NginxSource, bytes]]:
    www = workdir / "www"
    www.mkdir()
    data = os.urandom(SIZE)
    (www / "blob").write_bytes(data)
    source = NginxSource(www, workdir / "nginx")
    try:
        yield source, data
    finally:
        source.stop()


def _get(conn: http.client.HTTPConnection, start: int, end: int) -> tuple[bytes, float]:
    """Bytes ``start..end`` (inclusive) of the blob, and the seconds until its first byte."""
    began = time.monotonic()
    conn.request("GET", "/blob", headers={"Range": f"bytes={start}-{end}"})
    resp = conn.getresponse()
    first = time.monotonic() - began
    assert resp.status == 206, resp.status
    return resp.read(), first


def _conn(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)


def test_bytes_pass_unchanged_and_each_request_is_late(
    nginx: tuple[NginxSource, bytes], tmp_path: Path
) -> None:
    source, data = nginx
    with shaped(source.url, 0.0, 0.05, tmp_path / "shaper.log") as url:
        assert url != source.url
        conn = _conn(url)
        try:
            # Several requests on one kept-alive connection, whole and ranged.
            for start, end in ((0, SIZE - 1), (5, 70_000), (SIZE - 1000, SIZE - 1)):
                body, first = _get(conn, start, end)
                assert body == data[start : end + 1]
                assert first >= 0.05
        finally:
            conn.close()


def test_each_connection_is_capped_and_the_link_is_shared(
    nginx: tuple[NginxSource, bytes], tmp_path: Path
) -> None:
    source, data = nginx
    with shaped(source.url, 0.0, 0.0, tmp_path / "conn.log", per_conn=10e6) as url:
        conn = _conn(url)
        try:
            began = time.monotonic()
            body, _ = _get(conn, 0, SIZE - 1)
            assert body == data
            assert time.monotonic() - began >= SIZE / 10e6 * 0.9
        finally:
            conn.close()

    # Two connections at once share a 10 MB/s link: together no faster than it.
    with shaped(source.url, 10e6, 0.0, tmp_path / "link.log") as url:
        bodies: list[bytes] = []

        def fetch() -> None:
            c = _conn(url)
            try:
                bodies.append(_get(c, 0, SIZE - 1)[0])
            finally:
                c.close()

        began = time.monotonic()
        threads = [threading.Thread(target=fetch) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert bodies == [data, data]
        assert time.monotonic() - began >= 2 * SIZE / 10e6 * 0.9


def test_a_dead_upstream_closes_the_connection_and_stop_ends_the_shaper(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/"
    with shaped(dead, 0.0, 0.01, tmp_path / "dead.log") as url:
        parts = urlsplit(url)
        assert parts.port
        with socket.create_connection(("127.0.0.1", parts.port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                answer = s.recv(100)
            except ConnectionResetError:  # closed with the request unread
                answer = b""
            assert answer == b""  # closed, not hung
    with pytest.raises(OSError):  # the shaper is gone with the context
        socket.create_connection(("127.0.0.1", parts.port), timeout=2).close()


def test_the_trace_books_every_byte_on_the_link_once(
    nginx: tuple[NginxSource, bytes], tmp_path: Path
) -> None:
    source, data = nginx
    trace = tmp_path / "link.trace"
    began = time.monotonic()
    with shaped(source.url, 50e6, 0.0, tmp_path / "link.log", trace=trace) as url:
        conn = _conn(url)
        try:
            assert _get(conn, 0, SIZE - 1)[0] == data
        finally:
            conn.close()
    ended = time.monotonic()
    slots = [tuple(float(x) for x in line.split()) for line in trace.read_text().splitlines()]
    booked = sum(b - a for a, b in slots)
    assert booked >= SIZE / 50e6 * 0.99  # the body (and the headers) crossed the link
    assert booked <= (SIZE + 4096) / 50e6 * 1.01
    use = link_use(trace, began, ended)
    assert use is not None and 0 <= use.first < ended - began
    assert link_use(trace, ended, ended + 1) is None


def test_link_use_counts_the_link_idle_between_bytes_and_after_the_last(tmp_path: Path) -> None:
    trace = tmp_path / "link.trace"
    # From 10.0: bytes 10.1-10.2 and 10.2-10.3, idle to 10.5, bytes 10.5-10.6; end at 11.0.
    trace.write_text("10.2 10.3\n10.1 10.2\n10.5 10.6\n20.0 20.1\n")
    use = link_use(trace, 10.0, 11.0)
    assert use == LinkUse(
        first=pytest.approx(0.1),
        idle=pytest.approx(0.2),
        idle_early=pytest.approx(0.0),
        after=pytest.approx(0.4),
    )
    # The first quarter second holds the idle 10.3-10.5 when the span starts at 10.25.
    early = link_use(trace, 10.25, 11.0)
    assert early is not None and early.idle_early == pytest.approx(0.2)
