"""The way in: the async and blocking client libraries, an fsspec filesystem (protocol
``fluidcache``) and, in ``fluidcache.client.fuse``, the FUSE mount."""

from fluidcache.client.api import AsyncClient, AsyncFile
from fluidcache.client.sync import Client, File

__all__ = ["AsyncClient", "AsyncFile", "Client", "File"]
