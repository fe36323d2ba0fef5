"""Cut-based baselines every tagger of a benchmark must beat.

- top tagging: the jet-mass window, score :math:`-|m_J - 172.5\\,\\mathrm{GeV}|` (the closer
  the jet mass to the top mass, the more top-like);
- quark/gluon: the constituent multiplicity, score :math:`-n` (quark jets have fewer
  constituents), as in energyflow's ``examples/pfn_example.py``.

A baseline needs no training; its accuracy needs a cut, chosen on the validation jets (the
cut that classifies most of them correctly) and applied to the test jets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from jettag.data.formats import JetChunk

__all__ = [
    "BASELINES",
    "TOP_MASS",
    "Baseline",
    "best_threshold",
    "evaluate_baseline",
    "jet_mass",
    "multiplicity",
]

#: Top-quark mass of the mass window (GeV).
TOP_MASS = 172.5


def jet_mass(chunk: JetChunk) -> np.ndarray:
    """Invariant mass ``(B,)`` (GeV, float64) of the summed constituents of each jet."""
    from jettag import physics

    p4 = torch.from_numpy(np.asarray(chunk.p4, dtype=np.float64))
    batch = torch.from_numpy(chunk.batch_index)
    jets = physics.jet_p4(p4, batch=batch, num_jets=len(chunk))
    return physics.mass(jets).numpy()


def multiplicity(chunk: JetChunk) -> np.ndarray:
    """Number of constituents ``(B,)`` of each jet."""
    return np.asarray(chunk.counts, dtype=np.int64)


@dataclass(frozen=True)
class Baseline:
    """A baseline discriminant: ``score(jets)`` is larger for more signal-like jets.

    Attributes:
        name: short name (JSON key).
        label: row label of the results table.
        score: jets -> ``(B,)`` float64 scores.
        description: what it computes.
    """

    name: str
    label: str
    score: Callable[[JetChunk], np.ndarray]
    description: str


#: The baseline of each task.
BASELINES: dict[str, Baseline] = {
    "top": Baseline(
        "mass-window",
        "jet-mass window (baseline)",
        lambda jets: -np.abs(jet_mass(jets) - TOP_MASS),
        f"score = -|m_jet - {TOP_MASS} GeV|, m_jet the mass of the summed constituents",
    ),
    "qg": Baseline(
        "multiplicity",
        "constituent multiplicity (baseline)",
        lambda jets: -multiplicity(jets).astype(np.float64),
        "score = -(number of constituents): quark jets have fewer",
    ),
}


def best_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The cut ``t`` maximising the accuracy of ``score > t`` (signal) on these jets; cuts
    lie midway between distinct scores, so no jet sits on one."""
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    values = np.unique(scores)
    cuts = np.concatenate([[values[0] - 1.0], (values[:-1] + values[1:]) / 2, [values[-1] + 1.0]])
    signal = np.sort(scores[labels == 1])
    background = np.sort(scores[labels == 0])
    correct = (signal.size - np.searchsorted(signal, cuts, side="right")) + np.searchsorted(
        background, cuts, side="left"
    )
    return float(cuts[int(np.argmax(correct))])


def evaluate_baseline(
    baseline: Baseline,
    val: JetChunk,
    test: JetChunk,
    task: str,
    *,
    bootstrap: int = 0,
    seed: int = 0,
) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics of a baseline on the test jets, its cut chosen on the validation jets.

    Returns:
        ``(metrics, test_scores)``: :func:`jettag.metrics.summary` of the test jets (the
        accuracy with the validation cut) plus ``"cut"``, and the test scores.
    """
    from jettag.metrics import summary

    if val.label is None or test.label is None:
        raise ValueError(f"baseline {baseline.name}: the jets have no labels")
    cut = best_threshold(val.label, baseline.score(val))
    scores = baseline.score(test)
    # summary() calls a 1-D score signal above 0.5: shift the cut there (ranks are unchanged)
    metrics = summary(test.label, scores - cut + 0.5, task, bootstrap=bootstrap, seed=seed)
    metrics["cut"] = cut
    return metrics, scores
