"""``jettag generate RECIPE``: make a labelled jet dataset with Pythia 8 and FastJet."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]

_RECIPES = ("top-tagging", "quark-gluon", "b-tagging")

_EPILOG = """\
recipes:
  top-tagging  hadronic top vs QCD jets (14 TeV, no MPI, anti-kT R=0.8, 550<pT<650 GeV,
               |eta|<2, matched tops), Top Quark Tagging Reference Dataset HDF5 layout
  quark-gluon  Z+quark vs Z+gluon jets (14 TeV, MPI on, anti-kT R=0.4, 500<pT<550 GeV,
               |y|<2), EnergyFlow npz layout (pt, y, phi, pdgid); y=1 for quark
  b-tagging    b vs light (and c) jets with track impact parameters, perigee points and
               covariances (13 TeV, anti-kT R=0.4, pT>30 GeV), JetClass-style ROOT

The file is cached under $JETTAG_DATA (default ~/.cache/jettag)/generated/, keyed by a hash
of the settings: the same command returns the existing file. An interrupted run resumes
from its completed chunks. Output depends on --seed, never on --workers.
"""


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``generate`` subcommand to an ``argparse`` subparsers object."""
    parser = subparsers.add_parser(
        "generate",
        help="generate a jet dataset with Pythia 8 + FastJet",
        description="Generate a labelled jet dataset offline with Pythia 8 and FastJet, in "
        "the file layout of the recipe's reference dataset (needs the 'generate' extra).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recipe", choices=_RECIPES, help="what to generate")
    parser.add_argument(
        "-n",
        "--jets",
        type=int,
        default=10_000,
        metavar="N",
        help="jets per class; classes are balanced (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="base random seed (default: 0)")
    parser.add_argument(
        "-j", "--workers", type=int, default=1, metavar="N", help="worker processes (default: 1)"
    )
    parser.add_argument(
        "-o",
        "--out",
        default=None,
        metavar="PATH",
        help="output file (default: a hashed name in the data directory)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="cache directory (default: $JETTAG_DATA or ~/.cache/jettag)",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        metavar="N",
        help="jets per work unit and resumable chunk (default: 500)",
    )
    parser.add_argument(
        "--no-shuffle",
        dest="shuffle",
        action="store_false",
        help="keep classes in separate blocks instead of mixing them",
    )
    parser.add_argument(
        "--force", action="store_true", help="rewrite the output even if a cached file exists"
    )
    parser.add_argument(
        "--keep-chunks",
        action="store_true",
        help="keep the per-chunk work files after writing the output",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    top = parser.add_argument_group("top-tagging options")
    top.add_argument(
        "--massless",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="detector-like massless constituents, E=|p| (default: on)",
    )
    top.add_argument(
        "--min-constituent-pt",
        type=float,
        default=None,
        metavar="GEV",
        help="constituent pT threshold in GeV (default: 1.0)",
    )
    qg = parser.add_argument_group("quark-gluon options")
    qg.add_argument(
        "--max-rapidity",
        type=float,
        default=None,
        metavar="Y",
        help="jet |y| cut (default: 2.0; later EnergyFlow samples used 1.7)",
    )
    qg.add_argument(
        "--with-bc",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="allow c and b quark jets in the quark class (default: off)",
    )
    bt = parser.add_argument_group("b-tagging options")
    bt.add_argument(
        "--with-charm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add a c-jet class, label 2 (default: off)",
    )
    bt.add_argument(
        "--jet-radius", type=float, default=None, metavar="R", help="anti-kT radius (default: 0.4)"
    )
    bt.add_argument(
        "--min-jet-pt",
        type=float,
        default=None,
        metavar="GEV",
        help="jet pT threshold in GeV (default: 30)",
    )
    parser.set_defaults(func=_run)
    return parser


# CLI flag -> (recipes that accept it, recipe option name)
_OPTION_FLAGS: dict[str, tuple[tuple[str, ...], str]] = {
    "massless": (("top-tagging",), "massless"),
    "min_constituent_pt": (("top-tagging",), "min_constituent_pt"),
    "max_rapidity": (("quark-gluon",), "max_rapidity"),
    "with_bc": (("quark-gluon",), "with_bc"),
    "with_charm": (("b-tagging",), "with_charm"),
    "jet_radius": (("b-tagging",), "jet_radius"),
    "min_jet_pt": (("b-tagging",), "min_jet_pt"),
}


def _run(args: argparse.Namespace) -> int:
    from jettag.data.generate import DEFAULT_CHUNK_SIZE, generate

    options = {}
    for attr, (recipes, name) in _OPTION_FLAGS.items():
        value = getattr(args, attr)
        if value is None:
            continue
        if args.recipe not in recipes:
            flag = "--" + attr.replace("_", "-")
            raise ValueError(
                f"{flag} applies to the {'/'.join(recipes)} recipe, not to {args.recipe}"
            )
        options[name] = value
    path = generate(
        args.recipe,
        args.jets,
        seed=args.seed,
        workers=args.workers,
        out=args.out,
        data_dir=args.data_dir,
        chunk_size=args.chunk_size or DEFAULT_CHUNK_SIZE,
        shuffle=args.shuffle,
        progress=not args.quiet,
        force=args.force,
        keep_chunks=args.keep_chunks,
        **options,
    )
    print(path)
    return 0
