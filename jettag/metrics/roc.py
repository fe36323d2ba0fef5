"""ROC curves, ROC AUC and background rejection at fixed signal efficiency.

Binary convention throughout: ``labels`` is 1 (or ``True``) for signal and 0 for background,
``scores`` is a discriminant that is larger for more signal-like jets (e.g. the softmax
probability of the signal class). The signal efficiency is the true-positive rate
:math:`\\varepsilon_S`, the background efficiency the false-positive rate
:math:`\\varepsilon_B`, and the background rejection is :math:`1/\\varepsilon_B`.

Background rejection at a target signal efficiency comes in two documented variants:

``method="nearest"`` (default; the convention of the published tables)
    The point of the ROC curve whose :math:`\\varepsilon_S` is nearest the target, exactly as
    LorentzNet-release computes it (``utils.buildROC``: ``roc_curve`` of scikit-learn with its
    default ``drop_intermediate=True``, then ``argmin |tpr - target|``, first index on ties,
    rejection ``1 / fpr`` there). The LorentzNet tables (arXiv:2201.08187) and the results
    quoted next to them (L-GATr, PELICAN, ParT) are computed this way. The rejection is
    ``inf`` when that point has :math:`\\varepsilon_B = 0`.
``method="interpolate"``
    :math:`\\varepsilon_B` read off the ROC curve drawn as straight segments between its
    points (the curve whose area is the AUC) at exactly the target :math:`\\varepsilon_S`;
    where the curve is flat at the target the lowest :math:`\\varepsilon_B` is taken. It
    varies smoothly with the scores and does not depend on which points are kept; on test
    sets of 10^5 jets it differs from ``"nearest"`` by far less than the statistical error.

Scores are sorted and grouped into distinct thresholds once; every metric then follows from
the number of signal and background jets at each threshold, which is what bootstrap
replicates recount (see :mod:`jettag.metrics.bootstrap`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import numpy as np

__all__ = [
    "RocCurve",
    "as_numpy",
    "background_efficiency",
    "background_rejection",
    "roc_auc",
    "roc_curve",
]

Method = Literal["nearest", "interpolate"]
_METHODS = ("nearest", "interpolate")


class RocCurve(NamedTuple):
    """Points of a ROC curve, ordered by decreasing threshold (increasing efficiencies).

    ``fpr`` is :math:`\\varepsilon_B`, ``tpr`` is :math:`\\varepsilon_S`, ``thresholds[i]`` the
    score cut ``score >= thresholds[i]`` giving point ``i``; the first point is ``(0, 0)`` with
    threshold ``inf``, as in :func:`sklearn.metrics.roc_curve`.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray

    @property
    def rejection(self) -> np.ndarray:
        """Background rejection :math:`1/\\varepsilon_B` at each point (``inf`` where 0)."""
        with np.errstate(divide="ignore"):
            return 1.0 / self.fpr


# ---------------------------------------------------------------------- input checks


def as_numpy(values: Any, name: str) -> np.ndarray:
    """``values`` (array-like or torch tensor, on any device) as a NumPy array."""
    if hasattr(values, "detach"):  # a torch tensor: no torch import needed here
        values = values.detach().cpu()
        if values.dtype.is_floating_point and values.dtype.itemsize < 4:
            values = values.float()  # bfloat16/float16 have no exact NumPy twin
        values = values.numpy()
    try:
        return np.asarray(values)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{name}: expected an array of numbers, found {type(values).__name__}"
        ) from err


def _binary_inputs(labels: Any, scores: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    y = as_numpy(labels, "labels")
    s = as_numpy(scores, "scores")
    if y.ndim != 1:
        raise ValueError(f"{where}: labels must be 1-D (one label per jet), found shape {y.shape}")
    if s.ndim != 1 or s.shape[0] != y.shape[0]:
        raise ValueError(
            f"{where}: scores must be 1-D with one discriminant per jet like labels "
            f"({y.shape[0]} jets), found shape {s.shape}; for per-class probabilities select "
            f"the signal column or use jettag.metrics.binary_view"
        )
    if y.shape[0] == 0:
        raise ValueError(f"{where}: labels and scores are empty; need at least one jet")
    if y.dtype != np.bool_:
        if y.dtype.kind not in "biuf" or not np.isin(y, (0, 1)).all():
            found = np.unique(y)[:10] if y.dtype.kind in "biuf" else y.dtype
            raise ValueError(
                f"{where}: labels must be 0 (background) or 1 (signal), found values {found}"
            )
        y = y == 1
    if s.dtype.kind not in "biuf":
        raise ValueError(f"{where}: scores must be numbers, found dtype {s.dtype}")
    s = s.astype(np.float64, copy=False)
    if not np.isfinite(s).all():
        bad = int((~np.isfinite(s)).sum())
        raise ValueError(f"{where}: scores must be finite, found {bad} NaN or infinite value(s)")
    return y, s


def _check_both_classes(y: np.ndarray, where: str) -> None:
    n_sig = int(y.sum())
    if n_sig == 0 or n_sig == y.shape[0]:
        missing = "signal (label 1)" if n_sig == 0 else "background (label 0)"
        raise ValueError(
            f"{where}: the ROC curve needs both classes, but there is no {missing} jet "
            f"among the {y.shape[0]}"
        )


def _efficiencies(signal_efficiency: float | Sequence[float], where: str) -> np.ndarray:
    eff = np.atleast_1d(np.asarray(signal_efficiency, dtype=np.float64))
    if eff.ndim != 1 or not ((eff > 0) & (eff <= 1)).all():
        raise ValueError(
            f"{where}: signal_efficiency must be in (0, 1], found {signal_efficiency!r}"
        )
    return eff


def _check_method(method: str, where: str) -> None:
    if method not in _METHODS:
        raise ValueError(f"{where}: method must be one of {_METHODS}, found {method!r}")


# ---------------------------------------------------------------------- vectorised core


class _Groups(NamedTuple):
    """Jets sorted by decreasing score, grouped into distinct thresholds."""

    group: np.ndarray  # (N,) group index of each jet (in input order)
    thresholds: np.ndarray  # (G,) decreasing distinct scores
    is_signal: np.ndarray  # (N,) bool, input order


def _group(y: np.ndarray, s: np.ndarray) -> _Groups:
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    new = np.empty(s_sorted.shape[0], dtype=bool)
    new[0] = True
    np.not_equal(s_sorted[1:], s_sorted[:-1], out=new[1:])
    group = np.empty_like(order)
    group[order] = np.cumsum(new) - 1
    return _Groups(group, s_sorted[new], y)


def _counts(groups: _Groups) -> tuple[np.ndarray, np.ndarray]:
    size = groups.thresholds.shape[0]
    pos = np.bincount(groups.group, weights=groups.is_signal, minlength=size)
    neg = np.bincount(groups.group, minlength=size) - pos
    return pos[None, :], neg[None, :]


def _kept(tps: np.ndarray, fps: np.ndarray) -> np.ndarray:
    """Points scikit-learn's ``roc_curve(drop_intermediate=True)`` keeps: the first, the last,
    and every point that is not the midpoint of its neighbours in both coordinates (nonzero
    second difference of the cumulative counts)."""
    keep = np.ones(tps.shape[0], dtype=bool)
    if tps.shape[0] > 2:
        np.logical_or(np.diff(fps, 2) != 0, np.diff(tps, 2) != 0, out=keep[1:-1])
    return keep


def _nearest(tpr: np.ndarray, fpr: np.ndarray, efficiencies: np.ndarray) -> np.ndarray:
    """``fpr[argmin |tpr - e|]`` for each target, first index on ties (``tpr`` nondecreasing).

    Same as ``np.argmin`` over all points: the minimum sits just below or at/above ``e``,
    and among equal ``tpr`` values the first index wins.
    """
    above = np.searchsorted(tpr, efficiencies, side="left")  # first tpr >= e
    below = np.searchsorted(tpr, tpr[np.maximum(above - 1, 0)], side="left")  # first of its value
    n = tpr.shape[0]
    d_above = np.where(above < n, tpr[np.minimum(above, n - 1)] - efficiencies, np.inf)
    d_below = np.where(above > 0, efficiencies - tpr[below], np.inf)
    return np.where(d_below <= d_above, fpr[below], fpr[np.minimum(above, n - 1)])


def _interpolate(tpr: np.ndarray, fpr: np.ndarray, efficiencies: np.ndarray) -> np.ndarray:
    """eps_B on the piecewise-linear ROC curve at each target (lowest eps_B on flat runs)."""
    hi = np.minimum(np.searchsorted(tpr, efficiencies, side="left"), tpr.shape[0] - 1)
    lo = np.maximum(hi - 1, 0)
    t_lo, t_hi, f_lo, f_hi = tpr[lo], tpr[hi], fpr[lo], fpr[hi]
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(t_hi > t_lo, (f_hi - f_lo) / (t_hi - t_lo), 0.0)
    return np.where(hi == 0, f_hi, f_lo + (efficiencies - t_lo) * slope)


def _metrics_from_counts(
    pos: np.ndarray, neg: np.ndarray, efficiencies: np.ndarray, methods: Sequence[str]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """AUC ``(R,)`` and background efficiency ``{method: (R, E)}`` from per-threshold counts.

    ``pos``/``neg`` are ``(R, G)`` numbers of signal/background jets at each of ``G``
    thresholds (decreasing scores), one row per replicate; thresholds a replicate did not
    draw have zero counts and are skipped, so row ``r`` gives exactly the metrics of the
    jets it counts. Replicates lacking a class give NaN.
    """
    num_rep, num_eff = pos.shape[0], efficiencies.shape[0]
    auc = np.full(num_rep, np.nan)
    out = {m: np.full((num_rep, num_eff), np.nan) for m in methods}
    for r in range(num_rep):
        present = np.flatnonzero((pos[r] + neg[r]) > 0)
        p = pos[r, present].astype(np.float64)
        n = neg[r, present].astype(np.float64)
        tps, fps = np.cumsum(p), np.cumsum(n)
        if tps[-1] <= 0 or fps[-1] <= 0:
            continue
        auc[r] = float(np.dot(n, tps - 0.5 * p)) / (tps[-1] * fps[-1])
        # the curve starts at the origin (0, 0), as scikit-learn's does
        if "nearest" in methods:
            keep = _kept(tps, fps)
            tpr = np.concatenate([[0.0], tps[keep] / tps[-1]])
            fpr = np.concatenate([[0.0], fps[keep] / fps[-1]])
            out["nearest"][r] = _nearest(tpr, fpr, efficiencies)
        if "interpolate" in methods:
            tpr = np.concatenate([[0.0], tps / tps[-1]])
            fpr = np.concatenate([[0.0], fps / fps[-1]])
            out["interpolate"][r] = _interpolate(tpr, fpr, efficiencies)
    return auc, out


def _rejection(eff_b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return 1.0 / eff_b


# ---------------------------------------------------------------------- public API


def roc_curve(labels: Any, scores: Any, *, drop_intermediate: bool = True) -> RocCurve:
    """ROC curve of a binary discriminant; identical to :func:`sklearn.metrics.roc_curve`.

    Args:
        labels: ``(N,)`` 1 (or ``True``) = signal, 0 = background.
        scores: ``(N,)`` discriminant, larger = more signal-like.
        drop_intermediate: drop points that lie midway between their neighbours on a
            straight horizontal or vertical run of the curve (scikit-learn's default, and the
            point set on which LorentzNet's nearest-point rejection is taken).

    Returns:
        :class:`RocCurve` ``(fpr, tpr, thresholds)`` starting at ``(0, 0)``.

    Raises:
        ValueError: shapes or labels are invalid, scores are not finite, or one class is absent.

    Example:
        >>> import numpy as np
        >>> from jettag.metrics import roc_curve
        >>> curve = roc_curve(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
        >>> curve.tpr, curve.fpr
        (array([0. , 0.5, 0.5, 1. , 1. ]), array([0. , 0. , 0.5, 0.5, 1. ]))
    """
    where = "roc_curve"
    y, s = _binary_inputs(labels, scores, where)
    _check_both_classes(y, where)
    groups = _group(y, s)
    pos, neg = _counts(groups)
    tps, fps = np.cumsum(pos[0]), np.cumsum(neg[0])
    keep = _kept(tps, fps) if drop_intermediate else np.ones(tps.shape[0], dtype=bool)
    tps, fps, thresholds = tps[keep], fps[keep], groups.thresholds[keep]
    return RocCurve(
        np.concatenate([[0.0], fps / fps[-1]]),
        np.concatenate([[0.0], tps / tps[-1]]),
        np.concatenate([[np.inf], thresholds]),
    )


def roc_auc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve (ties count one half), as :func:`sklearn.metrics.roc_auc_score`.

    Example:
        >>> from jettag.metrics import roc_auc
        >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        0.75
    """
    where = "roc_auc"
    y, s = _binary_inputs(labels, scores, where)
    _check_both_classes(y, where)
    auc, _ = _metrics_from_counts(*_counts(_group(y, s)), np.zeros(0), ())
    return float(auc[0])


def background_efficiency(
    labels: Any,
    scores: Any,
    signal_efficiency: float | Sequence[float],
    *,
    method: Method = "nearest",
) -> float | np.ndarray:
    """Background efficiency :math:`\\varepsilon_B` at the given signal efficiency (or several).

    See the module docstring for ``method`` (``"nearest"``: published convention;
    ``"interpolate"``: linear interpolation of the ROC curve). Returns a float for a scalar
    ``signal_efficiency``, else an array.
    """
    where = "background_efficiency"
    _check_method(method, where)
    y, s = _binary_inputs(labels, scores, where)
    _check_both_classes(y, where)
    eff = _efficiencies(signal_efficiency, where)
    _, eff_b = _metrics_from_counts(*_counts(_group(y, s)), eff, (method,))
    result = eff_b[method][0]
    return float(result[0]) if np.ndim(signal_efficiency) == 0 else result


def background_rejection(
    labels: Any,
    scores: Any,
    signal_efficiency: float | Sequence[float],
    *,
    method: Method = "nearest",
) -> float | np.ndarray:
    """Background rejection :math:`1/\\varepsilon_B` at fixed signal efficiency.

    ``method="nearest"`` reproduces the published tables (LorentzNet-release
    ``utils.buildROC``: nearest point of scikit-learn's ROC curve); ``"interpolate"``
    interpolates the ROC curve linearly. A background efficiency of 0 gives ``inf``.

    Args:
        labels: ``(N,)`` 1 = signal, 0 = background.
        scores: ``(N,)`` discriminant, larger = more signal-like.
        signal_efficiency: target :math:`\\varepsilon_S` in ``(0, 1]``, or a sequence of them
            (e.g. ``(0.5, 0.3)`` for top tagging).
        method: ``"nearest"`` or ``"interpolate"``.

    Returns:
        A float for a scalar target, else an array with one rejection per target.

    Example:
        >>> from jettag.metrics import background_rejection
        >>> background_rejection([0, 0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.5, 0.9], 0.5)
        inf
        >>> background_rejection([0, 0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.5, 0.9], 1.0)
        4.0
    """
    eff_b = background_efficiency(labels, scores, signal_efficiency, method=method)
    return float(_rejection(np.float64(eff_b))) if np.ndim(eff_b) == 0 else _rejection(eff_b)
