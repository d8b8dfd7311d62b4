"""The reliability report: each fault or load scenario records what was injected, what was
observed and its figures; ``--reliability-report PATH`` writes them as Markdown at the end of
the run (``make reliability`` writes docs/reliability.md).
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Scenario:
    """One scenario of the report; a test fills it in as it goes."""

    title: str = ""
    injected: str = ""
    observed: list[str] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)
    outcome: str = "not run"
    error: str = ""
    seconds: float = 0.0

    def note(self, line: str) -> None:
        self.observed.append(line)

    def figure(self, name: str, value: object) -> None:
        self.figures[name] = str(value)


RESULTS: list[Scenario] = []


def write_report(path: Path, scenarios: list[Scenario]) -> None:
    passed = sum(1 for s in scenarios if s.outcome == "pass")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    lines = [
        "# fluidcache reliability report",
        "",
        "Written by the test suite (`make reliability`; CI runs it as `make test-slow`): every",
        "scenario runs real processes (`fluidcache up` or a master and workers, FUSE mounts,",
        "nginx or a local directory as the source), injects one fault or a load, and checks that",
        "every read returns exactly the source's bytes or fails with a clear error in bounded",
        "time. Nothing is faked.",
        "",
        f"- run: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, commit {commit}, "
        f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        f"- result: {passed} of {len(scenarios)} scenarios passed",
        "",
        "| scenario | injected | result | time |",
        "| --- | --- | --- | --- |",
    ]
    for s in scenarios:
        lines.append(f"| {s.title} | {s.injected} | {s.outcome} | {s.seconds:.0f} s |")
    for s in scenarios:
        lines += ["", f"## {s.title}: {s.outcome}", "", f"**Injected.** {s.injected}", ""]
        if s.observed:
            lines += ["**Observed.**", ""] + [f"- {o}" for o in s.observed] + [""]
        if s.figures:
            lines += ["| figure | value |", "| --- | --- |"]
            lines += [f"| {k} | {v} |" for k, v in s.figures.items()]
            lines.append("")
        if s.error:
            lines += ["**Failure.**", "", "```", s.error, "```", ""]
    text = "\n".join(lines).rstrip() + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(re.sub(r"\n{3,}", "\n\n", text))
