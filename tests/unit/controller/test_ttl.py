"""Fluid's ttlSecondsAfterFinished: a finished operation is deleted once its TTL has passed."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from fluidcache.controller import reconcile as rc

DONE_AT = "2026-01-02T03:04:05Z"
T = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC).timestamp()


def status(phase: str, **extra: Any) -> dict[str, Any]:
    cond = {"type": phase, "status": "True", "lastTransitionTime": DONE_AT}
    return {"phase": phase, "conditions": [cond], **extra}


@pytest.mark.parametrize(
    ("spec", "st", "now", "due"),
    [
        ({"ttlSecondsAfterFinished": 30}, status("Complete"), T + 29, False),
        ({"ttlSecondsAfterFinished": 30}, status("Complete"), T + 30, True),
        ({"ttlSecondsAfterFinished": 0}, status("Failed"), T, True),
        ({}, status("Complete"), T + 10**6, False),  # no TTL: kept
        ({"ttlSecondsAfterFinished": 0}, {"phase": "Executing"}, T + 10**6, False),
        (  # a DataProcess: its Job's completionTime
            {"ttlSecondsAfterFinished": 5},
            {"phase": "Complete", "completionTime": DONE_AT},
            T + 5,
            True,
        ),
        (  # finished, but no time known: kept rather than guessed
            {"ttlSecondsAfterFinished": 5},
            {"phase": "Complete"},
            T + 10**6,
            False,
        ),
    ],
)
def test_expired(spec: dict[str, Any], st: dict[str, Any], now: float, due: bool) -> None:
    assert rc.expired(spec, st, now) is due


def test_finished_at_takes_the_final_condition() -> None:
    st = status("Complete")
    st["conditions"].insert(
        0, {"type": "Waiting", "status": "True", "lastTransitionTime": "2027-01-01T00:00:00Z"}
    )
    assert rc.finished_at(st) == T
    assert rc.finished_at({"phase": "Pending"}) == 0.0
