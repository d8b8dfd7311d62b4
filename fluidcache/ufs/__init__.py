"""Under file systems: the sources fluidcache caches, behind one interface."""

from fluidcache.ufs._threaded import READ_THREADS
from fluidcache.ufs.base import UfsStatus, UnderFileSystem
from fluidcache.ufs.registry import check_options, create_ufs, supported_schemes

__all__ = [
    "READ_THREADS",
    "UfsStatus",
    "UnderFileSystem",
    "check_options",
    "create_ufs",
    "supported_schemes",
]
