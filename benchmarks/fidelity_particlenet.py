"""Training fidelity: jettag's ParticleNet-Lite vs weaver-core's, same recipe, data, seeds.

Both are trained by :func:`jettag.train.fit` with the shipped configuration, from the same
initial weights, on the same generated (or given) jets; the mean test AUCs over seeds must
agree within ``--tolerance`` (0.005). See :mod:`jettag.bench.fidelity`::

    python benchmarks/fidelity_particlenet.py --seeds 3 --threads 1
    python benchmarks/fidelity_particlenet.py --tiny            # smoke test
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import replace
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    import torch

    from jettag.bench import PRESETS
    from jettag.bench.fidelity import format_fidelity, run_fidelity

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("top", "qg"), default="top")
    parser.add_argument("--model", choices=("particlenet-lite", "particlenet"),
                        default="particlenet-lite")
    parser.add_argument("--preset", choices=("tiny", "default", "acceptance"), default="default",
                        help="data and epoch budget of `jettag benchmark` (default: default)")
    parser.add_argument("--tiny", action="store_const", const="tiny", dest="preset")
    for flag in ("--train-jets", "--val-jets", "--test-jets", "--epochs", "--seeds"):
        parser.add_argument(flag, type=int, default=None, metavar="N")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--tolerance", type=float, default=0.005)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quiet", action="store_true")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    budget = PRESETS[args.task][args.preset]
    changes = {k: getattr(args, k) for k in ("train_jets", "val_jets", "test_jets", "epochs",
                                             "seeds") if getattr(args, k) is not None}
    budget = replace(budget, **changes)
    out = args.out or Path("results") / f"fidelity-{args.model}-{args.task}"
    results = run_fidelity(
        args.task, model=args.model, budget=budget, out=out, data_dir=args.data_dir,
        workers=args.workers, cache_dir=args.cache_dir, tolerance=args.tolerance,
        progress=not args.quiet,
        command=shlex.join(["python", "benchmarks/fidelity_particlenet.py", *argv]),
    )
    print(format_fidelity(results))
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
