"""The training loop: learning a separable toy task, precision options, prediction, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _train_helpers import TinyDeepSets, ToyJets, single_thread
from torch.utils.data import DataLoader, Dataset

from jettag.train import Callback, TrainConfig, Trainer, evaluate, fit, predict


def _fit(tmp_path: Path, *, model=None, train=None, val=None, **config):
    torch.manual_seed(0)
    model = model if model is not None else TinyDeepSets()
    base = {"epochs": 3, "batch_size": 32, "lr": 1e-2, "progress": False}
    with single_thread():
        result = fit(
            model,
            train if train is not None else ToyJets(256, 1),
            val if val is not None else ToyJets(128, 2),
            TrainConfig(**{**base, **config}),
            out_dir=tmp_path,
        )
    return model, result


def test_learns_separable_toy_task(tmp_path: Path) -> None:
    _, result = _fit(tmp_path)
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < losses[0] - 0.1
    assert result.best_metric > 0.98  # validation AUC
    assert result.history[-1]["val_accuracy"] > 0.9
    assert result.best_checkpoint == tmp_path / "best.pt"
    assert set(result.history[0]) >= {
        "epoch",
        "lr",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "val_auc",
        "val_rejection@0.5",
        "val_rejection@0.3",
        "train_time",
        "val_time",
        "best",
    }


def test_bf16_autocast_on_cpu(tmp_path: Path) -> None:
    seen = []

    class Dtypes(Callback):
        def on_step_end(self, trainer) -> None:
            seen.append(trainer.amp_dtype)

    model = TinyDeepSets()
    with single_thread():
        result = fit(
            model,
            ToyJets(64, 1),
            ToyJets(32, 2),
            TrainConfig(epochs=1, batch_size=32, amp="bf16", progress=False),
            out_dir=tmp_path,
            callbacks=[Dtypes()],
        )
    assert seen == [torch.bfloat16, torch.bfloat16]
    assert np.isfinite(result.history[0]["train_loss"])
    assert next(model.parameters()).dtype == torch.float32  # master weights stay float32


def test_gradient_clipping_limits_the_update(tmp_path: Path) -> None:
    # AdamW normalises gradients, so a norm clipped far below eps (1e-8) makes the steps tiny
    initial = TinyDeepSets().state_dict()

    def change(model) -> float:
        return max((v - initial[k]).abs().max().item() for k, v in model.state_dict().items())

    free = TinyDeepSets()
    free.load_state_dict(initial)
    clipped = TinyDeepSets()
    clipped.load_state_dict(initial)
    common = {"epochs": 1, "weight_decay": 0.0, "lr": 1e-2}
    _fit(tmp_path / "free", model=free, val=None, **common)
    _fit(tmp_path / "clipped", model=clipped, grad_clip=1e-14, **common)
    assert change(free) > 1e-2
    assert change(clipped) < 1e-4


def test_float64_and_predict_in_dataset_order(tmp_path: Path) -> None:
    model, _ = _fit(tmp_path, epochs=1, dtype="float64")
    assert next(model.parameters()).dtype == torch.float64
    data = ToyJets(50, seed=9, dtype=torch.float64)
    labels, probs = predict(model, data, batch_size=7)
    assert labels.tolist() == [item["label"] for item in data.items]
    assert probs.shape == (50, 2) and np.allclose(probs.sum(axis=1), 1.0)
    # the same jets one by one give the same probabilities (no batch dependence)
    single = np.concatenate([predict(model, _Subset(data, [i]), batch_size=1)[1] for i in range(3)])
    np.testing.assert_allclose(single, probs[:3], rtol=1e-12)
    metrics = evaluate(model, data, task="top", bootstrap=20)
    assert metrics["num_jets"] == 50 and "auc_std" in metrics


class _Subset(Dataset):
    def __init__(self, data: ToyJets, indices: list[int]) -> None:
        self.items = [data[i] for i in indices]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]


def test_multiclass_task(tmp_path: Path) -> None:
    train, val = ToyJets(96, 1), ToyJets(60, 2)
    for data in (train, val):  # three classes: split label 0 by multiplicity
        for item in data.items:
            if item["label"] == 0 and item["p4"].shape[0] > 4:
                item["label"] = 2
    _, result = _fit(
        tmp_path,
        model=TinyDeepSets(num_classes=3),
        train=train,
        val=val,
        epochs=1,
        task="multiclass",
        monitor="auc_1",
    )
    row = result.history[0]
    assert {"val_auc", "val_auc_0", "val_auc_1", "val_auc_2"} <= set(row)
    assert result.best_metric == row["val_auc_1"]


def test_errors_name_the_problem(tmp_path: Path) -> None:
    model = TinyDeepSets()
    data = ToyJets(8)
    with pytest.raises(ValueError, match="not a DataLoader"):
        Trainer(model, train_data=DataLoader(data), out_dir=tmp_path)
    with pytest.raises(ValueError, match="expected a torch Dataset"):
        Trainer(model, train_data=[1, 2], out_dir=tmp_path)
    with pytest.raises(ValueError, match=r"monitor: 'rejection@0\.7' is not a validation metric"):
        Trainer(model, TrainConfig(monitor="rejection@0.7"), train_data=data, out_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown task 'higgs'"):
        Trainer(model, TrainConfig(task="higgs"), train_data=data, out_dir=tmp_path)
    with pytest.raises(ValueError, match=r"TrainConfig\.amp: expected one of"):
        TrainConfig(amp="fp8")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['learning_rate'\]"):
        TrainConfig.from_dict({"learning_rate": 1e-3})
    for item in data.items:
        del item["label"]
    with pytest.raises(ValueError, match="has no labels"):
        fit(model, data, None, TrainConfig(epochs=1, progress=False), out_dir=tmp_path / "x")


def test_config_round_trip_and_hash() -> None:
    config = TrainConfig.lorentznet(batch_size=64)
    assert TrainConfig.from_dict(config.to_dict()) == config
    # options that do not change the trajectory keep the hash (a run may continue with them)
    same = TrainConfig.lorentznet(batch_size=64, epochs=50, progress=False, num_workers=2)
    assert same.config_hash() == config.config_hash()
    assert TrainConfig.lorentznet(batch_size=32).config_hash() != config.config_hash()
    one_cycle = TrainConfig.weaver_one_cycle()
    assert TrainConfig.weaver_one_cycle(epochs=5).config_hash() != one_cycle.config_hash()


@pytest.mark.slow
def test_torch_compile(tmp_path: Path) -> None:
    pytest.importorskip("torch._inductor")
    _, result = _fit(tmp_path, epochs=1, compile=True)
    assert np.isfinite(result.history[0]["train_loss"])


def test_best_epoch_selection_rules() -> None:
    from jettag.train.trainer import _improves

    assert _improves(0.9, None, lower=False) and _improves(0.9, 0.8, lower=False)
    assert not _improves(0.8, 0.8, lower=False)  # ties keep the earlier epoch
    assert _improves(0.1, 0.2, lower=True) and not _improves(0.3, 0.2, lower=True)
    assert not _improves(float("nan"), 0.5, lower=False)
    assert _improves(0.5, float("nan"), lower=False)
    assert _improves(float("inf"), 1e6, lower=False)
