"""The training loop: plain PyTorch, one file, resumable at any step.

:class:`Trainer` (or :func:`fit`) trains a model that maps a :class:`~jettag.data.JetBatch`
to logits ``(B, C)`` with cross-entropy, AdamW and the configured schedule, validates after
every epoch with :func:`jettag.metrics.summary`, keeps the best checkpoint on the monitored
validation metric, and writes to ``out_dir``:

- ``last.pt``: everything needed to resume (see :mod:`jettag.train.checkpoint`), written
  atomically at the end of every epoch and every ``checkpoint_every`` steps;
- ``best.pt``: model weights of the best validation epoch;
- ``metrics.jsonl`` and ``metrics.csv``: one row per epoch (rewritten from the checkpoint's
  history, so they always agree with ``last.pt``; an infinite rejection is written
  ``Infinity`` in JSON, as Python's :mod:`json` does, and ``inf`` in CSV);
- ``config.json``: the configuration.

An iterable dataset cannot seek, so resuming mid-epoch reads and drops the consumed batches;
map-style data skips them without loading.

Resuming (``resume="auto"``, the default, resumes when ``out_dir/last.pt`` exists) restores
model, optimiser, scheduler, loss scaler, the RNG states of every rank and the data position
(epoch + batches already consumed): the order of the training data depends only on
``(config.seed, epoch)``, so the consumed batches are skipped and the run continues exactly as
if it had not stopped. With ``config.deterministic`` (and the same hardware and number of
threads) a resumed run ends with bit-identical weights.

Distributed: run the same script under ``torchrun --nproc_per_node N``; the trainer starts
the process group (``gloo`` on CPU, ``nccl`` on CUDA), wraps the model in
DistributedDataParallel (optionally with SyncBatchNorm), shards map-style data with a
:class:`~torch.utils.data.DistributedSampler` and lets iterable datasets (e.g.
:class:`~jettag.data.dataset.IterableJetDataset`) shard themselves by rank; rank 0 writes the
files.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset

from jettag.metrics import TASKS, rejection_key, summary
from jettag.train import distributed as D
from jettag.train.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    atomic_save,
    capture_rng_state,
    check_model_state,
    load_checkpoint,
    restore_rng_state,
)
from jettag.train.config import TrainConfig
from jettag.train.schedules import build_scheduler, current_lr

__all__ = [
    "Callback",
    "FitResult",
    "Trainer",
    "evaluate",
    "fit",
    "load_weights",
    "predict",
    "seed_everything",
]

LAST = "last.pt"
BEST = "best.pt"
LOG_JSONL = "metrics.jsonl"
LOG_CSV = "metrics.csv"
CONFIG_JSON = "config.json"

LossFn = Callable[[Tensor, Tensor], Tensor]


# ---------------------------------------------------------------------- seeding


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed torch (CPU and CUDA), NumPy's global generator and Python's ``random``; with
    ``deterministic``, also require deterministic algorithms
    (:func:`torch.use_deterministic_algorithms`) and deterministic cuDNN.

    On CUDA, deterministic cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG`` before the first CUDA
    call; it is set to ``:4096:8`` here if unset.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (user code and datasets draw from it)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


# ---------------------------------------------------------------------- results and hooks


class Callback:
    """Hooks into :class:`Trainer`; subclass and override what you need.

    ``on_step_end`` runs after every optimiser step (after a due mid-epoch checkpoint),
    ``on_epoch_end`` after every epoch with its log row (after ``last.pt`` is written).
    """

    def on_step_end(self, trainer: Trainer) -> None:
        """Called after every optimiser step; ``trainer.global_step`` counts them."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        """Called after every epoch with the row written to the logs."""


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns.

    Attributes:
        history: one log row per epoch (``epoch``, ``lr``, ``train_loss``,
            ``train_accuracy``, ``val_loss``, ``val_<metric>``, timings).
        best_metric: best value of ``val_<monitor>`` (None without validation data).
        best_epoch: its epoch (0-based).
        out_dir: the run directory; ``last_checkpoint``, ``best_checkpoint`` (None without
            validation data) are in it.
    """

    history: list[dict[str, Any]]
    best_metric: float | None
    best_epoch: int | None
    out_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None = None


# ---------------------------------------------------------------------- data


def _collate() -> Callable[[Any], Any]:
    from jettag.data.dataset import collate_jets

    return collate_jets


def _check_dataset(data: Any, name: str) -> None:
    if isinstance(data, DataLoader):
        raise ValueError(
            f"{name}: pass the dataset, not a DataLoader; the trainer builds the loaders itself "
            f"(seeded per epoch, sharded over ranks, resumable mid-epoch)"
        )
    if not isinstance(data, (Dataset, IterableDataset)):
        raise ValueError(
            f"{name}: expected a torch Dataset (map-style, items are jet dicts or JetBatch) or "
            f"an IterableDataset (e.g. IterableJetDataset), found {type(data).__name__}"
        )


def _loader_generator(seed: int, epoch: int) -> torch.Generator:
    # DataLoader draws its worker base seed from this generator, never from the global one,
    # so creating a loader does not shift the RNG stream of the model.
    return torch.Generator().manual_seed(int(seed) * 100_003 + int(epoch))


def _yields_batches(dataset: Any) -> bool:
    return isinstance(dataset, IterableDataset) and getattr(dataset, "batch_size", None) is not None


class _Loader:
    """One epoch of one rank's batches, starting after ``skip`` consumed batches."""

    def __init__(
        self,
        dataset: Any,
        *,
        batch_size: int,
        shuffle: bool,
        drop_last: bool,
        seed: int,
        num_workers: int,
        rank: int,
        world_size: int,
        train: bool,
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.num_workers = num_workers
        self.rank = rank
        self.world_size = world_size
        self.train = train
        self.iterable = isinstance(dataset, IterableDataset)

    def _indices(self, epoch: int) -> list[int]:
        if self.train:
            sampler = DistributedSampler(
                self.dataset,
                num_replicas=self.world_size,
                rank=self.rank,
                shuffle=self.shuffle,
                seed=self.seed,
                drop_last=False,
            )
            sampler.set_epoch(epoch)
            return list(sampler)
        # evaluation: every item exactly once over the ranks, no padding
        return list(range(self.rank, len(self.dataset), self.world_size))

    def __len__(self) -> int:
        """Batches per epoch for this rank (TypeError if the dataset has no length)."""
        if self.iterable:
            n = len(self.dataset)
            return n if _yields_batches(self.dataset) else self._num_batches(n)
        return self._num_batches(len(self._indices(0)))

    def _num_batches(self, n: int) -> int:
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[Any]:
        collate = _collate()
        generator = _loader_generator(self.seed, epoch)
        if self.iterable:
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            loader = DataLoader(
                self.dataset,
                batch_size=None if _yields_batches(self.dataset) else self.batch_size,
                drop_last=False if _yields_batches(self.dataset) else self.drop_last,
                collate_fn=collate,
                num_workers=self.num_workers,
                generator=generator,
            )
            # an iterable stream cannot seek: read and drop the consumed batches
            return itertools.islice(iter(loader), skip, None)
        indices = self._indices(epoch)[skip * self.batch_size :]
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=indices,
            drop_last=self.drop_last,
            collate_fn=collate,
            num_workers=self.num_workers,
            generator=generator,
        )
        return iter(loader)

    def positions(self) -> np.ndarray | None:
        """Dataset indices this rank evaluates, in order (None for iterable datasets)."""
        return None if self.iterable else np.asarray(self._indices(0), dtype=np.int64)


# ---------------------------------------------------------------------- devices and precision


def _device(config: TrainConfig, local_rank: int) -> torch.device:
    if config.device is not None:
        return torch.device(config.device)
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[name]


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "none" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "bf16":
        return torch.bfloat16
    return torch.float16


def _autocast(
    device: torch.device, amp_dtype: torch.dtype | None
) -> contextlib.AbstractContextManager:
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)


def _labels(batch: Any, device: torch.device) -> Tensor:
    label = getattr(batch, "label", None)
    if label is None:
        raise ValueError(
            "training data: a batch has no labels (JetBatch.label is None); the datasets must "
            "yield jets with a 'label'"
        )
    return label.to(device=device, dtype=torch.int64)


def _move(batch: Any, device: torch.device, dtype: torch.dtype) -> Any:
    if not hasattr(batch, "to"):
        raise ValueError(
            f"training data: expected batches of JetBatch (collated by collate_jets), found "
            f"{type(batch).__name__}"
        )
    return batch.to(device=device, dtype=dtype)


# ---------------------------------------------------------------------- the trainer


class Trainer:
    """Train ``model`` on ``train_data``, validate on ``val_data``, checkpoint to ``out_dir``.

    Args:
        model: maps a :class:`~jettag.data.JetBatch` to logits ``(B, C)``.
        config: a :class:`TrainConfig` (default options if None).
        train_data: map-style dataset (items are jet dicts or single-jet ``JetBatch`` es,
            collated with :func:`~jettag.data.dataset.collate_jets`) or an IterableDataset
            yielding jets or whole batches (``IterableJetDataset(batch_size=...)``); an
            iterable dataset must order its items by ``set_epoch(epoch)`` and shard itself
            over ranks (``IterableJetDataset`` does both; use its ``drop_last`` or ``even``
            under DDP so every rank gets the same number of batches).
        val_data: validation dataset (same kinds), or None.
        out_dir: run directory.
        loss_fn: ``loss_fn(logits, labels)``, default cross-entropy.
        callbacks: :class:`Callback` instances.
        resume: ``"auto"`` (resume from ``out_dir/last.pt`` if it exists), ``True`` (it must
            exist), ``False`` (start afresh; refuses a directory that holds a checkpoint), or
            the path of a checkpoint to resume from.

    Example:
        >>> trainer = Trainer(model, TrainConfig(epochs=10), train_data=train_ds,  # doctest: +SKIP
        ...                   val_data=val_ds, out_dir="runs/pfn")
        >>> result = trainer.fit()                                                # doctest: +SKIP
        >>> result.best_metric, result.best_checkpoint                            # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig | None = None,
        *,
        train_data: Dataset | IterableDataset,
        val_data: Dataset | IterableDataset | None = None,
        out_dir: str | Path,
        loss_fn: LossFn | None = None,
        callbacks: Sequence[Callback] = (),
        resume: bool | Literal["auto"] | str | Path = "auto",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model: expected a torch.nn.Module, found {type(model).__name__}")
        self.config = config if config is not None else TrainConfig()
        if not isinstance(self.config, TrainConfig):
            raise ValueError(f"config: expected a TrainConfig, found {type(self.config).__name__}")
        _check_dataset(train_data, "train_data")
        if val_data is not None:
            _check_dataset(val_data, "val_data")
        _check_monitor(self.config)
        self.model = model
        self.train_data = train_data
        self.val_data = val_data
        self.out_dir = Path(out_dir)
        self.loss_fn: LossFn = loss_fn if loss_fn is not None else F.cross_entropy
        self.callbacks = list(callbacks)
        self.resume = resume
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self._running = {"loss_sum": 0.0, "correct": 0, "count": 0, "time": 0.0}
        self._owns_group = False

    # ------------------------------------------------------------------ setup

    def _resume_path(self) -> Path | None:
        last = self.out_dir / LAST
        if self.resume == "auto":
            return last if last.exists() else None
        if self.resume is True:
            if not last.exists():
                raise FileNotFoundError(
                    f"resume=True but {last} does not exist; use resume='auto' to start afresh"
                )
            return last
        if self.resume is False:
            if last.exists():
                raise ValueError(
                    f"out_dir {self.out_dir} already holds a run ({last}); pass resume='auto' "
                    f"to continue it, or choose another directory"
                )
            return None
        return Path(self.resume)

    def _setup(self) -> None:
        cfg = self.config
        _, _, local_rank = D.env_world()
        self.device = _device(cfg, local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self._owns_group = D.init_distributed(self.device.type)
        self.rank, self.world_size = D.rank(), D.world_size()
        self.is_main = self.rank == 0
        seed_everything(cfg.seed + self.rank, deterministic=cfg.deterministic)
        self.dtype = _dtype(cfg.dtype)
        self.amp_dtype = _amp_dtype(cfg.amp, self.device)
        self.model.to(device=self.device, dtype=self.dtype)
        net: nn.Module = self.model
        if self.world_size > 1:
            if cfg.sync_batchnorm and self.device.type == "cpu":
                warnings.warn(
                    "TrainConfig.sync_batchnorm: PyTorch's SyncBatchNorm runs on GPUs only; on "
                    "the CPU each process normalises its own batch (DDP broadcasts rank 0's "
                    "running statistics)",
                    stacklevel=3,
                )
            elif cfg.sync_batchnorm:
                net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
                self.model = net
            net = nn.parallel.DistributedDataParallel(
                net, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if cfg.compile:
            net = torch.compile(net, dynamic=True)
        self.net = net
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=cfg.lr,
            betas=cfg.betas,  # type: ignore[arg-type]
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
        )
        self.train_loader = _Loader(
            self.train_data,
            batch_size=cfg.batch_size,
            shuffle=cfg.shuffle,
            drop_last=cfg.drop_last,
            seed=cfg.seed,
            num_workers=cfg.num_workers,
            rank=self.rank,
            world_size=self.world_size,
            train=True,
        )
        try:
            self.steps_per_epoch: int | None = len(self.train_loader)
        except TypeError:
            self.steps_per_epoch = None
        self.scheduler, self.schedule_interval = build_scheduler(
            self.optimizer, cfg, self.steps_per_epoch
        )
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        self.config_hash = cfg.config_hash()
        path = self._resume_path()
        if path is not None:
            self._load(path)
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            _atomic_text(self.out_dir / CONFIG_JSON, json.dumps(cfg.to_dict(), indent=2) + "\n")
            self._write_logs()

    def _load(self, path: Path) -> None:
        state = load_checkpoint(
            path, config_hash=self.config_hash, config=self.config.trajectory_dict()
        )
        check_model_state(self.model, state["model"], path)
        if state.get("kind") != "last":
            raise ValueError(
                f"checkpoint {path}: is a {state.get('kind')!r} checkpoint (model weights only); "
                f"resume needs a 'last' checkpoint with the optimiser and data position"
            )
        if state["world_size"] != self.world_size:
            raise ValueError(
                f"checkpoint {path}: written by {state['world_size']} process(es), this run has "
                f"{self.world_size}; the data order and RNG streams depend on the number of "
                f"processes, so resume with --nproc_per_node {state['world_size']}"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.step_in_epoch = int(state["step_in_epoch"])
        self.global_step = int(state["global_step"])
        self.history = list(state.get("history", []))
        best = state.get("best") or {}
        self.best_metric = best.get("metric")
        self.best_epoch = best.get("epoch")
        rank_state = state["ranks"][self.rank]
        self._running = dict(rank_state["running"])
        restore_rng_state(rank_state["rng"])

    # ------------------------------------------------------------------ checkpoints and logs

    def _checkpoint_state(self) -> dict[str, Any]:
        ranks = D.all_gather_object({"rng": capture_rng_state(), "running": dict(self._running)})
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "kind": "last",
            "config": self.config.trajectory_dict(),
            "config_hash": self.config_hash,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "world_size": self.world_size,
            "ranks": ranks,
            "best": {"metric": self.best_metric, "epoch": self.best_epoch},
            "history": self.history,
        }

    def save_checkpoint(self) -> Path:
        """Write ``out_dir/last.pt`` (rank 0; every rank must call it)."""
        state = self._checkpoint_state()
        path = self.out_dir / LAST
        if self.is_main:
            atomic_save(state, path)
        D.barrier()
        return path

    def _save_best(self, row: dict[str, Any]) -> None:
        if self.is_main:
            atomic_save(
                {
                    "format": CHECKPOINT_FORMAT,
                    "version": CHECKPOINT_VERSION,
                    "kind": "best",
                    "config": self.config.trajectory_dict(),
                    "config_hash": self.config_hash,
                    "model": self.model.state_dict(),
                    "epoch": self.epoch,
                    "step_in_epoch": 0,
                    "global_step": self.global_step,
                    "metrics": row,
                },
                self.out_dir / BEST,
            )

    def _write_logs(self) -> None:
        rows = self.history
        _atomic_text(self.out_dir / LOG_JSONL, "".join(json.dumps(row) + "\n" for row in rows))
        columns: list[str] = []
        for row in rows:
            columns += [k for k in row if k not in columns]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
        if rows:
            writer.writeheader()
            writer.writerows(rows)
        _atomic_text(self.out_dir / LOG_CSV, text.getvalue())

    # ------------------------------------------------------------------ training

    def fit(self) -> FitResult:
        """Train until ``config.epochs`` (continuing a saved run when resuming)."""
        try:
            self._setup()
            while self.epoch < self.config.epochs:
                self._train_epoch()
            D.barrier()
        finally:
            if self._owns_group:
                torch.distributed.destroy_process_group()
        best = self.out_dir / BEST
        return FitResult(
            history=list(self.history),
            best_metric=self.best_metric,
            best_epoch=self.best_epoch,
            out_dir=self.out_dir,
            last_checkpoint=self.out_dir / LAST,
            best_checkpoint=best if self.val_data is not None and best.exists() else None,
        )

    def _step(self, batch: Any) -> None:
        cfg = self.config
        batch = _move(batch, self.device, self.dtype)
        labels = _labels(batch, self.device)
        self.net.train()
        with _autocast(self.device, self.amp_dtype):
            logits = self.net(batch)
            loss = self.loss_fn(logits, labels)
        self.scaler.scale(loss).backward()
        if cfg.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None and self.schedule_interval == "step":
            self.scheduler.step()
        n = labels.shape[0]
        self._running["loss_sum"] += float(loss.detach()) * n
        self._running["correct"] += int((logits.detach().argmax(dim=1) == labels).sum())
        self._running["count"] += n
        self.step_in_epoch += 1
        self.global_step += 1

    def _train_epoch(self) -> None:
        cfg = self.config
        from tqdm.auto import tqdm

        batches = self.train_loader.epoch(self.epoch, skip=self.step_in_epoch)
        bar = tqdm(
            batches,
            total=self.steps_per_epoch,
            initial=self.step_in_epoch,
            desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
            unit="batch",
            disable=not (cfg.progress and self.is_main),
            dynamic_ncols=True,
            leave=False,
        )
        start = time.perf_counter() - self._running["time"]
        for batch in bar:
            self._step(batch)
            self._running["time"] = time.perf_counter() - start
            if cfg.progress and self.is_main and self.global_step % 10 == 0:
                count = max(self._running["count"], 1)
                bar.set_postfix(
                    loss=f"{self._running['loss_sum'] / count:.4f}",
                    lr=f"{current_lr(self.optimizer):.3g}",
                )
            if cfg.checkpoint_every is not None and self.global_step % cfg.checkpoint_every == 0:
                self.save_checkpoint()
            for callback in self.callbacks:
                callback.on_step_end(self)
        bar.close()
        loss_sum, correct, count = D.all_reduce_sum(
            [self._running["loss_sum"], self._running["correct"], self._running["count"]],
            self.device,
        )
        row: dict[str, Any] = {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "lr": current_lr(self.optimizer),
            "train_loss": loss_sum / count if count else float("nan"),
            "train_accuracy": correct / count if count else float("nan"),
            "train_time": self._running["time"],
        }
        if self.val_data is not None:
            t0 = time.perf_counter()
            metrics = self.validate()
            row.update({f"val_{k}": v for k, v in metrics.items()})
            row["val_time"] = time.perf_counter() - t0
        if self.scheduler is not None and self.schedule_interval == "epoch":
            self.scheduler.step()
        improved = False
        if self.val_data is not None:
            value = float(row[f"val_{cfg.monitor}"])
            if _improves(value, self.best_metric, lower=cfg.monitor.endswith("loss")):
                self.best_metric, self.best_epoch, improved = value, self.epoch, True
                self._save_best(row)
        row["best"] = improved
        self.history.append(row)
        self.epoch += 1
        self.step_in_epoch = 0
        self._running = {"loss_sum": 0.0, "correct": 0, "count": 0, "time": 0.0}
        self.save_checkpoint()
        if self.is_main:
            self._write_logs()
            if cfg.progress:
                tqdm.write(_format_row(row, cfg.monitor))
        for callback in self.callbacks:
            callback.on_epoch_end(self, row)

    def validate(self) -> dict[str, float]:
        """Metrics of the current model on ``val_data`` (all ranks; identical results)."""
        # the bare model, not the DDP wrapper: ranks may get different numbers of validation
        # batches, and DDP's forward may communicate (buffer broadcast)
        labels, logits = _predict_logits(
            self.model,
            self.val_data,
            batch_size=self.config.eval_batch_size or self.config.batch_size,
            device=self.device,
            dtype=self.dtype,
            amp_dtype=self.amp_dtype,
            num_workers=self.config.num_workers,
            seed=self.config.seed,
            progress=self.config.progress and self.is_main,
        )
        loss = float(self.loss_fn(logits, labels))
        probs = torch.softmax(logits.double(), dim=1).numpy()
        metrics = summary(labels.numpy(), probs, self.config.task)
        return {"loss": loss, **metrics}


# ---------------------------------------------------------------------- prediction


@torch.no_grad()
def _predict_logits(
    net: nn.Module,
    data: Dataset | IterableDataset,
    *,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype,
    amp_dtype: torch.dtype | None,
    num_workers: int,
    seed: int,
    progress: bool,
) -> tuple[Tensor, Tensor]:
    from tqdm.auto import tqdm

    loader = _Loader(
        data,
        batch_size=batch_size,
        shuffle=False,
        drop_last=False,
        seed=seed,
        num_workers=num_workers,
        rank=D.rank(),
        world_size=D.world_size(),
        train=False,
    )
    try:
        total: int | None = len(loader)
    except TypeError:
        total = None
    was_training = net.training
    net.eval()
    labels, logits = [], []
    try:
        for batch in tqdm(
            loader.epoch(0),
            total=total,
            desc="validate",
            unit="batch",
            disable=not progress,
            dynamic_ncols=True,
            leave=False,
        ):
            batch = _move(batch, device, dtype)
            labels.append(_labels(batch, device))
            with _autocast(device, amp_dtype):
                logits.append(net(batch).double())
    finally:
        net.train(was_training)
    local_labels = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.int64)
    local_logits = torch.cat(logits) if logits else torch.zeros((0, 0), dtype=torch.float64)
    # a rank without batches does not know the number of classes: agree on it first
    widths = D.all_gather_object(local_logits.shape[1] if logits else None)
    known = [w for w in widths if w is not None]
    if not known:
        raise ValueError(f"evaluation data {data!r} yielded no jets; it must not be empty")
    if not logits:
        local_logits = torch.zeros((0, known[0]), dtype=torch.float64)
    out_labels = torch.cat(D.all_gather_rows(local_labels, device))
    out_logits = torch.cat(D.all_gather_rows(local_logits, device))
    positions = D.all_gather_object(loader.positions())
    if positions[0] is not None:
        # map-style data: put the predictions back in dataset order
        order = torch.from_numpy(np.concatenate(positions))
        out_labels = torch.empty_like(out_labels).index_copy_(0, order, out_labels)
        out_logits = torch.empty_like(out_logits).index_copy_(0, order, out_logits)
    return out_labels, out_logits


def predict(
    model: nn.Module,
    data: Dataset | IterableDataset,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    amp: str = "none",
    num_workers: int = 0,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and class probabilities (softmax of the logits, float64) of every jet in ``data``.

    Under torchrun each rank evaluates its share and every rank returns all jets; for a
    map-style dataset the rows are in dataset order.

    Returns:
        ``labels (N,)`` int64 and ``probs (N, C)`` float64 NumPy arrays.
    """
    _check_dataset(data, "data")
    first = next(model.parameters(), None)
    if device is None:
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    if dtype is None:
        dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    model.to(device=device, dtype=dtype)
    labels, logits = _predict_logits(
        model,
        data,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        amp_dtype=_amp_dtype(amp, device),
        num_workers=num_workers,
        seed=0,
        progress=progress,
    )
    return labels.numpy(), torch.softmax(logits, dim=1).numpy()


def evaluate(
    model: nn.Module,
    data: Dataset | IterableDataset,
    *,
    task: str = "top",
    batch_size: int = 256,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    amp: str = "none",
    num_workers: int = 0,
    interpolated: bool = False,
    bootstrap: int = 0,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, float]:
    """:func:`jettag.metrics.summary` of ``model`` on ``data`` (see :func:`predict`)."""
    labels, probs = predict(
        model,
        data,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        amp=amp,
        num_workers=num_workers,
        progress=progress,
    )
    return summary(labels, probs, task, interpolated=interpolated, bootstrap=bootstrap, seed=seed)


def load_weights(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load the model weights of a jettag checkpoint (``best.pt`` or ``last.pt``) into
    ``model``; returns the checkpoint (its ``"metrics"``, ``"epoch"``, ``"config"``).

    Raises:
        ValueError: naming the file, if it is corrupt, not a jettag checkpoint, or holds
            weights of another model.
    """
    state = load_checkpoint(path)
    check_model_state(model, state["model"], path)
    model.load_state_dict(state["model"])
    return state


def fit(
    model: nn.Module,
    train_data: Dataset | IterableDataset,
    val_data: Dataset | IterableDataset | None = None,
    config: TrainConfig | None = None,
    *,
    out_dir: str | Path,
    loss_fn: LossFn | None = None,
    callbacks: Iterable[Callback] = (),
    resume: bool | Literal["auto"] | str | Path = "auto",
) -> FitResult:
    """Train ``model``: ``Trainer(model, config, ...).fit()`` (see :class:`Trainer`).

    Example:
        >>> from jettag.train import TrainConfig, fit                         # doctest: +SKIP
        >>> result = fit(model, train_ds, val_ds, TrainConfig.lorentznet(),    # doctest: +SKIP
        ...              out_dir="runs/lorentznet-top")
    """
    return Trainer(
        model,
        config,
        train_data=train_data,
        val_data=val_data,
        out_dir=out_dir,
        loss_fn=loss_fn,
        callbacks=list(callbacks),
        resume=resume,
    ).fit()


# ---------------------------------------------------------------------- helpers


def _check_monitor(config: TrainConfig) -> None:
    if config.task not in TASKS:
        raise ValueError(
            f"TrainConfig.task: unknown task {config.task!r}; expected one of {sorted(TASKS)}"
        )
    task = TASKS[config.task]
    known = {"loss", "accuracy", "auc"}
    known |= {rejection_key(e) for e in task.signal_efficiencies}
    if config.monitor not in known and not (task.multiclass and config.monitor.startswith("auc_")):
        raise ValueError(
            f"TrainConfig.monitor: {config.monitor!r} is not a validation metric of task "
            f"{config.task!r}; expected one of {sorted(known)}"
        )


def _improves(value: float, best: float | None, *, lower: bool) -> bool:
    """Whether ``value`` beats ``best``; NaN never does, anything beats a missing or NaN best."""
    if math.isnan(value):
        return best is None
    if best is None or math.isnan(best):
        return True
    return value < best if lower else value > best


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _format_row(row: dict[str, Any], monitor: str) -> str:
    parts = [
        f"epoch {row['epoch'] + 1}",
        f"lr {row['lr']:.3g}",
        f"loss {row['train_loss']:.4f}",
        f"acc {row['train_accuracy']:.4f}",
    ]
    for key in ("val_loss", "val_accuracy", "val_auc", f"val_{monitor}"):
        if key in row and not any(p.startswith(key) for p in parts):
            parts.append(f"{key} {row[key]:.4f}")
    if row.get("best"):
        parts.append("(best)")
    return " | ".join(parts)
