"""Under file systems: the sources fluidcache caches, behind one interface."""

from fluidcache.ufs.base import UfsStatus, UnderFileSystem
from fluidcache.ufs.registry import check_options, create_ufs, supported_schemes

__all__ = [
    "UfsStatus",
    "UnderFileSystem",
    "check_options",
    "create_ufs",
    "supported_schemes",
]
