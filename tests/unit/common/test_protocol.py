"""Wire messages: round trips, nested messages, and type checks on decode."""

from __future__ import annotations

import msgpack
import pytest

from fluidcache.common.protocol import (
    FileInfo,
    ListReply,
    LocationsReply,
    MountInfo,
    RegisterReply,
    TierUsage,
    WorkerInfo,
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
