"""Training fidelity: jettag's ParticleNet against weaver-core's, trained the same way.

Both taggers are trained with the same recipe (the shipped ``particlenet-lite`` or
``particlenet`` configuration of the task), on the same jets, with the same seeds and the
same initial weights (weaver-core's module is loaded with jettag's initial weights through
:func:`jettag.hub.weaver.to_weaver_state_dict`), by the same loop (:func:`jettag.train.fit`).
What differs is the implementation: weaver-core's ``ParticleNet`` takes the jets padded to
the card's fixed length (128 for top tagging, as weaver's data configuration pads them), so
its training-mode batch normalisation and, in jets shorter than ``k + 1``, its neighbour
lists see the padding; jettag's runs on the packed particles. The two trained taggers are
then tested on the same test jets and their AUCs compared.

weaver-core is a test-only dependency (``pip install weaver-core``).

Example::

    python benchmarks/fidelity_particlenet.py --seeds 3
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from jettag.bench.runner import PRESETS, Budget, _load_data, _train_one

__all__ = ["IMPLEMENTATIONS", "WeaverParticleNet", "run_fidelity"]

#: The two implementations compared.
IMPLEMENTATIONS = ("jettag", "weaver-core")


class WeaverParticleNet(nn.Module):
    """weaver-core's ``ParticleNet`` behind jettag's interface: ``JetBatch`` -> logits.

    The inputs are built by the jettag model's own preprocessor (the same features) and
    padded to the feature set's declared length, channels first, as weaver-core takes them.

    Args:
        model: a jettag :class:`~jettag.models.particlenet.ParticleNet` with ``inputs``; its
            architecture and weights are copied.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        from jettag._optional import require
        from jettag.hub.weaver import to_weaver_state_dict

        module = require("weaver.nn.model.ParticleNet", "test",
                         feature="the weaver-core ParticleNet fidelity benchmark")
        if getattr(model, "inputs", None) is None:
            raise ValueError("WeaverParticleNet: the jettag model must have inputs (a feature "
                             "set such as 'top-tagging:kin')")
        self.preprocessor = model.inputs.preprocessor
        self.x_names = model.inputs.x_names
        self.num_classes = model.num_classes
        self.weaver = module.ParticleNet(
            model.input_dims, model.num_classes,
            conv_params=[(k, tuple(w)) for k, w in model.block_params],
            fc_params=list(model.fc_params), use_fusion=model.use_fusion,
            use_fts_bn=model.use_fts_bn,
        )
        self.weaver.load_state_dict(to_weaver_state_dict(model), strict=True)

    def forward(self, jets: Any) -> Tensor:
        groups, mask = self.preprocessor.padded(jets, x_names=self.x_names, channels_first=True)
        features = groups["features"]
        return self.weaver(groups["points"], features, mask[:, None].to(features.dtype))


def run_fidelity(
    task: str = "top",
    *,
    model: str = "particlenet-lite",
    budget: Budget | None = None,
    out: str | os.PathLike[str] = "results/fidelity-particlenet",
    data_dir: str | os.PathLike[str] | None = None,
    data_seed: int = 0,
    workers: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    bootstrap: int = 100,
    overrides: Sequence[str] = (),
    tolerance: float = 0.005,
    progress: bool = True,
    command: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train ``model`` with both implementations over ``budget.seeds`` seeds; compare AUCs.

    Writes ``fidelity.json`` and ``fidelity.md`` to ``out``. The check passes when the mean
    test AUCs over seeds differ by at most ``tolerance``.
    """
    if model not in ("particlenet-lite", "particlenet"):
        raise ValueError(f"--model: expected particlenet-lite or particlenet, found {model!r}")
    if tolerance <= 0:
        raise ValueError(f"--tolerance: expected a positive number, found {tolerance}")
    budget = PRESETS[task]["default"] if budget is None else budget
    if log is None:
        def log(text: str) -> None:
            if progress:
                print(text, file=sys.stderr, flush=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    chunks, data_info = _load_data(task, budget, data_dir=data_dir, data_seed=data_seed,
                                   workers=workers, cache_dir=cache_dir, progress=progress,
                                   log=log)
    runs: list[dict[str, Any]] = []
    for seed in range(budget.seeds):
        for implementation in IMPLEMENTATIONS:
            log(f"fidelity: {model} ({implementation}), seed {seed}")
            run = _train_one(model, task, seed, chunks, budget=budget, overrides=overrides,
                             data_info=data_info, out=out, bootstrap=bootstrap,
                             progress=progress, label=implementation,
                             wrap=WeaverParticleNet if implementation == "weaver-core" else None)
            run.pop("_scores")
            run.pop("config")
            runs.append({"implementation": implementation, **run})
    aucs = {impl: [r["metrics"]["auc"] for r in runs if r["implementation"] == impl]
            for impl in IMPLEMENTATIONS}
    means = {impl: float(np.mean(v)) for impl, v in aucs.items()}
    diff = means["jettag"] - means["weaver-core"]
    per_seed = [a - b for a, b in zip(aucs["jettag"], aucs["weaver-core"], strict=True)]
    results = {
        "task": task, "model": model,
        "budget": {"train_jets": budget.train_jets, "val_jets": budget.val_jets,
                   "test_jets": budget.test_jets, "epochs": budget.epochs,
                   "seeds": budget.seeds},
        "data": {k: v for k, v in data_info.items() if k != "files"},
        "command": command or " ".join(sys.argv),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "load_at_start": load,
                    "torch": torch.__version__},
        "runs": runs,
        "auc": aucs,
        "mean_auc": means,
        "auc_difference": diff,
        "auc_difference_per_seed": per_seed,
        "tolerance": tolerance,
        "passed": bool(abs(diff) <= tolerance),
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    (out / "fidelity.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "fidelity.md").write_text(format_fidelity(results))
    return results


def format_fidelity(results: dict[str, Any]) -> str:
    """The Markdown report of :func:`run_fidelity`."""
    b = results["budget"]
    lines = [
        f"# Training fidelity: {results['model']} in jettag vs weaver-core ({results['task']})",
        "",
        f"Command: `{results['command']}`",
        "",
        f"- Jets: train {b['train_jets']:,}, val {b['val_jets']:,}, test {b['test_jets']:,} "
        f"({results['data'].get('source', '?')}); {b['epochs']} epoch(s); seeds "
        f"0..{b['seeds'] - 1}; same recipe, data, seeds and initial weights for both.",
        f"- Machine: {results['machine']['platform']}, {results['machine']['cpus']} CPU(s), "
        f"{results['machine']['torch_threads']} torch thread(s), load average "
        f"{results['machine']['load_at_start']} at the start; wall time "
        f"{results['wall_time_s']:.0f} s.",
        "",
        "| Seed | jettag AUC | weaver-core AUC | difference |",
        "|---|---|---|---|",
    ]
    for seed, (a, w) in enumerate(zip(results["auc"]["jettag"], results["auc"]["weaver-core"],
                                      strict=True)):
        lines.append(f"| {seed} | {a:.4f} | {w:.4f} | {a - w:+.4f} |")
    m = results["mean_auc"]
    lines += [
        f"| mean | {m['jettag']:.4f} | {m['weaver-core']:.4f} | "
        f"{results['auc_difference']:+.4f} |",
        "",
        f"Check |mean difference| <= {results['tolerance']}: "
        f"**{'PASS' if results['passed'] else 'FAIL'}**.",
        "",
    ]
    return "\n".join(lines)
