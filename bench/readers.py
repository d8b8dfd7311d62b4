"""How the benchmarks read: files (FUSE mounts), HTTP and S3 directly, the fluidcache client.

Every reader reads whole files in ``CHUNK`` pieces and returns the bytes it got, which the
scenario checks against what it expected; N concurrent readers share one list of files (threads
for file systems, tasks for the async clients).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from bench.config import MiB
from bench.s3 import S3Info

CHUNK = MiB
T = TypeVar("T")


class ShortRead(Exception):
    """A reader got fewer bytes than the data set holds."""


def drop_caches() -> bool:
    """Write back and drop the kernel's page, dentry and inode caches (needs root)."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


async def atimed(aw: Awaitable[T]) -> tuple[T, float]:
    start = time.perf_counter()
    out = await aw
    return out, time.perf_counter() - start


def expect(got: int, want: int, what: str) -> None:
    if got != want:
        raise ShortRead(f"{what}: read {got} bytes, expected {want}")


# ---- files (mounts) ---------------------------------------------------------------------


_buffers = threading.local()


def _buffer() -> memoryview:
    """This thread's read buffer, made once. A fresh one a file (a megabyte, zeroed) cost the
    readers of a cold epoch of 2,000 files of 128 KiB through a mount 0.42-0.44 CPU-s, against
    0.24-0.27 with one buffer a thread (``perf``: ``memset`` from ``bytearray`` in the readers'
    threads, 4 % of all samples), in the cores the mount and its workers share; reading
    directly (aiohttp) never paid it."""
    view: memoryview | None = getattr(_buffers, "view", None)
    if view is None:
        view = _buffers.view = memoryview(bytearray(CHUNK))
    return view


def read_file(path: Path | str, limit: int | None = None) -> int:
    """Read ``path`` sequentially (its first ``limit`` bytes when given); the bytes read."""
    view = _buffer()
    total = 0
    with open(path, "rb", buffering=0) as f:
        while (limit is None or total < limit) and (n := f.readinto(view)):
            total += n
    return total if limit is None else min(total, limit)


def _pool(items: Iterable[T], workers: int, fn: Callable[[T], int]) -> int:
    """Run ``fn`` over ``items`` with ``workers`` threads taking the next item as they go."""
    q: queue.SimpleQueue[T] = queue.SimpleQueue()
    for item in items:
        q.put(item)
    totals = [0] * workers
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            while True:
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    return
                totals[i] += fn(item)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return sum(totals)


def read_files(paths: list[Path], readers: int = 1) -> int:
    """Read every file with ``readers`` threads; total bytes."""
    if readers == 1:
        return sum(read_file(p) for p in paths)
    return _pool(paths, readers, read_file)


def walk_stat(root: Path) -> tuple[int, int]:
    """List every directory under ``root`` and stat every entry (like ``ls -lR``): (dirs, files)."""
    dirs, files = 0, 0
    stack = [root]
    while stack:
        d = stack.pop()
        dirs += 1
        with os.scandir(d) as it:
            entries = list(it)
        for e in entries:
            st = os.stat(e.path, follow_symlinks=False)
            if (st.st_mode & 0o170000) == 0o040000:
                stack.append(Path(e.path))
            else:
                files += 1
    return dirs, files


def list_dir(path: Path) -> int:
    """Names in a directory (``ls -f``)."""
    with os.scandir(path) as it:
        return sum(1 for _ in it)


def load_safetensors(paths: list[Path]) -> int:
    """Load shards with safetensors (mmap, as ``from_pretrained`` does); bytes of tensors."""
    from safetensors.numpy import load_file

    total = 0
    for p in paths:
        tensors = load_file(p)
        total += sum(t.nbytes for t in tensors.values())
    return total


# ---- HTTP -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def http_session(readers: int) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=max(readers, 1), limit_per_host=max(readers, 1))
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as s:
        yield s


async def http_get(session: aiohttp.ClientSession, url: str) -> int:
    total = 0
    async with session.get(url) as r:
        r.raise_for_status()
        async for chunk in r.content.iter_chunked(CHUNK):
            total += len(chunk)
    return total


async def gather_bounded(items: list[T], workers: int, fn: Callable[[T], Awaitable[int]]) -> int:
    """``fn`` over ``items`` with at most ``workers`` at a time; the sum of the results."""
    it = iter(items)
    total = 0

    async def run() -> None:
        nonlocal total
        for item in it:
            n = await fn(item)  # not "total += await ...": that reads total before awaiting
            total += n

    await asyncio.gather(*(run() for _ in range(max(1, workers))))
    return total


async def http_read(urls: list[str], readers: int = 1) -> int:
    async with http_session(readers) as s:
        return await gather_bounded(urls, readers, lambda u: http_get(s, u))


async def http_get_range(session: aiohttp.ClientSession, url: str, start: int, end: int) -> int:
    """Bytes ``[start, end)`` of ``url`` with one ranged GET."""
    total = 0
    async with session.get(url, headers={"Range": f"bytes={start}-{end - 1}"}) as r:
        r.raise_for_status()
        async for chunk in r.content.iter_chunked(CHUNK):
            total += len(chunk)
    return total


def ranges(size: int, streams: int, limit: int | None = None) -> list[tuple[int, int]]:
    """``[0, limit or size)`` cut into ``streams`` equal ranges (at most 64 MiB, at least 1 MiB
    each): what a careful reader without a cache asks for at once."""
    end = size if limit is None else min(size, limit)
    piece = min(64 * MiB, max(MiB, -(-end // streams)))
    return [(a, min(a + piece, end)) for a in range(0, end, piece)]


async def http_parallel(urls: list[tuple[str, int]], streams: int = 16) -> int:
    """Each ``(url, size)`` read with ``streams`` concurrent ranged GETs (file after file):
    the "direct, parallel" baseline, the best a careful user can do without a cache."""
    async with http_session(streams) as s:
        total = 0
        for url, size in urls:

            def get(p: tuple[int, int], url: str = url) -> Awaitable[int]:
                return http_get_range(s, url, *p)

            total += await gather_bounded(ranges(size, streams), streams, get)
        return total


# ---- S3 ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def s3_client(s3: S3Info, readers: int) -> AsyncIterator[Any]:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    config = AioConfig(
        max_pool_connections=max(readers, 10),
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": 3, "mode": "standard"},
    )
    session = get_session()
    async with session.create_client(
        "s3",
        endpoint_url=s3.endpoint,
        region_name=s3.region,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
        config=config,
    ) as client:
        yield client


async def s3_get(client: Any, bucket: str, key: str) -> int:
    resp = await client.get_object(Bucket=bucket, Key=key)
    total = 0
    async with resp["Body"] as body:
        while chunk := await body.read(CHUNK):
            total += len(chunk)
    return total


async def s3_read(s3: S3Info, keys: list[str], readers: int = 1) -> int:
    async with s3_client(s3, readers) as c:
        return await gather_bounded(keys, readers, lambda k: s3_get(c, s3.bucket, k))


async def s3_get_bytes(client: Any, bucket: str, key: str) -> bytes:
    resp = await client.get_object(Bucket=bucket, Key=key)
    async with resp["Body"] as body:
        data: bytes = await body.read()
        return data


# ---- fluidcache client ------------------------------------------------------------------


async def fc_get(client: Any, path: str) -> int:
    f = await client.open(path)
    total = 0
    while data := await f.read(CHUNK):
        total += len(data)
    await f.close()
    return total


async def fc_read(client: Any, paths: list[str], readers: int = 1) -> int:
    return await gather_bounded(paths, readers, lambda p: fc_get(client, p))


def chunks(items: list[T], n: int) -> Iterator[list[T]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
