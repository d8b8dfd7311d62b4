"""The benchmark data sets, made once per size set and kept between runs.

Layout under ``root`` (every file random, so nothing compresses or dedupes):

    large/big.bin                    scenario 1
    small/part-NN/f-NNNNN.bin        scenario 2
    meta/files/dNNN/fNNNNN           scenario 3: small files in directories
    meta/big/eNNNNNN                 scenario 3: one big directory of empty files
    model/model-0000i-of-0000n.safetensors (+ model.safetensors.index.json)   scenario 4
    p2p/p2p.bin                      scenario 5
    scale/s-NN.bin                   scenario 6
    evict/e-NNN.bin                  scenario 7

``view(subtree, name)`` hard-links a subtree under ``views/NAME/``: the same bytes at other
paths, so a cache keyed by path (every one here) sees them as new files, while the source's disk
holds them once. ``md5`` holds the digest of every file, for the S3 store's ETags.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.config import KiB, MiB, Sizes

MARKER = ".bench-data"
MANIFEST = ".md5.json"
_NOT_DATA = {
    "mode",
    "reps",
    "small_readers",
    "scale_readers",
    "scale_workers",
    "block_size",
    "cap_file_mib",
    "caps_mbps",
}


def _random_file(path: Path, size: int, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 16 * MiB)
            f.write(rng.bytes(n))
            left -= n


def _model(root: Path, shards: int, shard_mib: int, rng: np.random.Generator) -> None:
    """Random float16 weights in safetensors shards, with a Hugging Face style index."""
    from safetensors.numpy import save_file

    rows, cols = 2048, 4096  # 16 MiB per tensor in float16
    per_shard = max(1, shard_mib * MiB // (rows * cols * 2))
    weight_map: dict[str, str] = {}
    total = 0
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        tensors = {}
        for t in range(per_shard):
            key = f"layers.{s * per_shard + t}.weight"
            w = rng.standard_normal((rows, cols), dtype=np.float32).astype(np.float16)
            tensors[key] = w
            weight_map[key] = name
            total += w.nbytes
        save_file(tensors, root / name, metadata={"format": "np"})
        (root / name).chmod(0o644)  # safetensors writes 0600; nginx's workers must read it
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (root / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))


def _params(sizes: Sizes) -> str:
    keys = [f.name for f in dataclasses.fields(sizes) if f.name not in _NOT_DATA]
    return json.dumps({k: getattr(sizes, k) for k in keys}, sort_keys=True)


class Data:
    """The data sets of one size set under ``root``."""

    def __init__(self, root: Path, sizes: Sizes) -> None:
        self.root = root
        self.sizes = sizes
        self.md5: dict[str, str] = {}

    # ---- generation ---------------------------------------------------------------------

    def ensure(self, log: Callable[[str], None]) -> float:
        """Make the data sets unless they are there already; seconds spent."""
        start = time.perf_counter()
        marker = self.root / MARKER
        params = _params(self.sizes)
        if marker.exists() and marker.read_text() == params and (self.root / MANIFEST).exists():
            self.md5 = json.loads((self.root / MANIFEST).read_text())
            return 0.0
        log(f"making the data sets in {self.root} (kept for the next run) ...")
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        s = self.sizes
        rng = np.random.default_rng(20261123)
        _random_file(self.root / "large" / "big.bin", s.large_mib * MiB, rng)
        for i in range(s.small_files):
            path = self.root / "small" / f"part-{i % 10:02d}" / f"f-{i:05d}.bin"
            _random_file(path, s.small_kib * KiB, rng)
        for i in range(s.meta_files):
            d = self.root / "meta" / "files" / f"d{i // s.meta_per_dir:03d}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"f{i:05d}").write_bytes(rng.bytes(64))
        big = self.root / "meta" / "big"
        big.mkdir(parents=True)
        for i in range(s.meta_big_dir):
            (big / f"e{i:06d}").touch()
        (self.root / "model").mkdir()
        _model(self.root / "model", s.model_shards, s.model_shard_mib, rng)
        _random_file(self.root / "p2p" / "p2p.bin", s.p2p_mib * MiB, rng)
        for i in range(s.scale_files):
            _random_file(self.root / "scale" / f"s-{i:02d}.bin", s.scale_file_mib * MiB, rng)
        n_evict = 2 * s.evict_cache_mib // s.evict_file_mib
        for i in range(n_evict):
            _random_file(self.root / "evict" / f"e-{i:03d}.bin", s.evict_file_mib * MiB, rng)
        self.md5 = self._digests()
        (self.root / MANIFEST).write_text(json.dumps(self.md5))
        marker.write_text(params)
        return time.perf_counter() - start

    def _digests(self) -> dict[str, str]:
        out = {}
        for path in sorted(self.files()):
            rel = str(path.relative_to(self.root))
            if rel.startswith("meta/big/"):
                continue  # the big directory is served over HTTP only
            h = hashlib.md5(usedforsecurity=False)
            with open(path, "rb") as f:
                while chunk := f.read(8 * MiB):
                    h.update(chunk)
            out[rel] = h.hexdigest()
        return out

    def files(self, sub: str = "") -> list[Path]:
        """Every data file under ``sub`` (views excluded), sorted."""
        base = self.root / sub if sub else self.root
        out = []
        for dirpath, dirs, names in os.walk(base):
            if Path(dirpath) == self.root:
                dirs[:] = [d for d in dirs if d != "views"]
            out += [Path(dirpath) / n for n in names if not n.startswith(".")]
        return sorted(out)

    def total_bytes(self, sub: str) -> int:
        return sum(p.stat().st_size for p in self.files(sub))

    # ---- views --------------------------------------------------------------------------

    def view(self, sub: str, name: str) -> str:
        """Hard links of ``sub`` under ``views/NAME/SUB``; returns that relative path."""
        rel = f"views/{name}/{sub}"
        dst_root = self.root / rel
        if not dst_root.exists():
            tmp = self.root / "views" / f".{name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            for src in self.files(sub):
                dst = tmp / sub / src.relative_to(self.root / sub)
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.link(src, dst)
            dst_root.parent.mkdir(parents=True, exist_ok=True)
            (tmp / sub).rename(dst_root)
            shutil.rmtree(tmp, ignore_errors=True)
        for key, digest in list(self.md5.items()):
            if key.startswith(sub + "/"):
                self.md5[f"views/{name}/{key}"] = digest
        return rel
