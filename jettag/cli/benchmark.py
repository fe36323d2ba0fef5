"""``jettag benchmark top|qg|btag``: train and compare taggers against a cut-based baseline.

::

    jettag benchmark top                                  # default budget, generated jets
    jettag benchmark top --preset acceptance              # 20k training jets + the check
    jettag benchmark qg --models pfn,efn --seeds 3 --epochs 10 --train-jets 50000
    jettag benchmark top --data-dir ~/data/toptagging --train-jets 1200000 --epochs 20
    jettag benchmark top --tiny                           # smoke test (seconds)
    jettag benchmark btag --threads 1                     # b-taggers, 3 seeds, cost table

The same command is ``python benchmarks/top_tagging.py ...`` / ``benchmarks/quark_gluon.py``
/ ``benchmarks/b_tagging.py``.
See :mod:`jettag.bench` and ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jettag.cli._options import add_generator_options

__all__ = ["add_arguments", "register", "run_command", "script_main"]

_EPILOG = """\
presets (jets per split: train/val/test; epochs; seeds):
{presets}
Budget flags replace the preset's values. Default taggers: {models} (those that are
available; ParticleNet and LorentzNet are left out of the default for their CPU cost; add
them with --models, or run every configured one with --models all). btag runs its own
taggers (track-pfn, vector-pfn, tensor-pfn) with every preset, and adds a cost table (time
per jet, parameters) with the full-SO(3) e3nn block for comparison.

data: by default jets are generated with the task's recipe (top-tagging, quark-gluon or
b-tagging), a seed per split so the splits never overlap, and cached ($JETTAG_DATA or
~/.cache/jettag): a second run with the same budget generates nothing. --data-dir DIR
reads a dataset instead: train/val/test files or subdirectories (train.h5, val.h5, test.h5
of the top-tagging dataset), the first --train-jets/--val-jets/--test-jets jets of each.

outputs (--out): results.md and results.json (table: accuracy, AUC, rejections at the task's
signal efficiencies, parameters, training time, inference rate; the baseline; the published
numbers on the reference datasets in a separate section), roc.png, roc.pdf, and every run's
checkpoints and test scores under runs/. Re-running with the same settings resumes.
"""


def _epilog() -> str:
    from jettag.bench import DEFAULT_MODELS, PRESETS

    rows = []
    for task, presets in PRESETS.items():
        for name, b in presets.items():
            rows.append(f"  {task:4s} {name:10s} {b.train_jets}/{b.val_jets}/{b.test_jets}; "
                        f"{b.epochs} epoch(s); {b.seeds} seed(s)")
    return _EPILOG.format(presets="\n".join(rows), models=", ".join(DEFAULT_MODELS))


def add_arguments(parser: argparse.ArgumentParser, *, task: str | None = None) -> None:
    """The benchmark's options (``task`` fixed: no positional task argument)."""
    from jettag.bench import PRESETS

    if task is None:
        parser.add_argument("task", choices=sorted(PRESETS), help="top, qg or btag")
    else:
        parser.set_defaults(task=task)
    parser.add_argument("--preset", choices=("tiny", "default", "acceptance", "large"),
                        default="default", help="budget preset (default: default)")
    parser.add_argument("--tiny", action="store_const", const="tiny", dest="preset",
                        help="same as --preset tiny (smoke test)")
    parser.add_argument("--models", default=None, metavar="LIST",
                        help="comma-separated model names, 'default' or 'all'")
    budget = parser.add_argument_group("budget (replaces the preset's values)")
    for flag, help_text in (("--train-jets", "training jets (both classes)"),
                            ("--val-jets", "validation jets"), ("--test-jets", "test jets"),
                            ("--epochs", "epochs per run"), ("--seeds", "training seeds per "
                                                                        "tagger")):
        budget.add_argument(flag, type=int, default=None, metavar="N", help=help_text)
    data = parser.add_argument_group("data")
    data.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                      help="dataset directory with train/val/test files (default: generate)")
    add_generator_options(data)
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[],
                        metavar="KEY=VALUE",
                        help="configuration overrides for every tagger, e.g. train.lr=1e-3")
    parser.add_argument("--bootstrap", type=int, default=100, metavar="R",
                        help="bootstrap replicates of the test metrics (default: 100)")
    parser.add_argument("--check", action="store_true",
                        help="check the acceptance criteria (on by default with --preset "
                        "acceptance); exit code 1 when they fail")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="output directory (default: results/benchmark-TASK[-PRESET])")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="trainings run in parallel, one process each (default: one per "
                        "CPU); results do not depend on it")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch CPU threads per training (default: 1 with parallel "
                        "trainings, else torch's choice)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    parser.set_defaults(func=run_command)


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``benchmark`` command to the ``jettag`` sub-parsers."""
    parser = subparsers.add_parser(
        "benchmark",
        help="train and compare taggers on top tagging, quark/gluon or b-tagging (with a "
        "baseline)",
        description="Train the selected taggers over several seeds with a stated budget, on "
        "generated jets (default) or a dataset directory, and write a results table, ROC "
        "curves, a cut-based baseline and, separately, the published reference numbers.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return parser


def run_command(args: argparse.Namespace, *, command: str | None = None) -> int:
    """Run the benchmark with parsed arguments; exit code 1 if a requested check fails."""
    from dataclasses import replace

    import torch

    from jettag.bench import PRESET_MODELS, PRESETS, run_benchmark
    from jettag.bench.report import format_table
    from jettag.bench.runner import TASK_MODELS

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads: expected a positive number, found {args.threads}")
        torch.set_num_threads(args.threads)

    budget = PRESETS[args.task][args.preset]
    changes = {k: getattr(args, k) for k in ("train_jets", "val_jets", "test_jets", "epochs",
                                             "seeds") if getattr(args, k) is not None}
    budget = replace(budget, **changes)
    if args.models is not None:
        models = args.models
    else:  # a task with its own taggers runs them with every preset
        models = None if args.task in TASK_MODELS else PRESET_MODELS[args.preset]
    check = args.check or args.preset == "acceptance"
    suffix = "" if args.preset == "default" else f"-{args.preset}"
    out = args.out if args.out is not None else Path("results") / f"benchmark-{args.task}{suffix}"
    results = run_benchmark(
        args.task, budget=budget, out=out, models=models, data_dir=args.data_dir,
        data_seed=args.data_seed, workers=args.workers, cache_dir=args.cache_dir,
        bootstrap=args.bootstrap, overrides=args.overrides, check=check, preset=args.preset,
        progress=not args.quiet, command=command, jobs=args.jobs,
        threads=args.threads if args.threads is not None else 1,
    )
    print(format_table(results))
    print(f"\nwrote {out / 'results.md'}, {out / 'results.json'}"
          + ("" if not isinstance(results.get("roc_plot"), list) else
             f", {out / 'roc.png'}, {out / 'roc.pdf'}")
          + f" in {results['wall_time_s']:.0f} s", file=sys.stderr)
    if results["check"] is not None:
        passed = results["check"]["passed"]
        for c in results["check"]["criteria"]:
            print(f"[{'PASS' if c['passed'] else 'FAIL'}] {c['criterion']}: {c['value']}",
                  file=sys.stderr)
        if not passed:
            print("acceptance check FAILED", file=sys.stderr)
            return 1
    return 0


def script_main(task: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of ``benchmarks/top_tagging.py`` and ``benchmarks/quark_gluon.py``."""
    import shlex

    parser = argparse.ArgumentParser(
        prog=f"{Path(sys.argv[0]).name}",
        description=f"jettag benchmark {task}: see `jettag benchmark --help`.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser, task=task)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    command = shlex.join(["python", sys.argv[0], *argv])
    try:
        return run_command(args, command=command)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
