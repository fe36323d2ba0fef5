"""``jettag train``: train a tagger from its shipped (model, task) configuration.

::

    jettag train --model particlenet-lite --task top --train train.h5 --val val.h5 --out runs/pnl
    jettag train --model pfn --task qg --generated 20000 --out runs/pfn-qg --set train.epochs=5
    torchrun --nproc_per_node 4 -m jettag.cli train --model pfn --task top \\
        --train 'train/*.h5' --val val.h5 --out runs/pfn-ddp

Writes to ``--out``: ``run.yaml`` (the resolved configuration, data files and command),
the trainer's ``last.pt`` (resumable), ``best.pt``, ``metrics.jsonl``/``metrics.csv`` and
``config.json``, and the best weights as a tagger, ``tagger.safetensors`` + ``tagger.yaml``,
for ``jettag predict --model DIR/tagger.safetensors``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from jettag.cli._options import add_compile_option, add_generator_options, apply_compile_option

__all__ = ["CLASS_NAMES", "register", "run_command"]

#: Output classes of each task, in label order, and the signal class.
CLASS_NAMES: dict[str, tuple[list[str], str]] = {
    "top": (["QCD", "top"], "top"),
    "qg": (["gluon", "quark"], "quark"),
}

_EPILOG = """\
configuration:
  The shipped configuration of (--model, --task) is the base (jettag/configs/<model>-<task>.yaml,
  listed by --list-configs); --config FILE is merged over it section by section (a partial
  file works; a file with 'name' and 'task' needs no --model/--task), then every --set.
  Sections: model (options of jettag.models.create), train (jettag.train.TrainConfig fields),
  data (x_fields, massless, max_particles, format). Examples of --set:
    --set train.lr=1e-3 train.epochs=5 model.phi_channels=[64,64,128] data.max_particles=100

data:
  --train/--val take files, directories or glob patterns of any format jettag reads
  (top-tagging HDF5, quark/gluon npz, JetClass ROOT, parquet). --generated N instead makes
  N training jets with the task's generator recipe (top-tagging or quark-gluon; cached under
  $JETTAG_DATA, default ~/.cache/jettag), and validation and test jets with other seeds, so
  the splits never overlap; run.yaml records their files (jettag evaluate uses the test file
  when --data is not given).

distributed:
  torchrun --nproc_per_node N -m jettag.cli train ...  (batch_size is per process)
"""


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``train`` command to the ``jettag`` sub-parsers."""
    parser = subparsers.add_parser(
        "train",
        help="train a tagger (shipped configurations per model and task)",
        description="Train a tagger on jet files or on generated jets, from its shipped "
        "configuration with optional overrides. Resumes an interrupted run in --out.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", metavar="NAME", help="model name (jettag.models.available())")
    parser.add_argument("--task", choices=("top", "qg"), help="top tagging or quark/gluon")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="YAML configuration merged over the shipped one")
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[],
                        metavar="KEY=VALUE", help="override options, e.g. train.lr=1e-3")
    data = parser.add_argument_group("data")
    data.add_argument("--train", nargs="+", metavar="PATH", help="training jets")
    data.add_argument("--val", nargs="+", metavar="PATH", help="validation jets")
    data.add_argument("--generated", type=int, metavar="N",
                      help="train on N generated jets (both classes) instead of files")
    data.add_argument("--generated-val", type=int, metavar="N",
                      help="generated validation jets (default: N/5, at least 200)")
    data.add_argument("--generated-test", type=int, metavar="N",
                      help="generated test jets (default: as many as validation jets)")
    add_generator_options(data)
    parser.add_argument("--out", type=Path, metavar="DIR", help="run directory")
    parser.add_argument("--resume", choices=("auto", "always", "never"), default="auto",
                        help="auto: continue the run in --out if there is one (default); "
                        "always: it must exist; never: refuse a directory holding a run")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_compile_option(parser)
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved configuration as YAML and exit")
    parser.add_argument("--list-configs", action="store_true",
                        help="list the shipped (model, task) configurations and exit")
    parser.set_defaults(func=run_command)
    return parser


def _generated_sizes(args: argparse.Namespace) -> dict[str, int]:
    n = args.generated
    if n < 2:
        raise ValueError(f"--generated: expected at least 2 jets, found {n}")
    val = args.generated_val if args.generated_val is not None else max(n // 5, 200)
    test = args.generated_test if args.generated_test is not None else val
    return {"train": n, "val": val, "test": test}


def _check_data_args(args: argparse.Namespace) -> None:
    files = args.train is not None or args.val is not None
    if args.generated is not None and files:
        raise ValueError("give either --generated N or --train/--val files, not both")
    if args.generated is None and (args.train is None or args.val is None):
        raise ValueError("give the training and validation jets (--train PATH --val PATH), or "
                         "--generated N to train on generated jets")
    if args.out is None:
        raise ValueError("--out DIR: the run directory is required")


def _datasets(run: Any, files: dict[str, list[str]]) -> dict[str, Any]:
    import torch

    from jettag.bench.data import check_x_fields
    from jettag.data.dataset import IterableJetDataset
    from jettag.data.formats import open_dataset
    from jettag.train import distributed as D

    inputs = run.tagger_inputs()
    transform = inputs.prepare if (inputs.massless or inputs.max_particles) else None
    dtype = {"float32": torch.float32, "float64": torch.float64}[run.train.get("dtype",
                                                                               "float32")]
    batch = int(run.train.get("batch_size", 128))
    eval_batch = int(run.train.get("eval_batch_size") or batch)
    out = {}
    for split in ("train", "val"):
        reader = open_dataset(files[split], run.data["format"])
        check_x_fields(reader, list(inputs.x_fields), f"--{split}")
        out[split] = IterableJetDataset(
            reader,
            batch_size=batch if split == "train" else eval_batch,
            shuffle=split == "train",
            seed=int(run.train.get("seed", 0)),
            # DistributedDataParallel needs the same number of batches on every rank
            drop_last=split == "train" and D.world_size() > 1,
            x_fields=list(inputs.x_fields),
            dtype=dtype,
            transform=transform,
        )
    return out


def _export_tagger(run: Any, model: Any, out: Path, card: dict[str, Any]) -> Path | None:
    from jettag.hub.tagger import Tagger

    classes, signal = CLASS_NAMES[run.task]
    tagger = Tagger.from_model(model, architecture=run.name, config=run.model,
                               class_names=classes, signal=signal,
                               inputs=run.tagger_inputs(), card=card)
    try:
        return tagger.save(out / "tagger.safetensors")
    except ImportError as err:
        print(f"(tagger export skipped: {err})", file=sys.stderr)
        return None


def run_command(args: argparse.Namespace) -> int:
    """Run ``jettag train`` with parsed arguments; returns the exit code."""
    apply_compile_option(args)
    import yaml

    from jettag.configs import available_configs, load_config

    if args.list_configs:
        for model, task in available_configs():
            print(f"{model:18s} {task}")
        return 0
    overrides = list(args.overrides)
    if args.quiet:
        overrides.append("train.progress=false")
    run = load_config(args.model, args.task, path=args.config, overrides=overrides)
    if args.print_config:
        print(yaml.safe_dump(run.to_dict(), sort_keys=False), end="")
        return 0
    _check_data_args(args)
    return _train(run, args)


def _train(run: Any, args: argparse.Namespace) -> int:
    import torch
    import yaml

    from jettag._version import __version__
    from jettag.bench.data import generated_splits
    from jettag.train import distributed as D
    from jettag.train import fit, load_weights, seed_everything

    command = shlex.join(["jettag", *sys.argv[1:]]) if sys.argv else "jettag train"
    device = run.train.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    owns_group = D.init_distributed(torch.device(device).type)
    try:
        if args.generated is not None:
            paths = generated_splits(run.task, _generated_sizes(args), seed=args.data_seed,
                                     workers=args.workers, data_dir=args.cache_dir,
                                     progress=not args.quiet)
            files = {split: [str(p)] for split, p in paths.items()}
        else:
            files = {"train": list(args.train), "val": list(args.val)}
        datasets = _datasets(run, files)
        config = run.train_config(extra={"data_files": {k: files[k] for k in ("train", "val")}})
        out: Path = args.out
        if D.rank() == 0:
            out.mkdir(parents=True, exist_ok=True)
            record = {**run.to_dict(), "data_files": files, "command": command,
                      "jettag_version": __version__}
            (out / "run.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
        seed_everything(config.seed)
        model = run.build_model()
        resume = {"auto": "auto", "always": True, "never": False}[args.resume]
        result = fit(model, datasets["train"], datasets["val"], config, out_dir=out,
                     resume=resume)
        if D.rank() == 0:
            _report(run, model, result, out, files, command, load_weights)
    finally:
        if owns_group:
            torch.distributed.destroy_process_group()
    return 0


def _report(run: Any, model: Any, result: Any, out: Path, files: dict[str, list[str]],
            command: str, load_weights: Any) -> None:
    from jettag.bench.report import json_ready

    best = result.best_checkpoint or result.last_checkpoint
    load_weights(model, best)
    row = next((r for r in result.history if r["epoch"] == result.best_epoch), None) or {}
    keys = ("accuracy", "auc", "rejection@0.5", "rejection@0.3", "loss")
    metrics = json_ready({k: row[f"val_{k}"] for k in keys if f"val_{k}" in row})
    card = {
        "name": f"{run.name}-{run.task}",
        "description": f"{run.description} (trained with jettag train)",
        "training": {"command": command, "data": files, "epochs": len(result.history),
                     "best_epoch": result.best_epoch, "checkpoint": best.name},
        "validation_metrics": metrics,
    }
    tagger = _export_tagger(run, model.cpu(), out, card)
    monitor = run.train_config().monitor
    best_text = "n/a" if result.best_metric is None else f"{result.best_metric:.4f}"
    print(f"best validation {monitor}: {best_text} (epoch "
          f"{'n/a' if result.best_epoch is None else result.best_epoch + 1}); checkpoint {best}",
          file=sys.stderr)
    if tagger is not None:
        print(f"tagger: {tagger}", file=sys.stderr)
    test = files.get("test")
    data = f" --data {shlex.join(test)}" if test else " --data TEST_FILES"
    print(f"evaluate with: jettag evaluate --checkpoint {shlex.quote(str(out))}{data} "
          f"--out {shlex.quote(str(out / 'evaluation'))}", file=sys.stderr)
