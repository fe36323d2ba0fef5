"""``jettag evaluate``: test a trained tagger and write its metrics and ROC curve.

::

    jettag evaluate --checkpoint runs/pnl --data test.h5 --out runs/pnl/evaluation

``--checkpoint`` is a run directory of ``jettag train`` (its ``best.pt``, else ``last.pt``)
or a checkpoint file; the checkpoint records the model, its options, the task and the data
options, so nothing else is needed. Without ``--data`` the run's generated test file is
used (runs trained with ``--generated``). Writes to ``--out``:

- ``metrics.json``: accuracy, AUC, background rejections at the task's signal efficiencies
  (nearest ROC point, and interpolated), each with its bootstrap standard deviation
  (``<metric>_std``), the number of jets, the inference rate and what was evaluated;
- ``roc.png`` and ``roc.pdf``: signal efficiency vs background rejection;
- ``scores.npz``: ``labels`` and class probabilities ``probs`` of every jet, in file order.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from jettag.cli._options import add_compile_option, apply_compile_option

__all__ = ["register", "resolve_checkpoint", "run_command"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``evaluate`` command to the ``jettag`` sub-parsers."""
    parser = subparsers.add_parser(
        "evaluate",
        help="test a trained tagger: metrics with bootstrap errors and ROC curve",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, type=Path, metavar="DIR_OR_FILE",
                        help="run directory of jettag train, or a checkpoint file")
    parser.add_argument("--data", nargs="+", metavar="PATH",
                        help="test jets: files, directories or globs (default: the run's "
                        "generated test file)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="output directory")
    parser.add_argument("--format", default=None,
                        help="input format (default: the run's, else from the files)")
    parser.add_argument("--bootstrap", type=int, default=100, metavar="R",
                        help="bootstrap replicates for the uncertainties (default: 100; 0 = none)")
    parser.add_argument("--batch-size", type=int, default=512, help="jets per forward pass")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA if "
                        "available, else CPU)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_compile_option(parser)
    parser.set_defaults(func=run_command)
    return parser


def resolve_checkpoint(path: Path) -> Path:
    """The checkpoint file of ``path``: itself, or a run directory's ``best.pt`` (else
    ``last.pt``)."""
    path = path.expanduser()
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(
            f"--checkpoint {path}: the directory holds no best.pt or last.pt; pass the run "
            f"directory of jettag train or a checkpoint file"
        )
    if not path.is_file():
        raise FileNotFoundError(f"--checkpoint {path}: no such file or directory")
    return path


def _run_config(state: dict[str, Any], path: Path) -> Any:
    from jettag.configs import RunConfig

    config = state.get("config") or {}
    extra = config.get("extra") or {}
    missing = [k for k in ("model", "model_config", "data", "task") if k not in extra]
    if missing:
        raise ValueError(
            f"checkpoint {path}: does not record the model it holds (its configuration lacks "
            f"{missing}); it was not written by jettag train. Load it in Python with "
            f"jettag.train.load_weights(model, path) and evaluate with jettag.train.evaluate"
        )
    return RunConfig(name=extra["model"], task=extra["task"], model=dict(extra["model_config"]),
                     data=dict(extra["data"]), sources=[str(path)])


def _test_files(args: argparse.Namespace, checkpoint: Path) -> list[str]:
    import yaml

    if args.data:
        return list(args.data)
    record = checkpoint.parent / "run.yaml"
    test = None
    if record.is_file():
        test = (yaml.safe_load(record.read_text()) or {}).get("data_files", {}).get("test")
    if not test:
        raise ValueError(
            f"--data: no test jets given, and {record} records no generated test file; pass "
            f"--data PATH"
        )
    return list(test)


def run_command(args: argparse.Namespace) -> int:
    """Run ``jettag evaluate`` with parsed arguments; returns the exit code."""
    apply_compile_option(args)
    import numpy as np
    import torch

    from jettag._version import __version__
    from jettag.bench.data import check_x_fields
    from jettag.bench.report import json_ready
    from jettag.cli.train import CLASS_NAMES
    from jettag.data.dataset import IterableJetDataset
    from jettag.data.formats import open_dataset
    from jettag.metrics import plot_roc, summary
    from jettag.train import load_checkpoint, load_weights, predict

    if args.bootstrap < 0 or args.batch_size < 1:
        raise ValueError(f"--bootstrap must be >= 0 and --batch-size >= 1, found "
                         f"{args.bootstrap} and {args.batch_size}")
    path = resolve_checkpoint(args.checkpoint)
    state = load_checkpoint(path)
    run = _run_config(state, path)
    model = run.build_model()
    load_weights(model, path)
    files = _test_files(args, path)
    inputs = run.tagger_inputs()
    reader = open_dataset(files, args.format or run.data.get("format"))
    check_x_fields(reader, list(inputs.x_fields), "--data")
    dataset = IterableJetDataset(
        reader, batch_size=args.batch_size, x_fields=list(inputs.x_fields),
        transform=inputs.prepare if (inputs.massless or inputs.max_particles) else None,
    )
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.eval()
    start = time.perf_counter()
    labels, probs = predict(model, dataset, batch_size=args.batch_size, device=device,
                            dtype=torch.float32, progress=not args.quiet)
    seconds = time.perf_counter() - start
    metrics = summary(labels, probs, run.task, interpolated=True, bootstrap=args.bootstrap)
    classes, signal = CLASS_NAMES[run.task]
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "command": shlex.join(["jettag", *sys.argv[1:]]) if sys.argv else "jettag evaluate",
        "checkpoint": str(path),
        "epoch": state.get("epoch"),
        "model": run.name,
        "model_config": run.model,
        "parameters": sum(p.numel() for p in model.parameters()),
        "task": run.task,
        "classes": classes,
        "signal": signal,
        "data": [str(f) for f in files],
        "bootstrap": args.bootstrap,
        "metrics": metrics,
        "inference_jets_per_s": round(len(labels) / seconds, 1) if seconds > 0 else None,
        "device": str(device),
        "jettag_version": __version__,
    }
    (out / "metrics.json").write_text(json.dumps(json_ready(record), indent=2) + "\n")
    np.savez_compressed(out / "scores.npz", labels=labels, probs=probs)
    written = ["metrics.json", "scores.npz"]
    curves = {f"{run.name} ({signal} vs {classes[0]})": (labels == 1, probs[:, 1])}
    title = f"{run.name} on {len(labels):,} jets"
    try:
        for suffix in ("png", "pdf"):
            plot_roc(curves, out / f"roc.{suffix}", title=title)
            written.append(f"roc.{suffix}")
    except ImportError as err:
        print(f"(ROC plot skipped: {err})", file=sys.stderr)
    for key in ("accuracy", "auc", "rejection@0.5", "rejection@0.3"):
        std = metrics.get(f"{key}_std")
        spread = "" if std is None or not np.isfinite(std) else f" ± {std:.4g}"
        print(f"{key:16s} {metrics[key]:.6g}{spread}")
    print(f"{len(labels)} jets; wrote {', '.join(str(out / w) for w in written)}",
          file=sys.stderr)
    return 0
