"""The worker: a tiered block store that serves blocks and fetches misses from the source."""

from fluidcache.worker.config import LevelConfig, WorkerConfig
from fluidcache.worker.server import make_app, serve

__all__ = ["LevelConfig", "WorkerConfig", "make_app", "serve"]
