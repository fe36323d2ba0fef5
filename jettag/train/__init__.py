"""Training: a plain-PyTorch loop with the papers' schedules, resumable checkpoints and
distributed data parallelism.

Example (one process, or the same script under ``torchrun --nproc_per_node N``):

    >>> import jettag.models                                                   # doctest: +SKIP
    >>> from jettag.train import TrainConfig, fit, evaluate, load_weights      # doctest: +SKIP
    >>> model = jettag.models.create("lorentznet")                             # doctest: +SKIP
    >>> result = fit(model, train_ds, val_ds, TrainConfig.lorentznet(),         # doctest: +SKIP
    ...              out_dir="runs/lorentznet-top")
    >>> load_weights(model, result.best_checkpoint)                            # doctest: +SKIP
    >>> evaluate(model, test_ds, task="top", bootstrap=100)                    # doctest: +SKIP
"""

from __future__ import annotations

from jettag.train.checkpoint import atomic_save, load_checkpoint
from jettag.train.config import TrainConfig
from jettag.train.schedules import build_scheduler, lorentznet_factor
from jettag.train.trainer import (
    Callback,
    FitResult,
    Trainer,
    evaluate,
    fit,
    load_weights,
    predict,
    seed_everything,
)

__all__ = [
    "Callback",
    "FitResult",
    "TrainConfig",
    "Trainer",
    "atomic_save",
    "build_scheduler",
    "evaluate",
    "fit",
    "load_checkpoint",
    "load_weights",
    "lorentznet_factor",
    "predict",
    "seed_everything",
]
