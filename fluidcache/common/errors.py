"""The one exception tree of fluidcache, mapped once to HTTP status, wire code and errno.

    FluidcacheError                    500 internal      EIO
    ├── InvalidArgument                400 invalid       EINVAL
    │   └── ConfigError                400 config        EINVAL
    ├── Unauthorized                   401 unauthorized  EACCES
    ├── PermissionDenied               403 forbidden     EACCES
    ├── NotFound                       404 not_found     ENOENT
    ├── NotADirectory                  409 not_a_dir     ENOTDIR
    ├── IsADirectory                   409 is_a_dir      EISDIR
    ├── ReadOnly                       405 read_only     EROFS
    ├── Unavailable                    503 unavailable   EIO      (a worker or peer is unreachable)
    └── SourceError                    502 source        EIO      (the under file system failed)
        ├── SourceUnavailable          504 source_down   EIO      (retries exhausted / timeout)
        └── SourceChanged              412 source_changed EIO     (the file is not the version read)

Servers turn an exception into ``{code, message}`` with its status; clients turn that back into
the same class with :func:`from_wire`; the FUSE layer uses ``errno``.
"""

from __future__ import annotations

import errno as _errno
from typing import ClassVar


class FluidcacheError(Exception):
    """Base of every error fluidcache raises on purpose."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"
    errno: ClassVar[int] = _errno.EIO

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.code)
        self.message = message or self.code


class InvalidArgument(FluidcacheError):
    """A request or argument that cannot be acted on as given."""

    status, code, errno = 400, "invalid", _errno.EINVAL


class ConfigError(InvalidArgument):
    """A configuration value is wrong; the message names the field."""

    code = "config"


class Unauthorized(FluidcacheError):
    """The cluster token is missing or wrong."""

    status, code, errno = 401, "unauthorized", _errno.EACCES


class PermissionDenied(FluidcacheError):
    """The source refused access."""

    status, code, errno = 403, "forbidden", _errno.EACCES


class NotFound(FluidcacheError):
    """No such file, directory, block or worker."""

    status, code, errno = 404, "not_found", _errno.ENOENT


class NotADirectory(FluidcacheError):
    """A directory operation on a file."""

    status, code, errno = 409, "not_a_dir", _errno.ENOTDIR


class IsADirectory(FluidcacheError):
    """A file operation on a directory."""

    status, code, errno = 409, "is_a_dir", _errno.EISDIR


class ReadOnly(FluidcacheError):
    """fluidcache datasets are read-only."""

    status, code, errno = 405, "read_only", _errno.EROFS


class Unavailable(FluidcacheError):
    """A fluidcache process (worker, master) could not be reached or answered badly."""

    status, code, errno = 503, "unavailable", _errno.EIO


class SourceError(FluidcacheError):
    """The under file system failed or returned something unusable."""

    status, code, errno = 502, "source", _errno.EIO


class SourceUnavailable(SourceError):
    """The under file system could not be reached after bounded retries."""

    status, code = 504, "source_down"


class SourceChanged(SourceError):
    """The source file is no longer the version a read asked for: its blocks under that
    version's ids can no longer be fetched (never bytes of two versions mixed)."""

    status, code = 412, "source_changed"


_BY_CODE: dict[str, type[FluidcacheError]] = {
    cls.code: cls
    for cls in (
        FluidcacheError,
        InvalidArgument,
        ConfigError,
        Unauthorized,
        PermissionDenied,
        NotFound,
        NotADirectory,
        IsADirectory,
        ReadOnly,
        Unavailable,
        SourceError,
        SourceUnavailable,
        SourceChanged,
    )
}


def from_wire(code: str, message: str) -> FluidcacheError:
    """Rebuild the exception a server sent as ``{code, message}``."""
    return _BY_CODE.get(code, FluidcacheError)(message)


def from_item(error: list[str]) -> FluidcacheError:
    """Rebuild the exception one item of a batched answer carries as ``[code, message]``."""
    return from_wire(error[0], " ".join(error[1:]))
