"""Worker configuration: identity, master, and the storage levels (Fluid's tieredstore)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from fluidcache.common.config import parse_size
from fluidcache.common.errors import ConfigError
from fluidcache.ufs import READ_THREADS

MEDIUMS = ("MEM", "SSD", "HDD")


@dataclass(frozen=True)
class LevelConfig:
    """One storage level: a medium, its directories, a byte quota and watermarks (fractions)."""

    medium: str
    paths: tuple[Path, ...]
    quota: int
    high: float = 0.95
    low: float = 0.7

    @property
    def persistent(self) -> bool:
        """Whether blocks on this level survive a worker restart."""
        return self.medium != "MEM"

    @classmethod
    def parse(cls, spec: str, index: int) -> LevelConfig:
        """``MEDIUM:PATH[,PATH]:QUOTA[:HIGH:LOW]``, e.g. ``SSD:/var/cache/fc:20Gi:0.9:0.7``."""
        field_name = f"tier[{index}]"
        parts = spec.split(":")
        if len(parts) not in (3, 5):
            raise ConfigError(f"{field_name}: expected MEDIUM:PATH:QUOTA[:HIGH:LOW], got {spec!r}")
        high, low = (0.95, 0.7)
        if len(parts) == 5:
            try:
                high, low = float(parts[3]), float(parts[4])
            except ValueError:
                raise ConfigError(f"{field_name}.high/low: not numbers in {spec!r}") from None
        return cls(
            medium=parts[0].upper(),
            paths=tuple(Path(p) for p in parts[1].split(",") if p),
            quota=parse_size(parts[2], f"{field_name}.quota"),
            high=high,
            low=low,
        )

    def validate(self, field_name: str) -> None:
        if self.medium not in MEDIUMS:
            raise ConfigError(f"{field_name}.mediumtype: {self.medium!r} is not one of {MEDIUMS}")
        if not self.paths:
            raise ConfigError(f"{field_name}.path: at least one directory is needed")
        if self.quota <= 0:
            raise ConfigError(f"{field_name}.quota: must be positive")
        if not 0 < self.high <= 1:
            raise ConfigError(f"{field_name}.high: {self.high} must be in (0, 1]")
        if not 0 <= self.low < self.high:
            raise ConfigError(f"{field_name}.low: {self.low} must be below high ({self.high})")
        for p in self.paths:
            try:
                p.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ConfigError(f"{field_name}.path: cannot create {p}: {e.strerror}") from None
            if not os.access(p, os.W_OK):
                raise ConfigError(f"{field_name}.path: {p} is not writable")


@dataclass
class WorkerConfig:
    """Everything ``fluidcache worker`` needs."""

    worker_id: str
    master_url: str
    levels: list[LevelConfig]
    token: str
    host: str = "127.0.0.1"
    port: int = 0
    node: str = field(default_factory=socket.gethostname)
    advertise: str = ""  # the URL others reach this worker at, when not the one it binds
    fetch_concurrency: int = READ_THREADS  # source reads at once, per source (at most its threads)
    mem_prealloc: int = 0  # bytes of each MEM level allocated before serving (BlockStore.prefill)

    def validate(self) -> None:
        if not self.worker_id or "/" in self.worker_id:
            raise ConfigError(f"id: {self.worker_id!r} is not a valid worker id")
        if not self.master_url.startswith(("http://", "https://")):
            raise ConfigError(f"master: {self.master_url!r} is not an http(s) URL")
        if self.advertise and not self.advertise.startswith(("http://", "https://")):
            raise ConfigError(f"advertise: {self.advertise!r} is not an http(s) URL")
        if self.mem_prealloc < 0:
            raise ConfigError(f"mem-prealloc: {self.mem_prealloc} must not be negative")
        if not self.levels:
            raise ConfigError("tiers: at least one storage level is needed")
        for i, level in enumerate(self.levels):
            level.validate(f"tier[{i}]")
