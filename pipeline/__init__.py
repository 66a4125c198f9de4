"""hardneg stage 1: captions in, hard-negative Parquet shards out."""

from importlib.metadata import PackageNotFoundError, version

from pipeline import _compiled

_compiled.activate()  # before any compiled module is imported: never run a stale build

try:
    __version__ = version("hardneg")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
