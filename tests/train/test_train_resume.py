"""A run that dies at any step and is resumed ends exactly like an uninterrupted run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _train_helpers import (
    Crash,
    StopAt,
    TinyDeepSets,
    ToyJets,
    ToyStream,
    deterministic_restored,
    resume_config,
    run,
    single_thread,
)

from jettag.train import evaluate, fit, load_checkpoint, load_weights

HERE = Path(__file__).resolve().parent


def _without_times(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if not k.endswith("time")} for row in history]


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory):
    """The uninterrupted run (3 epochs x 6 steps, one-cycle, dropout, deterministic)."""
    out = tmp_path_factory.mktemp("uninterrupted")
    model, result = run(out)
    return model, result, out


@pytest.mark.parametrize(
    ("stop_at", "position"),
    [(4, (4, 0, 4)), (10, (8, 1, 2)), (12, (12, 1, 6)), (13, (12, 2, 0))],
)
def test_resume_after_crash_matches_uninterrupted(
    reference, tmp_path: Path, stop_at: int, position: tuple[int, int, int]
) -> None:
    # 6 steps per epoch, checkpoints every 4 steps and after each epoch: a crash at step 10
    # resumes from step 8 (epoch 1, batch 2) and replays 2 steps; at 12 from the checkpoint
    # after the last batch of epoch 1 (before its validation); at 13 from the end of epoch 1
    ref_model, ref_result, _ = reference
    with pytest.raises(Crash):
        run(tmp_path, stop_at=stop_at)
    state = load_checkpoint(tmp_path / "last.pt")
    assert (state["global_step"], state["epoch"], state["step_in_epoch"]) == position
    # a freshly initialised model with other weights: everything must come from the checkpoint
    model, result = run(tmp_path, model_seed=123)
    _assert_same_weights(model, ref_model)
    assert _without_times(result.history) == _without_times(ref_result.history)
    assert (result.best_metric, result.best_epoch) == (
        ref_result.best_metric,
        ref_result.best_epoch,
    )


def test_resume_after_sigkill_matches_uninterrupted(reference, tmp_path: Path) -> None:
    ref_model, ref_result, _ = reference
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from pathlib import Path\n"
        "from _train_helpers import run\n"
        "run(Path(sys.argv[2]), stop_at=9, kill=True)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(HERE), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert load_checkpoint(tmp_path / "last.pt")["global_step"] == 8
    model, result = run(tmp_path, model_seed=99)
    _assert_same_weights(model, ref_model)
    assert _without_times(result.history) == _without_times(ref_result.history)


def test_resume_iterable_dataset_and_epoch_schedule(tmp_path: Path) -> None:
    # streaming data (whole batches, order fixed by (seed, epoch)) with LorentzNet's per-epoch
    # schedule: a crash mid-epoch replays the stream up to the consumed batches
    config = resume_config(schedule="lorentznet", warmup_epochs=2, checkpoint_every=3, epochs=3)

    def train(out: Path, stop_at: int | None = None, model_seed: int = 0):
        torch.manual_seed(model_seed)
        model = TinyDeepSets(dropout=0.2)
        callbacks = [] if stop_at is None else [StopAt(stop_at)]
        with single_thread(), deterministic_restored():
            result = fit(
                model,
                ToyStream(70, batch_size=16),
                ToyJets(30, seed=3),
                config,
                out_dir=out,
                callbacks=callbacks,
            )
        return model, result

    ref_model, ref_result = train(tmp_path / "a")
    assert [row["global_step"] for row in ref_result.history] == [5, 10, 15]
    assert [row["lr"] for row in ref_result.history] == pytest.approx(
        [1.5e-3, 3e-3, 3e-3 * 0.5 * (1 + 2**-0.5)]
    )
    with pytest.raises(Crash):
        train(tmp_path / "b", stop_at=7)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["step_in_epoch"] == 1  # step 6
    model, result = train(tmp_path / "b", model_seed=5)
    _assert_same_weights(model, ref_model)
    assert _without_times(result.history) == _without_times(ref_result.history)


def test_finished_run_is_not_trained_again(reference) -> None:
    ref_model, ref_result, out = reference
    before = (out / "last.pt").stat().st_mtime_ns
    model, result = run(out, model_seed=1)
    _assert_same_weights(model, ref_model)  # weights loaded from last.pt, no step taken
    assert result.history == ref_result.history
    assert (out / "last.pt").stat().st_mtime_ns == before


def test_logs_best_checkpoint_and_evaluate(reference) -> None:
    _, result, out = reference
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows == result.history
    csv_lines = (out / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].split(",")[:4] == ["epoch", "global_step", "lr", "train_loss"]
    assert len(csv_lines) == 1 + len(rows)
    assert json.loads((out / "config.json").read_text())["schedule"] == "one-cycle"
    # best.pt holds the epoch with the highest validation AUC, and re-evaluating it gives the
    # logged validation metrics
    aucs = [row["val_auc"] for row in rows]
    assert result.best_epoch == aucs.index(max(aucs))
    assert result.best_metric == max(aucs)
    model = TinyDeepSets(dropout=0.2)
    state = load_weights(model, result.best_checkpoint)
    assert state["epoch"] == result.best_epoch
    metrics = evaluate(model, ToyJets(40, seed=2), task="top", batch_size=7)
    best_row = rows[result.best_epoch]
    for key in ("accuracy", "auc", "rejection@0.5", "rejection@0.3"):
        assert metrics[key] == pytest.approx(best_row[f"val_{key}"], rel=1e-6)


def test_resume_flags(reference, tmp_path: Path) -> None:
    _, _, out = reference
    model = TinyDeepSets()
    with deterministic_restored():
        with pytest.raises(ValueError, match="already holds a run"):
            fit(model, ToyJets(8), None, resume_config(), out_dir=out, resume=False)
        with pytest.raises(FileNotFoundError, match="resume=True"):
            fit(model, ToyJets(8), None, resume_config(), out_dir=tmp_path, resume=True)
    assert not os.listdir(tmp_path)


def test_resume_with_iterable_jet_dataset(tmp_path: Path) -> None:
    # jettag's streaming dataset over real files (two Parquet files, shuffled segments and a
    # shuffle buffer seeded by (seed, epoch)): the resumed stream is the original stream
    pytest.importorskip("pyarrow")
    from jettag.data.dataset import IterableJetDataset
    from jettag.data.formats import write_parquet
    from jettag.data.formats._synthetic import random_jets

    files = [
        write_parquet(tmp_path / f"jets_{i}.parquet", random_jets(45, seed=i, pid=False))
        for i in range(2)
    ]

    def train(out: Path, stop_at: int | None = None, model_seed: int = 0):
        data = IterableJetDataset(
            files, batch_size=16, shuffle=True, seed=11, chunk_size=10, buffer_size=20
        )
        torch.manual_seed(model_seed)
        model = TinyDeepSets(dropout=0.2)
        callbacks = [] if stop_at is None else [StopAt(stop_at)]
        config = resume_config(schedule="none", checkpoint_every=2, epochs=2)
        with single_thread(), deterministic_restored():
            result = fit(model, data, None, config, out_dir=out, callbacks=callbacks)
        return model, result

    ref_model, ref_result = train(tmp_path / "a")
    assert ref_result.history[-1]["global_step"] == 12  # 90 jets -> 6 batches per epoch
    with pytest.raises(Crash):
        train(tmp_path / "b", stop_at=9)
    model, result = train(tmp_path / "b", model_seed=4)
    _assert_same_weights(model, ref_model)
    assert _without_times(result.history) == _without_times(ref_result.history)
