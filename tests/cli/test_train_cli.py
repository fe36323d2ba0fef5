"""``jettag train`` and ``jettag evaluate`` end to end on small toy files, the shipped
configurations, and the errors of ``--set``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from _bench_helpers import run_cli, write_toy_dataset

import jettag.models
from jettag.configs import available_configs, load_config, parse_overrides, parse_value
from jettag.data.formats import open_dataset

TINY_PFN = ["model.phi_channels=[16,16]", "model.f_channels=[16]"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_toy_dataset(tmp_path_factory.mktemp("toy"),
                             {"train": 600, "val": 200, "test": 300})


@pytest.fixture(scope="module")
def trained(toy: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "pfn"
    code = run_cli("train", "--model", "pfn", "--task", "top", "--train", toy["train"],
                  "--val", toy["val"], "--out", out, "--quiet",
                  "--set", "train.epochs=3", "train.lr=5e-3", *TINY_PFN)
    assert code == 0
    return out


# ---------------------------------------------------------------------- train + evaluate


def test_train_writes_run_directory(trained: Path, toy: dict[str, Path]) -> None:
    for name in ("run.yaml", "best.pt", "last.pt", "metrics.jsonl", "metrics.csv",
                 "config.json", "tagger.safetensors", "tagger.yaml"):
        assert (trained / name).is_file(), name
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    record = yaml.safe_load((trained / "run.yaml").read_text())
    # the --set overrides are what ran, and the data files are recorded
    assert record["model"]["phi_channels"] == [16, 16]
    assert record["train"]["lr"] == pytest.approx(5e-3)
    assert record["train"]["epochs"] == 3
    assert record["data_files"]["train"] == [str(toy["train"])]
    config = json.loads((trained / "config.json").read_text())
    assert config["task"] == "top" and config["extra"]["model"] == "pfn"
    assert config["lr"] == pytest.approx(5e-3)


def test_evaluate_writes_metrics_and_roc(trained: Path, toy: dict[str, Path],
                                         tmp_path: Path) -> None:
    from jettag.metrics import summary

    out = tmp_path / "eval"
    assert run_cli("evaluate", "--checkpoint", trained, "--data", toy["test"], "--out", out,
                  "--bootstrap", "20", "--quiet") == 0
    record = json.loads((out / "metrics.json").read_text())
    metrics = record["metrics"]
    assert record["model"] == "pfn" and record["task"] == "top"
    assert record["checkpoint"] == str(trained / "best.pt")
    assert metrics["num_jets"] == 300 and metrics["num_signal"] == 150
    for key in ("accuracy", "auc", "rejection@0.5", "rejection@0.3"):
        assert f"{key}_std" in metrics
    assert 0.0 < metrics["auc_std"] < 0.1
    # three short epochs of a tiny PFN already separate the toy classes (AUC about 0.7)
    assert metrics["auc"] > 0.6
    # the written scores are the test file's jets, in order, and give the same metrics
    scores = np.load(out / "scores.npz")
    labels = open_dataset(toy["test"]).read_chunk().label
    np.testing.assert_array_equal(scores["labels"], labels)
    again = summary(scores["labels"], scores["probs"], "top")
    assert again["auc"] == pytest.approx(metrics["auc"], abs=1e-12)
    assert (out / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "roc.pdf").read_bytes()[:5] == b"%PDF-"


def test_exported_tagger_matches_evaluation(trained: Path, toy: dict[str, Path],
                                            tmp_path: Path) -> None:
    from jettag.hub.tagger import Tagger

    out = tmp_path / "eval"
    run_cli("evaluate", "--checkpoint", trained / "best.pt", "--data", toy["test"], "--out",
           out, "--bootstrap", "0", "--quiet")
    probs = np.load(out / "scores.npz")["probs"]
    tagger = Tagger.load(trained / "tagger.safetensors")
    assert tagger.class_names == ("QCD", "top") and tagger.signal_name == "top"
    jets = open_dataset(toy["test"]).read_batch(0, 50)
    np.testing.assert_allclose(tagger.predict(jets).probabilities, probs[:50], atol=1e-5)


def test_train_resumes_finished_run(trained: Path, toy: dict[str, Path]) -> None:
    before = (trained / "best.pt").stat().st_mtime_ns
    assert run_cli("train", "--model", "pfn", "--task", "top", "--train", toy["train"],
                  "--val", toy["val"], "--out", trained, "--quiet",
                  "--set", "train.epochs=3", "train.lr=5e-3", *TINY_PFN) == 0
    rows = (trained / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 3  # nothing retrained
    assert (trained / "best.pt").stat().st_mtime_ns == before


@pytest.mark.slow
def test_train_under_torchrun(toy: dict[str, Path], tmp_path: Path) -> None:
    """Two CPU processes (gloo): each rank trains on its half of the jets per epoch."""
    import os
    import subprocess
    import sys

    script = tmp_path / "train.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from _bench_helpers import run_cli\n"
        "sys.exit(run_cli(*sys.argv[1:]))\n"
    )
    out = tmp_path / "run"
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script),
         "train", "--model", "pfn", "--task", "top", "--train", str(toy["train"]), "--val",
         str(toy["val"]), "--out", str(out), "--quiet", "--set", "train.epochs=2",
         "train.batch_size=50", *TINY_PFN],
        check=True, capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # 600 jets over 2 ranks, 50 per batch: 6 steps per epoch; all 200 validation jets seen
    assert [r["global_step"] for r in rows] == [6, 12]
    assert all(r["val_num_jets"] == 200 for r in rows)
    assert (out / "tagger.safetensors").is_file()


def test_evaluate_needs_data_for_file_runs(trained: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--data"):
        run_cli("evaluate", "--checkpoint", trained, "--out", tmp_path / "e")


def test_evaluate_rejects_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"best\.pt or last\.pt"):
        run_cli("evaluate", "--checkpoint", tmp_path, "--data", "x.h5", "--out", tmp_path / "e")


def test_train_reads_particle_ids_for_qg(tmp_path: Path) -> None:
    files = write_toy_dataset(tmp_path / "qg", {"train": 200, "val": 100}, task="qg")
    out = tmp_path / "run"
    assert run_cli("train", "--model", "pfn", "--task", "qg", "--train", files["train"], "--val",
                  files["val"], "--out", out, "--quiet", "--set", "train.epochs=1",
                  *TINY_PFN) == 0
    record = yaml.safe_load((out / "run.yaml").read_text())
    assert record["data"]["x_fields"] == ["part_pid"] and record["model"]["pid"] == "float"


def test_train_refuses_files_without_the_fields_it_reads(toy: dict[str, Path],
                                                         tmp_path: Path) -> None:
    # the q/g PFN reads the PDG id; top-tagging files have none
    with pytest.raises(ValueError, match=r"part_pid"):
        run_cli("train", "--model", "pfn", "--task", "qg", "--train", toy["train"], "--val",
               toy["val"], "--out", tmp_path / "run", "--quiet")


def test_train_needs_data(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--train PATH --val PATH"):
        run_cli("train", "--model", "pfn", "--task", "top", "--out", tmp_path)
    with pytest.raises(ValueError, match="not both"):
        run_cli("train", "--model", "pfn", "--task", "top", "--generated", "100", "--train",
               "a.h5", "--val", "b.h5", "--out", tmp_path)


def test_print_config_applies_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("train", "--model", "particlenet-lite", "--task", "qg", "--print-config",
                  "--set", "train.lr=1e-3", "model.fc=[[64,0.2]]") == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["name"] == "particlenet-lite" and printed["task"] == "qg"
    assert printed["train"]["lr"] == pytest.approx(1e-3)
    assert printed["model"]["fc"] == [[64, 0.2]]
    assert printed["data"]["x_fields"] == ["part_pid"]


def test_user_config_file_merges_over_shipped(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("name: efn\ntask: top\ntrain:\n  epochs: 4\nmodel:\n  f_channels: [32]\n")
    run = load_config(path=path)
    assert run.name == "efn" and run.train["epochs"] == 4
    assert run.model["f_channels"] == [32]
    assert run.model["phi_channels"] == [100, 100, 128]  # kept from the shipped file
    assert run.train["schedule"] == "one-cycle"


# ---------------------------------------------------------------------- --set and bad keys


def test_parse_values() -> None:
    assert parse_value("1e-3") == pytest.approx(1e-3) and isinstance(parse_value("1e-3"), float)
    assert parse_value("8") == 8 and isinstance(parse_value("8"), int)
    assert parse_value("[64, 64]") == [64, 64]
    assert parse_value("null") is None and parse_value("None") is None
    assert parse_value("true") is True
    assert parse_value("one-cycle") == "one-cycle"
    assert parse_overrides(["train.lr=2e-3", "model.k=8", "data.massless=true"]) == {
        "train": {"lr": 2e-3}, "model": {"k": 8}, "data": {"massless": True}}


def test_set_overrides_reach_the_train_config() -> None:
    run = load_config("pfn", "top", overrides=["train.lr=1e-3", "train.epochs=2",
                                               "data.max_particles=50"])
    config = run.train_config()
    assert config.lr == pytest.approx(1e-3) and config.epochs == 2 and config.task == "top"
    assert config.extra["data"]["max_particles"] == 50
    assert run.tagger_inputs().max_particles == 50


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lrr=1e-3", r"unknown training option.*train\.lrr.*train\.lr"),
        ("data.bogus=1", r"unknown data option.*data\.bogus.*data\.x_fields"),
        ("foo.x=1", r"unknown section 'foo'"),
        ("train.lr", r"expected SECTION\.OPTION=VALUE"),
        ("lr=1", r"expected SECTION\.OPTION=VALUE"),
        ("train.task=qg", r"train\.task is set by the run itself"),
        ("train.schedule=cosine", r"TrainConfig\.schedule"),
        ("data.x_fields=part_pid", r"x_fields"),
    ],
)
def test_bad_overrides_are_clear_errors(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config("pfn", "top", overrides=[override])


def test_unknown_model_option_names_the_options() -> None:
    run = load_config("particlenet-lite", "top", overrides=["model.k=8"])
    with pytest.raises(ValueError, match=r"unknown option 'model\.k'.*model\.blocks"):
        run.build_model()


def test_unknown_config_is_a_clear_error() -> None:
    with pytest.raises(FileNotFoundError, match=r"no shipped configuration.*pfn/top"):
        load_config("track-pfn", "top")
    with pytest.raises(ValueError, match="--model NAME --task"):
        load_config("pfn", None)


# ---------------------------------------------------------------------- shipped configurations

# The b-tagging configurations need the track fields of b-tagging data and ship reduced
# widths: tests/test_benchmark_btag.py tests them.
CONFIGS = [(m, t) for m, t in available_configs() if t != "btag"]


def test_configs_cover_every_model_and_task() -> None:
    expected = {"particlenet", "particlenet-lite", "pfn", "efn", "rpcn", "rpcn-irc"}
    shipped = {m for m, _ in CONFIGS}
    assert expected <= shipped
    assert {(m, t) for m in shipped for t in ("top", "qg")} == set(CONFIGS)
    btag = {m for m, t in available_configs() if t == "btag"}
    assert btag == {"track-pfn", "vector-pfn", "tensor-pfn"}


def _task_defaults(model: torch.nn.Module, task: str) -> dict:
    import sys

    method = getattr(type(model), "default_config", None)
    if method is None:
        method = sys.modules[type(model).__module__].default_config
    return method(task)


def _normalise(value: object) -> object:
    if isinstance(value, tuple | list):
        return [_normalise(v) for v in value]
    return value


@pytest.mark.parametrize(("name", "task"), CONFIGS)
def test_config_builds_and_runs_its_model(name: str, task: str) -> None:
    if name not in jettag.models.available():
        pytest.skip(f"model {name!r} is not registered in this build")
    from jettag.data.formats._synthetic import random_jets

    run = load_config(name, task)
    assert run.name == name and run.task == task and run.description
    model = run.build_model().eval()
    # the file agrees with the model's own task defaults
    for key, value in _task_defaults(model, task).items():
        assert _normalise(run.model.get(key)) == _normalise(value), (name, task, key)
    inputs = run.tagger_inputs()
    chunk = random_jets(6, seed=1, min_particles=1, max_particles=20)
    jets = inputs.prepare(chunk.to_batch(x_fields=list(inputs.x_fields), dtype=torch.float32))
    with torch.no_grad():
        logits = model(jets)
    assert logits.shape == (6, 2) and torch.isfinite(logits).all()
    config = run.train_config()
    assert config.task == task and config.extra["model"] == name
