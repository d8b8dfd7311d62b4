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
MAX_BLOCK_SIZE = 1 << 30  # the largest block size a dataset may have

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


def human_bytes(n: float) -> str:
    """Bytes as Fluid prints them in status and labels: ``52.18MiB``, ``0.00B``."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    value, i = float(n), 0
    while value >= 1024 and i < len(units) - 1:
        value /= 1024
        i += 1
    return f"{value:.2f}{units[i]}"


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


# Option keys that look like credentials: they belong in env vars or a secret file, never in a
# dataset spec, a command line or the master's database.
_SECRET_WORDS = ("secret", "password", "passwd", "token", "access_key", "credential_value")


def refuse_secret_options(name: str, options: dict[str, str], field: str) -> None:
    """ConfigError naming ``field`` and the key when an option key looks like a credential."""
    for key in options:
        if any(word in key.lower() for word in _SECRET_WORDS):
            label = f"{name}.{key}" if name else key
            raise ConfigError(
                f"{field}: {label} looks like a credential; pass credentials through env vars "
                "or a file named by an option such as credentials_file, never inline"
            )


def parse_options(specs: list[str], names: list[str]) -> dict[str, dict[str, str]]:
    """``--option NAME.KEY=VALUE`` values (``KEY=VALUE`` for a single unnamed source) by mount
    name. ConfigError names the option that is malformed or names no source in ``names`` (never
    its value, which may be private).
    """
    options: dict[str, dict[str, str]] = {}
    for spec in specs:
        target, sep, value = spec.partition("=")
        if not sep:
            raise ConfigError(f"option {spec!r}: expected NAME.KEY=VALUE")
        if names == [""]:
            name, key = "", target
            if "." in target:
                raise ConfigError(
                    f"option {target!r}: the single source is unnamed; write KEY=VALUE"
                )
        else:
            name, dot, key = target.partition(".")
            if not dot:
                raise ConfigError(f"option {target!r}: expected NAME.KEY=VALUE (NAME: a source)")
            if name not in names:
                known = ", ".join(n for n in names if n)
                raise ConfigError(f"option {target!r}: no source named {name!r} (sources: {known})")
        if not re.fullmatch(r"[A-Za-z0-9_]+", key):
            raise ConfigError(f"option {target!r}: {key!r} is not an option name")
        options.setdefault(name, {})[key] = value
    return options
