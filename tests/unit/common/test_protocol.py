"""Wire messages: round trips, nested messages, and type checks on decode."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluidcache.common import protocol
from fluidcache.common.protocol import (
    FileInfo,
    ListReply,
    LocationsReply,
    MountInfo,
    RegisterReply,
    TierUsage,
    WorkerInfo,
    WorkersReply,
)


def test_round_trips_nested_messages() -> None:
    info = FileInfo(5, 1, "a", "/d/a", False, 10, 1.5, "local:///x/a", "10-1", 4096)
    page = ListReply([info, FileInfo(6, 1, "b", "/d/b", True)], cursor="b")
    assert ListReply.decode(page.encode()) == page
    reply = RegisterReply(2.0, [MountInfo("d", "m", "s3://b/p", {"region": "x"})])
    assert RegisterReply.decode(reply.encode()) == reply
    w = WorkerInfo("w", "http://h:1", tiers=[TierUsage("MEM", 10, 5, 1)])
    assert WorkerInfo.decode(w.encode()) == w
    loc = LocationsReply({"id": ["w1", "w2"]})
    assert LocationsReply.decode(loc.encode()) == loc


def test_missing_fields_take_defaults_and_ints_become_floats() -> None:
    got = FileInfo.from_wire({"ino": 1, "parent": 1, "name": "", "path": "/", "is_dir": True})
    assert got.size == 0 and got.mtime == 0.0
    assert FileInfo.from_wire({**got.to_wire(), "mtime": 3}).mtime == 3.0


@pytest.mark.parametrize(
    "body",
    [
        {"ino": "1", "parent": 1, "name": "", "path": "/", "is_dir": True},
        {"ino": 1, "parent": 1, "name": 5, "path": "/", "is_dir": True},
        {"ino": 1, "parent": 1, "name": "", "path": "/", "is_dir": True, "mtime": "x"},
        [1, 2, 3],
    ],
)
def test_wrong_types_are_refused(body: object) -> None:
    with pytest.raises(TypeError):
        FileInfo.decode(msgpack.packb(body))


def test_missing_required_field_is_refused() -> None:
    with pytest.raises(TypeError):
        FileInfo.from_wire({"ino": 1})
    with pytest.raises(TypeError):
        ListReply.from_wire({"entries": "not a list"})


def test_unknown_fields_are_refused_from_the_wire_and_ignored_in_stored_records() -> None:
    info = FileInfo(5, 1, "a", "/d/a", False, 10).to_wire()
    page = {"entries": [info, {**info, "colour": "red"}], "cursor": ""}
    with pytest.raises(ValueError, match="FileInfo: unknown field 'colour'"):
        ListReply.decode(msgpack.packb(page))
    with pytest.raises(ValueError, match="ListReply: unknown field 'extra'"):
        ListReply.decode(msgpack.packb({"entries": [], "extra": 1}))
    tiers = [
        {"medium": "MEM", "capacity": 1, "used": 0},
        {"medium": "SSD", "capacity": 1, "used": 0, "x": 1},
    ]
    workers = {"workers": [{"worker_id": "w", "address": "http://h:1", "tiers": tiers}]}
    with pytest.raises(ValueError, match="TierUsage: unknown field 'x'"):
        WorkersReply.decode(msgpack.packb(workers))
    # a record an older or newer version stored is read with what this version knows of it
    assert ListReply.from_wire(page).entries[1] == FileInfo(5, 1, "a", "/d/a", False, 10)
    tiers[1].pop("x")
    assert WorkersReply.decode(msgpack.packb(workers)).workers[0].tiers[1] == TierUsage("SSD", 1, 0)


def _shape_by_definition(data: Any, depth: int = 0) -> None:
    """What ``_check_shape`` must refuse, as plainly as it can be said: a value deeper than
    MAX_DEPTH, or a map key that is not a string."""
    if depth > protocol.MAX_DEPTH:
        raise ValueError("deep")
    if isinstance(data, dict):
        for key, value in data.items():
            if not isinstance(key, str):
                raise TypeError("key")
            _shape_by_definition(value, depth + 1)
    elif isinstance(data, list):
        for value in data:
            _shape_by_definition(value, depth + 1)


def _verdict(check: Any, data: Any) -> str:
    try:
        check(data)
    except (TypeError, ValueError) as e:
        return type(e).__name__
    return "ok"


_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=3)
_keys = st.text(max_size=3) | st.integers(0, 3) | st.binary(max_size=2)


def _nested(depth: int) -> st.SearchStrategy[Any]:
    """Values nested exactly around MAX_DEPTH: ``depth`` single-item wrappers over a tree."""
    tree = st.recursive(
        _scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
        max_leaves=8,
    )
    wrap = st.sampled_from(["list", "dict"])
    return st.tuples(st.lists(wrap, min_size=depth, max_size=depth), tree).map(_wrapped)


def _wrapped(parts: tuple[list[str], Any]) -> Any:
    wrappers, value = parts
    for kind in reversed(wrappers):
        value = [value] if kind == "list" else {"k": value}
    return value


@settings(max_examples=400, deadline=None)
@given(
    st.integers(protocol.MAX_DEPTH - 3, protocol.MAX_DEPTH + 1).flatmap(_nested)
    | st.integers(0, 3).flatmap(_nested)
)
def test_shape_check_refuses_exactly_what_its_definition_does(data: Any) -> None:
    # the same verdict (and the same error) as the definition, at and around the depth limit
    assert _verdict(protocol._check_shape, data) == _verdict(_shape_by_definition, data)
