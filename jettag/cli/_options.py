"""Command-line options shared by several ``jettag`` subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_generator_options(group: argparse._ArgumentGroup | argparse.ArgumentParser) -> None:
    """``--data-seed``, ``--workers`` and ``--cache-dir``: how generated splits are made."""
    group.add_argument("--data-seed", type=int, default=0,
                       help="base seed of the generated splits (default: 0)")
    group.add_argument("--workers", type=int, default=None, metavar="N",
                       help="generator processes (default: all CPUs)")
    group.add_argument("--cache-dir", type=Path, default=None, metavar="DIR",
                       help="generator cache (default: $JETTAG_DATA or ~/.cache/jettag)")
