"""Training configuration: one dataclass of plain values, JSON round-trip and a hash."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TrainConfig"]

_SCHEDULES = ("none", "one-cycle", "flat-decay", "lorentznet", "piecewise-linear")
_AMP = ("none", "auto", "bf16", "fp16")
_DTYPES = ("float32", "float64")

#: Fields that do not change the trajectory of a run: a checkpoint may be resumed with
#: other values (and with more ``epochs`` when the schedule does not depend on them).
_RESUMABLE_FIELDS = frozenset(
    {"epochs", "progress", "checkpoint_every", "num_workers", "compile", "eval_batch_size"}
)


@dataclass
class TrainConfig:
    """Everything that defines a training run (besides the model and the data).

    Optimiser: AdamW(``lr``, ``betas``, ``eps``, ``weight_decay``). ``batch_size`` is per
    process: under ``torchrun --nproc_per_node W`` the global batch is ``W * batch_size``.

    Learning-rate schedules (``schedule``):

    ``"none"``
        constant ``lr``.
    ``"one-cycle"``
        :class:`torch.optim.lr_scheduler.OneCycleLR` stepped every optimiser step, with the
        settings of weaver-core's ``--lr-scheduler one-cycle`` (``weaver/train.py``):
        ``max_lr = lr``, ``pct_start = 0.3``, cosine annealing, ``div_factor = 25``, the
        default ``final_div_factor = 1e4`` and momentum (Adam's beta1) cycling between
        0.85 and 0.95. Needs a data loader with a length.
    ``"flat-decay"``
        weaver-core's default ``--lr-scheduler flat+decay``, stepped once per epoch: constant
        ``lr``, then over the last ``max(1, int(0.3 * epochs))`` epochs a geometric decay to
        1% of it (what the ParT repository's ParticleNet/ParT benchmark runs use, there with
        the Ranger optimiser).
    ``"lorentznet"``
        LorentzNet's schedule (LorentzNet-release ``top_tagging.py`` / ``qg_tagging.py`` with
        ``utils.GradualWarmupScheduler``), stepped once per epoch: linear warm-up
        ``lr * (e + 1) / warmup_epochs`` for epochs ``e < warmup_epochs - 1``, then cosine
        annealing with warm restarts (``CosineAnnealingWarmRestarts(T_0=restart_period,
        T_mult=restart_mult)``) from epoch ``warmup_epochs - 1``, and after epoch
        ``decay_after_epoch`` the rate is multiplied by ``decay_factor`` every epoch. With the
        defaults this is exactly the per-epoch rate logged in the release's
        ``logs/top/pretrained/train-result.json`` (35 epochs).
    ``"piecewise-linear"``
        factor of ``lr`` interpolated linearly (per step) between ``lr_points``
        ``((epoch, factor), ...)``, constant outside.

    Attributes:
        epochs: number of epochs.
        batch_size: jets per optimiser step and process.
        eval_batch_size: jets per batch in validation (default ``batch_size``).
        lr, betas, eps, weight_decay: AdamW.
        schedule: see above; ``warmup_epochs``, ``restart_period``, ``restart_mult``,
            ``decay_after_epoch``, ``decay_factor`` configure ``"lorentznet"``;
            ``one_cycle_pct_start``, ``one_cycle_div_factor``, ``one_cycle_final_div_factor``
            configure ``"one-cycle"``; ``lr_points`` configures ``"piecewise-linear"``.
        grad_clip: clip the global gradient norm to this value (None = no clipping).
        amp: ``"none"``; ``"auto"`` (fp16 on CUDA, none on CPU); ``"bf16"`` (CPU or CUDA,
            no loss scaling); ``"fp16"`` (CUDA, with a GradScaler).
        compile: run the model through :func:`torch.compile` (off by default; on CPU it pays
            off only for long runs).
        dtype: ``"float32"`` or ``"float64"`` for the model and the batches.
        device: ``None`` = ``cuda:LOCAL_RANK`` when CUDA is available, else CPU.
        seed: seeds torch, NumPy and Python (rank ``r`` uses ``seed + r``, so dropout differs
            between ranks) and the per-epoch order of the data (the same on every rank).
        deterministic: :func:`torch.use_deterministic_algorithms` and deterministic cuDNN.
        task: metrics task of :func:`jettag.metrics.summary` (``"top"``, ``"qg"``, ``"btag"``,
            ``"multiclass"``).
        monitor: validation metric selecting the best checkpoint (a key of the summary, or
            ``"loss"``); larger is better except for names ending in ``loss``.
        checkpoint_every: also save ``last.pt`` every this many optimiser steps (None = only
            at the end of each epoch).
        num_workers: DataLoader worker processes.
        drop_last: drop the last incomplete training batch.
        shuffle: shuffle map-style training data (seeded per epoch).
        sync_batchnorm: convert BatchNorm layers to SyncBatchNorm under DistributedDataParallel
            (GPUs only: PyTorch's SyncBatchNorm has no CPU kernel, so on the CPU this warns and
            keeps per-process BatchNorm).
        progress: show tqdm progress bars (rate and ETA) on rank 0.
        extra: free-form JSON-ready metadata covered by the hash (e.g. the model name and
            its options, the data files), so a resume with other values is refused.
    """

    epochs: int = 20
    batch_size: int = 128
    eval_batch_size: int | None = None
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    schedule: str = "none"
    warmup_epochs: int = 5
    restart_period: int = 4
    restart_mult: int = 2
    decay_after_epoch: int | None = 31
    decay_factor: float = 0.5
    one_cycle_pct_start: float = 0.3
    one_cycle_div_factor: float = 25.0
    one_cycle_final_div_factor: float = 1e4
    lr_points: tuple[tuple[float, float], ...] = ()
    grad_clip: float | None = None
    amp: str = "none"
    compile: bool = False
    dtype: str = "float32"
    device: str | None = None
    seed: int = 0
    deterministic: bool = False
    task: str = "top"
    monitor: str = "auc"
    checkpoint_every: int | None = None
    num_workers: int = 0
    drop_last: bool = False
    shuffle: bool = True
    sync_batchnorm: bool = False
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        self.lr_points = tuple((float(e), float(f)) for e, f in self.lr_points)
        checks = [
            ("epochs", self.epochs >= 1, "a positive integer"),
            ("batch_size", self.batch_size >= 1, "a positive integer"),
            ("lr", self.lr > 0, "positive"),
            ("schedule", self.schedule in _SCHEDULES, f"one of {_SCHEDULES}"),
            ("amp", self.amp in _AMP, f"one of {_AMP}"),
            ("dtype", self.dtype in _DTYPES, f"one of {_DTYPES}"),
            ("grad_clip", self.grad_clip is None or self.grad_clip > 0, "None or positive"),
            (
                "checkpoint_every",
                self.checkpoint_every is None or self.checkpoint_every >= 1,
                "None or a positive number of steps",
            ),
            ("warmup_epochs", self.warmup_epochs >= 0, ">= 0"),
            ("restart_period", self.restart_period >= 1, ">= 1"),
            ("restart_mult", self.restart_mult >= 1, ">= 1"),
            ("num_workers", self.num_workers >= 0, ">= 0"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(
                    f"TrainConfig.{name}: expected {expected}, found {getattr(self, name)!r}"
                )
        if self.schedule == "piecewise-linear" and not self.lr_points:
            raise ValueError(
                "TrainConfig.lr_points: schedule 'piecewise-linear' needs points "
                "((epoch, factor), ...), found none"
            )
        if self.schedule == "piecewise-linear":
            epochs = [e for e, _ in self.lr_points]
            if epochs != sorted(epochs):
                raise ValueError(
                    f"TrainConfig.lr_points: epochs must be increasing, found {self.lr_points}"
                )

    # ------------------------------------------------------------------ presets

    @classmethod
    def lorentznet(cls, **overrides: Any) -> TrainConfig:
        """LorentzNet's recipe (LorentzNet-release ``top_tagging.py``): AdamW lr 1e-3, weight
        decay 0.01, 35 epochs, the ``"lorentznet"`` schedule, best checkpoint on validation
        accuracy, SyncBatchNorm; batch 32 per GPU on 4 GPUs (here ``batch_size=32`` per
        process: run 4 processes, or set ``batch_size=128`` on one)."""
        base = {
            "epochs": 35,
            "batch_size": 32,
            "lr": 1e-3,
            "weight_decay": 0.01,
            "schedule": "lorentznet",
            "warmup_epochs": 5,
            "restart_period": 4,
            "restart_mult": 2,
            "decay_after_epoch": 31,
            "decay_factor": 0.5,
            "monitor": "accuracy",
            "sync_batchnorm": True,
        }
        return cls(**{**base, **overrides})

    @classmethod
    def weaver_one_cycle(cls, **overrides: Any) -> TrainConfig:
        """weaver-core's AdamW with its one-cycle schedule (``weaver/train.py``: AdamW default
        betas (0.95, 0.999), OneCycleLR pct_start 0.3, div_factor 25), with the learning rate,
        batch size and epochs of the ParT repository's ParticleNet benchmark runs (lr 1e-2,
        batch 512, 20 epochs, ``train_TopLandscape.sh``; those runs use the Ranger optimiser
        and the ``"flat-decay"`` schedule, which AdamW + one-cycle replaces here)."""
        base = {
            "epochs": 20,
            "batch_size": 512,
            "lr": 1e-2,
            "betas": (0.95, 0.999),
            "weight_decay": 0.0,
            "schedule": "one-cycle",
        }
        return cls(**{**base, **overrides})

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise a ValueError naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(
                f"TrainConfig: unknown option(s) {unknown}; known options are {sorted(names)}"
            )
        return cls(**dict(values))

    def trajectory_dict(self) -> dict[str, Any]:
        """The options that determine the trajectory of a run (what :meth:`config_hash`
        covers): all except ``epochs``, ``progress``, ``checkpoint_every``,
        ``num_workers``, ``compile`` and ``eval_batch_size``; ``epochs`` is covered with the
        ``"one-cycle"`` and ``"flat-decay"`` schedules, whose rates depend on it."""
        values = self.to_dict()
        resumable = set(_RESUMABLE_FIELDS)
        if self.schedule in ("one-cycle", "flat-decay"):
            resumable.discard("epochs")
        return {k: v for k, v in values.items() if k not in resumable}

    def config_hash(self) -> str:
        """SHA-256 (16 hex digits) of :meth:`trajectory_dict`; stored in checkpoints."""
        text = json.dumps(self.trajectory_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
