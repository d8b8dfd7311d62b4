"""Sources for the demo and benchmarks: sample data, and nginx serving it as an HTTP directory."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from bench.procs import Proc, free_port

NGINX_CONF = """
daemon off;
worker_processes 1;
error_log {root}/error.log warn;
pid {root}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    log_format fluidcache '$request_method $uri $status $body_bytes_sent "$http_range"';
    access_log {root}/access.log fluidcache;
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp;
    scgi_temp_path {root}/tmp;
    sendfile {sendfile};
    server {{
        listen 127.0.0.1:{port};
        root {data};
        autoindex on;
        autoindex_exact_size on;
        limit_rate {rate};
{extra}
    }}
}}
"""


def make_sample(root: Path, large_mb: int = 200, small: int = 300, small_kb: int = 256) -> int:
    """One large file and ``small`` small files in a few directories; returns the total bytes.

    Kept between runs: a marker file records the parameters it was made with.
    """
    marker = root / ".sample"
    params = f"{large_mb} {small} {small_kb}\n"
    if marker.exists() and marker.read_text() == params:
        return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and p != marker)
    shutil.rmtree(root, ignore_errors=True)
    (root / "images").mkdir(parents=True)
    with open(root / "model.bin", "wb") as f:
        for _ in range(large_mb):
            f.write(os.urandom(2**20))
    for i in range(small):
        d = root / "images" / f"class-{i % 10:02d}"
        d.mkdir(exist_ok=True)
        (d / f"img-{i:05d}.jpg").write_bytes(os.urandom(small_kb * 1024))
    marker.write_text(params)
    return large_mb * 2**20 + small * small_kb * 1024


@contextlib.contextmanager
def nginx(data: Path, workdir: Path, rate: str = "0", extra: str = "") -> Iterator[str]:
    """nginx with autoindex serving ``data`` on a free port; yields the base URL.

    ``rate`` caps each response (nginx's ``limit_rate``, e.g. ``20m``; 0: no cap; sendfile is
    then off, as nginx does not pace ranged sendfile responses). The access
    log (``workdir/access.log``) has one line per request: method, path, status, bytes, Range.
    ``extra`` goes into the server block.
    """
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(binary):
        raise RuntimeError("nginx is not installed (run: make bootstrap)")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "tmp").mkdir(exist_ok=True)
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            root=workdir,
            port=port,
            data=data.absolute(),
            rate=rate,
            sendfile="on" if rate == "0" else "off",
            extra=extra,
        )
    )
    proc = subprocess.Popen(
        [binary, "-c", str(conf), "-p", str(workdir)],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"nginx did not start: {err}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


@contextlib.contextmanager
def resident(paths: list[Path], log: Path) -> Iterator[str]:
    """Keep the files under ``paths`` in this machine's memory while the block runs, through
    every cache drop (``vmtouch -l``): the sources stand for remote servers, whose memory
    dropping this machine's caches would not empty, so a cold read measures the cache and the
    network model, not this machine's disk. Yields a line for the run's set-up notes."""
    binary = shutil.which("vmtouch")
    present = [str(p) for p in paths if p.exists()]
    if binary is None or not present:
        yield "Sources read their files from disk after each cache drop (vmtouch not installed)."
        return
    # stdbuf: vmtouch says LOCKED once every page is locked, through a pipe only line-buffered.
    proc = Proc(["stdbuf", "-oL", binary, "-l", *present], log=log)
    try:
        locked = proc.wait_for("LOCKED", timeout=300).split(maxsplit=1)[1]
        yield (
            f"The sources' files stay in memory through every cache drop (`vmtouch -l`, {locked}"
            "), as a remote server's would: only this machine's caches (the mounts', the peers' "
            "and the readers') are dropped before a cold read."
        )
    finally:
        proc.stop()
