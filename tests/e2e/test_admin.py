"""Admin commands on a running cluster: load-metadata, report, backup, and restore from it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fluidcache.client import Client
from tests.cluster import cluster

pytestmark = pytest.mark.timeout(120)


def run(*args: str, token_file: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "fluidcache", *args, "--token-file", str(token_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_load_report_backup_and_restore(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for d in range(3):
        (src / f"d{d}").mkdir(parents=True)
        for f in range(50):
            (src / f"d{d}" / f"f{f}").write_bytes(b"x" * (f + 1))
    with cluster(tmp_path / "one") as c:
        c.start_master(f"local://{src}")
        c.start_worker("w1")
        loaded = run("load-metadata", "/default", "--master", c.master_url, token_file=c.token_file)
        assert "done" in loaded and "150 files" in loaded
        report = run("report", "--master", c.master_url, token_file=c.token_file)
        assert "150" in report  # file count, from the eager load
        out = run("backup", "--name", "b1", "--master", c.master_url, token_file=c.token_file)
        assert "Complete" in out
        backup = Path(out.strip().splitlines()[-1].removeprefix("backup: "))
        assert backup.is_file()
        backup_copy = tmp_path / "b1.backup"
        shutil.copy(backup, backup_copy)

    shutil.rmtree(src / "d1")  # a restored master must not list the sources again
    with cluster(tmp_path / "two") as c:
        c.start_master(f"local://{src}", extra=("--restore-from", str(backup_copy)))
        with Client(c.master_url, c.token) as client:
            assert len(client.ls("/d1")) == 50

    broken = tmp_path / "broken.backup"
    broken.write_bytes(backup_copy.read_bytes()[:-100])
    with cluster(tmp_path / "three") as c, pytest.raises(AssertionError, match="backup"):
        c.start_master(f"local://{src}", extra=("--restore-from", str(broken)))
