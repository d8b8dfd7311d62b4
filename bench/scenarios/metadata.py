"""Scenario 3: metadata — list and stat many files in directories; one very large directory.

list: every directory's entries (``os.scandir`` on a mount, index pages or ListObjectsV2
directly); stat: every file's attributes after that (``os.stat`` one by one on a mount, like
``ls -l``; over HTTP directly, a HEAD per file, 16 at a time — over S3 the listing already
carries size, ETag and time, so there is no separate direct stat). cold: a fresh cluster or
peer mount (the first listing of a source directory reaches the source); warm: a second pass
with the kernel's dentry and inode caches dropped; hot (mounts only): a third pass at once, the
kernel's caches warm. "list + stat" is both, one after the other (files per second of the two).

The big directory is on the HTTP source only, and is listed in the first repetition only. The
HTTP adapter takes exact sizes from nginx's index pages (no HEAD per entry; a file's version is
checked when it is opened).
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import aiohttp

from bench import readers as rd
from bench.context import Bench
from bench.results import Result
from fluidcache.client import AsyncClient

NAME = "metadata"
TITLE = "3. Metadata: list and stat"
METRIC = "entries/s"
HREF = re.compile(r'<a href="([^"?]+)"')
STAT_CONCURRENCY = 16


def run(b: Bench) -> Result:
    s = b.sizes
    r = Result(NAME, TITLE)
    r.params = {
        "files": s.meta_files,
        "files_per_dir": s.meta_per_dir,
        "big_dir_entries": s.meta_big_dir,
        "direct_stat_concurrency": STAT_CONCURRENCY,
        "mount_stat": "one at a time (like ls -l)",
        "repetitions": b.reps,
    }
    systems = ["http-direct", "fc-fuse-http", "fc-client-http"]
    systems += b.s3_systems(r, "s3-direct", "fc-fuse-s3") + b.peer_systems(r)
    client_files = b.view("meta/files", "client-meta")
    files_n, big_n = s.meta_files, s.meta_big_dir

    def rate(n: int, want: int, seconds: float, what: str) -> float:
        rd.expect(n, want, f"{NAME} {what}")  # entries counted, not bytes
        return n / seconds

    def mount_passes(system: str, root: Path, big: Path | None) -> None:
        for case in ("cold", "warm", "hot"):
            if case != "hot":
                rd.drop_caches()
            (_dirs, names), t = rd.timed(lambda: _list_tree(root))
            t_list = t
            r.add(
                f"list {files_n} files, {case}",
                system,
                METRIC,
                rate(len(names), files_n, t, system),
                vs_case=f"list {files_n} files",
            )
            n, t = rd.timed(lambda names=names: _stat_all(names))
            r.add(
                f"stat {files_n} files, {case}",
                system,
                METRIC,
                rate(n, files_n, t, system),
                vs_case=f"stat {files_n} files",
            )
            r.add(
                f"list + stat {files_n} files, {case}",
                system,
                METRIC,
                rate(n, files_n, t + t_list, system),
                vs_case=f"list + stat {files_n} files",
            )
            if big is not None and case != "hot":
                n, t = rd.timed(lambda: rd.list_dir(big))
                r.add(
                    f"list dir of {big_n}, {case}",
                    system,
                    METRIC,
                    rate(n, big_n, t, system),
                    vs_case=f"list dir of {big_n}",
                )

    for rep in range(b.reps):
        b.log(f" {NAME}: repetition {rep + 1}/{b.reps}")
        with b.cluster(f"{NAME}-{rep}", mem_quota_mib=64) as c:
            assert c.mountpoint is not None
            for system in b.order(systems, rep):
                if system == "http-direct":
                    rd.drop_caches()
                    urls, t = asyncio.run(rd.atimed(_http_list_tree(b.http("meta/files/"))))
                    r.add(
                        f"list {files_n} files", system, METRIC, rate(len(urls), files_n, t, system)
                    )
                    n, t2 = asyncio.run(rd.atimed(_http_head_all(urls)))
                    r.add(f"stat {files_n} files", system, METRIC, rate(n, files_n, t2, system))
                    both = rate(n, files_n, t + t2, system)
                    r.add(f"list + stat {files_n} files", system, METRIC, both)
                    if rep == 0:
                        names, t = asyncio.run(rd.atimed(_http_list(b.http("meta/big/"))))
                        rt = rate(len(names), big_n, t, system)
                        r.add(f"list dir of {big_n}", system, METRIC, rt)
                elif system == "s3-direct":
                    assert b.s3 is not None
                    keys, t = asyncio.run(rd.atimed(_s3_list(b, "meta/files/")))
                    r.add(
                        f"list {files_n} files", system, METRIC, rate(len(keys), files_n, t, system)
                    )
                elif system == "fc-fuse-http":
                    big = c.mountpoint / "web/meta/big" if rep == 0 else None
                    mount_passes(system, c.mountpoint / "web/meta/files", big)
                elif system == "fc-fuse-s3":
                    mount_passes(system, c.mountpoint / "s3/meta/files", None)
                elif system == "fc-client-http":
                    _client_passes(r, c.master_url, c.token, f"/web/{client_files}", files_n)
                else:
                    with b.peer(system) as mnt:
                        mount_passes(system, mnt / "meta/files", None)
    return r


def _list_tree(root: Path) -> tuple[int, list[str]]:
    """Every file under ``root`` by listing directories only: (directories, file paths)."""
    dirs, files = 0, []
    stack = [str(root)]
    while stack:
        d = stack.pop()
        dirs += 1
        with os.scandir(d) as it:
            for e in it:
                (stack if e.is_dir(follow_symlinks=False) else files).append(e.path)
    return dirs, files


def _stat_all(paths: list[str]) -> int:
    for p in paths:
        os.stat(p)
    return len(paths)


async def _http_list(url: str, session: aiohttp.ClientSession | None = None) -> list[str]:
    """Entry names of an index page (directories end with ``/``)."""
    if session is None:
        async with aiohttp.ClientSession() as s:
            return await _http_list(url, s)
    async with session.get(url) as resp:
        resp.raise_for_status()
        page = await resp.text()
    return [h for h in HREF.findall(page) if h not in ("../", "./", "/") and not h.startswith("?")]


async def _http_list_tree(url: str) -> list[str]:
    """URLs of every file under ``url``, listing the directories (8 pages at a time)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8)) as s:
        files: list[str] = []
        level = [url]
        while level:
            pages = await asyncio.gather(*(_http_list(u, s) for u in level))
            nxt = []
            for u, names in zip(level, pages, strict=True):
                for n in names:
                    (nxt if n.endswith("/") else files).append(u + n)
            level = nxt
        return files


async def _http_head_all(urls: list[str]) -> int:
    async with rd.http_session(STAT_CONCURRENCY) as s:

        async def head(u: str) -> int:
            async with s.head(u) as resp:
                resp.raise_for_status()
                return 1

        return await rd.gather_bounded(urls, STAT_CONCURRENCY, head)


async def _s3_list(b: Bench, prefix: str) -> list[str]:
    assert b.s3 is not None
    keys: list[str] = []
    async with rd.s3_client(b.s3, 1) as c:
        async for page in c.get_paginator("list_objects_v2").paginate(
            Bucket=b.s3.bucket, Prefix=prefix
        ):
            keys += [o["Key"] for o in page.get("Contents", ()) if not o["Key"].endswith("/")]
    return keys


def _client_passes(r: Result, master: str, token: str, root: str, files_n: int) -> None:
    """List the tree through the client library, then stat every file (from its cache or the
    master); cold then warm, each with a new client."""

    async def go() -> None:
        for case in ("cold", "warm"):
            async with AsyncClient(master, token, dataset="default") as fc:
                paths, t = await rd.atimed(_client_walk(fc, root))
                rd.expect(len(paths), files_n, f"{NAME} client list")
                r.add(
                    f"list {files_n} files, {case}",
                    "fc-client-http",
                    METRIC,
                    len(paths) / t,
                    vs_case=f"list {files_n} files",
                )
                n, t = await rd.atimed(_client_stat(fc, paths))
                r.add(
                    f"stat {files_n} files, {case}",
                    "fc-client-http",
                    METRIC,
                    n / t,
                    vs_case=f"stat {files_n} files",
                )

    asyncio.run(go())


async def _client_walk(fc: AsyncClient, root: str) -> list[str]:
    return [e.path async for e in fc.walk(root)]


async def _client_stat(fc: AsyncClient, paths: list[str]) -> int:
    for p in paths:
        await fc.stat(p)
    return len(paths)
