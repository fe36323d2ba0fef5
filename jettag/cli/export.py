"""``jettag export``: write a tagger as an ONNX graph for inference engines.

::

    jettag export --model top-pfn-generated --format onnx --output top-pfn.onnx

The graph takes padded jets with dynamic numbers of jets and particles (``p4``, ``mask``,
and ``features`` when the tagger reads per-particle fields) and returns ``probabilities``;
class names, input conventions, units, the jettag version and a model card summary are in
its metadata. See :mod:`jettag.hub.export`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["register"]

_FORMATS = ("onnx",)


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``export`` command to the ``jettag`` sub-parsers."""
    from jettag.hub.export import DEFAULT_OPSET

    parser = subparsers.add_parser(
        "export",
        help="export a tagger to ONNX",
        description="Export a pretrained or saved tagger to ONNX: inputs p4 (jets, particles, "
        "4) in GeV, mask (jets, particles) and optional features, output probabilities, "
        "dynamic numbers of jets and particles, metadata with the class names and "
        "conventions. The file is checked with onnxruntime against PyTorch before it gets "
        "its final name.",
    )
    parser.add_argument("--model", required=True, metavar="NAME_OR_FILE",
                        help="a pretrained tagger name or a tagger file (.safetensors)")
    parser.add_argument("--format", choices=_FORMATS, default="onnx",
                        help="export format (default: onnx)")
    parser.add_argument("--output", required=True, metavar="FILE", help="output file (.onnx)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset (default: {DEFAULT_OPSET})")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the onnxruntime-versus-PyTorch check")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.set_defaults(func=_cmd_export)
    return parser


def _cmd_export(args: argparse.Namespace) -> int:
    from jettag.cli.predict import resolve_tagger
    from jettag.hub.export import export_onnx, read_onnx_metadata
    from jettag.hub.zoo import UnknownTaggerError

    try:
        tagger = resolve_tagger(args.model)
    except UnknownTaggerError as err:
        print(f"jettag: error: {err}", file=sys.stderr)
        return 2
    path = export_onnx(tagger, args.output, opset=args.opset, overwrite=args.overwrite,
                       verify=not args.no_verify)
    meta = read_onnx_metadata(path)
    inputs = ", ".join(meta["inputs"])
    print(f"{path}: {tagger.name} as ONNX opset {args.opset}; inputs {inputs}; output "
          f"probabilities over {meta['class_names']}", file=sys.stderr)
    return 0
