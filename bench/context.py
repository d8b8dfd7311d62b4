"""What every scenario gets: parameters, the data sets, the running sources, and ways to start
a fluidcache cluster or a peer mount for one repetition."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench import cluster, peers, s3
from bench.config import Params, Sizes
from bench.data import Data
from bench.results import Result


@dataclass
class Bench:
    params: Params
    data: Data
    work: Path  # this run's scratch space: clusters, peer caches, logs
    http_url: str  # the HTTP source as readers see it (through the shaper)
    s3: s3.S3Info | None  # the S3 source as readers see it; None when it could not run
    s3_store: Path | None
    s3_reason: str | None = None
    peer_reasons: dict[str, str | None] = field(default_factory=dict)
    log: Callable[[str], None] = print
    conn_url: str | None = None  # the HTTP source shaped per connection (object-store model)
    raw_http: str = ""  # nginx unshaped, for scenarios that put shapers of their own in front

    @property
    def sizes(self) -> Sizes:
        return self.params.sizes

    @property
    def reps(self) -> int:
        return self.sizes.reps

    def order(self, systems: list[str], rep: int) -> list[str]:
        """Systems in the order run in repetition ``rep``: reversed every other time."""
        return systems if rep % 2 == 0 else list(reversed(systems))

    def http(self, rel: str) -> str:
        return self.http_url + rel.lstrip("/")

    def conn(self, rel: str) -> str:
        assert self.conn_url is not None
        return self.conn_url + rel.lstrip("/")

    def conn_systems(self, *systems: str) -> list[str]:
        """``systems`` if the per-connection source runs (``--conn-bandwidth`` > 0), else none."""
        return list(systems) if self.conn_url is not None else []

    @property
    def streams(self) -> int:
        return self.params.shaping.parallel_streams

    def view(self, sub: str, name: str) -> str:
        """A hard-linked copy of ``sub`` that no cache has seen; also put in the bucket."""
        rel = self.data.view(sub, name)
        if self.s3_store is not None:
            s3.seed(self.s3_store, self.data, rel + "/")
        return rel

    def sources(self, with_s3: bool = True) -> list[str]:
        out = [f"web={self.http_url}"]
        if self.conn_url is not None:
            out.append(f"conn={self.conn_url}")
        if with_s3 and self.s3 is not None:
            out.append(f"s3=s3://{self.s3.bucket}")
        return out

    def fc_env(self) -> dict[str, str]:
        return self.s3.env() if self.s3 is not None else {}

    @contextlib.contextmanager
    def cluster(
        self,
        name: str,
        *,
        workers: int = 2,
        mem_quota_mib: int = 1024,
        with_s3: bool = True,
        sources: list[str] | None = None,
    ) -> Iterator[cluster.Cluster]:
        """``fluidcache up`` over the sources (or ``sources``), for one repetition."""
        self.log(f"  cluster {name}: {workers} workers, MEM {mem_quota_mib} MiB each")
        with cluster.up(
            sources if sources is not None else self.sources(with_s3),
            self.work / "clusters" / name,
            workers=workers,
            mem_quota_mib=mem_quota_mib,
            block_size=self.sizes.block_size,
            env=self.fc_env(),
        ) as c:
            yield c

    def peer_systems(self, result: Result) -> list[str]:
        """The peers that can run (``rclone-s3``, ``s3fs-s3``); the others are marked skipped."""
        out = []
        for name in peers.PEERS:
            system = f"{name}-s3"
            reason = self.s3_reason or self.peer_reasons.get(name)
            if reason:
                result.skipped[system] = reason
            else:
                out.append(system)
        return out

    def s3_systems(self, result: Result, *systems: str) -> list[str]:
        """``systems`` if the S3 source runs; else none, each marked skipped."""
        if self.s3 is None:
            for s in systems:
                result.skipped[s] = self.s3_reason or "no S3 source"
            return []
        return list(systems)

    @contextlib.contextmanager
    def peer(self, system: str) -> Iterator[Path]:
        """A peer mount of the bucket with an empty cache (``rclone-s3`` or ``s3fs-s3``)."""
        assert self.s3 is not None
        name = system.removesuffix("-s3")
        with peers.mounted(name, self.s3, self.work / "peers") as mnt:
            yield mnt

    def pause(self, seconds: float = 0.2) -> None:
        """Let background work (heartbeats, write-back) settle between measurements."""
        time.sleep(seconds)
