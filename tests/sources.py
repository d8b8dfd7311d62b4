"""Sample data and real HTTP sources: ``python -m http.server`` whose requests are counted, and
nginx behind Basic auth."""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.procs import free_port
from tests.procs import Proc


def make_dataset(root: Path, big: int = 9 * 2**20 + 123, small: int = 40, seed: int = 7) -> None:
    """A large file, small files in nested directories, an empty file, awkward names."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "big.bin").write_bytes(rng.randbytes(big))
    (root / "empty").write_bytes(b"")
    for i in range(small):
        d = root / "imgs" / f"part {i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"img-{i:03d}.jpg").write_bytes(rng.randbytes(rng.randint(1, 300_000)))


def digests(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root``."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


class HttpSource:
    """``python -m http.server`` on 127.0.0.1 serving ``root``; its log counts requests."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.proc = Proc(
            [sys.executable, "-u", "-m", "http.server", str(self.port), "--bind", "127.0.0.1"],
            cwd=root,
        )
        self.proc.wait_for("Serving HTTP", timeout=20)
        self.url = f"http://127.0.0.1:{self.port}/"

    def file_gets(self) -> int:
        """GET requests for files (not directory pages) served so far."""
        pattern = re.compile(r'"GET (\S+) HTTP')
        return sum(
            1
            for line in self.proc.lines
            if (m := pattern.search(line)) and not m.group(1).endswith("/")
        )

    def stop(self) -> None:
        self.proc.stop()


NGINX_CONF = """\
{user}
worker_processes 1;
pid {base}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    default_type application/octet-stream;
    client_body_temp_path {base}/tmp/body;
    proxy_temp_path {base}/tmp/proxy;
    fastcgi_temp_path {base}/tmp/fastcgi;
    uwsgi_temp_path {base}/tmp/uwsgi;
    scgi_temp_path {base}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {www};
        autoindex on;
        charset utf-8;
{extra}
    }}
}}
"""


def wait_port(proc: subprocess.Popen[bytes], port: int, timeout: float = 15.0) -> bool:
    """True once ``port`` accepts connections; False if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{proc.args!r} did not listen on {port} within {timeout} s")


class NginxSource:
    """nginx (autoindex) on 127.0.0.1 serving ``root``, its GETs of files counted from its access
    log; it can be stopped and started again on the same port (a source that goes down)."""

    def __init__(self, root: Path, base: Path, extra: str = "") -> None:
        self.root = root
        self.base = base
        self.port = free_port()
        self.log = base / "access.log"
        self.conf = write_nginx_conf(base, root, self.port, f"access_log {self.log};\n{extra}")
        self.url = f"http://127.0.0.1:{self.port}/"
        self.proc: Proc | None = None
        self.start()

    def start(self) -> None:
        self.proc = run_nginx(self.base, self.conf, self.port)

    def file_gets(self) -> int:
        """GET requests for files (not directory pages) answered so far."""
        try:
            lines = self.log.read_text().splitlines()
        except FileNotFoundError:
            return 0
        pattern = re.compile(r'"GET (\S+) HTTP')
        return sum(1 for ln in lines if (m := pattern.search(ln)) and not m.group(1).endswith("/"))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


def write_nginx_conf(base: Path, www: Path, port: int, extra: str) -> Path:
    """NGINX_CONF (``extra`` in its server block) serving ``www`` on ``port``, under ``base``."""
    base.mkdir(parents=True, exist_ok=True)
    (base / "tmp").mkdir(exist_ok=True)
    conf = base / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            user="user root;" if os.geteuid() == 0 else "",
            base=base,
            port=port,
            www=www.absolute(),
            extra=extra,
        )
    )
    return conf


def run_nginx(base: Path, conf: Path, port: int) -> Proc:
    """nginx in the foreground with ``conf``, once it listens on ``port``."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    argv = [binary, "-p", str(base), "-c", str(conf), "-e", "stderr", "-g", "daemon off;"]
    proc = Proc(argv)
    if not wait_port(proc.popen, port):
        proc.stop()
        raise AssertionError(f"nginx did not start:\n{proc.output}")
    return proc


def start_nginx(base: Path, www: Path, extra: str) -> tuple[Proc, int]:
    """nginx (NGINX_CONF with ``extra`` in its server block) serving ``www`` on a free port,
    its files under ``base``; the process and the port."""
    port = free_port()
    return run_nginx(base, write_nginx_conf(base, www, port, extra), port), port


class BasicAuthSource:
    """nginx (autoindex) on 127.0.0.1 serving ``root`` only to ``user:password`` (Basic auth)."""

    def __init__(self, root: Path, base: Path, user: str, password: str) -> None:
        self.root = root
        base.mkdir(parents=True, exist_ok=True)
        (base / "htpasswd").write_text(f"{user}:{{PLAIN}}{password}\n")
        extra = f'auth_basic "fluidcache test"; auth_basic_user_file {base}/htpasswd;'
        self.proc, self.port = start_nginx(base, root, extra)
        self.url = f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        self.proc.stop()
