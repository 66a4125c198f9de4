"""The ``hardneg`` command: a thin layer that turns arguments into typed configs and calls the API.

Each CLI module (``pipeline/cli/*.py``, ``trainer/cli.py``) registers its subcommands through a
``register(subparsers)`` function; library modules never import a CLI module, and heavy imports
(torch, spaCy) happen only when a subcommand runs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from pipeline.core.errors import ConfigError, HardnegError

log = logging.getLogger("hardneg")

#: modules that provide ``register(subparsers)``; optional ones may be missing their extras
_COMMAND_MODULES = (
    "pipeline.cli.generate",
    "pipeline.cli.parse",
    "pipeline.cli.synth",
    "pipeline.cli.report",
    "pipeline.cli.publish",
    "trainer.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hardneg",
        description="Hard-negative caption datasets and CE-CLIP training for compositionality.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            # a module of this project that is not written yet, or an optional extra not installed
            if e.name and (e.name == name or name.startswith(e.name + ".")):
                continue
            raise
        module.register(sub)
    return parser


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        log.error("config error: %s", e)
        return 2
    except HardnegError as e:
        log.error("%s", e)
        return 1
    except OSError as e:  # a path that is missing, a folder where a file is expected, a full disk
        log.error("%s", e)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted; finished shards are kept and a rerun resumes")
        return 130


if __name__ == "__main__":
    sys.exit(main())
