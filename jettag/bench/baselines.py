"""Cut-based baselines every tagger of a benchmark must beat.

- top tagging: the jet-mass window, score :math:`-|m_J - 172.5\\,\\mathrm{GeV}|` (the closer
  the jet mass to the top mass, the more top-like);
- quark/gluon: the constituent multiplicity, score :math:`-n` (quark jets have fewer
  constituents), as in energyflow's ``examples/pfn_example.py``;
- b-tagging: track counting, score = the second-largest transverse impact-parameter
  significance :math:`|d_0|/\\sigma_{d_0}` of the jet's tracks (the CMS "track counting
  high efficiency" discriminant, JINST 8 (2013) P04013, without the lifetime sign, which the
  generator's files do not carry: their :math:`d_0` has the geometric sign).

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
    "track_counting",
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


def track_counting(chunk: JetChunk, rank: int = 2) -> np.ndarray:
    """The ``rank``-th largest ``|d0| / d0err`` ``(B,)`` among the tracks of each jet (0 for a
    jet with fewer tracks), from the b-tagging fields ``part_istrack``, ``part_d0val`` and
    ``part_d0err``.

    Raises:
        ValueError: a field missing, naming the ones the jets have.
    """
    fields = chunk.particle_fields
    missing = [f for f in ("part_istrack", "part_d0val", "part_d0err") if f not in fields]
    if missing:
        raise ValueError(
            f"track counting: the jets lack {missing}; it needs the track fields of the "
            f"b-tagging recipe, found {sorted(fields)}"
        )
    track = np.asarray(fields["part_istrack"]) > 0.5
    err = np.asarray(fields["part_d0err"], dtype=np.float64)
    d0 = np.abs(np.asarray(fields["part_d0val"], dtype=np.float64))
    significance = np.where(track & (err > 0), d0 / np.where(err > 0, err, 1.0), -np.inf)
    jet = chunk.batch_index
    order = np.lexsort((-significance, jet))  # by jet, largest significance first
    position = np.arange(order.size) - chunk.offsets[jet[order]]
    out = np.zeros(len(chunk), dtype=np.float64)
    pick = order[position == rank - 1]
    out[jet[pick]] = significance[pick]
    return np.where(np.isfinite(out), out, 0.0)


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
    "btag": Baseline(
        "track-counting",
        "track counting (baseline)",
        track_counting,
        "score = second-largest |d0|/sigma(d0) of the jet's tracks (track counting; 0 for "
        "jets with fewer than two tracks)",
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
