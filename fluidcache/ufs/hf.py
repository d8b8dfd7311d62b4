"""The Hugging Face Hub (and Hub-compatible mirrors) as a source: ``hf://`` URIs.

``hf://ORG/REPO[@REVISION][/SUBPATH]`` is a model repository, ``hf://datasets/ORG/REPO[...]`` a
dataset. The revision (branch, tag or commit; default ``main``; ``%2F`` for a ``/`` in it) is
resolved to a commit the first time the adapter needs it, and the adapter then serves that
commit's tree: one consistent snapshot. File URIs name the commit (``hf://ORG/REPO@COMMIT/PATH``)
so a worker reads exactly what the master listed; :meth:`HfUfs.for_uri` hands out an adapter
pinned to another commit of the same repository when a URI names one. The master stores the
commit with the mount (:attr:`HfUfs.snapshot`) and hands it back after a restart
(:meth:`HfUfs.keep_snapshot`), so its namespace and the reads stay on that commit until the
dataset's TTL has the branch resolved again.

Only this module imports ``huggingface_hub``: its ``HfApi`` resolves revisions and lists the tree
(once per commit, recursively, following the API's pages), its URL and header conventions build
requests. The data path is aiohttp on the resolve endpoint with ``Range``; redirects (LFS, CDN,
Xet bridge) are followed and the final URL of a file is reused while it is valid. A server that
ignores ``Range`` (answers 200 with the whole body, as the olah mirror does) is detected and the
file is then downloaded once into a spool file that serves every block of it, never once per
block.
Once a file's redirect target is known to honour Range, a block is read by a thread straight into
the worker's buffer (:meth:`HfUfs.read_into`: ``http.client``, no Python per piece; a small one
on the event loop).

Versions are content digests from the Hub's object ids: ``sha256:HEX`` (the LFS oid) where there
is one, else ``git-blob:HEX`` (the git blob id); block ids are derived from them
(:mod:`fluidcache.common.blockid`), so identical content in two revisions or repositories is
cached once.

Credentials: option ``credentials_file`` (a file holding the token, or ``token=...``), else the
``HF_TOKEN`` environment variable, else huggingface_hub's own token file. The token goes only to
the endpoint's origin and never into a URI, a log line, a repr or an error message.

Options: ``endpoint`` (default ``$HF_ENDPOINT`` or https://huggingface.co), ``credentials_file``,
``revision_ttl`` (seconds after which a branch or tag is resolved again; default: the dataset's
TTL on the master, else never: the snapshot is kept for the adapter's life), ``timeout`` (30 s
of silence), ``connect_timeout`` (10),
``retries`` (4), ``backoff`` (0.2 s), ``redirect_ttl`` (300 s a redirect target is reused at most),
``spool_dir`` (default: the system temp dir), ``spool_bytes`` (4Gi of whole-file downloads kept
for servers that ignore Range).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import aiohttp
import huggingface_hub
from huggingface_hub import HfApi, hf_hub_url
from huggingface_hub import errors as hf_errors
from huggingface_hub.utils._headers import build_hf_headers
from yarl import URL

from fluidcache.common import errors
from fluidcache.common.config import parse_size
from fluidcache.ufs._options import option_number, read_key_values
from fluidcache.ufs._threaded import READ_THREADS, ThreadedReader
from fluidcache.ufs.base import Into, UfsStatus, UnderFileSystem, check_span, clean_path

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
_COMMIT = re.compile(r"[0-9a-f]{40}")
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_PIECE = 1 << 20
_TOKEN_HINT = (
    "pass a token with access to it: set HF_TOKEN in the environment of the master and the "
    "workers, or the source option credentials_file=PATH"
)


@dataclass(frozen=True, slots=True)
class HfLocation:
    """A parsed ``hf://`` URI: repository, revision as written, path inside the repository."""

    repo_type: str  # model | dataset
    repo_id: str
    revision: str
    path: str

    @classmethod
    def parse(cls, uri: str) -> HfLocation:
        """ConfigError naming the expected shapes when ``uri`` is not an hf:// URI."""
        if not uri.lower().startswith("hf://"):
            raise errors.ConfigError(f"source {uri!r}: expected hf://ORG/REPO[@REVISION][/PATH]")
        rest = uri[len("hf://") :]
        if "?" in rest or "#" in rest:
            raise errors.ConfigError(f"source {uri!r}: a query or fragment is not allowed")
        parts = rest.split("/")
        repo_type = "model"
        if parts and parts[0] in ("datasets", "models"):
            repo_type = "dataset" if parts[0] == "datasets" else "model"
            parts = parts[1:]
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise errors.ConfigError(
                f"source {uri!r}: expected hf://ORG/REPO[@REVISION][/PATH] or "
                "hf://datasets/ORG/REPO[@REVISION][/PATH]"
            )
        name, _, revision = parts[1].partition("@")
        if not name:
            raise errors.ConfigError(f"source {uri!r}: no repository name")
        return cls(
            repo_type,
            f"{parts[0]}/{name}",
            unquote(revision) or "main",
            clean_path(unquote("/".join(parts[2:]), errors="surrogateescape")),
        )

    def uri(self, revision: str, path: str) -> str:
        kind = "datasets/" if self.repo_type == "dataset" else ""
        full = "/".join(p for p in (self.path, path) if p)
        tail = "/" + quote(full, safe="/", errors="surrogateescape") if full else ""
        return f"hf://{kind}{self.repo_id}@{quote(revision, safe='')}{tail}"

    @property
    def label(self) -> str:
        """How messages name the repository (never with a token)."""
        return f"hf://{'datasets/' if self.repo_type == 'dataset' else ''}{self.repo_id}"


@dataclass(slots=True)
class Snapshot:
    """One commit's tree under the mount's path: entries by relative path, children by dir."""

    commit: str
    resolved_at: float
    entries: dict[str, UfsStatus] = field(default_factory=dict)
    children: dict[str, list[str]] = field(default_factory=dict)


def content_version(blob_id: str, lfs_sha256: str | None) -> str:
    """A file's version: its LFS sha256 where it has one, else its git blob id."""
    return f"sha256:{lfs_sha256}" if lfs_sha256 else f"git-blob:{blob_id}"


def build_snapshot(commit: str, mtime: float, base: str, items: Iterable[Any]) -> Snapshot:
    """The snapshot of ``items`` (huggingface_hub ``RepoFile`` / ``RepoFolder``) under ``base``."""
    snap = Snapshot(commit, time.monotonic())
    snap.entries[""] = UfsStatus(name="", is_dir=True, mtime=mtime)
    snap.children[""] = []
    prefix = base + "/" if base else ""
    for item in items:
        full: str = item.path
        if not full.startswith(prefix):
            continue
        rel = full[len(prefix) :]
        name = rel.rpartition("/")[2]
        if isinstance(item, huggingface_hub.hf_api.RepoFolder):
            status = UfsStatus(name=name, is_dir=True, mtime=mtime)
            snap.children.setdefault(rel, [])
        else:
            lfs = item.lfs.sha256 if item.lfs is not None else None
            version = content_version(item.blob_id, lfs)
            status = UfsStatus(
                name=name, is_dir=False, size=item.size, mtime=mtime, version=version
            )
        snap.entries[rel] = status
        # The Hub lists parents before children, but nothing here relies on it.
        parent = rel.rpartition("/")[0]
        while parent not in snap.entries:
            snap.entries[parent] = UfsStatus(parent.rpartition("/")[2], True, mtime=mtime)
            snap.children.setdefault(parent, [])
            parent = parent.rpartition("/")[0]
        snap.children.setdefault(rel.rpartition("/")[0], []).append(name)
    for names in snap.children.values():
        names.sort()
    return snap


class _Transient(Exception):
    """A failure worth another attempt (5xx, dropped connection, truncated body)."""


class _Body:
    """One whole file downloaded from a server that ignores Range, spooled to disk.

    Readers wait for the bytes they need while the single download runs; once complete, every
    block of the file is served from the spool file until it is evicted.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.written = 0
        self.done = False
        self.error: BaseException | None = None
        self.used = time.monotonic()
        self.readers = 0
        self._changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def progress(
        self, written: int, done: bool = False, error: BaseException | None = None
    ) -> None:
        self.written, self.done, self.error = written, done, error
        self._changed.set()
        self._changed = asyncio.Event()

    async def pieces(self, pos: int, end: int, chunk: int) -> AsyncGenerator[bytes, None]:
        """Bytes ``[pos, end)`` of the file, as they arrive (fewer at its end)."""
        self.readers += 1
        try:
            fd = await asyncio.to_thread(os.open, self.path, os.O_RDONLY)
            try:
                while pos < end:
                    self.used = time.monotonic()
                    changed = self._changed
                    if self.error is not None:
                        raise self.error
                    ready = min(end, self.written) - pos
                    if ready > 0:
                        n = min(ready, chunk)
                        data = await asyncio.to_thread(os.pread, fd, n, pos)
                        if not data:
                            raise errors.SourceError(f"{self.path}: spool file shrank")
                        pos += len(data)
                        yield data
                    elif self.done:
                        # Shorter than the listing says: a truncated download, fetched again.
                        self.error = _Transient(f"download ended after {self.written} bytes")
                        raise self.error
                    else:
                        await changed.wait()
            finally:
                os.close(fd)
        finally:
            self.readers -= 1
            self.used = time.monotonic()


class _Shared:
    """What the adapters of one repository share: HTTP session, redirect targets, spool."""

    def __init__(self, headers: dict[str, str], timeout: float, connect_timeout: float) -> None:
        self.headers = headers
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self.session: aiohttp.ClientSession | None = None
        self.targets: dict[tuple[str, str], tuple[str, float]] = {}
        self.no_range: set[str] = set()  # origins seen answering a Range request with 200
        self.ranged: set[str] = set()  # origins seen answering one with 206
        self.probes: dict[str, asyncio.Event] = {}  # origin -> the first request, under way
        self.bodies: dict[tuple[str, str], _Body] = {}
        self.spool: str | None = None
        self.users = 0
        self.reader = ThreadedReader(READ_THREADS, timeout, True)  # read_into's threads

    def client(self) -> aiohttp.ClientSession:
        if self.session is None:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64),
                headers={"Accept-Encoding": "identity"},
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=self.connect_timeout, sock_read=self.timeout
                ),
            )
        return self.session

    async def close(self) -> None:
        await self.reader.close()
        for body in self.bodies.values():
            if body.task is not None:
                body.task.cancel()
        await asyncio.gather(
            *(b.task for b in self.bodies.values() if b.task is not None), return_exceptions=True
        )
        self.bodies.clear()
        if self.session is not None:
            session, self.session = self.session, None
            await session.close()
        if self.spool is not None:
            await asyncio.to_thread(shutil.rmtree, self.spool, True)
            self.spool = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def _expiry(url: str, default: float) -> float:
    """Seconds a redirect target stays usable: the signed URL's own expiry when it tells one."""
    query = parse_qs(urlsplit(url).query)
    with contextlib.suppress(ValueError, IndexError):
        if "Expires" in query:  # CloudFront-style signatures: an epoch
            return min(default, float(query["Expires"][0]) - time.time() - 30)
        if "X-Amz-Expires" in query:
            return min(default, float(query["X-Amz-Expires"][0]) - 30)
    return default


class HfUfs(UnderFileSystem):
    """A Hub repository (or a path inside it) at one commit."""

    schemes = ("hf",)
    empty_directories = False
    option_keys = frozenset(
        {
            "endpoint",
            "credentials_file",
            "revision_ttl",
            "timeout",
            "connect_timeout",
            "retries",
            "backoff",
            "redirect_ttl",
            "spool_dir",
            "spool_bytes",
        }
    )

    def __init__(
        self,
        root_uri: str,
        options: Mapping[str, str] | None = None,
        _shared: _Shared | None = None,
    ) -> None:
        super().__init__(root_uri, options)
        self.loc = HfLocation.parse(root_uri)
        opts = self.options
        self.endpoint = (
            opts.get("endpoint") or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
        ).rstrip("/")
        if urlsplit(self.endpoint).scheme not in ("http", "https"):
            raise errors.ConfigError(
                f"option endpoint: expected an http(s) URL, got {self.endpoint!r}"
            )
        self.retries = int(option_number(opts, "retries", 4))
        self.backoff = option_number(opts, "backoff", 0.2)
        self.redirect_ttl = option_number(opts, "redirect_ttl", 300.0)
        ttl = opts.get("revision_ttl")
        self.revision_ttl = None if ttl is None else option_number(opts, "revision_ttl", 0.0)
        self.spool_bytes = parse_size(opts.get("spool_bytes", "4Gi"), "option spool_bytes")
        self.spool_dir = opts.get("spool_dir") or tempfile.gettempdir()
        self._token = self._find_token(opts.get("credentials_file"))
        if _shared is None:
            headers = build_hf_headers(token=self._token or False, library_name="fluidcache")
            _shared = _Shared(
                headers,
                option_number(opts, "timeout", 30.0, 0.001),
                option_number(opts, "connect_timeout", 10.0, 0.001),
            )
        self._shared = _shared
        self._shared.users += 1
        self._api = HfApi(
            endpoint=self.endpoint, token=self._token or False, library_name="fluidcache"
        )
        pinned = self.loc.revision if _COMMIT.fullmatch(self.loc.revision) else None
        self._pinned = pinned  # a commit in the URI needs no resolution
        self._kept: str | None = None  # a commit served before (keep_snapshot), not yet loaded
        self._snap: Snapshot | None = None
        self._snap_lock = asyncio.Lock()
        self._siblings: dict[str, HfUfs] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"HfUfs({self.loc.label}@{self.loc.revision}, endpoint={self.endpoint!r})"

    @staticmethod
    def _find_token(token_file: str | None) -> str | None:
        if token_file:
            try:
                with open(token_file, encoding="utf-8") as f:
                    text = f.read().strip()
            except (OSError, UnicodeDecodeError):
                raise errors.ConfigError(
                    f"option credentials_file: cannot read {token_file}"
                ) from None
            if "=" in text:
                text = read_key_values(token_file, "credentials_file", frozenset({"token"})).get(
                    "token", ""
                )
            if not text:
                raise errors.ConfigError(f"option credentials_file: {token_file} holds no token")
            return text
        return os.environ.get("HF_TOKEN") or huggingface_hub.get_token()

    # -- URIs ----------------------------------------------------------------------------------

    @property
    def commit(self) -> str | None:
        """The commit this adapter serves, once resolved."""
        return self._pinned or (self._snap.commit if self._snap else None)

    def uri(self, path: str) -> str:
        return self.loc.uri(self.commit or self.loc.revision, clean_path(path))

    @property
    def snapshot(self) -> str | None:
        return self.commit

    def keep_snapshot(self, snapshot: str | None, ttl: float) -> None:
        # An explicit revision_ttl option wins over the dataset's TTL.
        if self.revision_ttl is None and ttl > 0:
            self.revision_ttl = ttl
        if snapshot and self._pinned is None and self._snap is None and _COMMIT.fullmatch(snapshot):
            self._kept = snapshot

    def relpath(self, uri: str) -> str:
        try:
            other = HfLocation.parse(uri)
        except errors.ConfigError:
            raise errors.InvalidArgument(f"{uri!r} is not under {self.loc.label}") from None
        if (other.repo_type, other.repo_id) != (self.loc.repo_type, self.loc.repo_id):
            raise errors.InvalidArgument(f"{uri!r} is not under {self.root_uri!r}")
        base = self.loc.path
        if base and other.path != base and not other.path.startswith(base + "/"):
            raise errors.InvalidArgument(f"{uri!r} is not under {self.root_uri!r}")
        return other.path[len(base) :].lstrip("/") if base else other.path

    def for_uri(self, uri: str) -> tuple[UnderFileSystem, str]:
        path = self.relpath(uri)
        revision = HfLocation.parse(uri).revision
        if revision in (self.commit, self.loc.revision):
            return self, path
        sibling = self._siblings.get(revision)
        if sibling is None:
            pinned = HfLocation(self.loc.repo_type, self.loc.repo_id, revision, self.loc.path)
            sibling = HfUfs(pinned.uri(revision, ""), self.options, self._shared)
            self._siblings[revision] = sibling
        return sibling, path

    # -- the snapshot --------------------------------------------------------------------------

    async def tree(self) -> Snapshot:
        """The commit's tree, resolved and listed once (again after ``revision_ttl``)."""
        snap = self._snap
        if snap is not None and not self._stale(snap):
            return snap
        async with self._snap_lock:
            snap = self._snap
            if snap is None or self._stale(snap):
                snap = self._snap = await self._load(snap)
            return snap

    def _stale(self, snap: Snapshot) -> bool:
        if self._pinned or self.revision_ttl is None:
            return False
        return time.monotonic() - snap.resolved_at >= self.revision_ttl

    async def _load(self, old: Snapshot | None) -> Snapshot:
        kept, self._kept = self._kept, None
        info = None
        if kept is not None:
            # The commit served before a restart: its tree again, until the TTL says otherwise.
            with contextlib.suppress(errors.NotFound):
                info = await self._repo_info(kept)
        if info is None:
            info = await self._repo_info(self.loc.revision)
        commit = str(info.sha)
        if old is not None and old.commit == commit:
            old.resolved_at = time.monotonic()
            return old
        mtime = info.last_modified.timestamp() if info.last_modified else time.time()
        items = await self._api_call(
            "list the tree",
            lambda: list(
                self._api.list_repo_tree(
                    self.loc.repo_id,
                    path_in_repo=self.loc.path or None,
                    recursive=True,
                    revision=commit,
                    repo_type=self.loc.repo_type,
                )
            ),
            missing_path=bool(self.loc.path),
        )
        snap = build_snapshot(commit, mtime, self.loc.path, items)
        if old is not None:
            # An unchanged file keeps its status (mtime included): only changed files are new.
            for rel, entry in snap.entries.items():
                before = old.entries.get(rel)
                if before is not None and (before.version, before.is_dir) == (
                    entry.version,
                    entry.is_dir,
                ):
                    snap.entries[rel] = before
            log.info("%s: %s is now commit %s", self.loc.label, self.loc.revision, commit)
        return snap

    async def _repo_info(self, revision: str) -> Any:
        return await self._api_call(
            "resolve the revision",
            lambda: self._api.repo_info(
                self.loc.repo_id, revision=revision, repo_type=self.loc.repo_type
            ),
        )

    async def _api_call(self, what: str, call: Any, missing_path: bool = False) -> Any:
        """Run a (blocking) huggingface_hub call in a thread; its errors as fluidcache's."""
        label = f"{self.loc.label}@{self.loc.revision}"
        for attempt in range(self.retries + 1):
            try:
                return await asyncio.to_thread(call)
            except hf_errors.RevisionNotFoundError:
                raise errors.NotFound(f"{label}: no revision {self.loc.revision!r}") from None
            except hf_errors.RepositoryNotFoundError as e:
                if missing_path:
                    raise errors.NotFound(f"{label}: no path {self.loc.path!r}") from None
                if self.loc.revision != "main" and await self._readable_at_main():
                    # Mirrors (olah) answer an unknown revision like an unknown repository.
                    raise errors.NotFound(f"{label}: no revision {self.loc.revision!r}") from None
                gated = isinstance(e, hf_errors.GatedRepoError)
                status = e.response.status_code if e.response is not None else "?"
                why = "is gated" if gated else "is private, gated or does not exist"
                have = "the token given has no access" if self._token else "no token was given"
                raise errors.PermissionDenied(
                    f"{self.loc.label}: the Hub at {self.endpoint} refused to {what} "
                    f"(HTTP {status}): the repository {why} and {have}; {_TOKEN_HINT}"
                ) from None
            except hf_errors.EntryNotFoundError:
                raise errors.NotFound(f"{label}: no path {self.loc.path!r}") from None
            except hf_errors.HfHubHTTPError as e:
                status = e.response.status_code if e.response is not None else 0
                if status in (401, 403):
                    raise errors.PermissionDenied(
                        f"{self.loc.label}: the Hub refused to {what} (HTTP {status}); "
                        f"{_TOKEN_HINT}"
                    ) from None
                if status == 404:
                    raise errors.NotFound(f"{label}: not found at {self.endpoint}") from None
                if status and status not in _RETRY_STATUSES:
                    raise errors.SourceError(f"{label}: cannot {what}: HTTP {status}") from None
                last = f"HTTP {status}" if status else type(e).__name__
            except OSError as e:  # httpx transport errors are OSErrors here
                last = type(e).__name__
            if attempt < self.retries:
                await self._pause(attempt)
        raise errors.SourceUnavailable(
            f"{label}: cannot {what}: {last} (gave up after {self.retries + 1} attempts)"
        )

    async def _readable_at_main(self) -> bool:
        """Whether the repository answers at branch ``main`` (telling a missing revision from
        a refused repository when the server answers both alike)."""
        try:
            await asyncio.to_thread(
                lambda: self._api.repo_info(
                    self.loc.repo_id, revision="main", repo_type=self.loc.repo_type
                )
            )
        except (hf_errors.HfHubHTTPError, OSError):
            return False
        return True

    async def _pause(self, attempt: int) -> None:
        await asyncio.sleep(min(5.0, self.backoff * 2**attempt) * (0.5 + random.random() / 2))

    async def _entry(self, path: str) -> UfsStatus:
        path = clean_path(path)
        snap = await self.tree()
        entry = snap.entries.get(path)
        if entry is None:
            raise errors.NotFound(f"{path or '/'}: not in {self.loc.label}@{snap.commit[:12]}")
        return entry

    # -- stat and list -------------------------------------------------------------------------

    async def stat(self, path: str) -> UfsStatus:
        return await self._entry(path)

    async def list(self, path: str) -> AsyncGenerator[UfsStatus, None]:
        path = clean_path(path)
        entry = await self._entry(path)
        if not entry.is_dir:
            raise errors.NotADirectory(f"{path}: not a directory")
        snap = await self.tree()
        base = path + "/" if path else ""
        for name in snap.children.get(path, []):
            yield snap.entries[base + name]

    # -- read ----------------------------------------------------------------------------------

    async def read_stream(
        self, path: str, offset: int, length: int, chunk: int = 1 << 20, version: str = ""
    ) -> AsyncGenerator[bytes, None]:
        check_span(path, offset, length, chunk)
        path = clean_path(path)
        entry = await self._entry(path)
        if entry.is_dir:
            raise errors.IsADirectory(f"{path or '/'}: is a directory")
        if version and version != entry.version:
            # The commit read holds other content (a branch moved while the master kept an
            # older listing): never hand these bytes out under the other version's blocks.
            raise errors.SourceChanged(f"{self.uri(path)}: changed at the source (not {version})")
        pos, end = offset, min(offset + length, entry.size)
        attempt = 0
        while pos < end:
            try:
                async for piece in self._read_once(path, pos, end, chunk):
                    pos += len(piece)
                    attempt = 0
                    yield piece
                if pos < end:
                    raise _Transient(f"body ended {end - pos} bytes short")
                return
            except (_Transient, aiohttp.ClientError, TimeoutError) as e:
                last = str(e) or type(e).__name__
            if attempt >= self.retries:
                raise errors.SourceUnavailable(
                    f"{self.uri(path)}: {last} (gave up after {self.retries + 1} attempts)"
                )
            await self._pause(attempt)
            attempt += 1

    reads_into = True

    @property
    def read_pool(self) -> ThreadedReader:
        return self._shared.reader

    async def read_into(self, path: str, offset: int, buf: Into, version: str = "") -> int:
        """Where the file's redirect target (its CDN URL) is known and honours Range, one ranged
        GET straight into ``buf`` (by a thread, or on the event loop when small); otherwise, or
        when that answer is anything but the 206 asked for (an expired URL, an error),
        :meth:`read_stream` and its retries."""
        shared = self._shared
        path = clean_path(path)
        entry = await self._entry(path)
        key = (self.commit or self.loc.revision, path)
        target = shared.targets.get(key)
        want = min(len(buf), entry.size - offset) if not entry.is_dir else 0
        if (
            want > 0
            and offset >= 0
            and (not version or version == entry.version)
            and target is not None
            and target[1] > time.monotonic()
            and _origin(target[0]) in shared.ranged
        ):
            url, headers = target[0], self._headers(target[0], {})
            answer = await shared.reader.get_into(url, offset, buf[:want], headers)
            if answer is not None and answer.got == want:
                return want
        return await super().read_into(path, offset, buf, version)

    def _resolve_url(self, path: str) -> str:
        commit = self.commit or self.loc.revision
        full = "/".join(p for p in (self.loc.path, path) if p)
        return hf_hub_url(
            self.loc.repo_id,
            full,
            repo_type=self.loc.repo_type,
            revision=commit,
            endpoint=self.endpoint,
        )

    def _headers(self, url: str, extra: Mapping[str, str]) -> dict[str, str]:
        """Hub headers (with the token) only for the endpoint's origin; a CDN gets none."""
        if _origin(url) == _origin(self.endpoint):
            return {**self._shared.headers, **extra}
        return dict(extra)

    async def _read_once(
        self, path: str, pos: int, end: int, chunk: int
    ) -> AsyncGenerator[bytes, None]:
        shared = self._shared
        key = (self.commit or self.loc.revision, path)
        body = shared.bodies.get(key)
        if body is not None and body.error is None:
            async for piece in body.pieces(pos, end, chunk):
                yield piece
            return
        resolve = self._resolve_url(path)
        target = shared.targets.get(key)
        url = target[0] if target and target[1] > time.monotonic() else resolve
        origin = _origin(url)
        probe = None
        # Until an origin has shown whether it honours Range, one request at a time finds out:
        # concurrent first reads of a big file would otherwise each start a whole download.
        while origin not in shared.ranged and origin not in shared.no_range:
            waiting = shared.probes.get(origin)
            if waiting is None:
                probe = shared.probes[origin] = asyncio.Event()
                break
            await waiting.wait()
        try:
            if origin in shared.no_range:
                async for piece in self._spooled(key, url, pos, end, chunk):
                    yield piece
                return
            async for piece in self._ranged(key, path, url, resolve, pos, end, chunk):
                yield piece
        finally:
            if probe is not None:
                shared.probes.pop(origin, None)
                probe.set()

    async def _ranged(
        self,
        key: tuple[str, str],
        path: str,
        url: str,
        resolve: str,
        pos: int,
        end: int,
        chunk: int,
    ) -> AsyncGenerator[bytes, None]:
        """Bytes ``[pos, end)`` from one ranged GET; a 200 answer hands over to the spool."""
        shared = self._shared
        owned = True  # released here unless handed to the spool's download
        resp = await shared.client().get(
            URL(url, encoded=True), headers=self._headers(url, {"Range": f"bytes={pos}-{end - 1}"})
        )
        try:
            if url != resolve and resp.status in (400, 401, 403, 404, 410):
                shared.targets.pop(key, None)  # an expired signed URL: ask the resolve endpoint
                raise _Transient(f"redirect target answered HTTP {resp.status}")
            self._check(resp, path)
            final = str(resp.url)
            if resp.history and final != url:
                ttl = _expiry(final, self.redirect_ttl)
                if ttl > 0:
                    shared.targets[key] = (final, time.monotonic() + ttl)
            origins = {_origin(url), _origin(final)}
            if resp.status == 200:
                if not origins <= shared.no_range:
                    log.info("%s ignores Range: each file is downloaded once", _origin(final))
                shared.no_range |= origins
                owned = False
                async for piece in self._spooled(key, final, pos, end, chunk, resp):
                    yield piece
                return
            if resp.status != 206:
                raise errors.SourceError(f"{self.uri(path)}: unexpected HTTP {resp.status}")
            shared.ranged |= origins
            async for data in resp.content.iter_chunked(_PIECE):
                for i in range(0, len(data), chunk):
                    yield data[i : i + chunk]
        finally:
            if owned:
                resp.release()

    def _check(self, resp: aiohttp.ClientResponse, path: str) -> None:
        status = resp.status
        if status < 300:
            return
        if status in _RETRY_STATUSES:
            raise _Transient(f"HTTP {status}")
        if status in (401, 403):
            raise errors.PermissionDenied(
                f"{self.loc.label}: the Hub refused to serve {path} (HTTP {status}); {_TOKEN_HINT}"
            )
        if status in (404, 410):
            raise errors.NotFound(f"{path}: not found at the source (HTTP {status})")
        raise errors.SourceError(f"{self.uri(path)}: unexpected HTTP {status}")

    # -- whole-file spool (servers that ignore Range) -----------------------------------------

    async def _spooled(
        self,
        key: tuple[str, str],
        url: str,
        pos: int,
        end: int,
        chunk: int,
        resp: aiohttp.ClientResponse | None = None,
    ) -> AsyncGenerator[bytes, None]:
        shared = self._shared
        body = shared.bodies.get(key)
        if body is None or body.error is not None:
            await self._evict_spool()
            if shared.spool is None:
                shared.spool = await asyncio.to_thread(
                    tempfile.mkdtemp, prefix="fluidcache-hf-", dir=self.spool_dir
                )
            fd, name = tempfile.mkstemp(dir=shared.spool)
            os.close(fd)
            body = shared.bodies[key] = _Body(name)
            body.task = asyncio.ensure_future(self._download(body, key[1], url, resp))
        elif resp is not None:
            resp.release()
        async for piece in body.pieces(pos, end, chunk):
            yield piece

    async def _download(
        self, body: _Body, path: str, url: str, resp: aiohttp.ClientResponse | None
    ) -> None:
        """Write the whole file to ``body``'s spool file; readers follow its progress."""
        written = 0
        try:
            if resp is None:
                resp = await self._shared.client().get(
                    URL(url, encoded=True), headers=self._headers(url, {})
                )
            self._check(resp, path)
            fd = await asyncio.to_thread(os.open, body.path, os.O_WRONLY | os.O_TRUNC)
            try:
                async for data in resp.content.iter_chunked(4 * _PIECE):
                    await asyncio.to_thread(_write_all, fd, data)
                    written += len(data)
                    body.progress(written)
            finally:
                os.close(fd)
            body.progress(written, done=True)
        except asyncio.CancelledError:
            body.progress(written, error=errors.SourceUnavailable(f"{path}: download cancelled"))
            raise
        except Exception as e:
            error = (
                e
                if isinstance(e, errors.FluidcacheError)
                else _Transient(str(e) or type(e).__name__)
            )
            body.progress(written, error=error)
        finally:
            if resp is not None:
                resp.release()

    async def _evict_spool(self) -> None:
        """Drop the least recently used finished downloads beyond ``spool_bytes``."""
        bodies = self._shared.bodies
        total = sum(b.written for b in bodies.values())
        for key, body in sorted(bodies.items(), key=lambda kv: kv[1].used):
            if total <= self.spool_bytes:
                break
            if (body.done or body.error is not None) and body.readers == 0:
                del bodies[key]
                total -= body.written
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(os.unlink, body.path)

    # -- lifecycle -----------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sibling in self._siblings.values():
            await sibling.close()
        self._shared.users -= 1
        if self._shared.users <= 0:
            await self._shared.close()
