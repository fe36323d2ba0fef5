"""Learning-rate schedules against the reference implementations' logs and definitions."""

from __future__ import annotations

import math

import pytest
import torch

from jettag.train import TrainConfig, build_scheduler, lorentznet_factor

# Learning rate of each of the 35 epochs of the released LorentzNet top-tagging run, as logged
# by LorentzNet-release (logs/top/pretrained/train-result.json, key "lr"; the quark/gluon log
# is identical): AdamW lr 1e-3, GradualWarmupScheduler(warmup_epoch=5) +
# CosineAnnealingWarmRestarts(4, 2), lr *= 0.5 after epoch 31.
LORENTZNET_LOGGED_LR = [
    0.0002,
    0.0004,
    0.0006,
    0.0008,
    0.001,
    0.0008535533905932737,
    0.0005,
    0.00014644660940672628,
    0.001,
    0.0009619397662556434,
    0.0008535533905932737,
    0.000691341716182545,
    0.0005,
    0.0003086582838174551,
    0.00014644660940672628,
    3.806023374435663e-05,
    0.001,
    0.0009903926402016153,
    0.0009619397662556434,
    0.0009157348061512727,
    0.0008535533905932737,
    0.0007777851165098011,
    0.000691341716182545,
    0.0005975451610080642,
    0.0005,
    0.00040245483899193594,
    0.0003086582838174551,
    0.00022221488349019903,
    0.00014644660940672628,
    8.426519384872733e-05,
    3.806023374435663e-05,
    9.607359798384786e-06,
    4.803679899192393e-06,
    2.4018399495961964e-06,
    1.2009199747980982e-06,
]


def _rates(config: TrainConfig, steps_per_epoch: int, interval_steps: int) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=config.lr, betas=config.betas)
    scheduler, _ = build_scheduler(optimizer, config, steps_per_epoch)
    rates = []
    for _ in range(interval_steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_lorentznet_schedule_matches_released_log() -> None:
    expected = [lr / 1e-3 for lr in LORENTZNET_LOGGED_LR]
    assert [lorentznet_factor(e) for e in range(35)] == pytest.approx(expected, rel=1e-12)
    # as a scheduler stepped once per epoch, from the LorentzNet preset
    rates = _rates(TrainConfig.lorentznet(), steps_per_epoch=100, interval_steps=35)
    assert rates == pytest.approx(LORENTZNET_LOGGED_LR, rel=1e-12)
    _, interval = build_scheduler(
        torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))]), TrainConfig.lorentznet(), None
    )
    assert interval == "epoch"


def test_lorentznet_schedule_closed_form() -> None:
    # warm-up reaches the base rate at epoch warmup-1; restarts every 4, then 8, 16 epochs
    assert lorentznet_factor(3, warmup_epochs=4) == 1.0
    assert [lorentznet_factor(e) for e in (4, 8, 16)] == [1.0, 1.0, 1.0]
    assert lorentznet_factor(6) == pytest.approx(0.5)
    assert lorentznet_factor(40) == pytest.approx(lorentznet_factor(31) * 0.5**9)
    assert lorentznet_factor(0, warmup_epochs=0) == 1.0


def test_one_cycle_is_weavers() -> None:
    config = TrainConfig.weaver_one_cycle(epochs=3, lr=2e-3)
    rates = _rates(config, steps_per_epoch=10, interval_steps=30)
    # weaver-core: OneCycleLR(max_lr=start_lr, pct_start=0.3, anneal 'cos', div_factor=25)
    assert rates[0] == pytest.approx(2e-3 / 25)
    assert max(rates) == pytest.approx(2e-3) and rates.index(max(rates)) == 8  # 0.3 * 30 - 1
    assert rates[-1] == pytest.approx(2e-3 / 25 / 1e4, rel=0.05)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=2e-3)
    reference = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=2e-3,
        epochs=3,
        steps_per_epoch=10,
        pct_start=0.3,
        anneal_strategy="cos",
        div_factor=25.0,
    )
    expected = []
    for _ in range(30):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        reference.step()
    assert rates == expected


def test_piecewise_linear() -> None:
    config = TrainConfig(
        schedule="piecewise-linear", lr=1.0, lr_points=((0, 0.1), (2, 1.0), (4, 0.0))
    )
    rates = _rates(config, steps_per_epoch=4, interval_steps=20)
    assert rates[0] == pytest.approx(0.1)
    assert rates[4] == pytest.approx(0.55)
    assert rates[8] == pytest.approx(1.0)
    assert rates[12] == pytest.approx(0.5)
    assert rates[16:] == [0.0] * 4
    assert all(math.isfinite(r) for r in rates)


def test_schedule_errors() -> None:
    with pytest.raises(ValueError, match="needs the number of batches per epoch"):
        build_scheduler(
            torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))]),
            TrainConfig(schedule="one-cycle"),
            None,
        )
    with pytest.raises(ValueError, match=r"TrainConfig\.schedule: expected one of"):
        TrainConfig(schedule="cosine")
    with pytest.raises(ValueError, match="lr_points"):
        TrainConfig(schedule="piecewise-linear")


def test_flat_decay_is_weavers_default() -> None:
    # weaver-core flat+decay: MultiStepLR over the last 30% of the epochs down to 1%
    config = TrainConfig(schedule="flat-decay", epochs=20, lr=1.0)
    rates = _rates(config, steps_per_epoch=None, interval_steps=20)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    reference = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(range(14, 20)), gamma=0.01 ** (1 / 6)
    )
    expected = []
    for _ in range(20):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        reference.step()
    assert rates == pytest.approx(expected, rel=1e-12)
    assert rates[13] == 1.0 and rates[19] == pytest.approx(0.01)
