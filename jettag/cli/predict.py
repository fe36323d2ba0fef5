"""``jettag predict``: score the jets of a file with a pretrained or saved tagger.

::

    jettag predict --model top-pfn-generated --input jets.root --output scores.parquet
    jettag predict --model my_tagger.safetensors --input events.root --tree Events \\
        --branch part_pt=PFCands_pt --branch part_eta=PFCands_eta \\
        --branch part_phi=PFCands_phi --branch part_mass=PFCands_mass --output scores.root

Writes one row per input jet, in input order: ``entry``, ``prob_<class>`` per class,
``score`` (probability of the signal class, two-class taggers) and ``empty`` (1 for a jet
without constituents, whose scores are NaN). See :mod:`jettag.hub.predict`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jettag.cli._options import add_compile_option, apply_compile_option

__all__ = ["register", "resolve_tagger"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``predict`` command to the ``jettag`` sub-parsers."""
    parser = subparsers.add_parser(
        "predict",
        help="score the jets of a file with a tagger",
        description="Run a tagger over a jet file (ROOT, top-tagging HDF5, quark/gluon npz "
        "or parquet) and write one row of class probabilities per jet, in input order, to a "
        "parquet or ROOT file. Jets without constituents get NaN scores and empty=1. The "
        "output is written under a temporary name and renamed at the end.",
    )
    parser.add_argument("--model", required=True, metavar="NAME_OR_FILE",
                        help="a pretrained tagger name (jettag.hub.list_pretrained) or a tagger "
                        "file (.safetensors with its .yaml card)")
    parser.add_argument("--input", required=True, metavar="FILE", help="the jet file")
    parser.add_argument("--output", required=True, metavar="FILE",
                        help="output file: .parquet or .root (by extension)")
    parser.add_argument("--format", default=None,
                        help="input format (default: from the extension): top-hdf5, qg-npz, "
                        "parquet, root")
    parser.add_argument("--tree", default="tree", help="TTree of a ROOT input (default: tree)")
    parser.add_argument("--branch", action="append", default=[], metavar="CANONICAL=BRANCH",
                        help="ROOT input: read canonical field CANONICAL (part_px, part_py, "
                        "part_pz, part_energy, or part_pt/part_eta/part_phi with part_energy "
                        "or part_mass, or a field the tagger reads such as part_pid) from "
                        "branch BRANCH (repeatable)")
    parser.add_argument("--output-tree", default="scores",
                        help="tree name of a ROOT output (default: scores)")
    parser.add_argument("--chunk-size", type=int, default=10_000,
                        help="jets read per chunk (default: 10000)")
    parser.add_argument("--batch-size", type=int, default=1024,
                        help="jets per forward pass (default: 1024)")
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA if available), cpu, cuda, cuda:N (default: auto)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_compile_option(parser)
    parser.set_defaults(func=_cmd_predict)
    return parser


def parse_branches(items: list[str]) -> dict[str, str]:
    """``["part_px=PX", ...]`` -> ``{"part_px": "PX"}``; a malformed item is a ValueError."""
    mapping: dict[str, str] = {}
    for item in items:
        canonical, sep, branch = item.partition("=")
        canonical, branch = canonical.strip(), branch.strip()
        if not sep or not canonical or not branch:
            raise ValueError(f"--branch: expected CANONICAL=BRANCH (e.g. part_px=PF_px), "
                             f"found {item!r}")
        if canonical in mapping and mapping[canonical] != branch:
            raise ValueError(f"--branch: {canonical} is mapped twice ({mapping[canonical]!r} "
                             f"and {branch!r})")
        mapping[canonical] = branch
    return mapping


def resolve_tagger(spec: str, *, device: str = "cpu") -> Any:
    """A tagger from a zoo name or a tagger file path."""
    from pathlib import Path

    from jettag.hub.tagger import Tagger
    from jettag.hub.zoo import load_pretrained

    path = Path(spec).expanduser()
    if path.suffix.lower() in (".safetensors", ".yaml", ".yml") or path.exists():
        return Tagger.load(path, device=device)
    if "/" in spec or "\\" in spec:
        raise FileNotFoundError(f"--model {spec}: no such tagger file")
    return load_pretrained(spec, device=device)


def _cmd_predict(args: argparse.Namespace) -> int:
    from jettag.hub.predict import predict_file
    from jettag.hub.zoo import UnknownTaggerError

    apply_compile_option(args)
    branches = parse_branches(args.branch)
    try:
        tagger = resolve_tagger(args.model)
    except UnknownTaggerError as err:
        print(f"jettag: error: {err}", file=sys.stderr)
        return 2
    summary = predict_file(
        tagger,
        args.input,
        args.output,
        format=args.format,
        tree=args.tree,
        branches=branches,
        output_tree=args.output_tree,
        chunk_size=args.chunk_size,
        batch_size=args.batch_size,
        device=args.device,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    empty = ""
    if summary.num_empty:
        empty = f" ({summary.num_empty} without constituents: NaN scores, empty=1)"
    print(f"{summary.output}: {summary.num_jets} jets scored with {tagger.name}{empty}",
          file=sys.stderr)
    return 0
