"""Every parameter of a benchmark run, in one place: sizes (full and ``--quick``) and shaping.

The report prints this dataclass whole, so a run can be reproduced from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from fluidcache.common.config import parse_size
from fluidcache.ufs.http import HttpUfs

MiB = 1 << 20
KiB = 1 << 10


@dataclass(frozen=True)
class Sizes:
    """Data set sizes and per-scenario knobs."""

    mode: str
    reps: int
    large_mib: int  # scenario 1: one file
    small_files: int  # scenario 2
    small_kib: int
    small_readers: tuple[int, ...]
    meta_files: int  # scenario 3: files listed and stat'ed, in directories of meta_per_dir
    meta_per_dir: int
    meta_big_dir: int  # entries of the one big directory
    model_shards: int  # scenario 4: safetensors shards of model_shard_mib each
    model_shard_mib: int
    p2p_mib: int  # scenario 5: the file read from a peer
    scale_files: int  # scenario 6: files read by N readers
    scale_file_mib: int
    scale_readers: tuple[int, ...]
    scale_workers: tuple[int, ...]
    evict_cache_mib: int  # scenario 7: MEM quota of the one worker; working set is 2x
    evict_file_mib: int
    cap_file_mib: int = 256  # the cold read against per-connection caps (scenario "caps")
    caps_mbps: tuple[int, ...] = (25, 50, 100, 200)
    block_size: str = ""  # "": each source's own (4 MiB for HTTP, 16 MiB for S3)

    def http_block_bytes(self) -> int:
        """The block size of an HTTP source's files: the unit the block-counting scenarios
        (eviction, p2p, both over nginx) count in."""
        return parse_size(self.block_size, "block size") if self.block_size else HttpUfs.block_size


FULL = Sizes(
    mode="full",
    reps=3,
    large_mib=1024,
    small_files=2000,
    small_kib=128,
    small_readers=(1, 16),
    meta_files=10_000,
    meta_per_dir=1000,
    meta_big_dir=100_000,
    model_shards=4,
    model_shard_mib=320,
    p2p_mib=512,
    scale_files=64,
    scale_file_mib=8,
    scale_readers=(1, 4, 16, 64),
    scale_workers=(1, 2, 3),
    evict_cache_mib=256,
    evict_file_mib=8,
)

QUICK = Sizes(
    mode="quick",
    reps=2,
    large_mib=64,
    small_files=200,
    small_kib=128,
    small_readers=(1, 16),
    meta_files=500,
    meta_per_dir=100,
    meta_big_dir=1000,
    model_shards=2,
    model_shard_mib=32,
    p2p_mib=32,
    scale_files=64,
    scale_file_mib=1,
    scale_readers=(1, 4, 16, 64),
    scale_workers=(1, 3),
    evict_cache_mib=32,
    evict_file_mib=4,
    cap_file_mib=32,
    caps_mbps=(25, 100),
)


@dataclass(frozen=True)
class Shaping:
    """How the sources are made to look remote (see ``bench/shaper.py``)."""

    bandwidth: float = 200e6  # bytes/s shared by all connections to one source; 0: no limit
    latency: float = 0.005  # seconds added to every request; 0: none
    # The second source, shaped like an object store or a hub CDN (bench/shaper.py --per-conn):
    conn_bandwidth: float = 50e6  # bytes/s of each connection; 0: no such source
    conn_latency: float = 0.020  # seconds to each request's first byte
    conn_aggregate: float = 1e9  # bytes/s of all connections together
    parallel_streams: int = 16  # ranged GETs at once of the "direct, parallel" baselines

    @property
    def enabled(self) -> bool:
        return self.bandwidth > 0 or self.latency > 0

    def describe_conn(self) -> str:
        return (
            f"{self.conn_bandwidth / 1e6:.0f} MB/s per connection, "
            f"{self.conn_latency * 1000:.0f} ms to the first byte, "
            f"{self.conn_aggregate / 1e6:.0f} MB/s in all"
        )

    def describe(self) -> str:
        if not self.enabled:
            return "none (raw loopback)"
        bw = f"{self.bandwidth / 1e6:.0f} MB/s" if self.bandwidth > 0 else "unlimited bandwidth"
        return f"{bw} shared per source, +{self.latency * 1000:.1f} ms per request"


@dataclass(frozen=True)
class Params:
    """A whole run's parameters."""

    sizes: Sizes
    shaping: Shaping
    scenarios: tuple[str, ...]
    workdir: str
    chunk: int = 1 * MiB  # read() size of every reader
    extra: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)
