"""Command-line options shared by several ``jettag`` subcommands."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_generator_options(group: argparse._ArgumentGroup | argparse.ArgumentParser) -> None:
    """``--data-seed``, ``--workers`` and ``--cache-dir``: how generated splits are made."""
    group.add_argument("--data-seed", type=int, default=0,
                       help="base seed of the generated splits (default: 0)")
    group.add_argument("--workers", type=int, default=None, metavar="N",
                       help="generator processes (default: all CPUs)")
    group.add_argument("--cache-dir", type=Path, default=None, metavar="DIR",
                       help="generator cache (default: $JETTAG_DATA or ~/.cache/jettag)")


def add_compile_option(parser: argparse._ArgumentGroup | argparse.ArgumentParser) -> None:
    """``--compile-tiles``: the fused operators' CPU tiles through ``torch.compile``."""
    parser.add_argument("--compile-tiles", action="store_true",
                        help="run the CPU tiles of the fused LorentzNet operator through "
                        "torch.compile (faster on CPU; the first batches wait while it "
                        "compiles, up to a minute; needs a C++ compiler, falls back to eager "
                        "with a warning). Same as JETTAG_COMPILE_TILES=1")


def apply_compile_option(args: argparse.Namespace) -> None:
    """Turn compiled tiles on for this process and the processes it starts, if asked."""
    if getattr(args, "compile_tiles", False):
        from jettag.ops import dispatch

        dispatch.set_compiled_tiles(True)
        os.environ["JETTAG_COMPILE_TILES"] = "1"
