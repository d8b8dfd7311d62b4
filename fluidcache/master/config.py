"""The master's configuration: the dataset it serves, where it keeps state, its timers."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from fluidcache.common.config import MAX_BLOCK_SIZE, refuse_secret_options
from fluidcache.common.errors import ConfigError

_NAME = re.compile(r"[A-Za-z0-9._-]+")


@dataclasses.dataclass
class MasterConfig:
    """Everything ``fluidcache master`` needs; :meth:`validate` names the field that is wrong.

    ``mounts`` are ``(name, uri)`` pairs: a single unnamed mount sits at the dataset root, several
    must all be named. ``sync_ttl`` is how old (seconds) a directory listing may get before it is
    re-listed on access; 0 means never re-check.
    """

    data_dir: Path
    mounts: list[tuple[str, str]]
    host: str = "127.0.0.1"
    port: int = 0
    token: str = ""
    block_size: int = 0  # 0: each source's own (UnderFileSystem.block_size)
    dataset: str = "default"
    mount_options: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    sync_ttl: float = 0.0
    heartbeat_interval: float = 2.0
    worker_timeout: float = 20.0
    restore_from: Path | None = None
    backup_dir: Path | None = None  # default: DATA_DIR/backups
    # where a backup job may write besides the backup dir (a DataBackup's backupPath)
    backup_roots: list[Path] = dataclasses.field(default_factory=list)
    map_size: int = 1 << 40  # LMDB address space reservation, not disk use

    @property
    def backups(self) -> Path:
        return self.backup_dir or self.data_dir / "backups"

    def validate(self) -> None:
        """Raise ConfigError naming the first wrong field."""
        if not str(self.data_dir):
            raise ConfigError("data_dir: required")
        if not _NAME.fullmatch(self.dataset) or self.dataset in (".", ".."):
            raise ConfigError(f"dataset: {self.dataset!r} is not a valid directory name")
        if not self.mounts:
            raise ConfigError("mounts: at least one source is required")
        names = [name for name, _ in self.mounts]
        if len(self.mounts) > 1 and not all(names):
            raise ConfigError("mounts: with several sources, each needs a name (NAME=URI)")
        if len(set(names)) != len(names):
            raise ConfigError(f"mounts: duplicate names in {names}")
        for name, uri in self.mounts:
            if name and (not _NAME.fullmatch(name) or name in (".", "..")):
                raise ConfigError(f"mounts: {name!r} is not a valid directory name")
            if "://" not in uri:
                raise ConfigError(f"mounts: {uri!r} is not a URI (e.g. local:///data)")
        for name, options in self.mount_options.items():
            if name not in names:
                raise ConfigError(f"mount_options: no mount named {name!r}")
            refuse_secret_options(name, options, "mount_options")
        if not 0 <= self.port < 65536:
            raise ConfigError(f"port: {self.port} is out of range")
        if not self.token:
            raise ConfigError("token: the cluster token is empty")
        if self.block_size and not 4096 <= self.block_size <= MAX_BLOCK_SIZE:
            raise ConfigError(f"block_size: {self.block_size} is outside 4Ki..1Gi")
        if self.sync_ttl < 0:
            raise ConfigError(f"sync_ttl: {self.sync_ttl} is negative (0 means never re-check)")
        if self.heartbeat_interval <= 0:
            raise ConfigError(f"heartbeat_interval: {self.heartbeat_interval} must be positive")
        if self.worker_timeout <= self.heartbeat_interval:
            raise ConfigError(
                f"worker_timeout: {self.worker_timeout} must exceed the heartbeat interval "
                f"{self.heartbeat_interval}"
            )
        for root in self.backup_roots:
            if not root.is_absolute():
                raise ConfigError(f"backup_roots: {str(root)!r} is not an absolute path")
        if self.restore_from is not None and not self.restore_from.is_file():
            raise ConfigError(f"restore_from: {self.restore_from} is not a file")
