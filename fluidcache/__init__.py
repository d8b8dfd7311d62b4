"""fluidcache: a distributed cache for remote datasets, read as a directory or from Python."""

__version__ = "0.1.0"
