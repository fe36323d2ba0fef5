"""The ``jettag`` command.

Each subcommand lives in its own module of this package and exposes
``register(subparsers)``, which adds an ``argparse`` sub-parser whose ``func`` default
runs the command and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from jettag._version import __version__

__all__ = ["build_parser", "main"]

# Subcommand modules, in the order `jettag --help` lists them.
_SUBCOMMANDS = (
    "jettag.cli.demo",
    "jettag.cli.data",
    "jettag.cli.generate",
    "jettag.cli.train",
    "jettag.cli.evaluate",
    "jettag.cli.benchmark",
    "jettag.cli.predict",
    "jettag.cli.export",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jettag",
        description="Symmetry-aware neural networks for jet tagging.",
    )
    parser.add_argument("--version", action="version", version=f"jettag {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in _SUBCOMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, ImportError) as err:
        print(f"jettag: error: {err}", file=sys.stderr)
        return 2
