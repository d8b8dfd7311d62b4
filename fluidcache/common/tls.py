"""TLS between every component and client, turned on by configuration.

A process is given a certificate and key (to serve HTTPS) and a CA file (to verify the servers
it calls: master, workers, peers). The three paths live in environment variables, which the
``--tls-cert``/``--tls-key``/``--tls-ca`` flags set, so that ``fluidcache up`` hands them to
its children and every HTTP client of the process (RPCs, block reads, peer fetches) verifies
against the same CA. Without a CA file, clients verify HTTPS servers against the system's
trust store; without a certificate, servers speak plain HTTP.
"""

from __future__ import annotations

import functools
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from fluidcache.common.errors import ConfigError

CERT_ENV = "FLUIDCACHE_TLS_CERT"
KEY_ENV = "FLUIDCACHE_TLS_KEY"
CA_ENV = "FLUIDCACHE_TLS_CA"


@dataclass(frozen=True)
class TlsConfig:
    """Paths of a server certificate chain and key, and of the CA bundle clients trust."""

    cert: str = ""
    key: str = ""
    ca: str = ""

    @classmethod
    def from_env(cls) -> TlsConfig:
        env = os.environ
        return cls(env.get(CERT_ENV, ""), env.get(KEY_ENV, ""), env.get(CA_ENV, ""))

    def validate(self) -> None:
        """ConfigError naming the flag that is wrong: a missing file, or a cert without a key."""
        if bool(self.cert) != bool(self.key):
            raise ConfigError("tls-cert/tls-key: give both or neither")
        for flag, path in (("tls-cert", self.cert), ("tls-key", self.key), ("tls-ca", self.ca)):
            if path and not Path(path).is_file():
                raise ConfigError(f"{flag}: {path} is not a readable file")

    def export(self) -> None:
        """Make this the process's TLS settings (and its children's, through the environment)."""
        self.validate()
        for name, value in ((CERT_ENV, self.cert), (KEY_ENV, self.key), (CA_ENV, self.ca)):
            if value:
                os.environ[name] = str(Path(value).absolute())
            else:
                os.environ.pop(name, None)

    @property
    def serving(self) -> bool:
        return bool(self.cert)


def server_context() -> ssl.SSLContext | None:
    """The context to serve HTTPS with, or None for plain HTTP (no certificate configured)."""
    cfg = TlsConfig.from_env()
    if not cfg.serving:
        return None
    return _server_context(cfg.cert, cfg.key)


def client_ssl(ca: str = "") -> ssl.SSLContext | bool:
    """What aiohttp's ``ssl=`` takes for calls to fluidcache servers: a context trusting ``ca``
    (else the configured CA file), else True (the system's trust store). Never unverified.
    """
    path = ca or os.environ.get(CA_ENV, "")
    return _client_context(path) if path else True


@functools.lru_cache(maxsize=8)
def _server_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"tls-cert/tls-key: cannot load {cert}, {key}: {e}") from None
    return ctx


@functools.lru_cache(maxsize=8)
def _client_context(ca: str) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"tls-ca: cannot load {ca}: {e}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
