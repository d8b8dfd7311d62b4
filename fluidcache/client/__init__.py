"""The way in: an async client library and, in ``fluidcache.client.fuse``, the FUSE mount."""

from fluidcache.client.api import AsyncClient, AsyncFile

__all__ = ["AsyncClient", "AsyncFile"]
