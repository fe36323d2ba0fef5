"""The zoo builder: a finished ``jettag benchmark`` run becomes a zoo entry whose card
carries the run's command, data sizes and the test metrics recomputed from the run's test
scores; a run whose stored scores the rebuilt tagger does not reproduce is refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from jettag.hub import load_pretrained
from jettag.hub._build import build_entry
from jettag.metrics import summary


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
    from _bench_helpers import write_toy_dataset

    from jettag.cli import main

    root = tmp_path_factory.mktemp("bench")
    write_toy_dataset(root / "data", {"train": 200, "val": 100, "test": 200})
    code = main(["benchmark", "top", "--models", "pfn", "--data-dir", str(root / "data"),
                 "--train-jets", "200", "--val-jets", "100", "--test-jets", "200",
                 "--epochs", "1", "--seeds", "1", "--bootstrap", "10", "--threads", "1",
                 "--quiet", "--out", str(root / "out")])
    assert code == 0
    (run,) = (root / "out" / "runs" / "pfn").glob("seed0-*")
    return run


def _build(run: Path, zoo: Path, **kwargs) -> Path:
    return build_entry(run, name="top-pfn-toy", title="PFN on toy jets",
                       summary="a PFN trained for one epoch on toy jets",
                       intended_use="tests of the zoo builder",
                       limitations=["toy three-prong versus one-prong jets"], out_dir=zoo,
                       bootstrap=50, **kwargs)


def test_entry_from_a_benchmark_run(finished_run: Path, tmp_path: Path):
    _build(finished_run, tmp_path)
    tagger = load_pretrained("top-pfn-toy", directory=tmp_path)
    card = tagger.card
    with np.load(finished_run / "test_scores.npz") as data:
        labels, probs = data["labels"], data["probs"]
    expected = summary(labels, probs, "top", bootstrap=50, seed=0)
    metrics = {m["name"]: m for m in card["evaluation"]["metrics"]}
    assert metrics["auc"]["value"] == pytest.approx(expected["auc"], abs=1e-6)
    assert metrics["auc"]["uncertainty"] == pytest.approx(expected["auc_std"], abs=1e-6)
    assert metrics["accuracy"]["value"] == pytest.approx(expected["accuracy"], abs=1e-6)
    assert card["evaluation"]["size"] == 200 and card["evaluation"]["split"] == "test"
    assert card["training"]["size"] == {"train": 200, "validation": 100}
    record = json.loads((finished_run.parents[2] / "results.json").read_text())
    assert card["training"]["command"] == record["command"]
    assert "the first 200 jets of train.h5" in card["training"]["data"]["description"]
    assert "particle-level" in card["limitations"][0]
    assert (tagger.class_names, tagger.signal_name) == (("QCD", "top"), "top")
    config = json.loads((finished_run / "config.json").read_text())["extra"]
    assert tagger.architecture == "pfn" and tagger.config == config["model_config"]


def test_scores_that_the_weights_do_not_reproduce_are_refused(finished_run: Path,
                                                               tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    for item in finished_run.iterdir():
        (run / item.name).write_bytes(item.read_bytes())
    with np.load(run / "test_scores.npz") as data:
        labels, probs = data["labels"], data["probs"]
    np.savez(run / "test_scores.npz", labels=labels, probs=probs[:, ::-1])
    with pytest.raises(ValueError, match=r"does not reproduce the run's test scores"):
        _build(run, tmp_path / "zoo", command="jettag benchmark top")
    assert not (tmp_path / "zoo" / "top-pfn-toy.yaml").exists()
    (run / "test_scores.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"test_scores.npz: missing"):
        _build(run, tmp_path / "zoo", command="jettag benchmark top")
