"""Bootstrap uncertainties of AUC, background rejection and accuracy, vectorised.

Replicate ``r`` resamples the ``N`` jets with replacement using its own generator
``numpy.random.default_rng([seed, r])``, so every replicate is reproducible by itself and the
result does not depend on how replicates are batched in memory. Scores are sorted once; a
replicate then only counts signal and background jets per distinct score, which is exact:
replicate ``r`` gives the same numbers as the scalar metrics on the resampled jets
(``labels[index_r]``, ``scores[index_r]``), with the same nearest-point convention.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from jettag.metrics.roc import (
    _binary_inputs,
    _check_both_classes,
    _check_method,
    _efficiencies,
    _group,
    _metrics_from_counts,
    _rejection,
    as_numpy,
)

__all__ = ["bootstrap", "bootstrap_indices", "bootstrap_mean", "rejection_key"]


def rejection_key(signal_efficiency: float, method: str = "nearest") -> str:
    """Name of a rejection metric in result dicts: ``"rejection@0.3"`` (nearest point) or
    ``"rejection_interp@0.3"`` (interpolated)."""
    prefix = "rejection" if method == "nearest" else "rejection_interp"
    return f"{prefix}@{signal_efficiency:g}"


def bootstrap_indices(num_jets: int, replicate: int, seed: int = 0) -> np.ndarray:
    """The jet indices ``(N,)`` drawn (with replacement) by bootstrap replicate ``replicate``."""
    return np.random.default_rng([seed, replicate]).integers(0, num_jets, num_jets)


def _chunks(num_jets: int, num_resamples: int, seed: int, max_elements: int):
    chunk = max(1, int(max_elements) // num_jets)
    for start in range(0, num_resamples, chunk):
        reps = range(start, min(start + chunk, num_resamples))
        yield np.stack([bootstrap_indices(num_jets, r, seed) for r in reps])


def bootstrap_mean(
    values: Any, *, num_resamples: int = 100, seed: int = 0, max_elements: int = 1 << 23
) -> np.ndarray:
    """Bootstrap replicates ``(R,)`` of the mean of per-jet ``values`` ``(N,)`` (e.g. whether
    each jet is classified correctly: the accuracy), drawn with the same jet indices as
    :func:`bootstrap` for the same ``seed``."""
    v = as_numpy(values, "values").astype(np.float64)
    if v.ndim != 1 or v.shape[0] == 0:
        raise ValueError(f"bootstrap_mean: values must be 1-D and non-empty, found shape {v.shape}")
    if num_resamples < 1:
        raise ValueError(f"bootstrap_mean: num_resamples must be >= 1, found {num_resamples}")
    return np.concatenate(
        [v[index].mean(axis=1) for index in _chunks(v.shape[0], num_resamples, seed, max_elements)]
    )


def bootstrap(
    labels: Any,
    scores: Any,
    *,
    signal_efficiencies: float | Sequence[float] = (),
    methods: Sequence[str] = ("nearest",),
    correct: Any = None,
    num_resamples: int = 100,
    seed: int = 0,
    max_elements: int = 1 << 23,
) -> dict[str, np.ndarray]:
    """Bootstrap replicates of the AUC, rejections and (optionally) accuracy of a binary tagger.

    Args:
        labels: ``(N,)`` 1 = signal, 0 = background.
        scores: ``(N,)`` discriminant.
        signal_efficiencies: targets for the background rejection.
        methods: rejection variants, ``"nearest"`` and/or ``"interpolate"``
            (see :mod:`jettag.metrics.roc`).
        correct: optional ``(N,)`` bool, whether each jet is classified correctly; adds
            ``"accuracy"``.
        num_resamples: number of replicates ``R``.
        seed: base seed (replicate ``r`` uses ``default_rng([seed, r])``).
        max_elements: bound on ``R_chunk * N`` held in memory at once.

    Returns:
        ``{"auc": (R,), rejection_key(eff, method): (R,), ["accuracy": (R,)]}``; a replicate
        that drew no jet of one class gives NaN (take ``np.nanstd``).

    Example:
        >>> import numpy as np
        >>> from jettag.metrics import bootstrap
        >>> rng = np.random.default_rng(1)
        >>> y = rng.integers(0, 2, 1000); s = y + rng.normal(size=1000)
        >>> reps = bootstrap(y, s, signal_efficiencies=[0.5], num_resamples=50)
        >>> sorted(reps), reps["auc"].shape
        (['auc', 'rejection@0.5'], (50,))
    """
    where = "bootstrap"
    if num_resamples < 1:
        raise ValueError(f"{where}: num_resamples must be >= 1, found {num_resamples}")
    for method in methods:
        _check_method(method, where)
    y, s = _binary_inputs(labels, scores, where)
    _check_both_classes(y, where)
    eff = _efficiencies(signal_efficiencies, where) if np.size(signal_efficiencies) else np.zeros(0)
    ok = None
    if correct is not None:
        ok = as_numpy(correct, "correct").astype(bool)
        if ok.shape != y.shape:
            raise ValueError(
                f"{where}: correct must have shape {y.shape} like labels, found {ok.shape}"
            )
    num_jets = y.shape[0]
    groups = _group(y, s)
    size = groups.thresholds.shape[0]
    aucs: list[np.ndarray] = []
    effs: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    accs: list[np.ndarray] = []
    # one code per (threshold, class): a single bincount counts both classes of all replicates
    code = groups.group + size * y
    for index in _chunks(num_jets, num_resamples, seed, max_elements):
        num_rep = index.shape[0]
        flat = code[index]
        flat += (2 * size) * np.arange(num_rep)[:, None]
        counts = np.bincount(flat.ravel(), minlength=num_rep * 2 * size).reshape(num_rep, 2, size)
        neg, pos = counts[:, 0], counts[:, 1]
        auc, eff_b = _metrics_from_counts(pos, neg, eff, tuple(methods))
        aucs.append(auc)
        for m in methods:
            effs[m].append(eff_b[m])
        if ok is not None:
            accs.append(ok[index].mean(axis=1))
    out: dict[str, np.ndarray] = {"auc": np.concatenate(aucs)}
    for m in methods:
        rejection = _rejection(np.concatenate(effs[m]))
        for j, e in enumerate(eff):
            out[rejection_key(float(e), m)] = rejection[:, j]
    if ok is not None:
        out["accuracy"] = np.concatenate(accs)
    return out
