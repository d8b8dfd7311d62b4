"""The master: the namespace of every dataset (LMDB), the block map, the worker registry.

``serve(config)`` runs it; ``make_app(config)`` builds its aiohttp application for tests.
"""

from fluidcache.master.config import MasterConfig
from fluidcache.master.server import make_app, serve

__all__ = ["MasterConfig", "make_app", "serve"]
