"""Learning-rate schedules of the reference papers, as PyTorch LR schedulers.

Each builder returns ``(scheduler, interval)``: ``interval`` is ``"step"`` when the trainer
calls ``scheduler.step()`` after every optimiser step, ``"epoch"`` when after every epoch.
The schedules are closed-form functions of the step or epoch, so a scheduler restored from
its ``state_dict`` continues exactly.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from jettag.train.config import TrainConfig

__all__ = [
    "FlatDecayFactor",
    "LorentzNetFactor",
    "PiecewiseLinearFactor",
    "build_scheduler",
    "current_lr",
    "lorentznet_factor",
]


def lorentznet_factor(
    epoch: int,
    *,
    warmup_epochs: int = 5,
    restart_period: int = 4,
    restart_mult: int = 2,
    decay_after_epoch: int | None = 31,
    decay_factor: float = 0.5,
) -> float:
    """Multiplier of the base learning rate in (0-based) ``epoch`` of LorentzNet's schedule.

    Reproduces LorentzNet-release ``GradualWarmupScheduler(multiplier=1,
    warmup_epoch=warmup_epochs, after_scheduler=CosineAnnealingWarmRestarts(T_0, T_mult))``
    stepped after each epoch up to ``decay_after_epoch`` and the manual
    ``lr *= decay_factor`` after each later epoch (``top_tagging.py``):

    - ``epoch < warmup_epochs - 1``: ``(epoch + 1) / warmup_epochs``;
    - then cosine annealing with warm restarts over ``t = epoch - (warmup_epochs - 1)``:
      ``(1 + cos(pi * t_cur / T_i)) / 2`` with periods ``T_0, T_0 T_mult, ...``;
    - ``epoch > decay_after_epoch``: the factor of ``decay_after_epoch`` times
      ``decay_factor ** (epoch - decay_after_epoch)``.

    Example:
        >>> [round(lorentznet_factor(e), 4) for e in range(9)]
        [0.2, 0.4, 0.6, 0.8, 1.0, 0.8536, 0.5, 0.1464, 1.0]
    """
    if decay_after_epoch is not None and epoch > decay_after_epoch:
        base = lorentznet_factor(
            decay_after_epoch,
            warmup_epochs=warmup_epochs,
            restart_period=restart_period,
            restart_mult=restart_mult,
            decay_after_epoch=None,
        )
        return base * decay_factor ** (epoch - decay_after_epoch)
    start = max(warmup_epochs - 1, 0)
    if epoch < start:
        return (epoch + 1) / warmup_epochs
    t_cur, period = epoch - start, restart_period
    while t_cur >= period:
        t_cur -= period
        period *= restart_mult
    return 0.5 * (1.0 + math.cos(math.pi * t_cur / period))


@dataclass
class LorentzNetFactor:
    """Picklable callable ``epoch -> factor`` (see :func:`lorentznet_factor`) for LambdaLR."""

    warmup_epochs: int = 5
    restart_period: int = 4
    restart_mult: int = 2
    decay_after_epoch: int | None = 31
    decay_factor: float = 0.5

    def __call__(self, epoch: int) -> float:
        return lorentznet_factor(
            epoch,
            warmup_epochs=self.warmup_epochs,
            restart_period=self.restart_period,
            restart_mult=self.restart_mult,
            decay_after_epoch=self.decay_after_epoch,
            decay_factor=self.decay_factor,
        )


@dataclass
class FlatDecayFactor:
    """Callable ``epoch -> factor`` of weaver-core's default ``flat+decay`` schedule
    (``weaver/train.py``): constant, then over the last ``max(1, int(0.3 epochs))`` epochs
    multiplied by ``0.01 ** (1 / num_decay_epochs)`` per epoch (down to 1% of the rate)."""

    epochs: int

    def __call__(self, epoch: int) -> float:
        num_decay = max(1, int(self.epochs * 0.3))
        gamma = 0.01 ** (1.0 / num_decay)
        return gamma ** max(0, epoch - (self.epochs - num_decay) + 1)


@dataclass
class PiecewiseLinearFactor:
    """Callable ``step -> factor`` interpolating ``points`` ``((epoch, factor), ...)`` linearly
    in fractional epochs ``step / steps_per_epoch``; constant beyond the first/last point."""

    points: Sequence[tuple[float, float]]
    steps_per_epoch: int

    def __call__(self, step: int) -> float:
        epoch = step / self.steps_per_epoch
        points = list(self.points)
        if epoch <= points[0][0]:
            return float(points[0][1])
        for (e0, f0), (e1, f1) in itertools.pairwise(points):
            if epoch <= e1:
                return float(f0 + (f1 - f0) * (epoch - e0) / (e1 - e0)) if e1 > e0 else float(f1)
        return float(points[-1][1])


def build_scheduler(
    optimizer: Optimizer, config: TrainConfig, steps_per_epoch: int | None
) -> tuple[LRScheduler | None, str]:
    """The scheduler of ``config.schedule`` for ``optimizer`` and its stepping interval.

    Args:
        optimizer: the optimiser (its ``lr`` is the base/maximum rate).
        config: training configuration.
        steps_per_epoch: optimiser steps per epoch, or None if unknown (an iterable dataset
            without a length); ``"one-cycle"`` and ``"piecewise-linear"`` need it.

    Returns:
        ``(scheduler or None, "step" | "epoch")``.
    """
    if config.schedule == "none":
        return None, "epoch"
    if config.schedule == "lorentznet":
        factor = LorentzNetFactor(
            config.warmup_epochs,
            config.restart_period,
            config.restart_mult,
            config.decay_after_epoch,
            config.decay_factor,
        )
        return LambdaLR(optimizer, factor), "epoch"
    if config.schedule == "flat-decay":
        return LambdaLR(optimizer, FlatDecayFactor(config.epochs)), "epoch"
    if steps_per_epoch is None or steps_per_epoch < 1:
        raise ValueError(
            f"TrainConfig.schedule {config.schedule!r} is set per optimiser step and needs the "
            f"number of batches per epoch, but the training data has no length (found "
            f"{steps_per_epoch}); give the dataset a __len__ or use schedule 'lorentznet'/'none'"
        )
    if config.schedule == "one-cycle":
        return (
            OneCycleLR(
                optimizer,
                max_lr=config.lr,
                epochs=config.epochs,
                steps_per_epoch=steps_per_epoch,
                pct_start=config.one_cycle_pct_start,
                anneal_strategy="cos",
                div_factor=config.one_cycle_div_factor,
                final_div_factor=config.one_cycle_final_div_factor,
            ),
            "step",
        )
    if config.schedule == "piecewise-linear":
        return LambdaLR(optimizer, PiecewiseLinearFactor(config.lr_points, steps_per_epoch)), "step"
    raise ValueError(f"TrainConfig.schedule: unknown schedule {config.schedule!r}")


def current_lr(optimizer: Optimizer) -> float:
    """Learning rate of the first parameter group."""
    lr = optimizer.param_groups[0]["lr"]
    return float(lr.item() if isinstance(lr, torch.Tensor) else lr)
