"""S3 beyond the contract, on moto's server: paging, credentials, 403, throttling, timeouts.

Failures are injected by a small aiohttp proxy in front of moto (or a server that never answers),
so botocore's own retry logic runs against real HTTP answers.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from fluidcache.common import errors
from fluidcache.common.protocol import MountInfo
from fluidcache.ufs import UnderFileSystem, create_ufs
from fluidcache.ufs.s3 import PRESIGN_EXPIRES, PRESIGN_REUSE, S3Ufs
from fluidcache.worker.sources import SourceMap
from tests.integration.ufs.conftest import (
    ACCESS_KEY,
    BUCKET,
    SECRET_KEY,
    SEEDED_DIRS,
    SEEDED_KEYS,
    MotoServer,
    free_port,
    start_moto,
    stop,
)

SESSION = web.AppKey("session", aiohttp.ClientSession)
FAST = {"retries": "2", "timeout": "1", "connect_timeout": "1"}


async def names(ufs: UnderFileSystem, path: str = "") -> list[tuple[str, bool]]:
    async with aclosing(ufs.list(path)) as entries:  # type: ignore[type-var]
        return [(e.name, e.is_dir) async for e in entries]


async def test_listing_pages_past_1000_keys(moto_server: MotoServer) -> None:
    uri, total = f"s3://{BUCKET}/seeded", SEEDED_KEYS + SEEDED_DIRS
    async with S3Ufs(uri, moto_server.options) as ufs:
        got = await names(ufs, "big")
        assert len(got) == total and len({n for n, _ in got}) == total
        assert sorted(n for n, d in got if d) == [f"d{i}" for i in range(SEEDED_DIRS)]
    async with S3Ufs(uri, {**moto_server.options, "page_size": "400"}) as ufs:
        assert len(await names(ufs, "big")) == total


async def test_key_shadowed_by_prefix_and_folder_markers(moto_server: MotoServer) -> None:
    src = moto_server.source()
    src.write("both", b"file")
    src.write("both/inner", b"inner")
    src.mkdir("marked")
    src.write("marked/f", b"f")
    async with src.ufs() as ufs:
        assert sorted(await names(ufs)) == [("both", True), ("marked", True)]
        assert await names(ufs, "marked") == [("f", False)]


async def test_credentials_and_endpoint_from_environment(
    moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = moto_server.source()
    src.write("a.txt", b"from env")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server.endpoint)
    async with create_ufs(src.uri) as ufs:
        assert isinstance(ufs, S3Ufs)
        assert (ufs.region, ufs.endpoint_url) == ("eu-west-1", moto_server.endpoint)
        assert await ufs.read("a.txt", 0, 100) == b"from env"
        assert "secret" not in repr(ufs).lower() and SECRET_KEY not in repr(vars(ufs))


async def test_anonymous_access(moto_server: MotoServer) -> None:
    src = moto_server.source()
    moto_server.client.put_object(
        Bucket=BUCKET, Key=f"{src.prefix}/pub.txt", Body=b"public", ACL="public-read"
    )
    opts = {"endpoint_url": moto_server.endpoint, "anonymous": "true"}
    async with S3Ufs(src.uri, opts) as ufs:
        assert await ufs.read("pub.txt", 0, 10) == b"public"


async def test_missing_bucket_and_prefix(moto_server: MotoServer) -> None:
    opts = dict(moto_server.options)
    async with S3Ufs("s3://no-such-bucket/x", opts) as ufs:
        with pytest.raises(errors.NotFound):
            await ufs.stat("")
        with pytest.raises(errors.NotFound):
            await names(ufs)
        with pytest.raises(errors.NotFound):
            await ufs.read("f", 0, 1)
    async with S3Ufs(f"s3://{BUCKET}/no-such-prefix", opts) as ufs:
        with pytest.raises(errors.NotFound):
            await ufs.stat("")
        with pytest.raises(errors.NotFound):
            await names(ufs)


@pytest.fixture(scope="module")
def auth_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """A moto server of its own that enforces IAM: a user without S3 rights gets 403."""
    import boto3  # type: ignore[import-untyped]

    proc, endpoint = start_moto()
    try:
        kw: dict[str, Any] = {
            "endpoint_url": endpoint,
            "region_name": "us-east-1",
            "aws_access_key_id": ACCESS_KEY,
            "aws_secret_access_key": SECRET_KEY,
        }
        s3 = boto3.client("s3", **kw)
        s3.create_bucket(Bucket="locked")
        s3.put_object(Bucket="locked", Key="data/f.txt", Body=b"secret data")
        boto3.client("iam", **kw).create_user(UserName="nobody")
        key = boto3.client("iam", **kw).create_access_key(UserName="nobody")["AccessKey"]
        creds = tmp_path_factory.mktemp("iam") / "nobody"
        creds.write_text(
            f"# a user with no policy\n[default]\naws_access_key_id = {key['AccessKeyId']}\n"
            f"aws_secret_access_key = {key['SecretAccessKey']}\n"
        )
        req = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth",
            data=b"0",
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        urllib.request.urlopen(req, timeout=10).close()
        yield endpoint, {"endpoint_url": endpoint, "credentials_file": str(creds), **FAST}
    finally:
        stop(proc)


async def test_access_denied_is_permission_denied(auth_moto: tuple[str, dict[str, str]]) -> None:
    _endpoint, opts = auth_moto
    async with S3Ufs("s3://locked/data", opts) as ufs:
        with pytest.raises(errors.PermissionDenied):
            await ufs.stat("f.txt")
        with pytest.raises(errors.PermissionDenied):
            await names(ufs)
        with pytest.raises(errors.PermissionDenied):
            await ufs.read("f.txt", 0, 4)


async def test_unknown_access_key_is_permission_denied(
    auth_moto: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    endpoint, _opts = auth_moto
    creds = tmp_path / "bogus"
    creds.write_text("aws_access_key_id=AKIANOBODY\naws_secret_access_key=wrong\n")
    opts = {"endpoint_url": endpoint, "credentials_file": str(creds), **FAST}
    async with S3Ufs("s3://locked/data", opts) as ufs:
        with pytest.raises(errors.PermissionDenied):
            await ufs.read("f.txt", 0, 4)


class FaultProxy:
    """Forwards to moto, answering with an S3 error the first ``fail`` requests of each kind
    (``GET``, ``HEAD``, ``GET list``), or only listing pages after the first (``later_pages``).
    """

    def __init__(
        self, upstream: str, status: int, code: str, fail: int, later_pages: bool = False
    ) -> None:
        self.upstream, self.status, self.code, self.fail = upstream, status, code, fail
        self.later_pages = later_pages
        self.hits: Counter[str] = Counter()
        self.signatures: list[str] = []  # of the presigned GETs, in order
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        kind = f"{request.method} {request.query.get('list-type', '') and 'list'}"
        self.hits[kind] += 1
        signature = request.query.get("X-Amz-Signature") or request.query.get("Signature")
        if signature:  # SigV4 or SigV2, as botocore chose
            self.signatures.append(signature)
        if self.later_pages:
            failing = "continuation-token" in request.query
        else:
            failing = self.hits[kind] <= self.fail
        if failing:
            body = f"<Error><Code>{self.code}</Code><Message>injected</Message></Error>"
            return web.Response(status=self.status, text=body, content_type="application/xml")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host",)}
        async with request.app[SESSION].request(
            request.method,
            self.upstream + request.rel_url.raw_path_qs,
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as up:
            payload = await up.read()
            skip = ["transfer-encoding", "content-encoding", "connection"]
            if request.method != "HEAD":
                skip.append("content-length")
            out = {k: v for k, v in up.headers.items() if k.lower() not in skip}
            return web.Response(status=up.status, body=payload or None, headers=out)


@pytest.fixture
async def proxy_factory(
    moto_server: MotoServer,
) -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []

    async def make(status: int, code: str, fail: int = 0, later_pages: bool = False) -> FaultProxy:
        proxy = FaultProxy(moto_server.endpoint, status, code, fail, later_pages)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", proxy.handle)

        async def session_ctx(app: web.Application) -> AsyncIterator[None]:
            app[SESSION] = aiohttp.ClientSession(auto_decompress=False)
            yield
            await app[SESSION].close()

        app.cleanup_ctx.append(session_ctx)
        runner = web.AppRunner(app, shutdown_timeout=1)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        proxy.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        return proxy

    try:
        yield make
    finally:
        for runner in runners:
            await runner.cleanup()


async def test_5xx_then_success_is_retried(moto_server: MotoServer, proxy_factory: Any) -> None:
    src = moto_server.source()
    src.write("d/f.bin", b"0123456789")
    proxy = await proxy_factory(500, "InternalError", 1)  # botocore waits up to 1 s, 2 s, ...
    async with S3Ufs(src.uri, {**src.options, "endpoint_url": proxy.url, **FAST}) as ufs:
        assert await ufs.read("d/f.bin", 2, 3) == b"234"
        assert await names(ufs, "d") == [("f.bin", False)]
        assert (await ufs.stat("d/f.bin")).size == 10
    assert proxy.hits["GET "] == 2 and proxy.hits["GET list"] == 2 and proxy.hits["HEAD "] == 2


async def test_a_file_is_read_through_one_presigned_url_for_a_while(
    moto_server: MotoServer, proxy_factory: Any
) -> None:
    """Signing a URL is the costliest Python of a block's read: the blocks of one object share
    one for PRESIGN_REUSE seconds; another object has its own; a later read, or one after the
    store refused the URL (read then through the client), is signed afresh."""
    src = moto_server.source()
    data = bytes(range(256)) * 64
    src.write("d/a.bin", data)
    src.write("d/b.bin", b"b" * 100)
    proxy = await proxy_factory(403, "AccessDenied", 0)
    now = [1000.0]

    async def block(path: str, offset: int) -> bytes:
        buf = bytearray(4096)
        got = await ufs.read_into(path, offset, memoryview(buf))
        return bytes(buf[:got])

    async with S3Ufs(src.uri, {**src.options, "endpoint_url": proxy.url, **FAST}) as ufs:
        ufs.clock = lambda: now[0]
        assert [await block("d/a.bin", o) for o in (0, 4096, 8192)] == [
            data[o : o + 4096] for o in (0, 4096, 8192)
        ]
        assert await block("d/b.bin", 0) == b"b" * 100
        await asyncio.sleep(1.1)  # a URL signed now would differ (its X-Amz-Date)
        assert await block("d/a.bin", 12288) == data[12288:]
        first, *same, other, kept = proxy.signatures
        assert same == [first, first] and other != first and kept == first

        now[0] += PRESIGN_REUSE
        assert await block("d/a.bin", 0) == data[:4096]
        assert proxy.signatures[-1] not in (first, other)

        proxy.fail = proxy.hits["GET "] + 1  # the store refuses the next GET
        signed = len(proxy.signatures)
        assert await block("d/a.bin", 4096) == data[4096:8192]
        assert len(proxy.signatures) == signed + 1 and proxy.hits["GET "] == proxy.fail + 1
        refused = proxy.signatures[-1]
        await asyncio.sleep(1.1)
        assert await block("d/a.bin", 8192) == data[8192:12288]
        assert proxy.signatures[-1] != refused


async def test_urls_after_the_first_are_signed_by_the_signer_as_the_client_signs_them(
    moto_server: MotoServer,
) -> None:
    """Past the first key, a presigned URL comes from the client's signer alone, not its whole
    pipeline (a third of the CPU): byte for byte the URL the pipeline makes for that key, odd
    characters too, and it reads the object."""
    src = moto_server.source()
    keys = ["d/a b.bin", "d/\u00fc#+%~*=&?.bin", "d/x/y z.bin"]
    for i, key in enumerate(keys):
        src.write(key, bytes([i + 1]) * 100)
    async with S3Ufs(src.uri, {**src.options, **FAST}) as ufs:
        client = await ufs._client()
        pipeline = client.generate_presigned_url
        calls = 0

        async def counted(*args: Any, **kwargs: Any) -> str:
            nonlocal calls
            calls += 1
            url: str = await pipeline(*args, **kwargs)
            return url

        client.generate_presigned_url = counted
        for i, key in enumerate(keys):
            buf = bytearray(100)
            assert await ufs.read_into(key, 0, memoryview(buf)) == 100
            assert buf == bytes([i + 1]) * 100
        assert 1 <= calls <= 3  # the first key's, again only across a second's boundary
        for key in keys[1:]:
            for _ in range(3):
                second = int(time.time())
                params = {"Bucket": BUCKET, "Key": ufs._key(key)}
                botocores = await pipeline("get_object", Params=params, ExpiresIn=PRESIGN_EXPIRES)
                ours = await ufs._sign(ufs._key(key))
                if int(time.time()) == second:
                    break
            assert ours == botocores
        assert calls <= 3


async def test_throttling_is_retried(moto_server: MotoServer, proxy_factory: Any) -> None:
    src = moto_server.source()
    src.write("f.bin", b"abc")
    proxy = await proxy_factory(503, "SlowDown", 1)
    async with S3Ufs(src.uri, {**src.options, "endpoint_url": proxy.url, **FAST}) as ufs:
        assert await ufs.read("f.bin", 0, 3) == b"abc"
    assert proxy.hits["GET "] == 2


async def test_persistent_5xx_is_bounded(moto_server: MotoServer, proxy_factory: Any) -> None:
    src = moto_server.source()
    proxy = await proxy_factory(500, "InternalError", 1_000)
    t0 = time.monotonic()
    opts = {**src.options, **FAST, "endpoint_url": proxy.url, "retries": "1"}
    async with S3Ufs(src.uri, opts) as ufs:
        with pytest.raises(errors.SourceUnavailable, match="InternalError"):
            await ufs.read("f.bin", 0, 3)
        with pytest.raises(errors.SourceUnavailable):
            await names(ufs)
    assert proxy.hits["GET "] == 2 and proxy.hits["GET list"] == 2
    assert time.monotonic() - t0 < 5


async def test_timeout_and_refused_connection(moto_server: MotoServer) -> None:
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.StreamResponse:
        await asyncio.wait_for(release.wait(), 30)
        return web.Response(status=500)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hang)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        endpoint = f"http://127.0.0.1:{runner.addresses[0][1]}"
        opts = {**moto_server.options, **FAST, "endpoint_url": endpoint, "timeout": "0.3"}
        t0 = time.monotonic()
        async with S3Ufs(f"s3://{BUCKET}/x", {**opts, "retries": "1"}) as ufs:
            with pytest.raises(errors.SourceUnavailable, match=r"[Tt]imeout"):
                await ufs.read("f", 0, 1)
        assert time.monotonic() - t0 < 5
    finally:
        release.set()
        await runner.cleanup()
    opts["endpoint_url"] = f"http://127.0.0.1:{free_port()}"
    async with S3Ufs(f"s3://{BUCKET}/x", {**opts, "retries": "1"}) as ufs:
        with pytest.raises(errors.SourceUnavailable):
            await ufs.stat("f")


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [(404, "NoSuchBucket", errors.NotFound), (403, "AccessDenied", errors.PermissionDenied)],
)
async def test_error_in_the_middle_of_a_listing(
    moto_server: MotoServer, proxy_factory: Any, status: int, code: str, error: type[Exception]
) -> None:
    proxy = await proxy_factory(status, code, later_pages=True)
    opts = {**moto_server.options, **FAST, "endpoint_url": proxy.url, "page_size": "400"}
    seen = []
    async with S3Ufs(f"s3://{BUCKET}/seeded", opts) as ufs:
        with pytest.raises(error):
            async with aclosing(ufs.list("big")) as entries:
                async for entry in entries:
                    seen.append(entry.name)
    assert len(seen) == 400  # the first page arrived, then the error, not a short listing


async def test_full_object_sha256_checksums_address_the_content(moto_server: MotoServer) -> None:
    """Objects put with a SHA-256 checksum in one part are versioned by their digest: the same
    content under two prefixes has the same block ids; without one, or in several parts (a
    checksum of checksums), the ETag stays the version."""
    import hashlib

    from fluidcache.common.blockid import block_id

    s3, one, two = moto_server.client, moto_server.source(), moto_server.source()
    data = bytes(range(256)) * 30_000  # 7.3 MiB
    for src in (one, two):
        s3.put_object(
            Bucket=BUCKET, Key=f"{src.prefix}/w.bin", Body=data, ChecksumAlgorithm="SHA256"
        )
    s3.put_object(Bucket=BUCKET, Key=f"{one.prefix}/plain.bin", Body=data)
    key = f"{one.prefix}/parts.bin"
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key, ChecksumAlgorithm="SHA256")
    parts = []
    for n, piece in enumerate((data[: 5 * 2**20], data[5 * 2**20 :]), 1):
        part = s3.upload_part(
            Bucket=BUCKET,
            Key=key,
            UploadId=upload["UploadId"],
            PartNumber=n,
            Body=piece,
            ChecksumAlgorithm="SHA256",
        )
        parts.append(
            {"PartNumber": n, "ETag": part["ETag"], "ChecksumSHA256": part["ChecksumSHA256"]}
        )
    s3.complete_multipart_upload(
        Bucket=BUCKET, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    async with one.ufs() as a, two.ufs() as b:
        va, vb = (await a.stat("w.bin")).version, (await b.stat("w.bin")).version
        assert va.startswith(digest + ' "') and vb.startswith(digest + ' "')
        plain, multi = (await a.stat("plain.bin")).version, (await a.stat("parts.bin")).version
        assert not plain.startswith("sha256:") and not multi.startswith("sha256:")
        bs = 4 * 2**20
        ids = {
            u: [block_id(u.uri("w.bin"), v, i, bs) for i in (0, 1)] for u, v in ((a, va), (b, vb))
        }
        assert ids[a] == ids[b]  # one set of blocks for both keys
        assert block_id(a.uri("plain.bin"), plain, 0, bs) not in ids[a]
        # A listing has no checksum values: the object is versioned at open (its HEAD).
        listed = {e.name: e.version async for e in a.list("")}
        assert listed["w.bin"] == "" and listed["plain.bin"] == plain
        assert listed["parts.bin"] == multi
        # The digest version reads (its ETag goes out as IfMatch) and detects a change.
        assert await a.read("w.bin", 5, 10) == data[5:15]
        chunks = [c async for c in a.read_stream("w.bin", 0, 1000, 1000, va)]
        assert b"".join(chunks) == data[:1000]
        s3.put_object(Bucket=BUCKET, Key=f"{one.prefix}/w.bin", Body=data[::-1])
        with pytest.raises(errors.SourceChanged):
            async with aclosing(a.read_stream("w.bin", 0, 1000, 1000, va)) as stream:
                async for _ in stream:
                    pass


async def test_a_worker_makes_the_client_when_it_learns_the_source(moto_server: MotoServer) -> None:
    """Making the client (botocore's service model and endpoint rules, ~75 ms of CPU) is done
    when the worker learns the mount, not by the first read of the bucket."""
    src = moto_server.source()
    src.write("d/f.bin", b"abc")
    sources = SourceMap()
    try:
        await sources.update([MountInfo("default", "s3", src.uri, src.options)])
        ufs, path = sources.resolve(src.uri + "/d/f.bin")
        assert isinstance(ufs, S3Ufs) and ufs._client_obj is not None
        assert await ufs.read(path, 0, 3) == b"abc"
    finally:
        await sources.close()


@pytest.mark.parametrize("endpoint", ["not a url", "http://[::1", "ftp://127.0.0.1:9"])
def test_an_endpoint_that_is_not_an_http_url_is_refused_naming_the_option(endpoint: str) -> None:
    with pytest.raises(errors.ConfigError, match="endpoint_url"):
        S3Ufs(f"s3://{BUCKET}/x", {"endpoint_url": endpoint})
