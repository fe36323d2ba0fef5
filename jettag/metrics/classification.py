"""Accuracy and the reduction of multi-class scores to binary discriminants."""

from __future__ import annotations

from typing import Any

import numpy as np

from jettag.metrics.roc import as_numpy, roc_auc

__all__ = ["accuracy", "binary_view", "one_vs_rest_auc"]


def _class_inputs(labels: Any, scores: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    y = as_numpy(labels, "labels")
    s = as_numpy(scores, "scores")
    if y.ndim != 1:
        raise ValueError(f"{where}: labels must be 1-D (one label per jet), found shape {y.shape}")
    if s.ndim not in (1, 2) or s.shape[0] != y.shape[0]:
        raise ValueError(
            f"{where}: scores must be (N,) or (N, C) with N = {y.shape[0]} like labels, "
            f"found shape {s.shape}"
        )
    if y.shape[0] == 0:
        raise ValueError(f"{where}: labels and scores are empty; need at least one jet")
    if y.dtype.kind not in "biu" and not (y.dtype.kind == "f" and (y == np.round(y)).all()):
        raise ValueError(f"{where}: labels must be integer class indices, found dtype {y.dtype}")
    return y.astype(np.int64), s


def accuracy(labels: Any, scores: Any, *, threshold: float = 0.5) -> float:
    """Fraction of jets whose predicted class is their label.

    Args:
        labels: ``(N,)`` integer class of each jet.
        scores: ``(N, C)`` per-class scores (probabilities or logits: prediction = argmax,
            first class on ties) or ``(N,)`` signal probability for a binary task
            (prediction = 1 where ``score > threshold``, consistent with the argmax of
            ``(1 - p, p)``).
        threshold: cut on 1-D scores.

    Example:
        >>> from jettag.metrics import accuracy
        >>> accuracy([0, 1, 1], [[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
        0.6666666666666666
    """
    y, s = _class_inputs(labels, scores, "accuracy")
    predicted = s.argmax(axis=1) if s.ndim == 2 else (s > threshold).astype(np.int64)
    return float((predicted == y).mean())


def binary_view(
    labels: Any, scores: Any, signal: int = 1, background: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Binary ``(is_signal, discriminant)`` of multi-class probabilities.

    One-vs-rest (``background=None``): every jet, signal = ``labels == signal``,
    discriminant = ``scores[:, signal]``. One-vs-one (``background`` given, the JetClass
    convention of ParT, arXiv:2202.03772): only jets of the two classes, discriminant
    :math:`p_s / (p_s + p_b)` (0.5 where both are 0).

    Args:
        labels: ``(N,)`` integer classes.
        scores: ``(N, C)`` per-class probabilities (softmax outputs), or ``(N,)`` signal
            scores of a binary task (then ``signal`` must be 1 and ``background`` 0 or None).
        signal: the signal class.
        background: the background class for one-vs-one, or None for one-vs-rest.

    Returns:
        ``is_signal (M,)`` bool and ``discriminant (M,)`` float64, ``M = N`` for one-vs-rest.
    """
    where = "binary_view"
    y, s = _class_inputs(labels, scores, where)
    if s.ndim == 1:
        if signal != 1 or background not in (None, 0):
            raise ValueError(
                f"{where}: 1-D scores are the probability of class 1; signal must be 1 and "
                f"background 0 or None, found signal={signal}, background={background}"
            )
        return y == 1, s.astype(np.float64)
    num_classes = s.shape[1]
    for name, value in (("signal", signal), ("background", background)):
        if value is not None and not 0 <= value < num_classes:
            raise ValueError(
                f"{where}: {name} class {value} out of range for {num_classes} score columns"
            )
    if background is None:
        return y == signal, s[:, signal].astype(np.float64)
    if background == signal:
        raise ValueError(f"{where}: signal and background must differ, both are {signal}")
    keep = (y == signal) | (y == background)
    p_s = s[keep, signal].astype(np.float64)
    p_b = s[keep, background].astype(np.float64)
    total = p_s + p_b
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(total > 0, p_s / total, 0.5)
    return y[keep] == signal, ratio


def one_vs_rest_auc(labels: Any, scores: Any) -> np.ndarray:
    """ROC AUC of each class against all others, ``(C,)`` (NaN for a class absent from labels
    or present alone). Their mean is scikit-learn's ``roc_auc_score(multi_class="ovr",
    average="macro")``.

    Args:
        labels: ``(N,)`` integer classes in ``[0, C)``.
        scores: ``(N, C)`` per-class probabilities.
    """
    y, s = _class_inputs(labels, scores, "one_vs_rest_auc")
    if s.ndim != 2:
        raise ValueError(f"one_vs_rest_auc: scores must be (N, C), found shape {s.shape}")
    out = np.full(s.shape[1], np.nan)
    for k in range(s.shape[1]):
        n_k = int((y == k).sum())
        if 0 < n_k < y.shape[0]:
            out[k] = roc_auc(y == k, s[:, k])
    return out
