"""The benchmark implementation (jettag.bench): seeds, data, baselines, aggregation, checks,
reports and the published numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from jettag.bench import (
    BASELINES,
    DEFAULT_MODELS,
    PRESETS,
    PUBLISHED,
    TOP_MASS,
    Budget,
    InMemoryJets,
    acceptance_check,
    evaluate_baseline,
    find_splits,
    resolve_models,
    split_seed,
)
from jettag.bench.baselines import best_threshold, jet_mass, multiplicity
from jettag.bench.report import format_table, json_ready
from jettag.bench.runner import _aggregate
from jettag.data.batch import JetBatch
from jettag.data.formats import JetChunk
from jettag.data.formats._synthetic import random_jets


def _two_particle_jets(masses: list[float], labels: list[int]) -> JetChunk:
    """Jets of two massless back-to-back particles (in the jet frame) of given mass, boosted
    along x: the jet mass is exactly ``m``."""
    from jettag import physics

    rows = []
    for m in masses:
        half = m / 2
        pair = torch.tensor([[half, 0.0, half, 0.0], [half, 0.0, -half, 0.0]], dtype=torch.float64)
        rows.append(physics.boost(pair, beta=torch.tensor([0.9, 0.0, 0.0], dtype=torch.float64)))
    p4 = torch.cat(rows).numpy()
    return JetChunk(p4, np.full(len(masses), 2), np.array(labels))


# ---------------------------------------------------------------------- seeds and data


def test_split_seeds_never_collide() -> None:
    seeds = {split_seed(base, split) for base in range(50) for split in ("train", "val", "test")}
    assert len(seeds) == 150
    assert [split_seed(0, s) for s in ("train", "val", "test")] == [0, 1, 2]
    with pytest.raises(ValueError, match="split"):
        split_seed(0, "holdout")


def test_find_splits_files_and_directories(tmp_path: Path) -> None:
    for name in ("train.h5", "val.h5", "test.h5", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    splits = find_splits(tmp_path)
    assert {k: [p.name for p in v] for k, v in splits.items()} == {
        "train": ["train.h5"], "val": ["val.h5"], "test": ["test.h5"]}
    other = tmp_path / "qg"
    for split in ("train", "validation", "test"):
        (other / split).mkdir(parents=True)
        for k in range(2):
            (other / split / f"QG_jets_{k}.npz").write_bytes(b"")
    splits = find_splits(other)
    assert [p.name for p in splits["val"]] == ["QG_jets_0.npz", "QG_jets_1.npz"]
    with pytest.raises(FileNotFoundError, match="no such directory"):
        find_splits(tmp_path / "missing")


def test_in_memory_jets_fetch_whole_batches() -> None:
    chunk = random_jets(12, seed=3, min_particles=1)
    ds = InMemoryJets(chunk, x_fields=["part_pid"])
    batch = ds.__getitems__([5, 0, 7])
    assert isinstance(batch, JetBatch) and len(batch) == 3
    single = [ds[i] for i in (5, 0, 7)]
    collated = JetBatch.collate(single)
    torch.testing.assert_close(batch.p4, collated.p4)
    torch.testing.assert_close(batch.x, collated.x)
    assert batch.label.tolist() == [int(chunk.label[i]) for i in (5, 0, 7)]
    # the pid column holds the PDG ids of the chosen jets
    offsets = chunk.offsets
    expected = np.concatenate([chunk.particle_fields["part_pid"][offsets[i]:offsets[i + 1]]
                               for i in (5, 0, 7)])
    np.testing.assert_array_equal(batch.x[:, 0].numpy(), expected)
    with pytest.raises(ValueError, match="part_charge"):
        InMemoryJets(chunk, x_fields=["part_charge"])


# ---------------------------------------------------------------------- baselines


def test_jet_mass_and_multiplicity_are_exact() -> None:
    jets = _two_particle_jets([172.5, 80.0, 20.0], [1, 0, 0])
    np.testing.assert_allclose(jet_mass(jets), [172.5, 80.0, 20.0], rtol=1e-12)
    np.testing.assert_array_equal(multiplicity(jets), [2, 2, 2])
    score = BASELINES["top"].score(jets)
    np.testing.assert_allclose(score, [0.0, -92.5, -152.5], atol=1e-9)
    assert TOP_MASS == 172.5


def test_best_threshold_maximises_accuracy() -> None:
    assert best_threshold(np.array([0, 0, 1, 1]), np.array([1.0, 2.0, 3.0, 4.0])) == 2.5
    # ties: integer scores get cuts between values, never on one
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([-30.0, -30.0, -20.0, -20.0, -10.0, -10.0])
    cut = best_threshold(labels, scores)
    assert cut == -25.0 or cut == -15.0
    assert np.mean((scores > cut) == labels) == pytest.approx(5 / 6)


def test_baseline_accuracy_uses_the_validation_cut() -> None:
    val = _two_particle_jets([170.0, 175.0, 60.0, 30.0], [1, 1, 0, 0])
    test = _two_particle_jets([172.0, 120.0, 150.0, 40.0], [1, 1, 0, 0])
    metrics, scores = evaluate_baseline(BASELINES["top"], val, test, "top")
    # cut halfway between the worst top (-2.5) and the best QCD (-112.5): -57.5; on the
    # test jets 172, 120 (tops) and 150 (QCD!) pass, 40 fails: accuracy 3/4
    assert metrics["cut"] == pytest.approx(-57.5)
    assert metrics["accuracy"] == pytest.approx(0.75)
    np.testing.assert_allclose(scores, -np.abs(np.array([172.0, 120, 150, 40]) - 172.5))
    assert metrics["auc"] == pytest.approx(0.75)  # ranks 172 > 150 > 120 > 40


# ---------------------------------------------------------------------- models and budgets


def test_default_models_and_presets() -> None:
    import jettag.models

    assert resolve_models("top", None) == [m for m in DEFAULT_MODELS
                                           if m in jettag.models.available()]
    assert "particlenet" not in DEFAULT_MODELS  # too slow for the default CPU budget
    assert set(resolve_models("top", "all")) >= {"particlenet", "pfn", "efn"}
    assert resolve_models("qg", "efn, pfn") == ["efn", "pfn"]
    with pytest.raises(ValueError, match="twice"):
        resolve_models("top", "pfn,pfn")
    assert PRESETS["top"]["acceptance"].train_jets >= 20_000
    with pytest.raises(ValueError, match="--train-jets"):
        Budget(1, 10, 10, epochs=1)
    with pytest.raises(ValueError, match="--seeds"):
        Budget(10, 10, 10, epochs=1, seeds=0)


def _run(auc: float, seed: int, rejection: float = 100.0) -> dict[str, Any]:
    metrics = {"accuracy": 0.9, "auc": auc, "rejection@0.5": rejection, "rejection@0.3": 300.0,
               "auc_std": 0.002, "accuracy_std": 0.003}
    return {"seed": seed, "metrics": metrics, "train_time_s": 10.0 + seed,
            "inference_jets_per_s": 1000.0}


def test_aggregate_over_seeds() -> None:
    summary = _aggregate([_run(0.97, 0), _run(0.98, 1), _run(0.99, 2)])
    assert summary["auc"]["mean"] == pytest.approx(0.98)
    assert summary["auc"]["std"] == pytest.approx(0.01)
    assert summary["auc"]["bootstrap_std"] == pytest.approx(0.002)
    assert summary["train_time_s"]["mean"] == pytest.approx(11.0)
    one = _aggregate([_run(0.97, 0, rejection=math.inf)])
    assert one["auc"]["std"] is None
    assert one["rejection@0.5"]["mean"] == math.inf


def _results(task: str, aucs: dict[str, float], baseline_auc: float, train: int) -> dict:
    models = {name: {"display_name": name, "parameters": 1000, "summary": _aggregate([_run(a, 0)])}
              for name, a in aucs.items()}
    baseline = {"label": "baseline", "metrics": {"accuracy": 0.8, "auc": baseline_auc,
                                                 "rejection@0.5": 20.0,
                                                 "rejection@0.3": math.inf}}
    return {"task": task, "models": models, "baseline": baseline,
            "data": {"jets": {"train": train}}, "budget": {"seeds": 1}}


def test_acceptance_check() -> None:
    # with uncertainties: more than 3 combined sigma, hypot(0.002, 0.003) * 3 = 0.0108
    results = _results("top", {"particlenet-lite": 0.97, "pfn": 0.92}, 0.90, 20_000)
    results["baseline"]["metrics"]["auc_std"] = 0.003
    check = acceptance_check(results)
    assert check["passed"]
    assert check["criteria"][0]["criterion"] == (
        "ParticleNet-Lite AUC > baseline AUC 0.9000 + 3 sigma = 0.0108")
    results = _results("top", {"particlenet-lite": 0.94, "pfn": 0.905}, 0.90, 20_000)
    results["baseline"]["metrics"]["auc_std"] = 0.003
    failed = [c["criterion"] for c in acceptance_check(results)["criteria"] if not c["passed"]]
    assert failed == ["PFN AUC > baseline AUC 0.9000 + 3 sigma = 0.0108",
                      "ParticleNet-Lite AUC >= 0.95"]
    # without a baseline uncertainty: a fixed margin of 0.01
    qg = acceptance_check(_results("qg", {"pfn": 0.905}, 0.90, 10_000))
    assert [c["passed"] for c in qg["criteria"]] == [False, False]
    assert qg["criteria"][0]["criterion"].endswith("+ 0.01")


# ---------------------------------------------------------------------- reports


def test_json_is_strict() -> None:
    value = {"a": math.inf, "b": [math.nan, np.float32(1.5)], "c": np.arange(2),
             "d": Path("x")}
    text = json.dumps(json_ready(value), allow_nan=False)
    assert json.loads(text) == {"a": "inf", "b": ["nan", 1.5], "c": [0, 1], "d": "x"}


def test_table_formats_uncertainties_and_infinities() -> None:
    results = _results("top", {"pfn": 0.95}, 0.9, 100)
    table = format_table(results).splitlines()
    assert table[0].startswith("| Tagger | Params | Accuracy | AUC |")
    assert table[2].startswith("| baseline | 0 | 0.8000 | 0.9000 | 20.0 | ∞ |")
    assert table[3] == ("| pfn | 1,000 | 0.9000 ± 0.0030 | 0.9500 ± 0.0020 | 100 | 300 | 10 "
                        "| 1,000 |")


# ---------------------------------------------------------------------- published numbers


def test_published_rows_carry_sources_and_read_values() -> None:
    top = {r.model: r for r in PUBLISHED["top"]}
    assert top["ParticleNet"].auc == "0.9858" and top["ParticleNet"].rejection_30 == "1615 ± 93"
    assert top["LorentzNet"].rejection_30 == "2195 ± 173"
    assert top["LorentzNet (released checkpoint)"].auc == "0.98700"
    for rows in PUBLISHED.values():
        for r in rows:
            assert "Table" in r.source or "test-result.json" in r.source
    # numbers known only second-hand (ParticleNet-Lite, rPCN, EFN) are left out
    assert not {"ParticleNet-Lite", "rPCN", "EFN"} & set(top)
    assert [r.model for r in PUBLISHED["qg"]] == ["LorentzNet (released checkpoint)"]
