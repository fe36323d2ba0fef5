"""Tagging metrics: accuracy, ROC AUC, background rejection at fixed signal efficiency, ROC
curves and plots, bootstrap uncertainties, and :func:`summary` of a benchmark task.

Background rejection 1/eps_B is taken at the nearest ROC point by default, the convention of
the published tables (LorentzNet-release ``utils.buildROC``); ``method="interpolate"`` gives
the linearly interpolated variant. See :mod:`jettag.metrics.roc`.

Example:
    >>> import numpy as np
    >>> from jettag.metrics import roc_auc, background_rejection
    >>> labels = np.array([0, 0, 1, 1]); scores = np.array([0.1, 0.4, 0.35, 0.8])
    >>> roc_auc(labels, scores), background_rejection(labels, scores, 1.0)
    (0.75, 2.0)
"""

from __future__ import annotations

from jettag.metrics.bootstrap import bootstrap, bootstrap_indices, bootstrap_mean, rejection_key
from jettag.metrics.classification import accuracy, binary_view, one_vs_rest_auc
from jettag.metrics.plot import plot_roc
from jettag.metrics.roc import (
    RocCurve,
    background_efficiency,
    background_rejection,
    roc_auc,
    roc_curve,
)
from jettag.metrics.summary import TASKS, Task, summary

__all__ = [
    "TASKS",
    "RocCurve",
    "Task",
    "accuracy",
    "background_efficiency",
    "background_rejection",
    "binary_view",
    "bootstrap",
    "bootstrap_indices",
    "bootstrap_mean",
    "one_vs_rest_auc",
    "plot_roc",
    "rejection_key",
    "roc_auc",
    "roc_curve",
    "summary",
]
