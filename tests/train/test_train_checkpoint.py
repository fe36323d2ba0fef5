"""Checkpoints: atomic writes, weights-only loading, clear errors for bad files."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from _train_helpers import (
    TinyDeepSets,
    ToyJets,
    deterministic_restored,
    resume_config,
    run,
    single_thread,
)

import jettag.train.checkpoint as ckpt
from jettag.train import atomic_save, fit, load_checkpoint, load_weights
from jettag.train.checkpoint import capture_rng_state, restore_rng_state


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    run(out, epochs=1, schedule="lorentznet")
    return out


def _fit_again(out: Path, **overrides) -> None:
    torch.manual_seed(0)
    model = TinyDeepSets(**overrides.pop("model", {}))
    with single_thread(), deterministic_restored():
        fit(
            model,
            ToyJets(96, seed=1),
            ToyJets(40, seed=2),
            resume_config(epochs=2, schedule="lorentznet", **overrides),
            out_dir=out,
        )


# ---------------------------------------------------------------------- atomicity


def test_crash_while_writing_keeps_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.pt"
    atomic_save({"format": "x", "value": torch.arange(5)}, path)
    before = path.read_bytes()
    real_save = torch.save

    def dying_save(obj, handle):  # writes half a checkpoint, then the process "dies"
        real_save(obj, handle)
        handle.truncate(10)
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"format": "x", "value": torch.arange(7)}, path)
    assert path.read_bytes() == before
    assert torch.equal(torch.load(path, weights_only=True)["value"], torch.arange(5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # temp file removed


def test_crash_before_rename_keeps_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.pt"
    atomic_save({"value": 1}, path)

    def no_replace(src, dst):
        raise KeyboardInterrupt  # killed between fsync and rename

    monkeypatch.setattr(ckpt.os, "replace", no_replace)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"value": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"value": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_failed_epoch_checkpoint_leaves_resumable_run(
    finished_run: Path, tmp_path: Path, monkeypatch
) -> None:
    # the save at the end of epoch 2 fails: last.pt must still be the previous checkpoint,
    # written after the last batch of epoch 2 (step 12; checkpoints every 4 steps)
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    real = ckpt.atomic_save

    def failing(obj, path):
        if Path(path).name == "last.pt" and obj["epoch"] == 2:
            raise OSError("no space left on device")
        return real(obj, path)

    monkeypatch.setattr("jettag.train.trainer.atomic_save", failing)
    with pytest.raises(OSError, match="no space"):
        _fit_again(out)
    state = load_checkpoint(out / "last.pt")
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 6, 12)
    assert len(state["history"]) == 1


# ---------------------------------------------------------------------- errors


def test_truncated_checkpoint_is_a_clear_error(finished_run: Path, tmp_path: Path) -> None:
    data = (finished_run / "last.pt").read_bytes()
    path = tmp_path / "last.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"last\.pt.*truncated or corrupt"):
        load_checkpoint(path)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        _fit_again(tmp_path)


def test_garbage_and_foreign_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(ValueError, match=r"garbage\.pt.*truncated or corrupt"):
        load_checkpoint(garbage)
    bare = tmp_path / "bare.pt"
    torch.save(TinyDeepSets().state_dict(), bare)
    with pytest.raises(ValueError, match=r"bare\.pt: not a jettag checkpoint"):
        load_checkpoint(bare)
    pickled = tmp_path / "object.pt"
    torch.save({"format": "jettag-checkpoint", "obj": Path("x")}, pickled)
    with pytest.raises(ValueError, match=r"object\.pt: holds Python objects"):
        load_checkpoint(pickled)
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_of_another_model(finished_run: Path) -> None:
    with pytest.raises(ValueError, match=r"last\.pt.*shapes differ.*phi\.0\.weight"):
        load_weights(TinyDeepSets(hidden=8), finished_run / "last.pt")

    class Other(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 2)

    with pytest.raises(ValueError, match=r"missing key.*unexpected key"):
        load_weights(Other(), finished_run / "last.pt")
    with pytest.raises(ValueError, match="shapes differ"):
        _fit_again(finished_run, model={"hidden": 8})


def test_checkpoint_with_another_config(finished_run: Path) -> None:
    with pytest.raises(
        ValueError, match=r"different training configuration.*lr: checkpoint 0\.003"
    ):
        _fit_again(finished_run, lr=1e-2)


def test_best_checkpoint_cannot_resume(finished_run: Path, tmp_path: Path) -> None:
    shutil.copy(finished_run / "best.pt", tmp_path / "last.pt")
    with pytest.raises(ValueError, match="'best' checkpoint"):
        _fit_again(tmp_path)


def test_other_world_size(finished_run: Path, tmp_path: Path) -> None:
    state = load_checkpoint(finished_run / "last.pt")
    state["world_size"] = 2
    atomic_save(state, tmp_path / "last.pt")
    with pytest.raises(ValueError, match="written by 2 process"):
        _fit_again(tmp_path)


# ---------------------------------------------------------------------- content


def test_checkpoint_loads_weights_only_and_holds_the_position(finished_run: Path) -> None:
    state = torch.load(finished_run / "last.pt", weights_only=True)
    assert state["format"] == "jettag-checkpoint"
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 0, 6)
    assert set(state) >= {"model", "optimizer", "scheduler", "scaler", "ranks", "best", "history"}
    assert state["ranks"][0]["rng"]["torch"].dtype == torch.uint8


def test_rng_state_round_trip() -> None:
    # the trainer saves the global generators that models and datasets draw from
    torch.manual_seed(3)
    np.random.seed(3)  # noqa: NPY002
    random.seed(3)
    state = capture_rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random(), np.random.normal())  # noqa: NPY002
    restore_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), random.random(), np.random.normal())  # noqa: NPY002
    assert torch.equal(first[0], again[0])
    assert np.array_equal(first[1], again[1])
    assert first[2:] == again[2:]
