"""``bench.coldprof``'s CPU report: which process spent what, and how busy the machine was."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.coldprof import _machine_busy, _what, cpu_seconds, main


def test_processes_are_named_by_what_they_are() -> None:
    def what(*words: str) -> str:
        return _what([w.encode() for w in words])

    assert what("python", "-m", "fluidcache", "worker", "--id", "w-3") == "fluidcache worker w-3"
    assert what("python", "-m", "fluidcache", "mount", "default", "/mnt") == "fluidcache mount"
    assert what("python", "-m", "bench.shaper", "--upstream", "a:1") == "bench.shaper"
    assert what("nginx: worker process") == "nginx"
    assert what("/usr/bin/s3fs", "bucket", "/mnt") == "s3fs"


def test_a_busy_child_shows_under_its_name_and_a_waited_one_under_this_process() -> None:
    spin = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass"
    argv = [sys.executable, "-c", spin + "\nimport time; time.sleep(30)"]
    name = _what([w.encode() for w in argv])  # not read from /proc: it may not have exec'd yet
    child = subprocess.Popen(argv)
    try:
        deadline = time.monotonic() + 20
        while cpu_seconds(os.getpid()).get(name, 0.0) < 0.4:
            assert time.monotonic() < deadline, "the spinning child's CPU never showed"
            time.sleep(0.1)
    finally:
        child.kill()
        child.wait()
    before = cpu_seconds(os.getpid())
    waited = subprocess.run([sys.executable, "-c", spin], check=True)
    assert waited.returncode == 0
    after = cpu_seconds(os.getpid())
    mine = "readers (this process)"
    assert after[mine] - before[mine] >= 0.4  # the waited child's 0.5 s, counted here


def test_machine_busy_counts_ticks_that_only_grow() -> None:
    busy, steal, total = _machine_busy()
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    busy2, steal2, total2 = _machine_busy()
    assert 0 <= busy <= total and 0 <= steal <= total
    assert busy2 > busy and total2 > total and steal2 >= steal


def test_a_missing_path_or_model_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as gone:
        main([str(tmp_path / "nothing")])
    assert gone.value.code == 2 and "no such file or directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as no_model:
        main(["--hub", str(tmp_path)])
    assert no_model.value.code == 2 and "model.safetensors.index.json" in capsys.readouterr().err
