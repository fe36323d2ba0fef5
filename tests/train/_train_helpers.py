"""Tiny model and synthetic jets for the training tests (also imported by torchrun scripts)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, IterableDataset

from jettag.data import JetBatch
from jettag.train import Callback, TrainConfig, fit


class TinyDeepSets(nn.Module):
    """Deep Sets over scaled four-momenta: rho(sum_i phi(p_i / 100)) -> logits."""

    def __init__(self, hidden: int = 16, num_classes: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.phi = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.rho = nn.Sequential(
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, jets: JetBatch) -> Tensor:
        h = self.phi(jets.p4 / 100.0)
        pooled = h.new_zeros((jets.num_jets, h.shape[1])).index_add_(0, jets.batch, h)
        return self.rho(pooled / 10.0)


def toy_jets(num_jets: int, seed: int) -> list[dict[str, Any]]:
    """Jets as dicts; label 1 jets have more, harder and wider particles than label 0 jets."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(num_jets):
        label = i % 2
        k = int(rng.integers(5, 12) if label else rng.integers(2, 7))
        pt = rng.exponential(30.0 if label else 10.0, k) + 1.0
        width = 0.4 if label else 0.1
        eta, phi = rng.normal(0.0, width, k), rng.normal(0.0, width, k)
        p4 = np.stack([pt * np.cosh(eta), pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)], 1)
        items.append({"p4": torch.tensor(p4, dtype=torch.float32), "label": label})
    return items


class ToyJets(Dataset):
    """Map-style dataset of :func:`toy_jets`."""

    def __init__(self, num_jets: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> None:
        self.items = [{**item, "p4": item["p4"].to(dtype)} for item in toy_jets(num_jets, seed)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]


class ToyStream(IterableDataset):
    """Iterable dataset yielding whole JetBatches, in an order fixed by ``(seed, epoch)``,
    sharded over ``torch.distributed`` ranks (the contract of IterableJetDataset)."""

    def __init__(self, num_jets: int, batch_size: int, seed: int = 0) -> None:
        self.items = toy_jets(num_jets, seed + 1000)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _shard(self) -> list[int]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.items))
        rank, size = 0, 1
        if torch.distributed.is_initialized():
            rank, size = torch.distributed.get_rank(), torch.distributed.get_world_size()
        return list(order[rank::size])

    def __len__(self) -> int:
        return math.ceil(len(self._shard()) / self.batch_size)

    def __iter__(self) -> Iterator[JetBatch]:
        shard = self._shard()
        for start in range(0, len(shard), self.batch_size):
            yield JetBatch.collate([self.items[i] for i in shard[start : start + self.batch_size]])


class Crash(RuntimeError):
    """Raised by :class:`StopAt` to simulate a run that dies."""


class StopAt(Callback):
    """Raise after global step ``step`` (simulates a crash), or SIGKILL the process."""

    def __init__(self, step: int, *, kill: bool = False) -> None:
        self.step = step
        self.kill = kill

    def on_step_end(self, trainer: Any) -> None:
        if trainer.global_step == self.step:
            if self.kill:
                import os
                import signal

                os.kill(os.getpid(), signal.SIGKILL)
            raise Crash(f"stopped at step {self.step}")


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """One intra-op thread (bit-identical floats across processes), restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def deterministic_restored() -> Iterator[None]:
    """Restore torch's deterministic-algorithms flag after a deterministic run."""
    flag = torch.are_deterministic_algorithms_enabled()
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(flag)


def resume_config(**overrides: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "epochs": 3,
        "batch_size": 16,
        "lr": 3e-3,
        "schedule": "one-cycle",
        "checkpoint_every": 4,
        "deterministic": True,
        "progress": False,
        "seed": 7,
    }
    return TrainConfig(**{**base, **overrides})


def run(
    out_dir: Path,
    *,
    stop_at: int | None = None,
    kill: bool = False,
    model_seed: int = 0,
    **overrides: Any,
) -> Any:
    """Train TinyDeepSets (dropout 0.2) on ToyJets as the resume tests do."""
    torch.manual_seed(model_seed)
    model = TinyDeepSets(dropout=0.2)
    callbacks = [] if stop_at is None else [StopAt(stop_at, kill=kill)]
    with single_thread(), deterministic_restored():
        result = fit(
            model,
            ToyJets(96, seed=1),
            ToyJets(40, seed=2),
            resume_config(**overrides),
            out_dir=out_dir,
            callbacks=callbacks,
        )
    return model, result
