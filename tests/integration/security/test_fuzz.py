"""Every HTTP endpoint of a real master and a real worker (processes on 127.0.0.1), fuzzed.

Bodies are random bytes, msgpack of random shapes, and near-valid messages with fields of the
wrong type, huge or negative integers and unknown keys; block routes get random references and
ranges. Whatever arrives, the answer is a 4xx with a ``{code, message}`` body (or a success),
never a 500; the processes stay up and their memory bounded. Oversized bodies get a 413 before
they are read, slow senders a 408.
"""

from __future__ import annotations

import dataclasses
import http.client
import os
import socket
import time
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fluidcache.common import protocol
from fluidcache.common.protocol import BLOCK, HEALTH, ErrorReply, Message
from fluidcache.master import make_app as master_app
from fluidcache.master.server import MAX_BODY
from fluidcache.worker.config import LevelConfig, WorkerConfig
from fluidcache.worker.server import make_app as worker_app
from tests.cluster import Cluster, cluster
from tests.integration.security.apps import routes
from tests.unit.master.helpers import config, make_tree

RSS_LIMIT = 400 * 2**20


def _all_routes(root: Path) -> dict[str, list[tuple[str, str]]]:
    make_tree(root / "src")
    level = LevelConfig("MEM", (root / "mem",), 1 << 20)
    return {
        "master": routes(master_app(config(root / "m", root / "src"))),
        "worker": routes(worker_app(WorkerConfig("w", "http://127.0.0.1:9", [level], "t"))),
    }


FIELDS = sorted(
    {
        f.name
        for cls in vars(protocol).values()
        if isinstance(cls, type) and issubclass(cls, Message) and dataclasses.is_dataclass(cls)
        for f in dataclasses.fields(cls)
    }
)

ints = st.one_of(
    st.integers(-(2**63), 2**64 - 1), st.sampled_from([-1, 0, 1, 2**31, 2**63 - 1, -(2**63)])
)
scalars = st.one_of(
    st.none(), st.booleans(), ints, st.floats(), st.text(max_size=40), st.binary(max_size=40)
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)
near_messages = st.dictionaries(
    st.one_of(st.sampled_from(FIELDS), st.text(max_size=12)), values, max_size=8
)


def _pack(v: object) -> bytes:
    return msgpack.packb(v, use_bin_type=True)


deep = st.integers(1, 5000).map(lambda n: b"\x91" * n + b"\xc0")
bodies = st.one_of(
    st.binary(max_size=300),
    values.map(_pack),
    near_messages.map(_pack),
    deep,
    st.sampled_from([b"", b"\xc1", b"\xdd\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff", b"\x80"]),
)
queries = st.dictionaries(
    st.sampled_from(
        [
            "uri",
            "version",
            "index",
            "block_size",
            "file_size",
            "peers",
            "peer",
            "pin",
            "limit",
            "phase",
            "x",
        ]
    ),
    st.one_of(
        st.text(max_size=30),
        ints.map(str),
        st.sampled_from(["local:///etc/passwd", "local://../..", "-1", "1e30", "\x00"]),
    ),
    max_size=6,
)
edge_ints = st.one_of(
    st.sampled_from([-1, 0, 1, -(2**63), 2**63 - 1, 2**63, 2**64 - 1, 2**31]), st.integers()
).filter(lambda i: -(2**63) <= i < 2**64)
edge_strs = st.one_of(
    st.sampled_from(["", ".", "..", "/", "a/b", "../../etc/passwd", "/etc/passwd", "a\x00b"]),
    st.sampled_from(["x" * 256, "\u00e9" * 200, "local:///etc", "default", "/", "0" * 16]),
    st.text(max_size=20),
)


def typed(tp: object, depth: int = 0) -> st.SearchStrategy[object]:
    """Values of a field type, edge cases first, and now and then one of another type."""
    origin = typing.get_origin(tp)
    wrong = values if depth < 2 else scalars
    if isinstance(tp, type) and issubclass(tp, Message):
        return message_dicts(tp, depth + 1) if depth < 3 else st.just({})
    if origin is list:
        return st.one_of(st.lists(typed(typing.get_args(tp)[0], depth + 1), max_size=4), wrong)
    if origin is dict:
        inner = typed(typing.get_args(tp)[1], depth + 1)
        return st.one_of(st.dictionaries(edge_strs, inner, max_size=3), wrong)
    if origin in (types.UnionType, typing.Union):
        return st.one_of(st.none(), *(typed(a, depth) for a in typing.get_args(tp)))
    base = {int: edge_ints, str: edge_strs, bool: st.booleans(), float: st.floats()}
    return st.one_of(base.get(tp, scalars), wrong) if tp in base else scalars  # type: ignore[call-overload]


def message_dicts(cls: type, depth: int = 0) -> st.SearchStrategy[dict[str, object]]:
    hints = typing.get_type_hints(cls)
    optional = {f.name: typed(hints[f.name], depth) for f in dataclasses.fields(cls)}
    extra = st.dictionaries(st.sampled_from(["unknown", "x", "__class__"]), scalars, max_size=1)
    return st.tuples(st.fixed_dictionaries({}, optional=optional), extra).map(
        lambda t: {**t[0], **t[1]}
    )


ranges = st.one_of(
    st.none(),
    st.sampled_from(["bytes=-1", "bytes=0-", "bytes=5-1", "bytes=-99999999999", "bytes=a-b"]),
    st.tuples(ints, ints).map(lambda t: f"bytes={t[0]}-{t[1]}"),
)


# The message each route decodes: near-valid ones reach the service, not just the decoder.
REQUESTS: dict[str, type] = {
    protocol.NS_STAT: protocol.StatRequest,
    protocol.NS_LOOKUP: protocol.LookupRequest,
    protocol.NS_LIST: protocol.ListRequest,
    protocol.NS_LOAD_METADATA: protocol.LoadMetadataRequest,
    protocol.NS_LOAD_STATUS: protocol.LoadStatusRequest,
    protocol.BLOCK_LOCATIONS: protocol.LocationsRequest,
    protocol.WORKER_REGISTER: protocol.RegisterRequest,
    protocol.WORKER_HEARTBEAT: protocol.HeartbeatRequest,
    protocol.DATASET_REPORT: protocol.DatasetRequest,
    protocol.BACKUP: protocol.BackupRequest,
    protocol.JOB_SUBMIT: protocol.JobRequest,
    protocol.JOB_LIST: protocol.JobsRequest,
    protocol.JOB_STATUS: protocol.JobIdRequest,
    protocol.JOB_CANCEL: protocol.JobIdRequest,
    protocol.FREE: protocol.FreeRequest,
    protocol.BLOCKS_LOCAL: protocol.LocalBlocksRequest,
    protocol.BLOCKS_FREE: protocol.BlocksFreeRequest,
    protocol.BLOCKS_TOUCH: protocol.TouchRequest,
    protocol.NS_SEEN: protocol.SeenRequest,
    protocol.FILE_OPEN: protocol.OpenFilesRequest,
    protocol.BLOCKS_CACHE: protocol.CacheBlocksRequest,
}
NO_BODY = {protocol.WORKERS, protocol.REPORT, protocol.WORKER_STATS, protocol.BLOCK_CACHE}


def test_every_post_route_has_its_message(tmp_path: Path) -> None:
    """A new route is fuzzed with its own message once it is listed above."""
    for _which, found in _all_routes(tmp_path).items():
        for method, path in found:
            if method == "POST" and not path.startswith("/v1/blocks/0"):
                assert path in REQUESTS or path in NO_BODY, path


@dataclasses.dataclass
class Target:
    c: Cluster
    routes: list[tuple[str, str, str]]  # (process, method, path)

    def url(self, which: str) -> str:
        return self.c.master_url if which == "master" else self.c.urls["w1"]


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    root = tmp_path_factory.mktemp("fuzz")
    found = _all_routes(root / "routes")
    make_tree(root / "src")
    with cluster(root / "c") as c:
        c.start_master(f"local://{root / 'src'}")
        c.start_worker("w1")
        flat = [(w, m, p) for w, rs in found.items() for m, p in rs if m != "HEAD"]
        yield Target(c, flat)


def request(
    base: str,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, bytes]:
    u = urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def check_answer(status: int, body: bytes, what: object) -> None:
    assert status != 500 and status < 600, (what, status, body[:300])
    if status == 416:  # a file served with sendfile: the range it cannot satisfy, no body
        return
    if status >= 400:
        err = ErrorReply.decode(body)
        assert err.message, (what, status)
    if status >= 500:  # only what the source or a peer did: never about the request itself
        assert status in (502, 503, 504), (what, status, body[:300])


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@settings(
    max_examples=int(os.environ.get("FLUIDCACHE_FUZZ_EXAMPLES", "1500")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
@given(data=st.data())
def test_fuzz_every_endpoint(target: Target, data: st.DataObject) -> None:
    which, method, path = data.draw(st.sampled_from(target.routes))
    cls = REQUESTS.get(path)
    if cls is not None and data.draw(st.integers(0, 4)) > 0:
        body = _pack(data.draw(message_dicts(cls)))
    else:
        body = data.draw(bodies)
    if "{" in path or path.startswith("/v1/blocks/0"):
        path = data.draw(
            st.sampled_from(
                [
                    BLOCK.format(block_id="0" * 16),
                    BLOCK.format(block_id="0" * 16) + "/cache",
                    BLOCK.format(block_id="..%2f..%2fetc"),
                ]
            )
        )
    query = data.draw(queries)
    headers = {"Authorization": f"Bearer {target.c.token}", "Content-Type": protocol.MSGPACK}
    rng = data.draw(ranges)
    if rng:
        headers["Range"] = rng
    full = path + ("?" + urlencode(query) if query else "")
    status, answer = request(target.url(which), method, full, body, headers)
    check_answer(status, answer, (which, method, full, body[:100], rng))


def test_processes_survive_with_bounded_memory(target: Target) -> None:
    for name, proc in target.c.procs.items():
        assert proc.popen.poll() is None, f"{name} died:\n{proc.output}"
        assert rss(proc.popen.pid) < RSS_LIMIT, name
        assert "Traceback" not in proc.output and "unhandled error" not in proc.output, proc.output
    for which in ("master", "worker"):
        assert request(target.url(which), "GET", HEALTH)[0] == 200


@pytest.mark.parametrize("which", ["master", "worker"])
def test_oversized_bodies_are_refused_unread(target: Target, which: str) -> None:
    headers = {"Authorization": f"Bearer {target.c.token}"}
    path = protocol.NS_STAT if which == "master" else protocol.BLOCKS_LOCAL
    # Announced size: refused from the headers, the body never sent.
    u = urlsplit(target.url(which))
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=20)
    try:
        conn.putrequest("POST", path)
        for k, v in {**headers, "Content-Length": str(MAX_BODY * 4)}.items():
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        assert resp.status == 413, resp.status
        assert ErrorReply.decode(resp.read()).message
    finally:
        conn.close()

    # Chunked, no size announced: cut off once past the limit.
    def chunks() -> Iterator[bytes]:
        for _ in range(64):
            yield b"\x00" * (1 << 20)

    u = urlsplit(target.url(which))
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request("POST", path, body=chunks(), headers=headers, encode_chunked=True)
        resp = conn.getresponse()
        assert resp.status == 413, resp.status
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed while we were still sending
    finally:
        conn.close()
    test_processes_survive_with_bounded_memory(target)


def test_only_worker_messages_may_be_large(target: Target) -> None:
    headers = {"Authorization": f"Bearer {target.c.token}"}
    big = b"\x00" * (20 * 2**20)
    status, _ = request(target.c.master_url, "POST", protocol.NS_STAT, big, headers)
    assert status == 413
    status, body = request(target.c.master_url, "POST", protocol.WORKER_HEARTBEAT, big, headers)
    assert status == 400, body  # read (a worker's message may be large), then refused as malformed


def test_slow_clients_do_not_stall_others(target: Target) -> None:
    u = urlsplit(target.c.master_url)
    slow = []
    try:
        for _ in range(20):  # headers promising a body that trickles in
            s = socket.create_connection((u.hostname, u.port), timeout=10)
            s.sendall(
                f"POST {protocol.NS_STAT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                f"{target.c.token}\r\nContent-Length: 1000\r\n\r\n\x81".encode()
            )
            slow.append(s)
        for _ in range(20):  # half a request line
            s = socket.create_connection((u.hostname, u.port), timeout=10)
            s.sendall(b"POST /v1/ns/st")
            slow.append(s)
        start = time.monotonic()
        status, _ = request(target.c.master_url, "GET", HEALTH, timeout=5)
        assert status == 200 and time.monotonic() - start < 2
    finally:
        for s in slow:
            s.close()
