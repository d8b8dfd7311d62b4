"""Under file systems: the sources fluidcache caches, behind one interface."""

from fluidcache.ufs._threaded import READ_THREADS
from fluidcache.ufs.base import ReadPool, UfsStatus, UnderFileSystem
from fluidcache.ufs.registry import check_options, create_ufs, supported_schemes

__all__ = [
    "READ_THREADS",
    "ReadPool",
    "UfsStatus",
    "UnderFileSystem",
    "check_options",
    "create_ufs",
    "supported_schemes",
]
