"""Logging set-up for fluidcache processes."""

import logging
import os


def setup(name: str, level: str | None = None) -> None:
    """One line per record, prefixed with the process role."""
    logging.basicConfig(
        level=(level or os.environ.get("FLUIDCACHE_LOG", "INFO")).upper(),
        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
