"""Errors that stop a run with a clear message (the CLI prints them without a traceback)."""


class HardnegError(Exception):
    """Base of every error meant for the user rather than for a developer."""


class ConfigError(HardnegError, ValueError):
    """A configuration value or key is wrong; the message names it."""


class SourceError(HardnegError):
    """An input file is malformed; the message names the file and the record."""


class ModelError(HardnegError):
    """A model (spaCy pipeline, open_clip weights) is missing; the message says how to install it."""
