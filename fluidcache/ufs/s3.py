"""S3 and S3-compatible stores, ``s3://bucket/prefix``, through aiobotocore (used only here).

Directories are key prefixes (``Delimiter='/'``); an empty object named ``dir/`` (a "folder"
marker) makes an empty directory. A file's version is its ETag, preceded by its content digest
(``sha256:HEX ETAG``) where the store keeps a full-object SHA-256 checksum: the object was put with
``ChecksumAlgorithm=SHA256`` in one part (a multipart SHA-256 is a checksum of part checksums, not
of the content). Block ids then come from the digest (:mod:`fluidcache.common.blockid`): the same
content under two keys or buckets is cached once. Listings do not give checksum values, so such
an object is listed without a version and its ``HeadObject`` at open gives it. CRC checksums (a
CRC64NVME is full-object too) are never used: a CRC is no content address (collisions are easy to
make). URIs keep keys raw, as the AWS CLI does: ``uri("a b#1")`` is ``s3://bucket/prefix/a b#1``.

Options (all strings): ``endpoint_url``, ``region``, ``addressing_style`` (``path``, ``virtual``,
``auto``; ``path`` when an endpoint is given), ``credentials_file``, ``anonymous`` (true for public
buckets: unsigned requests), ``retries`` (4: throttling, 5xx and dropped connections, botocore's
``standard`` mode), ``connect_timeout`` (10 s), ``timeout`` (30 s of silence while reading),
``page_size`` (1000 keys per listing page), ``max_connections`` (32).

Endpoint, region and credentials otherwise come from the environment: ``AWS_ENDPOINT_URL_S3`` /
``AWS_ENDPOINT_URL``, ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` (or botocore's usual chain). A credentials file
holds ``key=value`` lines (``aws_access_key_id``, ``aws_secret_access_key``, optionally
``aws_session_token``). Secrets are never accepted as options, logged, or shown in a repr.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import contextlib
import os
import time
from collections.abc import AsyncGenerator, Mapping
from typing import Any, NoReturn
from urllib.parse import quote, urlsplit

import aiohttp
import botocore.exceptions as bex  # type: ignore[import-untyped]
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore import UNSIGNED  # type: ignore[import-untyped]

from fluidcache.common import errors
from fluidcache.ufs._options import option_bool, option_number, read_key_values
from fluidcache.ufs._threaded import READ_THREADS, Answer, ThreadedReader
from fluidcache.ufs.base import Into, UfsStatus, UnderFileSystem, check_span, clean_path

# A presigned GET is signed for its key, not for its Range or If-Match headers: one URL serves
# every block of a file for a while (signing one costs 0.1-1.5 ms of CPU in botocore).
PRESIGN_EXPIRES = 3600  # s a presigned URL is valid for
PRESIGN_REUSE = 600.0  # s one is used, well inside that
PRESIGNED_KEPT = 4096  # keys whose URL is kept

_NOT_FOUND = frozenset({"NoSuchKey", "NotFound", "404", "NoSuchBucket"})
_DENIED = frozenset(
    {
        "AccessDenied",
        "403",
        "Forbidden",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AllAccessDisabled",
        "AccountProblem",
        "ExpiredToken",
        "InvalidToken",
        "InvalidSecurity",
        "401",
        "Unauthorized",
    }
)
_KEY_FIELDS = {
    "aws_access_key_id": "key",
    "access_key_id": "key",
    "access_key": "key",
    "aws_secret_access_key": "secret",
    "secret_access_key": "secret",
    "secret_key": "secret",
    "aws_session_token": "token",
    "session_token": "token",
}
_SECRET_WORDS = ("secret", "password", "token", "access_key")
_STREAM_ERRORS = (
    aiohttp.ClientError,
    TimeoutError,
    bex.ResponseStreamingError,
    bex.ReadTimeoutError,
    bex.ConnectionClosedError,
)


def content_version(etag: str, sha256: str | None = None, kind: str | None = None) -> str:
    """An object's version: ``sha256:HEX ETAG`` when ``sha256`` (a base64 ``ChecksumSHA256``) is
    of the whole content (``kind`` FULL_OBJECT, or no kind given and no part count on the ETag
    or checksum, i.e. put in one part); else its ETag."""
    if not sha256 or kind not in (None, "FULL_OBJECT"):
        return etag
    if kind is None and ("-" in etag or "-" in sha256):
        return etag  # a multipart upload: a checksum of its parts' checksums
    try:
        digest = base64.b64decode(sha256, validate=True)
    except ValueError:
        return etag
    return f"sha256:{digest.hex()} {etag}" if len(digest) == 32 else etag


def _etag(version: str) -> str:
    """The ETag a version ends with (see :func:`content_version`)."""
    return version.rpartition(" ")[2]


class Credentials:
    """Keys read from a credentials file; ``repr`` never shows them."""

    __slots__ = ("_key", "_secret", "_token", "source")

    def __init__(self, key: str, secret: str, token: str | None, source: str) -> None:
        self._key, self._secret, self._token, self.source = key, secret, token, source

    def __repr__(self) -> str:
        return f"<Credentials from {self.source}>"

    def client_kwargs(self) -> dict[str, str | None]:
        return {
            "aws_access_key_id": self._key,
            "aws_secret_access_key": self._secret,
            "aws_session_token": self._token,
        }

    @classmethod
    def from_file(cls, path: str) -> Credentials:
        """Keys from a ``key=value`` file (see :func:`read_key_values`)."""
        found: dict[str, str] = {}
        for name, value in read_key_values(
            path, "credentials_file", frozenset(_KEY_FIELDS)
        ).items():
            found[_KEY_FIELDS[name]] = value
        if not found.get("key") or not found.get("secret"):
            raise errors.ConfigError(
                f"option credentials_file: {path} needs aws_access_key_id and aws_secret_access_key"
            )
        return cls(found["key"], found["secret"], found.get("token") or None, path)


def _code(e: bex.ClientError) -> tuple[str, int]:
    error = e.response.get("Error", {})
    status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return str(error.get("Code", "")), int(status or 0)


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False


class S3Ufs(UnderFileSystem):
    """Objects under a bucket prefix, seen as a directory tree."""

    schemes = ("s3",)
    # AWS's performance guidelines for S3 name 8 or 16 MB as the typical size of a ranged GET:
    # every request costs the store (and the bill) alike. Against the bench's s3rver on
    # loopback, a cold GiB through the mount took 810-1,100 MB/s with 16 MiB blocks and 845-931
    # with 4 MiB; behind a cap of 50 MB/s per connection the two were alike (a GiB 738-772 MB/s
    # against 702-789, a model's cold load 2.42-2.46 s against 2.29-2.54). Not for a hub: its
    # model loads took 2.77-2.80 s with 16 MiB blocks, 2.25 s with 4 MiB.
    block_size = 16 * 1024 * 1024
    option_keys = frozenset(
        {
            "endpoint_url",
            "region",
            "addressing_style",
            "credentials_file",
            "anonymous",
            "retries",
            "connect_timeout",
            "timeout",
            "page_size",
            "max_connections",
        }
    )

    def __init__(self, root_uri: str, options: Mapping[str, str] | None = None) -> None:
        super().__init__(root_uri, options)
        if not root_uri.startswith("s3://"):
            raise errors.ConfigError(f"source {root_uri!r}: expected s3://bucket/prefix")
        bucket, _, prefix = root_uri[len("s3://") :].partition("/")
        if not bucket or any(c in bucket for c in "?#% "):
            raise errors.ConfigError(f"source {root_uri!r}: not a valid bucket name {bucket!r}")
        opts = self.options
        for name in opts:
            if name != "credentials_file" and any(w in name.lower() for w in _SECRET_WORDS):
                raise errors.ConfigError(
                    f"option {name}: secrets are not accepted in the dataset spec; "
                    "use credentials_file or the AWS_* environment variables"
                )
        self.bucket = bucket
        self.prefix = clean_path(prefix)
        self.endpoint_url = (
            opts.get("endpoint_url")
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
            or None
        )
        if self.endpoint_url is not None and not _is_http_url(self.endpoint_url):
            raise errors.ConfigError(
                f"option endpoint_url (or AWS_ENDPOINT_URL): not an http(s) URL: "
                f"{self.endpoint_url!r}"
            )
        self.region = (
            opts.get("region")
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or "us-east-1"
        )
        style = opts.get("addressing_style", "path" if self.endpoint_url else "auto")
        if style not in ("path", "virtual", "auto"):
            raise errors.ConfigError(
                f"option addressing_style: path, virtual or auto, not {style!r}"
            )
        self.retries = int(option_number(opts, "retries", 4))
        self.page_size = max(1, min(1000, int(option_number(opts, "page_size", 1000, 1))))
        anonymous = option_bool(opts, "anonymous", False)
        self._credentials = (
            Credentials.from_file(opts["credentials_file"])
            if opts.get("credentials_file")
            else None
        )
        connections = int(option_number(opts, "max_connections", READ_THREADS, 1))
        timeout = option_number(opts, "timeout", 30.0, 0.001)
        self._config = AioConfig(
            connect_timeout=option_number(opts, "connect_timeout", 10.0, 0.001),
            read_timeout=timeout,
            retries={"total_max_attempts": self.retries + 1, "mode": "standard"},
            s3={"addressing_style": style},
            max_pool_connections=connections,
            signature_version=UNSIGNED if anonymous else None,
        )
        self._reader = ThreadedReader(connections, timeout, True)
        self._stack: contextlib.AsyncExitStack | None = None
        self._client_obj: Any = None
        self._lock = asyncio.Lock()
        self._closed = False
        self._presigned: dict[str, tuple[float, str]] = {}  # key -> (signed at, URL)
        self._signing: _Signing | None = None  # set by the first URL signed
        self.clock = time.monotonic

    def __repr__(self) -> str:
        return f"S3Ufs('s3://{self.bucket}/{self.prefix}')"

    # -- URIs ----------------------------------------------------------------------------------

    def _key(self, path: str) -> str:
        return "/".join(p for p in (self.prefix, clean_path(path)) if p)

    def uri(self, path: str) -> str:
        return f"s3://{self.bucket}/{self._key(path)}"

    def relpath(self, uri: str) -> str:
        head = f"s3://{self.bucket}/"
        if not uri.startswith(head) and uri != head[:-1]:
            raise errors.InvalidArgument(f"{uri!r} is not under {self.uri('')!r}")
        key = uri[len(head) :].strip("/")
        if self.prefix:
            if key != self.prefix and not key.startswith(self.prefix + "/"):
                raise errors.InvalidArgument(f"{uri!r} is not under {self.uri('')!r}")
            key = key[len(self.prefix) :]
        return clean_path(key)

    # -- plumbing ------------------------------------------------------------------------------

    async def _client(self) -> Any:
        if self._closed:
            raise errors.FluidcacheError(f"{self!r} is closed")
        if self._client_obj is None:
            async with self._lock:
                if self._client_obj is None:
                    stack = contextlib.AsyncExitStack()
                    creds = self._credentials.client_kwargs() if self._credentials else {}
                    self._client_obj = await stack.enter_async_context(
                        get_session().create_client(
                            "s3",
                            region_name=self.region,
                            endpoint_url=self.endpoint_url,
                            config=self._config,
                            **creds,
                        )
                    )
                    self._stack = stack
        return self._client_obj

    async def prepare(self) -> None:
        # Making the client loads botocore's service model and endpoint rules: ~75 ms of CPU,
        # which a worker's first read of the bucket would otherwise wait for.
        with contextlib.suppress(errors.FluidcacheError, bex.BotoCoreError, ValueError):
            await self._client()

    async def _presigned_url(self, key: str) -> str:
        """A presigned GET URL of object ``key``, signed again after :data:`PRESIGN_REUSE`
        seconds. One that fails (credentials rotated, say) is no loss: :meth:`read_into` then
        reads through the client, which signs afresh."""
        now = self.clock()
        kept = self._presigned.get(key)
        if kept is not None and now - kept[0] < PRESIGN_REUSE:
            return kept[1]
        url = await self._sign(key)
        self._presigned.pop(key, None)
        self._presigned[key] = (now, url)
        if len(self._presigned) > PRESIGNED_KEPT:
            del self._presigned[next(iter(self._presigned))]  # the longest kept
        return url

    async def _sign(self, key: str) -> str:
        """``key``'s presigned GET URL, from the client's signer alone once it is known to sign
        as the whole of ``generate_presigned_url`` does.

        The client's pipeline (endpoint rules, parameter checks, events) cost 200-340 us a URL,
        a quarter of a worker's CPU in a cold epoch of small S3 objects (py-spy); the signer,
        given the request's URL, 80 us. An object's URL is the bucket's base and its quoted
        key: the first key is signed both ways within one second (so the two must be equal,
        byte for byte) and only an exact match lets the next keys skip the pipeline; anything
        else (another signer, another URL form) keeps the pipeline for every key."""
        if self._signing is not None and self._signing.base:
            return await self._signing.sign(key)
        client = await self._client()
        for _ in range(3):  # a second boundary between the two signings: again
            second = int(time.time())
            url: str = await client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": key},
                ExpiresIn=PRESIGN_EXPIRES,
            )
            if self._signing is not None:
                return url  # learnt already: the pipeline for good
            signing = _Signing.learn(client, self.bucket, key, url)
            quick = await signing.sign(key) if signing.base else ""
            if int(time.time()) == second:
                self._signing = signing if quick == url else _Signing(None, self.bucket, "")
                return url
        return url

    def _raise(self, e: Exception, what: str, path: str) -> NoReturn:
        """Turn a botocore / aiohttp failure into the matching fluidcache error."""
        where = f"{what} s3://{self.bucket}/{self._key(path)}"
        if isinstance(e, bex.ClientError):
            code, status = _code(e)
            if code in _NOT_FOUND or status == 404:
                raise errors.NotFound(f"{path or '/'}: not found ({where}: {code})") from None
            if code in _DENIED or status in (401, 403):
                raise errors.PermissionDenied(f"{where}: access denied ({code})") from None
            if status >= 500 or status in (408, 429) or "Throttl" in code or code == "SlowDown":
                raise errors.SourceUnavailable(
                    f"{where}: {code or status} (gave up after {self.retries + 1} attempts)"
                ) from None
            raise errors.SourceError(f"{where}: {code or status}") from None
        if isinstance(e, bex.NoCredentialsError | bex.PartialCredentialsError):
            raise errors.PermissionDenied(
                f"{where}: no credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "or the option credentials_file)"
            ) from None
        if isinstance(e, bex.ParamValidationError):
            raise errors.InvalidArgument(f"{where}: {e}") from None
        if isinstance(
            e,
            bex.EndpointConnectionError
            | bex.ConnectTimeoutError
            | bex.ReadTimeoutError
            | bex.ConnectionClosedError
            | bex.ResponseStreamingError
            | aiohttp.ClientError
            | TimeoutError,
        ):
            raise errors.SourceUnavailable(f"{where}: {type(e).__name__}: {e}") from None
        if isinstance(e, errors.FluidcacheError):
            raise e
        raise errors.SourceError(f"{where}: {type(e).__name__}: {e}") from None

    async def _call(self, what: str, path: str, **kwargs: Any) -> Any:
        """One S3 operation (botocore retries it), errors mapped."""
        try:
            client = await self._client()
            return await getattr(client, what)(Bucket=self.bucket, **kwargs)
        except (bex.BotoCoreError, bex.ClientError, aiohttp.ClientError, TimeoutError) as e:
            self._raise(e, what, path)

    # -- stat and list -------------------------------------------------------------------------

    def _dir_prefix(self, path: str) -> str:
        key = self._key(path)
        return key + "/" if key else ""

    async def _is_dir(self, path: str) -> bool:
        if not self._key(path):
            await self._call("head_bucket", path)
            return True
        page = await self._call(
            "list_objects_v2", path, Prefix=self._dir_prefix(path), Delimiter="/", MaxKeys=1
        )
        return bool(page.get("KeyCount") or page.get("Contents") or page.get("CommonPrefixes"))

    async def stat(self, path: str) -> UfsStatus:
        path = clean_path(path)
        name = path.rpartition("/")[2]
        if path:
            try:
                head = await self._call(
                    "head_object", path, Key=self._key(path), ChecksumMode="ENABLED"
                )
            except errors.NotFound:
                pass
            else:
                return UfsStatus(
                    name=name,
                    is_dir=False,
                    size=int(head.get("ContentLength", 0)),
                    mtime=head["LastModified"].timestamp() if "LastModified" in head else 0.0,
                    version=content_version(
                        str(head.get("ETag", "")),
                        head.get("ChecksumSHA256"),
                        head.get("ChecksumType"),
                    ),
                )
        if await self._is_dir(path):
            return UfsStatus(name=name, is_dir=True)
        raise errors.NotFound(f"{path or '/'}: no object or prefix {self.uri(path)}")

    async def list(self, path: str) -> AsyncGenerator[UfsStatus, None]:
        path = clean_path(path)
        prefix = self._dir_prefix(path)
        client = await self._client()
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket,
            Prefix=prefix,
            Delimiter="/",
            PaginationConfig={"PageSize": self.page_size},
        )
        seen_any = False
        try:
            async for page in pages:
                seen_any = seen_any or bool(page.get("KeyCount") or page.get("Contents"))
                for entry in self._page_entries(page, prefix):
                    yield entry
        except (bex.BotoCoreError, bex.ClientError, aiohttp.ClientError, TimeoutError) as e:
            self._raise(e, "list_objects_v2", path)
        if not seen_any and (path or self.prefix):
            await self._missing_dir(path)

    async def _missing_dir(self, path: str) -> None:
        """An empty listing: the path is a file, or nothing (buckets hold no empty prefixes)."""
        if path and (await self.stat(path)).is_dir is False:
            raise errors.NotADirectory(f"{path}: not a directory")
        raise errors.NotFound(f"{path or '/'}: no objects under {self.uri(path)}/")

    def _page_entries(self, page: Mapping[str, Any], prefix: str) -> builtins.list[UfsStatus]:
        out: builtins.list[UfsStatus] = []
        dirs = set()
        for cp in page.get("CommonPrefixes", ()):
            name = str(cp["Prefix"])[len(prefix) :].rstrip("/")
            if name and name not in (".", "..") and "/" not in name:
                dirs.add(name)
                out.append(UfsStatus(name=name, is_dir=True))
        for obj in page.get("Contents", ()):
            name = str(obj["Key"])[len(prefix) :]
            if not name or name in (".", "..") or "/" in name or name in dirs:
                continue  # the folder marker itself, or a key shadowed by a same-named prefix
            out.append(
                UfsStatus(
                    name=name,
                    is_dir=False,
                    size=int(obj.get("Size", 0)),
                    mtime=obj["LastModified"].timestamp() if "LastModified" in obj else 0.0,
                    version=self._listed_version(obj),
                )
            )
        return out

    @staticmethod
    def _listed_version(obj: Mapping[str, Any]) -> str:
        """The version a listing gives: none for an object put in one part with a SHA-256
        checksum (the ``HeadObject`` at open gives its digest), else the ETag."""
        etag = str(obj.get("ETag", ""))
        if "SHA256" in obj.get("ChecksumAlgorithm", ()) and "-" not in etag:
            return ""
        return etag

    # -- read ----------------------------------------------------------------------------------

    reads_into = True

    @property
    def read_pool(self) -> ThreadedReader:
        return self._reader

    async def read_into(self, path: str, offset: int, buf: Into, version: str = "") -> int:
        """One ranged GET of a presigned URL (signed here, no request), received straight into
        ``buf`` by a thread (on the event loop when small) as the HTTP adapter does. The
        version goes out as ``If-Match``; anything but a plain 206 of the range (an error, a
        changed object) takes :meth:`read_stream`, which raises the adapter's errors."""
        path = clean_path(path)
        if not len(buf):
            return 0
        if path and offset >= 0:
            key = self._key(path)
            url = await self._presigned_url(key)

            def check(answer: Answer) -> None:
                if version and answer.etag != version:
                    raise errors.SourceChanged(f"{self.uri(path)}: changed at the source")

            headers = {"If-Match": version} if version else {}
            answer = await self._reader.get_into(url, offset, buf, headers, check)
            if answer is not None:
                return answer.got
            self._presigned.pop(key, None)  # refused, perhaps expired: signed afresh next time
        return await super().read_into(path, offset, buf, version)

    async def read_stream(
        self, path: str, offset: int, length: int, chunk: int = 1 << 20, version: str = ""
    ) -> AsyncGenerator[bytes, None]:
        check_span(path, offset, length, chunk)
        path = clean_path(path)
        if not path:
            raise errors.IsADirectory("/: is a directory")
        pos, end = offset, offset + length
        failures = 0
        while pos < end:
            resp = await self._get_range(path, pos, end, version)
            if resp is None:
                return  # at or past the end of the object
            body = resp["Body"]
            if version and str(resp.get("ETag", _etag(version))) != _etag(version):
                async with body:
                    raise errors.SourceChanged(f"{self.uri(path)}: changed at the source")
            expected = int(resp.get("ContentLength", end - pos))
            got = 0
            try:
                async with body:
                    async for data in body.iter_chunks(max(chunk, 64 * 1024)):
                        for i in range(0, len(data), chunk):
                            piece = data[i : i + chunk]
                            got += len(piece)
                            pos += len(piece)
                            failures = 0
                            yield piece
            except _STREAM_ERRORS as e:
                # botocore retries requests, not bodies: resume from where the stream broke
                failures += 1
                if failures > self.retries:
                    self._raise(e, "get_object", path)
                await asyncio.sleep(min(5.0, 0.1 * 2**failures))
                continue
            if got < expected:
                failures += 1
                if failures > self.retries:
                    raise errors.SourceUnavailable(
                        f"{self.uri(path)}: body ended after {got} of {expected} bytes"
                    )
                continue
            return

    async def _get_range(self, path: str, pos: int, end: int, version: str = "") -> Any:
        """The ``get_object`` answer for bytes ``[pos, end)``; None past the end of the object.
        A ``version`` (ETag) goes out as ``IfMatch``: SourceChanged when the object changed."""
        match = {"IfMatch": _etag(version)} if version else {}
        try:
            client = await self._client()
            resp = await client.get_object(
                Bucket=self.bucket, Key=self._key(path), Range=f"bytes={pos}-{end - 1}", **match
            )
        except bex.ClientError as e:
            if _code(e)[0] == "InvalidRange" or _code(e)[1] == 416:
                return None
            if _code(e)[0] == "PreconditionFailed" or _code(e)[1] == 412:
                raise errors.SourceChanged(
                    f"{path}: changed at the source (not {version})"
                ) from None
            try:
                self._raise(e, "get_object", path)
            except errors.NotFound:
                if await self._is_dir(path):
                    raise errors.IsADirectory(f"{path}: is a directory") from None
                raise
        except (bex.BotoCoreError, aiohttp.ClientError, TimeoutError) as e:
            self._raise(e, "get_object", path)
        content_range = str(resp.get("ContentRange", ""))
        if content_range and not content_range.startswith(f"bytes {pos}-"):
            resp["Body"].close()
            raise errors.SourceError(
                f"{self.uri(path)}: asked for bytes from {pos}, got {content_range!r}"
            )
        return resp

    # -- lifecycle -----------------------------------------------------------------------------

    async def close(self) -> None:
        self._closed = True
        await self._reader.close()
        self._signing = None  # the closed client's signer
        if self._stack is not None:
            stack, self._stack, self._client_obj = self._stack, None, None
            await stack.aclose()


class _Signing:
    """Presigned GETs by the client's own signer (see :meth:`S3Ufs._sign`): the object's URL is
    ``base`` and its key quoted as botocore quotes keys; ``base`` "" when not to be used."""

    def __init__(self, signer: Any, bucket: str, base: str) -> None:
        self._signer, self._bucket, self.base = signer, bucket, base

    @classmethod
    def learn(cls, client: Any, bucket: str, key: str, url: str) -> _Signing:
        """What the client's URL of ``key`` shows: its base, when it ends in the quoted key
        (path-style or virtual-hosted alike), and the client's signer."""
        signer = getattr(client, "_request_signer", None)  # botocore's, one per client
        quoted = _quote_key(key)
        path = url.partition("?")[0]
        if signer is None or not path.endswith("/" + quoted):
            return cls(None, bucket, "")
        return cls(signer, bucket, path[: len(path) - len(quoted)])

    async def sign(self, key: str) -> str:
        quoted = _quote_key(key)
        url = self.base + quoted
        request = {
            "method": "GET",
            "headers": {},
            "body": b"",
            "url": url,
            "auth_path": f"/{self._bucket}/{quoted}",  # what a v2 signature covers
            "context": {"is_presign_request": True},
        }
        signed: str = await self._signer.generate_presigned_url(
            request, "GetObject", expires_in=PRESIGN_EXPIRES
        )
        return signed


def _quote_key(key: str) -> str:
    """A key as botocore's serializer puts it in a URL's path."""
    return quote(key, safe="/~")
