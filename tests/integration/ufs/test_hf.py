"""What the ``hf://`` adapter does beyond the contract suite, on olah (and nginx in front of it
redirecting resolve paths to files it serves with Range, as the Hub does with its CDN)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from pathlib import Path

import pytest

from fluidcache.common import errors
from fluidcache.ufs import UnderFileSystem, create_ufs
from tests.hub import HubFront, HubRepo, Olah
from tests.integration.ufs.conftest import OlahServer

MIB = 1 << 20
BIG = random.Random(5).randbytes(3 * MIB + 12_345)
TOKEN = "hf_fluidcacheSECRETtoken0123456789"


@pytest.fixture(scope="module")
def front(olah_server: OlahServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubFront]:
    front = HubFront(olah_server.olah, tmp_path_factory.mktemp("front"))
    try:
        yield front
    finally:
        front.stop()


@pytest.fixture
def repo(olah_server: OlahServer) -> HubRepo:
    repo = olah_server.olah.repo()
    repo.write("weights/big.safetensors", BIG)
    repo.write("config.json", b'{"a": 1}\n')
    repo.commit()
    return repo


@pytest.fixture
async def adapters() -> AsyncIterator[list[UnderFileSystem]]:
    made: list[UnderFileSystem] = []
    try:
        yield made
    finally:
        for ufs in made:
            await ufs.close()


def hf(made: list[UnderFileSystem], uri: str, endpoint: str, **options: str) -> UnderFileSystem:
    ufs = create_ufs(uri, {"endpoint": endpoint, "retries": "1", **options})
    made.append(ufs)
    return ufs


async def behind_front(
    repo: HubRepo, front: HubFront, adapters: list[UnderFileSystem]
) -> tuple[UnderFileSystem, str]:
    """An adapter reading ``repo`` through ``front``, its commit checked out for the redirects."""
    ufs = hf(adapters, repo.uri(), front.endpoint)
    await ufs.stat("")
    commit = repo.git("rev-parse", "HEAD")
    front.publish(repo, commit)
    return ufs, commit


async def test_versions_are_content_digests(
    repo: HubRepo, olah_server: OlahServer, adapters: list[UnderFileSystem]
) -> None:
    import hashlib

    ufs = hf(adapters, repo.uri(), olah_server.olah.endpoint)
    big = await ufs.stat("weights/big.safetensors")
    assert big.version == "sha256:" + hashlib.sha256(BIG).hexdigest()
    blob = repo.git("rev-parse", "HEAD:config.json")
    assert (await ufs.stat("config.json")).version == f"git-blob:{blob}"


async def test_a_server_ignoring_range_serves_each_file_once(
    repo: HubRepo, olah_server: OlahServer, adapters: list[UnderFileSystem]
) -> None:
    olah = olah_server.olah
    ufs = hf(adapters, repo.uri(), olah.endpoint)
    name = f"{repo.repo_id}/resolve/"
    before = olah.resolve_gets(name)
    offsets = range(0, len(BIG), MIB)
    got = await asyncio.gather(*(ufs.read("weights/big.safetensors", o, MIB) for o in offsets))
    assert b"".join(got) == BIG
    assert await ufs.read("weights/big.safetensors", 5, 10) == BIG[5:15]
    await asyncio.sleep(0.2)  # olah logs after answering
    assert olah.resolve_gets(name) - before == 1


async def test_ranged_reads_follow_redirects_and_reuse_the_target(
    repo: HubRepo, front: HubFront, adapters: list[UnderFileSystem]
) -> None:
    ufs, commit = await behind_front(repo, front, adapters)
    for offset in range(0, len(BIG), MIB):
        assert await ufs.read("weights/big.safetensors", offset, MIB) == BIG[offset : offset + MIB]
    await asyncio.sleep(0.2)
    resolves = front.requests(f"{repo.repo_id}/resolve/{commit}/weights/big")
    served = front.requests(f"/cdn/{repo.repo_id}/{commit}/weights/big")
    assert [status for _, status in resolves] == [302]  # the target is reused for the rest
    assert [status for _, status in served] == [206] * 4  # each block one ranged GET


async def test_blocks_are_received_into_buffers_once_the_target_is_known(
    repo: HubRepo, front: HubFront, adapters: list[UnderFileSystem]
) -> None:
    ufs, commit = await behind_front(repo, front, adapters)
    assert ufs.reads_into
    assert await ufs.read("weights/big.safetensors", 0, MIB) == BIG[:MIB]  # learns the target
    version = (await ufs.stat("weights/big.safetensors")).version
    bufs = [memoryview(bytearray(MIB)) for _ in range(1, 4)]
    got = await asyncio.gather(
        *(
            ufs.read_into("weights/big.safetensors", (i + 1) * MIB, buf, version)
            for i, buf in enumerate(bufs)
        )
    )
    assert got == [MIB, MIB, len(BIG) - 3 * MIB]
    assert b"".join(bytes(buf[:n]) for buf, n in zip(bufs, got, strict=True)) == BIG[MIB:]
    await asyncio.sleep(0.2)
    resolves = front.requests(f"{repo.repo_id}/resolve/{commit}/weights/big")
    served = front.requests(f"/cdn/{repo.repo_id}/{commit}/weights/big")
    assert [status for _, status in resolves] == [302]
    assert [status for _, status in served] == [206] * 4
    with pytest.raises(errors.SourceChanged):
        await ufs.read_into("weights/big.safetensors", 0, bufs[0], "sha256:" + "0" * 64)


async def test_the_snapshot_is_one_commit(
    repo: HubRepo, olah_server: OlahServer, adapters: list[UnderFileSystem]
) -> None:
    endpoint = olah_server.olah.endpoint
    old = repo.git("rev-parse", "HEAD")
    pinned = hf(adapters, repo.uri("main"), endpoint)
    assert (await pinned.stat("config.json")).size == 9
    uri = pinned.uri("config.json")
    assert uri == f"hf://{repo.repo_id}@{old}/config.json"
    repo.write("config.json", b'{"a": 2, "b": 3}\n')
    repo.write("added.txt", b"new")
    new = repo.commit()

    # The adapter keeps serving the commit it resolved; a new one sees the new commit.
    assert await pinned.read("config.json", 0, 100) == b'{"a": 1}\n'
    with pytest.raises(errors.NotFound):
        await pinned.stat("added.txt")
    fresh = hf(adapters, repo.uri(), endpoint)
    assert await fresh.read("config.json", 0, 100) == b'{"a": 2, "b": 3}\n'
    assert fresh.uri("added.txt").endswith(f"@{new}/added.txt")

    # A worker's adapter (at main) reading a URI of the old commit reads the old commit.
    reader, path = fresh.for_uri(uri)
    assert path == "config.json" and reader is not fresh
    assert await reader.read(path, 0, 100) == b'{"a": 1}\n'
    assert fresh.for_uri(fresh.uri("config.json"))[0] is fresh

    # With revision_ttl the branch is resolved again; unchanged files keep their version.
    moving = hf(adapters, repo.uri(), endpoint, revision_ttl="0")
    weights = await moving.stat("weights/big.safetensors")
    repo.write("config.json", b"{}\n")
    repo.commit()
    assert (await moving.stat("config.json")).size == 3
    assert await moving.stat("weights/big.safetensors") == weights


async def test_datasets_subpaths_and_revisions(
    olah_server: OlahServer, adapters: list[UnderFileSystem]
) -> None:
    olah = olah_server.olah
    data = olah.repo("fc-test/sub-data", "dataset")
    data.write("train/a.jsonl", b'{"x": 1}\n')
    data.write("train/more/b.jsonl", b'{"x": 2}\n')
    data.write("README.md", b"# d\n")
    first = data.commit()
    data.git("tag", "v1.0")
    data.remove("train/a.jsonl")
    data.commit()
    ufs = hf(adapters, "hf://datasets/fc-test/sub-data@v1.0/train", olah.endpoint)
    async with aclosing(ufs.list("")) as entries:  # type: ignore[type-var]
        names = sorted([(e.name, e.is_dir) async for e in entries])
    assert names == [("a.jsonl", False), ("more", True)]
    assert ufs.uri("more/b.jsonl") == f"hf://datasets/fc-test/sub-data@{first}/train/more/b.jsonl"
    assert ufs.relpath(ufs.uri("more/b.jsonl")) == "more/b.jsonl"
    with pytest.raises(errors.InvalidArgument):
        ufs.relpath("hf://fc-test/sub-data@v1.0/train/a.jsonl")  # the model, not the dataset
    assert await ufs.read("more/b.jsonl", 0, 100) == b'{"x": 2}\n'
    with pytest.raises(errors.NotFound):
        await hf(adapters, "hf://datasets/fc-test/sub-data@nope", olah.endpoint).stat("")
    with pytest.raises(errors.NotFound):
        await hf(adapters, "hf://datasets/fc-test/sub-data/missing", olah.endpoint).stat("")


async def test_a_refused_repository_says_how_to_pass_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, adapters: list[UnderFileSystem]
) -> None:
    olah = Olah(tmp_path / "olah", deny=("fc-gated/*",))
    try:
        gated = olah.repo("fc-gated/model")
        gated.write("w.bin", b"w")
        gated.commit()
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        ufs = hf(adapters, "hf://fc-gated/model", olah.endpoint)
        assert TOKEN not in repr(ufs)
        with pytest.raises(errors.PermissionDenied) as caught:
            await ufs.stat("")
        message = caught.value.message
        assert "hf://fc-gated/model" in message and "HF_TOKEN" in message
        assert "credentials_file" in message and TOKEN not in message
        monkeypatch.delenv("HF_TOKEN")
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        other = hf(adapters, "hf://fc-gated/model", olah.endpoint, credentials_file=str(token_file))
        with pytest.raises(errors.PermissionDenied) as caught:
            await other.read("w.bin", 0, 1)
        assert TOKEN not in caught.value.message
    finally:
        olah.stop()
    assert TOKEN not in olah.proc.output


@pytest.mark.parametrize(
    "uri",
    ["hf://", "hf://org", "hf://datasets/org", "hf://org/@main", "hf://org/repo?x=1"],
)
def test_malformed_uris_are_refused(uri: str) -> None:
    with pytest.raises(errors.ConfigError):
        create_ufs(uri)
