"""The client library against a real cluster: async and blocking APIs, fsspec, data libraries."""

from __future__ import annotations

import asyncio
import io
import os
import random
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from safetensors.numpy import load as st_load
from safetensors.numpy import save_file as st_save

from fluidcache.client import AsyncClient, Client
from fluidcache.common import errors
from tests.cluster import Cluster, cluster


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("client-src")
    rng = random.Random(9)
    (root / "blob.bin").write_bytes(rng.randbytes(5 * 2**20 + 99))
    (root / "dir").mkdir()
    for i in range(2100):
        (root / "dir" / f"e{i:04d}").write_bytes(b"x" * (i % 7))
    frame = pd.DataFrame({"a": range(5000), "b": [f"row {i}" for i in range(5000)]})
    frame.to_csv(root / "table.csv", index=False)
    pq.write_table(pa.Table.from_pandas(frame), root / "table.parquet")
    weights = {"w1": np.arange(300_000, dtype=np.float32), "w2": np.ones((64, 64), np.int64)}
    st_save(weights, str(root / "model.safetensors"))
    return root


@pytest.fixture(scope="module")
def fc(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Iterator[Cluster]:
    with cluster(tmp_path_factory.mktemp("client-cluster")) as c:
        c.start_master(f"local://{data}", extra=("--block-size", "1Mi"))
        c.start_worker("w1")
        yield c


async def test_async_api(fc: Cluster, data: Path) -> None:
    blob = (data / "blob.bin").read_bytes()
    async with AsyncClient(fc.master_url, fc.token) as client:
        info = await client.stat("/blob.bin")
        assert (info.size, info.is_dir) == (len(blob), False)
        names = [e.path for e in await client.ls("/dir")]
        assert names == sorted(f"/dir/e{i:04d}" for i in range(2100))
        page = await client.list_page((await client.stat("/dir")).ino, limit=100)
        assert len(page.entries) == 100 and page.cursor == "e0099"
        walked = {e.path async for e in client.walk("/")}
        assert "/blob.bin" in walked and "/dir/e2099" in walked

        f = await client.open("/blob.bin")
        assert await f.read(10) == blob[:10]
        assert f.seek(2**20 - 5) == 2**20 - 5
        assert await f.read(10) == blob[2**20 - 5 : 2**20 + 5]
        assert await f.pread(3 * 2**20 + 1, 2**20) == blob[3 * 2**20 + 1 : 4 * 2**20 + 1]
        buf = bytearray(1000)
        f.seek(-500, os.SEEK_END)
        assert await f.readinto(buf) == 500 and bytes(buf[:500]) == blob[-500:]
        f.seek(0)
        assert await f.read() == blob

        with pytest.raises(errors.NotFound):
            await client.stat("/nope")
        with pytest.raises(errors.IsADirectory):
            await client.open("/dir")
        with pytest.raises(errors.NotADirectory):
            await client.ls("/blob.bin")
    with pytest.raises(errors.InvalidArgument, match="closed"):
        await client.stat("/blob.bin")


async def test_warm_reads_short_circuit(fc: Cluster, data: Path) -> None:
    blob = (data / "blob.bin").read_bytes()
    async with AsyncClient(fc.master_url, fc.token) as client:
        f = await client.open("/blob.bin")
        assert await f.read() == blob
        for _ in range(50):  # new locations reach the master with the next heartbeat
            if await client.cached_fraction(f.info) == 1.0:
                break
            await asyncio.sleep(0.1)
    before = await fc.metric("w1", "fluidcache_served_bytes_total")
    async with AsyncClient(fc.master_url, fc.token, meta_ttl=0.0) as client:
        f = await client.open("/blob.bin")
        assert await f.read() == blob
    after = await fc.metric("w1", "fluidcache_served_bytes_total")
    assert after == before, "warm reads went over the network"


def test_blocking_client(fc: Cluster, data: Path) -> None:
    blob = (data / "blob.bin").read_bytes()
    with Client(fc.master_url, fc.token) as client:
        assert client.stat("/blob.bin").size == len(blob)
        assert len(client.ls("/dir")) == 2100
        assert client.cat("/blob.bin", 100, 200) == blob[100:200]
        f = client.open("/blob.bin")
        f.seek(12345)
        assert f.read(100) == blob[12345:12445]
        assert io.BufferedReader(client.open("/blob.bin")).read() == blob
        assert sum(1 for _ in client.walk("/dir")) == 2100


@pytest.fixture
def fs(fc: Cluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[fsspec.AbstractFileSystem]:
    monkeypatch.setenv("FLUIDCACHE_TOKEN_FILE", str(fc.token_file))
    filesystem = fsspec.filesystem("fluidcache", master=fc.master_url, skip_instance_cache=True)
    try:
        yield filesystem
    finally:
        filesystem.close()


def test_fsspec_read_side(fs: fsspec.AbstractFileSystem, data: Path) -> None:
    blob = (data / "blob.bin").read_bytes()
    info = fs.info("fluidcache://default/blob.bin")
    assert info["size"] == len(blob) and info["type"] == "file"
    assert fs.info("default/dir")["type"] == "directory"
    listing = fs.ls("default/dir", detail=True)
    assert len(listing) == 2100 and listing[0]["name"] == "default/dir/e0000"
    assert fs.cat_file("default/blob.bin", start=10, end=20) == blob[10:20]
    assert fs.cat_file("default/blob.bin", start=-10) == blob[-10:]
    with fs.open("default/blob.bin", "rb") as f:
        f.seek(3 * 2**20)
        assert f.read(1000) == blob[3 * 2**20 : 3 * 2**20 + 1000]
    assert fs.exists("default/dir/e0001") and not fs.exists("default/nope")
    with pytest.raises(FileNotFoundError):
        fs.info("default/nope")
    with pytest.raises(PermissionError):
        fs.open("default/new", "wb")


def test_data_libraries_through_fsspec(
    fs: fsspec.AbstractFileSystem, fc: Cluster, data: Path
) -> None:
    opts = {"master": fc.master_url}
    want = pd.read_csv(data / "table.csv")
    pd.testing.assert_frame_equal(
        pd.read_csv("fluidcache://default/table.csv", storage_options=opts), want
    )
    with fs.open("default/table.parquet") as f:
        assert pq.read_table(f).equals(pq.read_table(data / "table.parquet"))
    with fsspec.open("fluidcache://default/model.safetensors", "rb", **opts) as f:
        got = st_load(f.read())
    want_w = st_load((data / "model.safetensors").read_bytes())
    assert got.keys() == want_w.keys()
    assert all(np.array_equal(got[k], want_w[k]) for k in got)
