"""Configuration helpers: sizes, the cluster token, source specs."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from fluidcache.common.errors import ConfigError

TOKEN_ENV = "FLUIDCACHE_TOKEN"
TOKEN_FILE_ENV = "FLUIDCACHE_TOKEN_FILE"
DEFAULT_BLOCK_SIZE = 4 * 1024 * 1024

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "ki": 1024,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mi": 1024**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gi": 1024**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ti": 1024**4,
    "tib": 1024**4,
}


def parse_size(text: str, field: str = "size") -> int:
    """Parse ``2Gi``, ``500Mi``, ``4MiB``, ``1000`` into bytes; ConfigError names ``field``."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ConfigError(f"{field}: cannot parse size {text!r} (examples: 512Mi, 2Gi, 4MiB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def load_token(token_file: str | None = None) -> str:
    """The cluster token, from ``token_file``, ``$FLUIDCACHE_TOKEN_FILE`` or ``$FLUIDCACHE_TOKEN``.

    Never from a command-line value, which would show in ``ps``.
    """
    path = token_file or os.environ.get(TOKEN_FILE_ENV)
    if path:
        try:
            token = Path(path).read_text().strip()
        except OSError as e:
            raise ConfigError(f"token file: cannot read {path}: {e.strerror}") from None
        if not token:
            raise ConfigError(f"token file: {path} is empty")
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ConfigError(f"cluster token: set {TOKEN_FILE_ENV} (a file holding it) or {TOKEN_ENV}")
    return token


def write_token(path: Path) -> str:
    """Create a new random cluster token in ``path``, readable by its owner only."""
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def parse_source(spec: str) -> tuple[str, str]:
    """Split ``NAME=URI`` or ``URI`` into (name, uri); the name is empty for the latter."""
    name, sep, uri = spec.partition("=")
    if sep and "://" not in name:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", name) or name in (".", ".."):
            raise ConfigError(f"source {spec!r}: name {name!r} is not a valid directory name")
        return name, uri
    return "", spec
