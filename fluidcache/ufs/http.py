"""HTTP(S) directories (WebUFS): ``https://host/dir/`` served as HTML index pages.

A directory is an index page (nginx autoindex, Apache mod_autoindex, ``python -m http.server``
and anything alike): its links that are direct children of the page's own URL are the entries,
those ending in ``/`` being directories. Where the page prints an exact size after a link
(nginx ``autoindex_exact_size on``, its JSON index, Apache's sizes under 1 KiB) the entry is
taken as listed, with no request per file, and its version (ETag, else size + Last-Modified) is
left empty, to be checked with a ``HEAD`` when the file is opened (:meth:`HttpUfs.stat`); other
entries are HEADed while listing. A read given the version it expects fails with
``SourceChanged`` when the source answers with another, so blocks of a version the source no
longer has are never fetched. Reads use ``Range``; a server that
ignores it (answers 200 with the whole body) is handled by skipping to the offset in the stream.

Redirects are followed. Connection errors, timeouts, truncated bodies, 429 and 5xx answers are
retried with capped exponential backoff a bounded number of times, then raise
:class:`~fluidcache.common.errors.SourceUnavailable`. One ``aiohttp.ClientSession`` per adapter,
created on first use and closed by :meth:`HttpUfs.close`.

Options (all strings):

- ``timeout`` (s, default 30): a HEAD's whole answer, the longest silence while reading a body;
- ``connect_timeout`` (10);
- ``retries`` (4 more attempts), ``backoff`` (0.2 s, doubled per attempt), ``backoff_max`` (5 s);
- ``list_concurrency`` (32 HEADs at once while listing), ``max_listing_bytes`` (64Mi);
- ``read_threads`` (32): threads that receive block reads straight into their buffers;
  ``loop_read_max`` (256Ki): smaller reads are received on the event loop instead;
- ``skip_missing_entries`` (false: a listed file that answers 404 raises NotFound; true skips it);
- ``verify_tls`` (true), ``ca_file``;
- ``credentials_file``: a file of ``username=`` / ``password=`` lines (Basic) or ``token=``
  (Bearer). The header goes only to the source's origin (aiohttp drops it on a redirect
  elsewhere); it is never logged nor shown in a repr.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import codecs
import datetime
import email.utils
import functools
import json
import logging
import random
import re
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import TypeVar
from urllib.parse import quote, unquote, urljoin, urlsplit

import aiohttp
from yarl import URL

from fluidcache.common import errors
from fluidcache.common.config import parse_size
from fluidcache.ufs._options import option_bool, option_number, read_key_values
from fluidcache.ufs._threaded import (
    LOOP_READ_MAX,
    READ_THREADS,
    Answer,
    ThreadedReader,
    content_range,
)
from fluidcache.ufs.base import Into, UfsStatus, UnderFileSystem, check_span, clean_path

log = logging.getLogger(__name__)

T = TypeVar("T")

_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_READ_PIECE = 256 * 1024
_PARSE_PIECE = 16 * 1024  # characters of an index page parsed between turns of the event loop
_LIST_BATCH = 64


class _Transient(Exception):
    """A failure worth another attempt (5xx, truncated body, dropped connection)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _segments(raw_path: str) -> list[str]:
    """The unescaped segments of a URL path (split before unescaping, so ``%2F`` stays inside)."""
    return [unquote(s, errors="surrogateescape") for s in raw_path.split("/")]


def _origin(url: str) -> tuple[str, str | None, int | None]:
    """``(scheme, host, port)`` with the default port made explicit; ValueError if unparsable."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, parts.hostname, parts.port or {"http": 80, "https": 443}.get(scheme)


_PLAIN = re.compile(r"[\x00-\x20\x7f:?#\\]|/.")
"""What a plain relative name has none of: a scheme, a query, a fragment, a slash but last,
controls and spaces (which URL parsing drops or keeps by its own rules)."""


def _child(dir_url: str, href: str) -> tuple[str, bool] | None:
    """``(name, is_dir)`` when ``href`` (relative to ``dir_url``) is a direct child, else None.

    Sort links (``?C=N;O=D``), anchors, the parent, absolute links elsewhere and deeper links are
    not entries.
    """
    href = href.strip()
    if not href or href.startswith(("?", "#")):
        return None
    if _PLAIN.search(href):
        return _linked_child(dir_url, href)
    # A plain relative name (``a%20b``, ``dir/``), as index pages link their entries: what
    # _linked_child finds, without parsing and joining URLs.
    name = unquote(href.removesuffix("/"), errors="surrogateescape")
    return _named(name, href.endswith("/"))


def _linked_child(dir_url: str, href: str) -> tuple[str, bool] | None:
    """:func:`_child` for any link: resolved against ``dir_url``, then compared with it."""
    try:
        target = urlsplit(urljoin(dir_url, href))
        base = urlsplit(dir_url)
        same_origin = _origin(target.geturl()) == _origin(dir_url)
    except ValueError:
        return None
    if not same_origin or target.query or target.fragment:
        return None
    parent = _segments(base.path or "/")[:-1]
    segs = _segments(target.path)
    if segs[: len(parent)] != parent:
        return None
    rest = segs[len(parent) :]
    if len(rest) == 2 and rest[1] == "":
        name, is_dir = rest[0], True
    elif len(rest) == 1:
        name, is_dir = rest[0], False
    else:
        return None
    return _named(name, is_dir)


def _named(name: str, is_dir: bool) -> tuple[str, bool] | None:
    """``(name, is_dir)`` unless ``name`` cannot be an entry's."""
    if name in ("", ".", "..") or "\0" in name:
        return None
    return name, is_dir


_DATE = (
    r"(\d{1,2}-[A-Za-z]{3}-\d{4} \d{2}:\d{2}(?::\d{2})?|\d{4}-\d{2}-\d{2} \d{2}:\d{2}(?::\d{2})?)"
)
_DETAILS = re.compile(_DATE + r"\s+(\d+)$")
"""The text after an entry's link: a date and an exact size in bytes (nginx with
``autoindex_exact_size on``, Apache below 1 KiB). A size with a unit (``1.2K``) is not exact."""
_DATE_FORMATS = ("%d-%b-%Y %H:%M", "%d-%b-%Y %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True, slots=True)
class Listed:
    """An entry of an index page: its size and mtime when the page gives them exactly."""

    name: str
    is_dir: bool
    size: int | None = None
    mtime: float = 0.0


@functools.lru_cache(maxsize=4096)  # the entries of a page share few dates; strptime is slow
def _listing_date(text: str) -> float:
    for fmt in _DATE_FORMATS:
        try:
            stamp = datetime.datetime.strptime(text, fmt)
        except ValueError:
            continue
        return stamp.replace(tzinfo=datetime.UTC).timestamp()
    return 0.0


_LINK = re.compile(r'<a href="([^"<>&]*)">([^<&]*)</a>([^<&]*)(?=<)')
"""A link as nginx's index lists an entry, with the text up to the next tag: what the HTML
parser would make of it is plain (no character references, no other tag), so it is taken
without the parser."""


class IndexParser(HTMLParser):
    """Collects the direct children linked from a directory index page, fed incrementally,
    with the exact size and date a page prints after an entry's link, when it does.

    Plain entry links (:data:`_LINK`, nginx's every line) are taken directly while the HTML
    parser has nothing pending (no partial tag, comment or script): the same calls the parser
    would make, at a third of its cost. ``fast = False`` leaves everything to the parser.
    """

    fast = True

    def __init__(self, dir_url: str) -> None:
        super().__init__(convert_charrefs=True)
        self.dir_url = dir_url
        self._seen: set[str] = set()
        self._found: list[tuple[str, bool]] = []
        self._texts: list[list[str]] = []  # text after each entry's link, until the next entry
        self._in_link = False

    def feed(self, data: str) -> None:
        if not self.fast:
            super().feed(data)
            return
        text, self.rawdata = self.rawdata + data, ""
        pos = 0
        while self.cdata_elem is None and not self.rawdata:
            link = _LINK.match(text, pos)
            if link is not None:
                self.handle_starttag("a", [("href", link[1])])
                self.handle_data(link[2])
                self.handle_endtag("a")
                self.handle_data(link[3])
                pos = link.end()
                continue
            ahead = text.find('<a href="', pos + 1)
            if ahead < 0:
                break
            super().feed(text[pos:ahead])  # up to the next link, which may be plain
            pos = ahead
        super().feed(text[pos:])

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "a":
            return
        self._in_link = True
        for key, value in attrs:
            if key == "href" and value is not None:
                found = _child(self.dir_url, value)
                if found and found[0] not in self._seen:
                    self._seen.add(found[0])
                    self._found.append(found)
                    self._texts.append([])
                return

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._in_link = False

    def handle_data(self, data: str) -> None:
        if self._texts and not self._in_link:
            self._texts[-1].append(data)

    @property
    def entries(self) -> list[tuple[str, bool]]:
        return self._found

    def take(self, final: bool = False) -> list[Listed]:
        """The entries found since the last call (the last one kept back until ``final``: the
        text after its link may not have arrived yet)."""
        n = len(self._found) if final else max(0, len(self._found) - 1)
        out = []
        for (name, is_dir), text in zip(self._found[:n], self._texts[:n], strict=True):
            size, mtime = None, 0.0
            details = _DETAILS.search(" ".join("".join(text).split()))
            if details and not is_dir:
                size, mtime = int(details.group(2)), _listing_date(details.group(1))
            out.append(Listed(name, is_dir, size, mtime))
        del self._found[:n], self._texts[:n]
        return out


def parse_index(dir_url: str, html: str) -> list[tuple[str, bool]]:
    """The ``(name, is_dir)`` children of the index page ``html`` served at ``dir_url``."""
    return [(e.name, e.is_dir) for e in parse_listing(dir_url, html)]


def parse_listing(dir_url: str, html: str) -> list[Listed]:
    """The children of the index page ``html``, with exact sizes where the page gives them."""
    parser = IndexParser(dir_url)
    parser.feed(html)
    parser.close()
    return parser.take(final=True)


def parse_json_index(dir_url: str, body: bytes) -> list[Listed]:
    """The children of an nginx JSON index (``autoindex_format json``): name, type, mtime,
    size (exact). SourceError if it is not one."""
    try:
        items = json.loads(body)
        out = []
        for item in items:
            name, kind = item["name"], item["type"]
            found = _child(
                dir_url,
                quote(name, errors="surrogateescape") + ("/" if kind == "directory" else ""),
            )
            if found is None:
                continue
            if found[1]:
                out.append(Listed(found[0], True))
            else:
                size = item.get("size")
                exact = isinstance(size, int) and not isinstance(size, bool)
                mtime = _http_date(item.get("mtime"))
                out.append(Listed(found[0], False, size if exact else None, mtime))
        return out
    except (ValueError, TypeError, KeyError) as e:
        raise errors.SourceError(
            f"GET {dir_url}: not an HTML directory index nor an nginx JSON index ({e})"
        ) from None


@functools.lru_cache(maxsize=1024)  # a dataset's files share few dates; parsing one is slow
def _http_date(value: str | None) -> float:
    if not value:
        return 0.0
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return 0.0


def _retryable(what: str, e: BaseException) -> tuple[str, float | None]:
    """Why ``what`` failed and may be tried again (with the server's Retry-After, if any).

    Raises SourceError for the failures another try would not mend (TLS, redirect loops,
    other client errors).
    """
    if isinstance(e, _Transient):
        return str(e), e.retry_after
    if isinstance(e, aiohttp.ClientSSLError):
        raise errors.SourceError(f"{what}: TLS failure: {e}") from None
    if isinstance(e, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)):
        return _describe(e), None
    if isinstance(e, aiohttp.TooManyRedirects):
        raise errors.SourceError(f"{what}: too many redirects") from None
    raise errors.SourceError(f"{what}: {_describe(e)}") from None


def _describe(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timed out"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


class HttpUfs(UnderFileSystem):
    """A directory tree published over HTTP(S) as index pages."""

    schemes = ("http", "https")
    option_keys = frozenset(
        {
            "timeout",
            "connect_timeout",
            "retries",
            "backoff",
            "backoff_max",
            "list_concurrency",
            "max_listing_bytes",
            "skip_missing_entries",
            "verify_tls",
            "ca_file",
            "credentials_file",
            "read_threads",
            "loop_read_max",
        }
    )
    read_piece = _READ_PIECE

    def __init__(self, root_uri: str, options: Mapping[str, str] | None = None) -> None:
        super().__init__(root_uri, options)
        parts = urlsplit(root_uri)
        if parts.scheme.lower() not in self.schemes or not parts.netloc:
            raise errors.ConfigError(f"source {root_uri!r}: expected http(s)://host/dir/")
        if parts.query or parts.fragment:
            raise errors.ConfigError(f"source {root_uri!r}: a query or fragment is not allowed")
        path = parts.path if parts.path.endswith("/") else parts.path + "/"
        self._root = f"{parts.scheme.lower()}://{parts.netloc}{path}"
        self._root_segments = _segments(path)[:-1]
        opts = self.options
        self.timeout = option_number(opts, "timeout", 30.0, 0.001)
        self.connect_timeout = option_number(opts, "connect_timeout", 10.0, 0.001)
        self.retries = int(option_number(opts, "retries", 4))
        self.backoff = option_number(opts, "backoff", 0.2)
        self.backoff_max = option_number(opts, "backoff_max", 5.0)
        self.list_concurrency = max(1, int(option_number(opts, "list_concurrency", 32, 1)))
        self.max_listing_bytes = parse_size(
            opts.get("max_listing_bytes", "64Mi"), "option max_listing_bytes"
        )
        self.skip_missing_entries = option_bool(opts, "skip_missing_entries", False)
        self._ssl: ssl.SSLContext | bool = True
        if not option_bool(opts, "verify_tls", True):
            self._ssl = False
        elif opts.get("ca_file"):
            self._ssl = ssl.create_default_context(cafile=opts["ca_file"])
        self._auth: dict[str, str] = {}
        if opts.get("credentials_file"):
            self._auth = self._read_credentials(opts["credentials_file"])
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        read_threads = max(1, int(option_number(opts, "read_threads", READ_THREADS, 1)))
        loop_max = parse_size(opts.get("loop_read_max", str(LOOP_READ_MAX)), "option loop_read_max")
        self._reader = ThreadedReader(read_threads, self.timeout, self._ssl, loop_max)
        self._warned_no_range = False

    def __repr__(self) -> str:
        return f"HttpUfs({self._root!r})"

    @staticmethod
    def _read_credentials(path: str) -> dict[str, str]:
        found = read_key_values(
            path, "credentials_file", frozenset({"username", "password", "token"})
        )
        if found.get("token"):
            return {"Authorization": f"Bearer {found['token']}"}
        if found.get("username") and ":" not in found["username"]:
            pair = f"{found['username']}:{found.get('password', '')}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
        raise errors.ConfigError(
            f"option credentials_file: {path} needs token=, or username= (without ':')"
        )

    # -- URIs ----------------------------------------------------------------------------------

    def uri(self, path: str) -> str:
        return self._root + quote(clean_path(path), safe="/", errors="surrogateescape")

    def _dir_url(self, path: str) -> str:
        return self.uri(path) + ("/" if path else "")

    def relpath(self, uri: str) -> str:
        try:
            parts = urlsplit(uri)
            same = _origin(uri) == _origin(self._root)
        except ValueError:
            same = False
        if not same or parts.query or parts.fragment:
            raise errors.InvalidArgument(f"{uri!r} is not under {self._root!r}")
        segs = _segments(parts.path or "/")
        n = len(self._root_segments)
        if segs[:n] != self._root_segments and segs != [*self._root_segments[:-1], ""]:
            raise errors.InvalidArgument(f"{uri!r} is not under {self._root!r}")
        return clean_path("/".join(segs[n:]))

    # -- plumbing ------------------------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._closed:
            raise errors.FluidcacheError(f"{self!r} is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64, ssl=self._ssl),
                headers={"Accept-Encoding": "identity", "User-Agent": "fluidcache"},
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=self.connect_timeout, sock_read=self.timeout
                ),
            )
        return self._session

    @asynccontextmanager
    async def _get(
        self, url: str, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One GET of ``url`` (already %-encoded), redirects followed, credentials added."""
        async with self._client().get(
            URL(url, encoded=True), headers={**self._auth, **(headers or {})}
        ) as resp:
            yield resp

    async def _pause(self, attempt: int, retry_after: float | None) -> None:
        delay = min(self.backoff_max, self.backoff * 2**attempt) * (0.5 + random.random() / 2)
        if retry_after is not None:
            delay = min(self.backoff_max, max(delay, retry_after))
        await asyncio.sleep(delay)

    async def _retry(self, what: str, attempt_fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt_fn`` until it succeeds or bounded retries of transient failures end."""
        last = ""
        for attempt in range(self.retries + 1):
            retry_after = None
            try:
                return await attempt_fn()
            except (_Transient, aiohttp.ClientError, TimeoutError) as e:
                last, retry_after = _retryable(what, e)
            if attempt < self.retries:
                log.debug("%s: %s; retrying (attempt %d)", what, last, attempt + 2)
                await self._pause(attempt, retry_after)
        raise errors.SourceUnavailable(
            f"{what}: {last} (gave up after {self.retries + 1} attempts)"
        )

    def _check(self, resp: aiohttp.ClientResponse, path: str, what: str) -> None:
        """Raise the error an unsuccessful status means (``_Transient`` when worth a retry)."""
        status = resp.status
        if status < 300:
            return
        if status in _RETRY_STATUSES:
            retry_after = resp.headers.get("Retry-After", "")
            raise _Transient(
                f"HTTP {status} {resp.reason or ''}".strip(),
                float(retry_after) if retry_after.isdigit() else None,
            )
        if status in (404, 410):
            raise errors.NotFound(f"{path or '/'}: not found at the source (HTTP {status})")
        if status in (401, 403, 407):
            raise errors.PermissionDenied(f"{what}: the source refused access (HTTP {status})")
        raise errors.SourceError(f"{what}: unexpected HTTP {status} {resp.reason or ''}".strip())

    @staticmethod
    def _is_dir_answer(url: str, resp: aiohttp.ClientResponse) -> bool:
        """A request for ``url`` landed on a directory (``x`` redirected to ``x/``)."""
        return url.endswith("/") or resp.url.raw_path.endswith("/")

    # -- stat ----------------------------------------------------------------------------------

    async def stat(self, path: str) -> UfsStatus:
        path = clean_path(path)
        url = self._dir_url(path) if path == "" else self.uri(path)
        return await self._retry(f"HEAD {url}", lambda: self._head(path, url))

    async def _head(self, path: str, url: str) -> UfsStatus:
        name = path.rpartition("/")[2]
        timeout = aiohttp.ClientTimeout(
            total=self.timeout, connect=self.connect_timeout, sock_read=self.timeout
        )
        async with self._client().head(
            URL(url, encoded=True), allow_redirects=True, timeout=timeout, headers=self._auth
        ) as resp:
            if resp.status not in (405, 501):
                self._check(resp, path, f"HEAD {url}")
                if self._is_dir_answer(url, resp):
                    return UfsStatus(name=name, is_dir=True)
                if resp.content_length is not None:
                    return self._file_status(name, resp, resp.content_length)
        return await self._probe(path, url)

    async def _probe(self, path: str, url: str) -> UfsStatus:
        """Status from a one-byte ranged GET, for servers without HEAD or Content-Length."""
        name = path.rpartition("/")[2]
        async with self._get(url, {"Range": "bytes=0-0"}) as resp:
            if resp.status == 416:
                cr = content_range(resp.headers.get("Content-Range"))
                return self._file_status(name, resp, (cr[1] or 0) if cr else 0)
            self._check(resp, path, f"GET {url}")
            if self._is_dir_answer(url, resp):
                return UfsStatus(name=name, is_dir=True)
            cr = content_range(resp.headers.get("Content-Range"))
            size = cr[1] if resp.status == 206 and cr else resp.content_length
            if size is None:
                raise errors.SourceError(f"GET {url}: the source does not tell the file size")
            return self._file_status(name, resp, size)

    @staticmethod
    def _file_status(name: str, resp: aiohttp.ClientResponse, size: int) -> UfsStatus:
        return _status(name, size, resp.headers.get("ETag"), resp.headers.get("Last-Modified"))

    # -- list ----------------------------------------------------------------------------------

    async def list(self, path: str) -> AsyncGenerator[UfsStatus, None]:
        path = clean_path(path)
        url = self._dir_url(path)
        done: set[str] = set()  # names already yielded, skipped when a retry re-reads the page
        attempt = 0
        while True:
            retry_after = None
            try:
                async with aclosing(self._list_once(path, url, done)) as entries:
                    async for entry in entries:
                        attempt = 0
                        done.add(entry.name)
                        yield entry
                return
            except (_Transient, aiohttp.ClientError, TimeoutError) as e:
                last, retry_after = _retryable(f"GET {url}", e)
            except errors.NotFound:
                if path and not (await self.stat(path)).is_dir:
                    raise errors.NotADirectory(f"{path}: not a directory") from None
                raise
            if attempt >= self.retries:
                raise errors.SourceUnavailable(
                    f"GET {url}: {last} (gave up after {self.retries + 1} attempts)"
                )
            await self._pause(attempt, retry_after)
            attempt += 1

    async def _list_once(
        self, path: str, url: str, done: set[str]
    ) -> AsyncGenerator[UfsStatus, None]:
        async with self._get(url) as resp:
            self._check(resp, path, f"GET {url}")
            if resp.content_type == "application/json":
                body = await resp.content.read(self.max_listing_bytes + 1)
                if len(body) > self.max_listing_bytes:
                    raise errors.SourceError(
                        f"GET {url}: index larger than {self.max_listing_bytes} bytes"
                    )
                for entry in await self._entries(path, parse_json_index(str(resp.url), body), done):
                    yield entry
                return
            if "Content-Type" in resp.headers and resp.content_type not in _HTML_TYPES:
                raise errors.SourceError(
                    f"GET {url}: not an HTML directory index (Content-Type {resp.content_type})"
                )
            try:
                decoder = codecs.getincrementaldecoder(resp.charset or "utf-8")("strict")
            except LookupError:
                decoder = codecs.getincrementaldecoder("utf-8")("strict")
            parser = IndexParser(str(resp.url))
            received = 0
            async for data in resp.content.iter_chunked(_READ_PIECE):
                received += len(data)
                if received > self.max_listing_bytes:
                    raise errors.SourceError(
                        f"GET {url}: index page larger than {self.max_listing_bytes} bytes"
                    )
                text = self._decode(decoder, url, data)
                for start in range(0, len(text), _PARSE_PIECE):
                    if start:
                        await asyncio.sleep(0)  # a big page never holds up the other requests
                    self._feed(parser, url, text[start : start + _PARSE_PIECE])
                if len(parser.entries) > _LIST_BATCH:
                    for entry in await self._entries(path, parser.take(), done):
                        yield entry
            self._feed(parser, url, self._decode(decoder, url, b""), final=True)
        for entry in await self._entries(path, parser.take(final=True), done):
            yield entry

    @staticmethod
    def _decode(decoder: codecs.IncrementalDecoder, url: str, data: bytes) -> str:
        """The text of the next piece of an index page (``b""`` ends it)."""
        try:
            return decoder.decode(data, final=not data)
        except UnicodeDecodeError as e:
            raise errors.SourceError(f"GET {url}: malformed index page ({e})") from None

    @staticmethod
    def _feed(parser: IndexParser, url: str, text: str, final: bool = False) -> None:
        """Parse the next piece of an index page; ``final``: the last."""
        try:
            parser.feed(text)
            if final:
                parser.close()
        except (AssertionError, ValueError) as e:
            raise errors.SourceError(f"GET {url}: malformed index page ({e})") from None

    async def _entries(
        self, path: str, found: builtins.list[Listed], done: set[str]
    ) -> builtins.list[UfsStatus]:
        """Statuses of listed entries, in page order. A file the page gives an exact size for
        is taken as listed, its version left to be checked when it is opened (``""``); the
        others are HEADed, a few at once."""
        gate = asyncio.Semaphore(self.list_concurrency)

        async def one(e: Listed) -> UfsStatus | None:
            if e.is_dir:
                return UfsStatus(name=e.name, is_dir=True)
            if e.size is not None:
                return UfsStatus(name=e.name, is_dir=False, size=e.size, mtime=e.mtime)
            async with gate:
                try:
                    status = await self.stat(f"{path}/{e.name}" if path else e.name)
                except errors.NotFound:
                    if self.skip_missing_entries:
                        return None
                    raise errors.NotFound(
                        f"{path or '/'}: listed entry {e.name!r} is not found at the source"
                    ) from None
                return status

        todo = [e for e in found if e.name not in done]
        if not todo:
            return []
        if all(e.is_dir or e.size is not None for e in todo):
            return [s for e in todo if (s := await one(e)) is not None]
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(one(e)) for e in todo]
        except BaseExceptionGroup as group:
            raise _first_error(group) from None
        return [s for t in tasks if (s := t.result()) is not None]

    # -- read ----------------------------------------------------------------------------------

    async def read_stream(
        self, path: str, offset: int, length: int, chunk: int = 1 << 20, version: str = ""
    ) -> AsyncGenerator[bytes, None]:
        check_span(path, offset, length, chunk)
        path = clean_path(path)
        url = self.uri(path)
        if not path:
            raise errors.IsADirectory("/: is a directory")
        pos, end = offset, offset + length
        attempt = 0
        while pos < end:
            retry_after = None
            try:
                reading = self._read_once(path, url, pos, end, chunk, version)
                async with aclosing(reading) as pieces:
                    async for piece in pieces:
                        pos += len(piece)
                        attempt = 0
                        yield piece
                return
            except (_Transient, aiohttp.ClientError, TimeoutError) as e:
                last, retry_after = _retryable(f"GET {url}", e)
            if attempt >= self.retries:
                raise errors.SourceUnavailable(
                    f"GET {url}: {last} (gave up after {self.retries + 1} attempts)"
                )
            await self._pause(attempt, retry_after)
            attempt += 1

    async def _read_once(
        self, path: str, url: str, pos: int, end: int, chunk: int, version: str = ""
    ) -> AsyncGenerator[bytes, None]:
        """Bytes ``[pos, end)`` from one GET; ``_Transient`` if the body stops short.

        A ``version`` that is a strong ETag goes out as ``If-Match`` (412: the file changed); a
        size-and-date version is checked against the size the answer gives.
        """
        headers = {"Range": f"bytes={pos}-{end - 1}"}
        if version.startswith('"'):
            headers["If-Match"] = version
        async with self._get(url, headers) as resp:
            if resp.status == 416:
                return  # the range starts at or past the end of the file
            if resp.status == 412:
                raise errors.SourceChanged(f"{path}: changed at the source (not {version})")
            self._check(resp, path, f"GET {url}")
            if self._is_dir_answer(url, resp):
                raise errors.IsADirectory(f"{path}: is a directory")
            if resp.status == 206:
                cr = content_range(resp.headers.get("Content-Range"))
                if cr is None or cr[0] != pos:
                    raise errors.SourceError(
                        f"GET {url}: asked for bytes from {pos}, got Content-Range "
                        f"{resp.headers.get('Content-Range')!r}"
                    )
                skip, total = 0, cr[1]
            elif resp.status == 200:
                if not self._warned_no_range:
                    self._warned_no_range = True
                    log.warning("%s ignores Range; reads download from the file start", url)
                skip, total = pos, resp.content_length
            else:
                raise errors.SourceError(f"GET {url}: unexpected HTTP {resp.status}")
            if version:
                size = total if total is not None else -1
                seen = self._file_status("", resp, size).version
                if seen != version:
                    raise errors.SourceChanged(
                        f"GET {url}: the source has version {seen!r}, not {version!r}"
                    )
            want = end - pos if total is None else min(end, total) - pos
            got = 0
            # The pieces as they came off the socket: no re-joining into bigger ones (a copy);
            # a piece is cut (copied) only where it passes ``chunk`` or the end of the range.
            async for data in resp.content.iter_any():
                if skip:
                    cut = min(skip, len(data))
                    data, skip = data[cut:], skip - cut
                if len(data) > want - got:
                    data = data[: want - got]
                if len(data) <= chunk:
                    got += len(data)
                    if data:
                        yield data
                else:
                    for i in range(0, len(data), chunk):
                        got += len(data[i : i + chunk])
                        yield data[i : i + chunk]
                if got >= want:
                    return
            if total is not None and got < want:
                raise _Transient(f"body ended after {got} of {want} bytes")

    # -- read into a buffer, off the event loop --------------------------------------------------

    reads_into = True

    @property
    def read_pool(self) -> ThreadedReader:
        return self._reader

    async def read_into(self, path: str, offset: int, buf: Into, version: str = "") -> int:
        """One ranged GET received straight into ``buf`` by a thread (``http.client``: the
        socket's bytes land in ``buf`` with no Python per piece, the GIL released meanwhile),
        or on the event loop when small (``loop_read_max``). Anything but a plain 206 of the
        range asked (redirects, errors, a server without Range, TLS settings of its own) is left
        to :meth:`read_stream` and its retries."""
        path = clean_path(path)
        if not len(buf):
            return 0
        if not path or offset < 0:
            return await super().read_into(path, offset, buf, version)
        got = await self._read_into_thread(path, offset, buf, version)
        if got is None:
            return await super().read_into(path, offset, buf, version)
        return got[0]

    async def read_head(
        self, path: str, buf: memoryview, on_status: Callable[[UfsStatus], None] | None = None
    ) -> tuple[UfsStatus, int]:
        """One ranged GET: the answer's headers (ETag, Last-Modified, Content-Range's total)
        are the file's status (told to ``on_status`` before the body), its body the first
        bytes. Anything else (an empty file, a directory, an error, a server without Range)
        takes the ``stat`` and read way."""
        path = clean_path(path)
        got = (
            await self._read_into_thread(path, 0, buf, "", on_status) if path and len(buf) else None
        )
        if got is None:
            return await super().read_head(path, buf, on_status)
        n, status = got
        return status, n

    async def _read_into_thread(
        self,
        path: str,
        offset: int,
        buf: Into,
        version: str,
        on_status: Callable[[UfsStatus], None] | None = None,
    ) -> tuple[int, UfsStatus] | None:
        """The threads' read of ``[offset, offset + len(buf))``, and the file's status its answer
        tells (to ``on_status`` too, from the reading thread, before the body); None for
        anything but a plain answer (the streaming path then reads)."""
        url, name = self.uri(path), path.rpartition("/")[2]
        seen: list[UfsStatus] = []

        def check(answer: Answer) -> None:
            status = _status(name, answer.total, answer.etag, answer.last_modified)
            if version and status.version != version:
                raise errors.SourceChanged(
                    f"GET {url}: the source has version {status.version!r}, not {version!r}"
                )
            seen.append(status)
            if on_status is not None:
                on_status(status)

        answer = await self._reader.get_into(url, offset, buf, self._auth, check)
        if answer is None:
            return None
        return answer.got, seen[-1]

    # -- lifecycle -----------------------------------------------------------------------------

    async def close(self) -> None:
        self._closed = True
        await self._reader.close()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


def _status(name: str, size: int, etag: str | None, last_modified: str | None) -> UfsStatus:
    """A file's status from the headers of an answer about it (HEAD, or a GET's)."""
    mtime = _http_date(last_modified)
    version = _version(size, etag, last_modified)
    return UfsStatus(name=name, is_dir=False, size=size, mtime=mtime, version=version)


def _version(size: int, etag: str | None, last_modified: str | None) -> str:
    """A file's version as HTTP tells it: its ETag, else its size and Last-Modified."""
    return (etag or "").strip() or f"{size}-{int(_http_date(last_modified))}"


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first fluidcache error inside ``group`` (else its first exception)."""
    for e in group.exceptions:
        if isinstance(e, BaseExceptionGroup):
            return _first_error(e)
        if isinstance(e, errors.FluidcacheError):
            return e
    return group.exceptions[0]
