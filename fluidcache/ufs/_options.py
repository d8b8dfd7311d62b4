"""Typed reads of adapter options (every option arrives as a string from the dataset spec)."""

from __future__ import annotations

from collections.abc import Mapping

from fluidcache.common import errors


def option_bool(options: Mapping[str, str], key: str, default: bool) -> bool:
    """``true``/``false`` (also 1/0, yes/no, on/off); ConfigError names the option otherwise."""
    value = options.get(key)
    if value is None:
        return default
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise errors.ConfigError(f"option {key}: expected true or false, got {value!r}")


def option_number(
    options: Mapping[str, str], key: str, default: float, minimum: float = 0
) -> float:
    """A number at least ``minimum``; ConfigError names the option otherwise."""
    value = options.get(key)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise errors.ConfigError(f"option {key}: expected a number, got {value!r}") from None
    if number < minimum:
        raise errors.ConfigError(f"option {key}: must be at least {minimum}, got {value!r}")
    return number


def read_key_values(path: str, option: str, keys: frozenset[str]) -> dict[str, str]:
    """``key=value`` lines of a secret file, keys lowercased; ``#`` comments and ``[section]``
    headers are skipped. Errors name the file and line, never a value.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise errors.ConfigError(f"option {option}: cannot read {path} ({reason})") from None
    found: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        name, sep, value = line.partition("=")
        name = name.strip().lower()
        if not sep or name not in keys:
            raise errors.ConfigError(
                f"option {option}: {path} line {number} is not one of {', '.join(sorted(keys))}"
            )
        found[name] = value.strip().strip("'\"")
    return found
