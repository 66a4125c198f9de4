"""hardneg stage 1: captions in, hard-negative Parquet shards out."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hardneg")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
