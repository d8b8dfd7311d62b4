"""Scenario 8: model cold start from the Hugging Face Hub (``hf://``).

The model of scenario 4 is published as a Hub repository: a git repository (shards as LFS
objects, hard links to the data set's files) that olah serves offline, behind nginx, which
answers each file's resolve path with a redirect to the checked-out file it serves with Range
(with the Hub's X-Repo-Commit / X-Linked-Etag / X-Linked-Size headers on the redirect), the way
the Hub redirects to its CDN. The per-connection shaper (the CDN model: each connection capped)
sits in front of nginx. Timed until safetensors has loaded every tensor: (c)
``huggingface_hub.snapshot_download`` (its default parallelism) to local disk, then loading from
there, what a user does today (its load alone is reported too, as ``local_load``: the loader's
own time from the page cache, the floor of any warm read); (a) through a fluidcache mount of
``hf://bench/model``, cold; (b) warm (kernel page cache dropped).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bench import cluster
from bench import readers as rd
from bench.config import MiB
from bench.context import Bench
from bench.procs import Proc
from bench.results import Result
from bench.shaper import shaped, shaped_per_conn
from bench.sources import free_port, nginx

NAME = "hub"
TITLE = "8. Model cold start from the Hub (hf://)"
REPO = "bench/model"

# In nginx's server block: each resolve path of the commit redirects, with the Hub's metadata
# headers, to the file served with Range under /cdn/ on another origin (localhost, not
# 127.0.0.1, same port), so clients treat it as the Hub's CDN (no token sent on); the rest
# goes to olah.
_FRONT = """
        set $cdn $http_host;
        if ($http_host ~ "^127\\.0\\.0\\.1:(\\d+)$") {{ set $cdn localhost:$1; }}
{files}
        location /cdn/ {{ alias {data}/; }}
        location / {{ proxy_pass {olah}; proxy_buffering off; }}
"""

_FILE = """        location = /{repo}/resolve/{commit}/{name} {{
            add_header X-Repo-Commit {commit} always;
            add_header X-Linked-Etag '"{etag}"' always;
            add_header X-Linked-Size {size} always;
            return 302 http://$cdn/cdn/{name};
        }}"""


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.org"}
    env |= {"GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@example.org"}
    out = subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)
    return out.stdout.decode().strip()


def publish(model: Path, mirrors: Path) -> tuple[str, dict[str, tuple[str, int]]]:
    """The model as a git repository under olah's mirrors path (shards as LFS objects, hard
    linked); its commit and, per file, the etag the Hub would give (sha256 or blob id) and size."""
    repo = mirrors / "models" / REPO
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    files: dict[str, tuple[str, int]] = {}
    for src in sorted(model.iterdir()):
        size = src.stat().st_size
        if src.suffix == ".safetensors":
            h = hashlib.sha256()
            with open(src, "rb") as f:
                while chunk := f.read(8 * MiB):
                    h.update(chunk)
            oid = h.hexdigest()
            obj = repo / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
            obj.parent.mkdir(parents=True, exist_ok=True)
            os.link(src, obj)
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"
            (repo / src.name).write_text(pointer)
            files[src.name] = (oid, size)
        else:
            shutil.copyfile(src, repo / src.name)
            files[src.name] = ("", size)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "model")
    for name, (oid, size) in list(files.items()):
        if not oid:
            files[name] = (_git(repo, "rev-parse", f"HEAD:{name}"), size)
    return _git(repo, "rev-parse", "HEAD"), files


def _wait(port: int, proc: Proc, what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        if proc.popen.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start")


@contextlib.contextmanager
def hub(model: Path, work: Path) -> Iterator[str]:
    """olah behind nginx serving ``model`` as ``bench/model``; yields the endpoint URL."""
    work.mkdir(parents=True, exist_ok=True)
    commit, files = publish(model, work / "mirrors")
    port = free_port()
    (work / "olah.toml").write_text(
        f'[basic]\nhost = "127.0.0.1"\nport = {port}\n'
        f'mirror-netloc = "127.0.0.1:{port}"\nmirror-lfs-netloc = "127.0.0.1:{port}"\n'
        f'repos-path = "{work / "repos"}"\nmirrors-path = ["{work / "mirrors"}"]\n'
        "[accessibility]\noffline = true\n"
    )
    olah_bin = str(Path(sys.executable).with_name("olah-cli"))
    olah = Proc([olah_bin, "-c", str(work / "olah.toml")], log=work / "olah.log", cwd=work)
    locations = "\n".join(
        _FILE.format(repo=REPO, commit=commit, name=name, etag=etag, size=size)
        for name, (etag, size) in files.items()
    )
    extra = _FRONT.format(files=locations, data=model.absolute(), olah=f"http://127.0.0.1:{port}")
    try:
        _wait(port, olah, "olah")
        with nginx(model, work / "front", extra=extra) as front:
            yield front.rstrip("/")
    finally:
        olah.stop()


def run(b: Bench) -> Result:
    r = Result(NAME, TITLE)
    r.extra["headline_metric"] = "s"
    model = b.data.root / "model"
    index = json.loads((model / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    tensor_bytes = int(index["metadata"]["total_size"])
    file_bytes = sum((model / sh).stat().st_size for sh in shards)
    r.params = {
        "shards": len(shards),
        "file_bytes": file_bytes,
        "source": "olah (offline) behind nginx redirecting resolve paths to ranged files",
        "baseline": "huggingface_hub.snapshot_download (default max_workers) then load_file",
        "repetitions": b.reps,
    }
    systems = ["hf-snapshot-download", "fc-fuse-hf"]
    quota = 2 * file_bytes // MiB + 64
    work = b.work / "hub"
    target = work / "download"

    def record(case: str, system: str, n: int, seconds: float) -> None:
        rd.expect(n, tensor_bytes, f"{NAME} {system}")
        vs = None if case == "snapshot_download" else "snapshot_download"
        r.add(case, system, "s", seconds, higher_is_better=False, vs_case=vs)

    with contextlib.ExitStack() as stack:
        raw = stack.enter_context(hub(model, work))
        # The Hub and its CDN as the per-connection model (each connection capped, parallel
        # ranged GETs adding up to the aggregate), as the issue asks; the shared link if that
        # source is turned off (--conn-bandwidth 0).
        shaping = b.params.shaping
        log = work / "shaper.log"
        if shaping.conn_bandwidth > 0:
            url = stack.enter_context(shaped_per_conn(raw, shaping, log))
        else:
            url = stack.enter_context(shaped(raw, shaping.bandwidth, shaping.latency, log))
        env = {"HF_ENDPOINT": url, "HF_HOME": str(work / "hf-home"), "HF_HUB_DISABLE_XET": "1"}
        for rep in range(b.reps):
            b.log(f" {NAME}: repetition {rep + 1}/{b.reps}")
            for system in b.order(systems, rep):
                if system == "hf-snapshot-download":
                    shutil.rmtree(target, ignore_errors=True)
                    rd.drop_caches()
                    _, fetch = rd.timed(lambda: _download(url, target))
                    local = [target / sh for sh in shards]
                    n, load = rd.timed(lambda: rd.load_safetensors(local))  # noqa: B023
                    record("snapshot_download", system, n, fetch + load)
                    # Its load alone, from the page cache the download filled: the loader's
                    # own time, which no warm read through any file system can beat.
                    r.add("local_load", system, "s", load, higher_is_better=False)
                    shutil.rmtree(target, ignore_errors=True)
                    continue
                with cluster.up(
                    [f"model=hf://{REPO}"],
                    work / "clusters" / f"{rep}",
                    mem_quota_mib=quota,
                    block_size=b.sizes.block_size,
                    env=env,
                ) as c:
                    assert c.mountpoint is not None
                    paths = [c.mountpoint / "model" / sh for sh in shards]
                    for case in ("cold", "warm"):
                        rd.drop_caches()
                        n, t = rd.timed(lambda: rd.load_safetensors(paths))  # noqa: B023
                        record(case, system, n, t)
    return r


def _download(endpoint: str, target: Path) -> None:
    from huggingface_hub import snapshot_download

    snapshot_download(
        REPO, endpoint=endpoint, local_dir=target, token=False, cache_dir=target / ".hf-cache"
    )
