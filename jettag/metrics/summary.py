"""The standard metrics of each benchmark task in one call: :func:`summary`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from jettag.metrics.bootstrap import bootstrap as _bootstrap
from jettag.metrics.bootstrap import bootstrap_mean, rejection_key
from jettag.metrics.classification import _class_inputs, binary_view
from jettag.metrics.roc import (
    _binary_inputs,
    _check_both_classes,
    _counts,
    _efficiencies,
    _group,
    _metrics_from_counts,
    _rejection,
)

__all__ = ["TASKS", "Task", "summary"]


@dataclass(frozen=True)
class Task:
    """What a benchmark task reports.

    Attributes:
        name: key of :data:`TASKS`.
        signal_efficiencies: targets of the background rejection, in the order tables list them.
        signal: signal class (label value).
        background: background class for a one-vs-one discriminant, None = all other classes.
        multiclass: report one-vs-rest AUCs of every class instead of one signal.
        description: the labels and the published protocol.
    """

    name: str
    signal_efficiencies: tuple[float, ...] = ()
    signal: int = 1
    background: int | None = None
    multiclass: bool = False
    description: str = ""


#: Tasks known to :func:`summary`.
TASKS: dict[str, Task] = {
    "top": Task(
        "top",
        (0.5, 0.3),
        description="top (label 1) vs QCD (0), Kasieczka et al. reference dataset; tables report "
        "accuracy, AUC and 1/eps_B at eps_S = 0.5 and 0.3",
    ),
    "qg": Task(
        "qg",
        (0.5, 0.3),
        description="quark (label 1) vs gluon (0), Komiske-Metodiev-Thaler Pythia dataset; tables "
        "report accuracy, AUC and 1/eps_B at eps_S = 0.5 (LorentzNet also 0.3)",
    ),
    "btag": Task(
        "btag",
        (0.7, 0.85),
        description="b (label 1) vs the other jets (light; charm too if present); "
        "R70, R85 = 1/eps_B at eps_S = 0.7 and 0.85 (arXiv:2303.11288)",
    ),
    "multiclass": Task(
        "multiclass",
        multiclass=True,
        description="accuracy, macro one-vs-rest AUC and the one-vs-rest AUC of each class",
    ),
}


def _task(task: str | Task) -> Task:
    if isinstance(task, Task):
        return task
    if task not in TASKS:
        raise ValueError(f"summary: unknown task {task!r}; expected one of {sorted(TASKS)}")
    return TASKS[task]


def summary(
    labels: Any,
    scores: Any,
    task: str | Task = "top",
    *,
    interpolated: bool = False,
    bootstrap: int = 0,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """The standard metrics of ``task`` as a flat dict of floats (JSON-ready).

    Binary tasks (``"top"``, ``"qg"``, ``"btag"``): ``accuracy``, ``auc``,
    ``rejection@<eff>`` for each of the task's signal efficiencies (nearest ROC point, the
    published convention, see :mod:`jettag.metrics.roc`), ``rejection_interp@<eff>`` with
    ``interpolated=True``, and ``num_jets``, ``num_signal``, ``num_background``.
    ``"multiclass"``: ``accuracy``, ``auc`` (macro mean of one-vs-rest AUCs) and
    ``auc_<class>`` per class. With ``bootstrap=R > 0`` each metric ``m`` also gets
    ``m_std``, the standard deviation over ``R`` bootstrap replicates (NaN if a replicate's
    rejection is infinite).

    Args:
        labels: ``(N,)`` integer classes (1 = signal for binary tasks).
        scores: ``(N, C)`` per-class probabilities (softmax of the logits), or ``(N,)``
            signal probability for a binary task. The discriminant of a binary task is the
            probability of the signal class (or ``p_s / (p_s + p_b)`` if the task names a
            background class); accuracy is the argmax (``p > 0.5`` for 1-D scores).
        task: a name in :data:`TASKS` or a :class:`Task`.
        interpolated: also report the interpolated rejections.
        bootstrap: number of bootstrap replicates for the ``_std`` entries (0 = none).
        seed: bootstrap seed.
        class_names: names for the per-class entries of ``"multiclass"`` (default: indices).

    Example:
        >>> import numpy as np
        >>> from jettag.metrics import summary
        >>> labels = np.array([0, 0, 0, 0, 1, 1])
        >>> p_top = np.array([0.1, 0.2, 0.3, 0.6, 0.5, 0.9])
        >>> summary(labels, p_top, "top")  # doctest: +NORMALIZE_WHITESPACE
        {'accuracy': 0.6666666666666666, 'auc': 0.875, 'rejection@0.5': inf,
         'rejection@0.3': inf, 'num_jets': 6, 'num_signal': 2, 'num_background': 4}
    """
    spec = _task(task)
    y, s = _class_inputs(labels, scores, "summary")
    predicted = s.argmax(axis=1) if s.ndim == 2 else (s > 0.5).astype(np.int64)
    correct = predicted == y
    out: dict[str, Any] = {"accuracy": float(correct.mean())}
    if bootstrap:
        out["accuracy_std"] = _std(bootstrap_mean(correct, num_resamples=bootstrap, seed=seed))
    if spec.multiclass:
        out.update(_multiclass(y, s, class_names, bootstrap, seed, spec.name))
        return out

    where = f"summary (task {spec.name!r})"
    is_signal, disc = binary_view(y, s, spec.signal, spec.background)
    is_signal, disc = _binary_inputs(is_signal, disc, where)
    _check_both_classes(is_signal, where)
    eff = (
        _efficiencies(spec.signal_efficiencies, where) if spec.signal_efficiencies else np.zeros(0)
    )
    methods = ("nearest", "interpolate") if interpolated else ("nearest",)
    auc, eff_b = _metrics_from_counts(*_counts(_group(is_signal, disc)), eff, methods)
    out["auc"] = float(auc[0])
    for method in methods:
        for j, e in enumerate(eff):
            out[rejection_key(float(e), method)] = float(_rejection(eff_b[method][0, j]))
    if bootstrap:
        reps = _bootstrap(
            is_signal,
            disc,
            signal_efficiencies=tuple(float(e) for e in eff),
            methods=methods,
            num_resamples=bootstrap,
            seed=seed,
        )
        out.update({f"{key}_std": _std(values) for key, values in reps.items()})
    out["num_jets"] = int(y.shape[0])
    out["num_signal"] = int(is_signal.sum())
    out["num_background"] = int(is_signal.shape[0] - is_signal.sum())
    return out


def _multiclass(
    y: np.ndarray,
    s: np.ndarray,
    class_names: Sequence[str] | None,
    bootstrap: int,
    seed: int,
    name: str,
) -> dict[str, Any]:
    if s.ndim != 2:
        raise ValueError(f"summary: task {name!r} needs (N, C) scores, found shape {s.shape}")
    names = [str(k) for k in range(s.shape[1])] if class_names is None else list(class_names)
    if len(names) != s.shape[1]:
        raise ValueError(
            f"summary: class_names has {len(names)} names for {s.shape[1]} score columns"
        )
    per_class: dict[str, float] = {}
    reps: dict[str, np.ndarray] = {}
    for k, class_name in enumerate(names):
        is_k = y == k
        if not 0 < int(is_k.sum()) < y.shape[0]:
            per_class[class_name] = float("nan")
            continue
        is_k, s_k = _binary_inputs(is_k, s[:, k], f"summary (class {class_name!r})")
        auc, _ = _metrics_from_counts(*_counts(_group(is_k, s_k)), np.zeros(0), ())
        per_class[class_name] = float(auc[0])
        if bootstrap:
            reps[class_name] = _bootstrap(is_k, s_k, num_resamples=bootstrap, seed=seed)["auc"]
    finite = [v for v in per_class.values() if np.isfinite(v)]
    out: dict[str, Any] = {"auc": float(np.mean(finite)) if finite else float("nan")}
    if reps:
        # replicates of every class draw the same jets (same seed), so their mean is a
        # replicate of the macro AUC
        out["auc_std"] = _std(np.mean(np.stack(list(reps.values())), axis=0))
    for class_name, value in per_class.items():
        out[f"auc_{class_name}"] = value
        if class_name in reps:
            out[f"auc_{class_name}_std"] = _std(reps[class_name])
    out["num_jets"] = int(y.shape[0])
    return out


def _std(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    if np.isinf(values).any():
        return float("nan")
    finite = values[np.isfinite(values)]
    return float(finite.std(ddof=1)) if finite.shape[0] > 1 else float("nan")
