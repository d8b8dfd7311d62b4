"""``fluidcache master`` as a process: token file, ready file, SIGKILL, restart, JSON logs."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp

from fluidcache.common.config import TOKEN_FILE_ENV, write_token
from fluidcache.common.http import RpcClient
from fluidcache.common.protocol import NS_STAT, FileInfo, StatRequest
from tests.unit.master.helpers import make_tree


@contextlib.contextmanager
def master_process(
    args: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m fluidcache master ARGS`` in its own process group, killed on the way out."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fluidcache", "master", *args],
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def wait_ready(proc: subprocess.Popen[bytes], path: Path, log: Path, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"master exited {proc.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"{path} did not appear:\n{log.read_text()}"
        time.sleep(0.05)
    return path.read_text().strip()


def master_setup(tmp_path: Path) -> tuple[Path, str, dict[str, str]]:
    """A source tree, a token and the environment naming its file."""
    src = tmp_path / "src"
    make_tree(src)
    token_file = tmp_path / "token"
    token = write_token(token_file)
    return src, token, {TOKEN_FILE_ENV: str(token_file)}


async def stat(url: str, token: str, path: str) -> FileInfo:
    async with aiohttp.ClientSession() as session:
        return await RpcClient(url, token, session).call(NS_STAT, StatRequest(path=path), FileInfo)


async def test_master_process_survives_sigkill(tmp_path: Path) -> None:
    src, token, env = master_setup(tmp_path)
    ready = tmp_path / "ready"
    args = [f"local://{src}", "--data-dir", str(tmp_path / "data"), "--dataset", "ds"]
    args += ["--ready-file", str(ready)]

    log = tmp_path / "master.log"
    with master_process(args, env, log) as proc:
        url = await asyncio.to_thread(wait_ready, proc, ready, log)
        info = await stat(url, token, "/ds/a/b/deep.txt")
        assert info.size == 1000
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    (src / "a" / "b" / "deep.txt").unlink()  # a re-listing would notice; the namespace must not
    ready.unlink()
    with master_process(args, env, log) as proc:
        url = await asyncio.to_thread(wait_ready, proc, ready, log)
        assert await stat(url, token, "/ds/a/b/deep.txt") == info
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()


def json_lines(log: Path) -> list[dict[str, object]]:
    """Every line of ``log`` as a JSON object with the keys each log line must have."""
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys(), line
        datetime.datetime.fromisoformat(str(line["time"]))
    return lines


async def test_master_logs_one_json_object_per_line(tmp_path: Path) -> None:
    src, token, env = master_setup(tmp_path)
    log, ready = tmp_path / "master.log", tmp_path / "ready"
    args = [f"local://{src}", "--data-dir", str(tmp_path / "data"), "--ready-file", str(ready)]
    with master_process([*args, "--log-format", "json"], env, log) as proc:
        url = wait_ready(proc, ready, log)
        assert (await stat(url, token, "/default/a")).is_dir
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()
    messages = [str(line["message"]) for line in json_lines(log)]
    assert f"ready: {url}" in messages, messages
    assert any(m.startswith("master serving dataset default") for m in messages), messages

    refused = tmp_path / "refused.log"
    bad = [f"local://{src}", "--data-dir", str(tmp_path / "d2"), "--option", "colour=red"]
    with master_process([*bad, "--log-format", "json"], env, refused) as proc:
        assert proc.wait(20) != 0
    (line,) = json_lines(refused)
    assert line["level"] == "ERROR" and "option colour" in str(line["message"]), line
