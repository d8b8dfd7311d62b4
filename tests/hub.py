"""A real Hub-compatible server for the ``hf://`` tests: olah (PyPI) in offline mode, serving git
repositories the tests build under its mirrors path (LFS files as pointers plus the objects under
``.git/lfs/objects``, as ``git lfs`` leaves them).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.procs import Proc
from tests.sources import free_port, start_nginx, wait_port

LFS_FROM = 1024  # files this large are stored as LFS objects, like a Hub repo's weights

_GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.org",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.org",
}


class HubRepo:
    """A git repository olah serves as ``ORG/NAME`` (model or dataset)."""

    def __init__(self, mirrors: Path, repo_type: str, repo_id: str) -> None:
        self.repo_type, self.repo_id = repo_type, repo_id
        self.path = mirrors / ("datasets" if repo_type == "dataset" else "models") / repo_id
        self.path.mkdir(parents=True)
        self.git("init", "-q", "-b", "main")
        self.pending = False

    def git(self, *args: str) -> str:
        out = subprocess.run(
            ["git", *args],
            cwd=self.path,
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, **_GIT_ENV},
        )
        return out.stdout.strip()

    def write(self, path: str, data: bytes, lfs: bool | None = None) -> None:
        """Stage ``path`` with ``data`` (as an LFS object when large); :meth:`commit` publishes."""
        target = self.path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if lfs if lfs is not None else len(data) >= LFS_FROM:
            oid = hashlib.sha256(data).hexdigest()
            obj = self.path / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
            obj.parent.mkdir(parents=True, exist_ok=True)
            obj.write_bytes(data)
            target.write_text(
                f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(data)}\n"
            )
        else:
            target.write_bytes(data)
        self.pending = True

    def remove(self, path: str) -> None:
        (self.path / path).unlink()
        self.pending = True

    def commit(self, message: str = "update") -> str:
        """Commit what was staged; the new commit id."""
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        self.pending = False
        return self.git("rev-parse", "HEAD")

    def files(self, commit: str) -> dict[str, bytes]:
        """Every file of ``commit`` with its content (LFS pointers replaced by their objects)."""
        out = {}
        names = self.git("ls-tree", "-r", "-z", "--name-only", commit).split("\0")
        for name in filter(None, names):
            data = subprocess.run(
                ["git", "show", f"{commit}:{name}"], cwd=self.path, check=True, capture_output=True
            ).stdout
            m = re.match(rb"version https://git-lfs\.github\.com/spec/v1\noid sha256:(\w+)\n", data)
            if m:
                oid = m.group(1).decode()
                data = (self.path / ".git/lfs/objects" / oid[:2] / oid[2:4] / oid).read_bytes()
            out[name] = data
        return out

    def uri(self, revision: str = "", path: str = "") -> str:
        kind = "datasets/" if self.repo_type == "dataset" else ""
        rev = f"@{revision}" if revision else ""
        return f"hf://{kind}{self.repo_id}{rev}" + (f"/{path}" if path else "")


class Olah:
    """``olah-cli`` offline on a free port, serving the repositories under ``base/mirrors``;
    repositories matching a ``deny`` pattern answer 401 like a gated or private one."""

    def __init__(self, base: Path, deny: tuple[str, ...] = ()) -> None:
        self.mirrors = base / "mirrors"
        self.mirrors.mkdir(parents=True, exist_ok=True)
        rules = [
            '{repo = "*", allow = true}',
            '{repo = "*/*", allow = true}',
            *(f'{{repo = "{d}", allow = false}}' for d in deny),
        ]
        for _ in range(5):
            self.port = free_port()
            netloc = f"127.0.0.1:{self.port}"
            conf = base / "olah.toml"
            conf.write_text(
                f'[basic]\nhost = "127.0.0.1"\nport = {self.port}\n'
                f'mirror-netloc = "{netloc}"\nmirror-lfs-netloc = "{netloc}"\n'
                f'repos-path = "{base / "repos"}"\nmirrors-path = ["{self.mirrors}"]\n'
                f"[accessibility]\noffline = true\nproxy = [{', '.join(rules)}]\n"
            )
            olah = Path(sys.executable).with_name("olah-cli")
            self.proc = Proc([str(olah), "-c", str(conf)], cwd=base)
            if wait_port(self.proc.popen, self.port, timeout=60):
                break
            if "address already in use" not in self.proc.output.lower():
                raise AssertionError(f"olah did not start:\n{self.proc.output}")
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._n = 0

    def repo(self, repo_id: str = "", repo_type: str = "model") -> HubRepo:
        """A new, empty repository (a fresh name unless ``repo_id`` is given)."""
        if not repo_id:
            self._n += 1
            repo_id = f"fc-test/r{self._n}"
        return HubRepo(self.mirrors, repo_type, repo_id)

    def resolve_gets(self, path_part: str = "") -> int:
        """How many GETs of resolve URLs (containing ``path_part``) olah has answered."""
        return sum(
            1
            for line in list(self.proc.lines)
            if '"GET ' in line and "/resolve/" in line and path_part in line
        )

    def stop(self) -> None:
        self.proc.stop()


_FRONT = """
        access_log {base}/access.log;
        location ~ "^/(datasets/)?([^/]+/[^/]+)/resolve/([0-9a-f]{{40}})/(.*)$" {{
            return 302 /cdn/$1$2/$3/$4;
        }}
        location /cdn/ {{ alias {www}/; }}
        location / {{ proxy_pass {olah}; proxy_buffering off; }}
"""


class HubFront:
    """nginx in front of olah, answering the resolve paths of a commit with a redirect to the
    checked-out files it serves itself with Range, the way the Hub redirects to its CDN."""

    def __init__(self, olah: Olah, base: Path) -> None:
        self.base = base
        self.www = base / "www"
        self.www.mkdir(parents=True)
        extra = _FRONT.format(base=base, www=self.www, olah=olah.endpoint)
        self.proc, self.port = start_nginx(base, self.www, extra)
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def publish(self, repo: HubRepo, commit: str) -> None:
        """Check ``commit`` out where the redirects point."""
        kind = "datasets/" if repo.repo_type == "dataset" else ""
        root = self.www / f"{kind}{repo.repo_id}" / commit
        for name, data in repo.files(commit).items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)

    def requests(self, part: str) -> list[tuple[str, int]]:
        """(path, status) of the GETs whose path contains ``part``, from the access log."""
        log = self.base / "access.log"
        lines = log.read_text().splitlines() if log.exists() else []
        out = []
        for line in lines:
            m = re.search(r'"GET (\S+) HTTP/[\d.]+" (\d+)', line)
            if m and part in m.group(1):
                out.append((m.group(1), int(m.group(2))))
        return out

    def stop(self) -> None:
        self.proc.stop()
