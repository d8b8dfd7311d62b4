"""``hf://`` end to end: ``fluidcache up`` over olah (a real Hub-compatible server, offline,
serving git repositories made here), read through the FUSE mount and the client, compared with
huggingface_hub's own ``snapshot_download`` through the same endpoint.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from huggingface_hub import snapshot_download
from safetensors.numpy import save

from tests.e2e.test_up import client_digests
from tests.hub import HubRepo, Olah
from tests.procs import Proc, fluidcache, running
from tests.sources import digests

pytestmark = pytest.mark.timeout(240)

TOKEN = "hf_fluidcacheSECRETtoken0123456789"  # must never show in a log, report or error
MODEL = "fc-test/tiny-model"
DATA = "fc-test/tiny-data"
GATED = "fc-gated/secret"
SHARDS = [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
BLOCK = 1 << 20
SAMPLE = Path(__file__).resolve().parents[2] / "k8s/samples/hf-model.yaml"


def shard(seed: int, rows: int) -> bytes:
    rng = np.random.default_rng(seed)
    tensors = {f"layer{seed}.{k}.weight": rng.standard_normal((rows, 256)) for k in range(3)}
    return save({k: v.astype(np.float16) for k, v in tensors.items()})


def make_model(repo: HubRepo) -> tuple[str, str]:
    """A 3-shard safetensors model with its index; tag v1, then main changes shard 2 only."""
    shards = {name: shard(i, 1000 + 300 * i) for i, name in enumerate(SHARDS)}
    index = {"metadata": {}, "weight_map": {}}
    for name in SHARDS:
        repo.write(name, shards[name])
    for i, name in enumerate(SHARDS):
        for k in range(3):
            index["weight_map"][f"layer{i}.{k}.weight"] = name
    repo.write("model.safetensors.index.json", json.dumps(index, indent=1).encode())
    repo.write("config.json", b'{"architectures": ["Tiny"], "hidden_size": 256}\n')
    repo.write("README.md", b"# tiny model\n")
    v1 = repo.commit("v1")
    repo.git("tag", "v1")
    repo.write(SHARDS[1], shard(7, 1300))
    v2 = repo.commit("shard 2 retrained")
    return v1, v2


def make_dataset(repo: HubRepo) -> None:
    frame = pd.DataFrame({"id": range(5000), "text": [f"row {i}" * 3 for i in range(5000)]})
    buf = io.BytesIO()
    frame.to_parquet(buf)
    repo.write("data/train-00000-of-00001.parquet", buf.getvalue())
    repo.write("data/test.jsonl", "".join(f'{{"id": {i}}}\n' for i in range(2000)).encode())
    repo.write("README.md", b"---\nlicense: mit\n---\n# tiny data\n")
    repo.commit("data")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Olah, str, str]]:
    olah = Olah(tmp_path_factory.mktemp("olah"), deny=(GATED,))
    try:
        v1, v2 = make_model(olah.repo(MODEL))
        make_dataset(olah.repo(DATA, "dataset"))
        gated = olah.repo(GATED)
        gated.write("weights.bin", b"x" * 2000)
        gated.commit()
        yield olah, v1, v2
    finally:
        olah.stop()


def hub_env(tmp: Path, endpoint: str) -> dict[str, str]:
    return {"HF_ENDPOINT": endpoint, "HF_TOKEN": TOKEN, "HF_HOME": str(tmp / "hf-home")}


def up_hub(tmp: Path, endpoint: str, sources: list[str], workers: int) -> Proc:
    """``fluidcache up SOURCES`` mounted at ``tmp/mnt``, data in ``tmp/cluster``, 1 MiB blocks."""
    (tmp / "mnt").mkdir()
    return fluidcache(
        "up",
        *sources,
        *("--mountpoint", str(tmp / "mnt"), "--workers", str(workers), "--block-size", "1Mi"),
        *("--data-dir", str(tmp / "cluster")),
        env=hub_env(tmp, endpoint),
    )


def downloaded(tmp: Path, endpoint: str, repo_id: str, revision: str, kind: str) -> dict[str, str]:
    """Digests of huggingface_hub's own download of the repository at ``revision``."""
    target = tmp / "dl" / f"{kind}-{repo_id.replace('/', '-')}-{revision}"
    snapshot_download(
        repo_id,
        revision=revision,
        repo_type=kind,
        endpoint=endpoint,
        local_dir=target,
        token=False,
        cache_dir=tmp / "hf-cache",
    )
    return {k: v for k, v in digests(target).items() if not k.startswith(".cache")}


def block_files(roots: list[Path]) -> list[str]:
    """The block ids of every block file under ``roots`` (one entry per file)."""
    return [
        p.name.split(".")[0]
        for root in roots
        if root.exists()
        for p in root.rglob("*")
        if p.is_file() and len(p.name.split(".")[0]) == 32
    ]


def getfattr(path: Path, name: str) -> str:
    """The value of xattr ``name`` of ``path`` as the ``getfattr`` tool reads it."""
    out = subprocess.run(
        ["getfattr", "--absolute-names", "--only-values", "-n", name, str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def report(data: Path, master: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fluidcache", "report", "--master", master, "--json"],
        env={**os.environ, "FLUIDCACHE_TOKEN_FILE": str(data / "token")},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_up_serves_hub_repositories_once_per_content(
    tmp_path: Path, hub: tuple[Olah, str, str]
) -> None:
    olah, v1, v2 = hub
    mnt, data = tmp_path / "mnt", tmp_path / "cluster"
    sources = [f"v1=hf://{MODEL}@v1", f"v2=hf://{MODEL}", f"data=hf://datasets/{DATA}"]
    up = up_hub(tmp_path, olah.endpoint, sources, workers=2)
    with running(up, mnt):
        master = up.wait_for("master:").split()[-1]
        up.wait_for("mounted:")
        token = (data / "token").read_text().strip()
        gets_before = {s: olah.resolve_gets(s) for s in SHARDS}

        # v1 through the mount: every file, byte for byte as snapshot_download has it.
        got_v1 = digests(mnt / "v1")
        gets_v1 = {s: olah.resolve_gets(s) - gets_before[s] for s in SHARDS}
        assert all(n >= 1 for n in gets_v1.values()), gets_v1
        # olah ignores Range: a file is downloaded once per worker at most, never per block.
        assert all(n <= 2 for n in gets_v1.values()), gets_v1

        # v2 shares shards 1 and 3 (same LFS sha256): only shard 2 comes from the source.
        got_v2 = digests(mnt / "v2")
        gets_v2 = {s: olah.resolve_gets(s) - gets_before[s] - gets_v1[s] for s in SHARDS}
        assert gets_v2[SHARDS[0]] == 0 and gets_v2[SHARDS[2]] == 0, gets_v2
        assert gets_v2[SHARDS[1]] >= 1, gets_v2
        got_data = digests(mnt / "data")

        # The mount's xattrs name the commit each source is read at, on directories and files.
        assert getfattr(mnt / "v2", "user.fluidcache.commit") == v2
        assert getfattr(mnt / "v1", "user.fluidcache.commit") == v1
        assert getfattr(mnt / "v1" / SHARDS[1], "user.fluidcache.commit") == v1
        assert getfattr(mnt / "v2" / SHARDS[1], "user.fluidcache.commit") == v2
        sha = hashlib.sha256((mnt / "v2" / SHARDS[1]).read_bytes()).hexdigest()
        assert getfattr(mnt / "v2" / SHARDS[1], "user.fluidcache.version") == f"sha256:{sha}"
        listed = subprocess.run(
            ["getfattr", "--absolute-names", "-d", "-m", "-", str(mnt / "v2" / "config.json")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert f'user.fluidcache.commit="{v2}"' in listed and "user.fluidcache.cached" in listed

        # The same files through the client library: all cached, nothing more from olah.
        gets = olah.resolve_gets()
        via_client = asyncio.run(client_digests(master, token, "default"))
        assert olah.resolve_gets() == gets

        # Each distinct block is held once across the workers.
        roots = [Path(f"/dev/shm/fluidcache-{up.popen.pid}"), data / "ssd"]
        held = block_files(roots)
        assert len(held) == len(set(held)), "a block is held twice"
        sizes: dict[str, int] = {}
        for sub in ("v1", "v2", "data"):
            for path in (mnt / sub).rglob("*"):
                if path.is_file():
                    sizes[hashlib.sha256(path.read_bytes()).hexdigest()] = path.stat().st_size
        assert len(held) == sum(-(-size // BLOCK) for size in sizes.values())

        figures = report(data, master)
        assert figures.returncode == 0, figures.stderr
        cluster = json.loads(figures.stdout)["cluster"]
        snapshots = json.loads(figures.stdout)["datasets"][0]["snapshots"]
        assert snapshots["v1"] == f"hf://{MODEL}@{v1}" and snapshots["v2"] == f"hf://{MODEL}@{v2}"
        shared = sum(p.stat().st_size for p in (mnt / "v2").rglob("*") if p.name != SHARDS[1])
        assert cluster["sharedBytes"] == shared
        text = subprocess.run(
            [sys.executable, "-m", "fluidcache", "report", "--master", master],
            env={**os.environ, "FLUIDCACHE_TOKEN_FILE": str(data / "token")},
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        assert "bytes saved by sharing" in text and f"default/v1: serves hf://{MODEL}@{v1}" in text

        logs = "".join(p.read_text(errors="replace") for p in (data / "logs").glob("*.log"))
    assert TOKEN not in up.output + logs + figures.stdout + text

    expected_v1 = downloaded(tmp_path, olah.endpoint, MODEL, v1, "model")
    expected_v2 = downloaded(tmp_path, olah.endpoint, MODEL, "main", "model")
    expected_data = downloaded(tmp_path, olah.endpoint, DATA, "main", "dataset")
    assert got_v1 == expected_v1 and set(expected_v1) >= {*SHARDS, "config.json"}
    assert got_v2 == expected_v2 and expected_v2[SHARDS[1]] != expected_v1[SHARDS[1]]
    assert got_data == expected_data and "data/train-00000-of-00001.parquet" in got_data
    assert via_client == {
        **{f"v1/{k}": v for k, v in expected_v1.items()},
        **{f"v2/{k}": v for k, v in expected_v2.items()},
        **{f"data/{k}": v for k, v in expected_data.items()},
    }
    assert v2 != v1


def test_the_hub_sample_runs_with_up_file_at_a_tag(
    tmp_path: Path, hub: tuple[Olah, str, str]
) -> None:
    """k8s/samples/hf-model.yaml under ``up -f``: a Dataset whose mountPoint is ``hf://`` (the
    repository and tag made the test's, the endpoint option added), its token from the Secret's
    variable: every file as ``snapshot_download`` has it at that tag, the token shown nowhere."""
    olah, v1, _ = hub
    docs = list(yaml.safe_load_all(SAMPLE.read_text()))
    mount = docs[1]["spec"]["mounts"][0]
    mount["mountPoint"] = f"hf://{MODEL}@v1"
    mount["options"] = {"endpoint": olah.endpoint}
    spec, mnt, data = tmp_path / "hf.yaml", tmp_path / "mnt", tmp_path / "cluster"
    spec.write_text(yaml.safe_dump_all(docs))
    mnt.mkdir()
    env = {"HF_HOME": str(tmp_path / "hf-home"), "FLUIDCACHE_SECRET_HF_TOKEN_TOKEN": TOKEN}
    up = fluidcache(
        "up", "-f", str(spec), "--mountpoint", str(mnt), "--data-dir", str(data), env=env
    )
    with running(up, mnt):
        assert up.wait_for("workers:").split()[-1] == "2"  # the runtime's replicas
        up.wait_for("mounted:")
        got = digests(mnt / "llm")
        assert getfattr(mnt / "llm", "user.fluidcache.commit") == v1
        logs = "".join(p.read_text(errors="replace") for p in (data / "logs").glob("*.log"))
    assert TOKEN not in up.output + logs
    assert got == downloaded(tmp_path, olah.endpoint, MODEL, v1, "model")
    assert set(got) >= {*SHARDS, "config.json"}


def test_gated_repository_names_itself_and_the_token_options(
    tmp_path: Path, hub: tuple[Olah, str, str]
) -> None:
    olah = hub[0]
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    up = fluidcache(
        "up",
        f"g=hf://{GATED}",
        "--mountpoint",
        str(mnt),
        "--data-dir",
        str(tmp_path / "cluster"),
        env=hub_env(tmp_path, olah.endpoint),
    )
    with running(up, mnt):
        assert up.wait(60) != 0, up.output
    assert (
        f"hf://{GATED}" in up.output and "HF_TOKEN" in up.output and "credentials_file" in up.output
    )
    assert "the token given has no access" in up.output
    assert TOKEN not in up.output


async def open_index_and_wait(master: str, token: str, roots: list[Path], want: int) -> int:
    """Open (and read) the model's index through the client, then wait for the workers to hold
    ``want`` blocks without reading anything else; the count held."""
    from fluidcache.client import AsyncClient

    async with AsyncClient(master, token, dataset="default") as client:
        f = await client.open("/m/model.safetensors.index.json")
        assert json.loads(await f.read())["weight_map"]
        for _ in range(200):
            if len(block_files(roots)) >= want:
                break
            await asyncio.sleep(0.1)
        return len(block_files(roots))


def test_opening_a_model_index_prefetches_every_shard(
    tmp_path: Path, hub: tuple[Olah, str, str]
) -> None:
    olah = hub[0]
    mnt, data = tmp_path / "mnt", tmp_path / "cluster"
    up = up_hub(tmp_path, olah.endpoint, [f"m=hf://{MODEL}@v1"], workers=1)
    with running(up, mnt):
        master = up.wait_for("master:").split()[-1]
        up.wait_for("mounted:")
        token = (data / "token").read_text().strip()
        sizes = [(mnt / "m" / name).stat().st_size for name in SHARDS]
        want = 1 + sum(-(-size // BLOCK) for size in sizes)  # the index, then every shard block
        roots = [Path(f"/dev/shm/fluidcache-{up.popen.pid}"), data / "ssd"]
        assert asyncio.run(open_index_and_wait(master, token, roots, want)) == want


def test_a_token_file_is_accepted_as_an_option_and_never_shown(
    tmp_path: Path, hub: tuple[Olah, str, str]
) -> None:
    token_file = tmp_path / "hf.cred"
    token_file.write_text(f"token={TOKEN}\n")
    token_file.chmod(0o600)
    env = {**hub_env(tmp_path, hub[0].endpoint), "HF_TOKEN": ""}
    up = fluidcache(
        "up",
        f"g=hf://{GATED}",
        "--option",
        f"g.credentials_file={token_file}",
        *("--mountpoint", str(tmp_path), "--data-dir", str(tmp_path / "cluster")),
        env=env,
    )
    with running(up):
        assert up.wait(60) != 0, up.output
    assert "the token given has no access" in up.output, up.output
    assert TOKEN not in up.output


async def block_ids(master: str, token: str, paths: list[str]) -> dict[str, list[str]]:
    """The block ids the master gives each of ``paths`` (checked at the source, as an open is)."""
    from fluidcache.client import AsyncClient

    async with AsyncClient(master, token, dataset="default") as client:
        out = {}
        for path in paths:
            info = await client.validate(await client.stat(path))
            out[path] = [info.block(i).id for i in range(info.block_count)]
        return out


def test_a_moved_branch_stays_on_the_stored_commit_until_the_ttl(
    tmp_path: Path, hub: tuple[Olah, str, str]
) -> None:
    olah = hub[0]
    repo = olah.repo()
    names = ["a.bin", "b.bin", "config.json"]
    rng = np.random.default_rng(5)
    for name in names[:2]:
        repo.write(name, rng.bytes(2 * BLOCK + 1234))
    repo.write("config.json", b'{"v": 1}\n')
    c1 = repo.commit("one")
    data, mnt = tmp_path / "cluster", tmp_path / "mnt"
    mnt.mkdir()

    def up(*extra: str) -> Proc:
        return fluidcache(
            "up",
            f"m=hf://{repo.repo_id}",
            *("--mountpoint", str(mnt), "--block-size", "1Mi", "--data-dir", str(data), *extra),
            env=hub_env(tmp_path, olah.endpoint),
        )

    def sha(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    at_c1 = {k: sha(v) for k, v in repo.files(c1).items()}
    with running(up(), mnt) as first:
        first.wait_for("mounted:")
        assert digests(mnt / "m") == at_c1
    # The branch moves while the cluster is down: b.bin changes, the rest stays.
    repo.write("b.bin", rng.bytes(2 * BLOCK + 99))
    c2 = repo.commit("two")
    at_c2 = {k: sha(v) for k, v in repo.files(c2).items()}
    assert at_c2["b.bin"] != at_c1["b.bin"] and at_c2["a.bin"] == at_c1["a.bin"]

    # Restarted without a TTL: the namespace and every read stay on the stored commit.
    with running(up(), mnt) as second:
        master = second.wait_for("master:").split()[-1]
        second.wait_for("mounted:")
        token = (data / "token").read_text().strip()
        assert digests(mnt / "m") == at_c1
        assert getfattr(mnt / "m", "user.fluidcache.commit") == c1
        snapshots = json.loads(report(data, master).stdout)["datasets"][0]["snapshots"]
        assert snapshots["m"] == f"hf://{repo.repo_id}@{c1}"
        before = asyncio.run(block_ids(master, token, [f"/m/{n}" for n in names]))

    # Restarted with --ttl 1: once the TTL has passed, the branch is resolved again; the new
    # commit is a new version of b.bin only.
    with running(up("--ttl", "1"), mnt) as third:
        master = third.wait_for("master:").split()[-1]
        third.wait_for("mounted:")
        token = (data / "token").read_text().strip()
        after = before
        for _ in range(120):  # bounded: 60 s at most
            after = asyncio.run(block_ids(master, token, [f"/m/{n}" for n in names]))
            if after["/m/b.bin"] != before["/m/b.bin"]:
                break
            time.sleep(0.5)
        assert after["/m/b.bin"] != before["/m/b.bin"]
        assert after["/m/a.bin"] == before["/m/a.bin"]
        assert after["/m/config.json"] == before["/m/config.json"]
        gets = olah.resolve_gets(f"{repo.repo_id}/resolve/{c2}/b.bin")
        assert digests(mnt / "m") == at_c2
        assert olah.resolve_gets(f"{repo.repo_id}/resolve/{c2}/b.bin") > gets
        assert getfattr(mnt / "m", "user.fluidcache.commit") == c2


async def hot_then_prefetch(
    master: str, token: str, mem: Path, hot_size: int
) -> tuple[set[str], set[str], set[str], set[str]]:
    """Make ``/m/hot.bin`` hot, open the model's index, let its prefetch settle: the hot set's
    block ids, the blocks held before the prefetch, every block seen since, those held after."""
    from fluidcache.client import AsyncClient

    def held() -> set[str]:
        return set(block_files([mem]))

    async with AsyncClient(master, token, dataset="default", model_prefetch=False) as reader:
        hot = await reader.open("/m/hot.bin")
        for _ in range(2):  # read twice: hot, the most recently used
            hot.seek(0)
            assert len(await hot.read()) == hot_size
        hot_ids = {hot.info.block(i).id for i in range(hot.info.block_count)}
    async with AsyncClient(master, token, dataset="default") as client:
        for _ in range(100):  # the workers' usage reaches the master with a heartbeat
            workers = await client.blocks.workers(refresh=True)
            if sum(t.used for w in workers for t in w.tiers) >= hot_size:
                break
            await asyncio.sleep(0.1)
        before = held()
        seen = set(before)
        f = await client.open("/m/model.safetensors.index.json")
        assert json.loads(await f.read())["weight_map"]
        steady = 0
        for _ in range(300):  # settled: no change for 2 s (30 s at most)
            await asyncio.sleep(0.1)
            now = held()
            steady = steady + 1 if now <= seen else 0
            seen |= now
            if steady >= 20:
                break
        return hot_ids, before, seen, held()


def test_model_prefetch_stays_within_the_cache_room(
    tmp_path: Path, hub: tuple[Olah, str, str]
) -> None:
    """A 24 MiB MEM cache holding an 8 MiB hot set: opening a model index of 3 x 6 MiB shards
    prefetches no more than half the free room, evicts nothing, and the hot set stays."""
    olah = hub[0]
    repo = olah.repo()
    rng = np.random.default_rng(9)
    names = [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    index: dict[str, dict[str, str]] = {"weight_map": {}}
    for i, name in enumerate(names):
        tensors = {f"l{i}.{k}": rng.standard_normal(3 * 2**18).astype(np.float32) for k in (0, 1)}
        repo.write(name, save(tensors))  # 6 MiB
        index["weight_map"] |= {k: name for k in tensors}
    hot_size = 8 * BLOCK
    repo.write("hot.bin", rng.bytes(hot_size))
    repo.write("model.safetensors.index.json", json.dumps(index).encode())
    repo.commit()
    data, mnt = tmp_path / "cluster", tmp_path / "mnt"
    mnt.mkdir()
    up = fluidcache(
        "up",
        f"m=hf://{repo.repo_id}",
        *("--mountpoint", str(mnt), "--block-size", "1Mi", "--data-dir", str(data)),
        *("--workers", "1", "--mem-quota", "24Mi", "--ssd-quota", "0"),
        env=hub_env(tmp_path, olah.endpoint),
    )
    with running(up, mnt):
        master = up.wait_for("master:").split()[-1]
        up.wait_for("mounted:")
        token = (data / "token").read_text().strip()
        mem = Path(f"/dev/shm/fluidcache-{up.popen.pid}")
        hot, before, seen, after = asyncio.run(hot_then_prefetch(master, token, mem, hot_size))
        model_blocks = sum(-(-(mnt / "m" / n).stat().st_size // BLOCK) for n in names)
    assert hot <= before and hot <= after, "the prefetch pushed out the hot set"
    assert seen == after, "a block was evicted while the prefetch ran"
    fetched = len(after - before)
    room = 24 * BLOCK - len(before) * BLOCK
    # The index's block, then at most half the free room of model blocks; yet a prefetch ran.
    assert 1 < fetched <= 1 + room // 2 // BLOCK, (fetched, room)
    assert fetched - 1 < model_blocks
