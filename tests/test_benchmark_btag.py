"""The b-tagging benchmark: toy b/light jets in the generator's ROOT layout, the reader's
label default for them, the track-counting baseline, the light-rejection criteria, and the
``btag`` task end to end (tiny budget) with its results and cost tables."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jettag.bench.baselines import BASELINES, track_counting
from jettag.bench.btag import btag_criteria
from jettag.data.formats import JetChunk, JetClassReader, open_dataset, write_jetclass_root
from jettag.models.btag import BTAG_X_FIELDS

_BTAG_LABELS = ("label_light", "label_b")


def toy_btag_jets(num_jets: int, seed: int) -> JetChunk:
    """Balanced toy jets with every field the b-taggers and the baseline read.

    b jets (label 1) have tracks from a vertex displaced 1-5 mm along the jet, so large
    impact parameters; light jets (label 0) have prompt tracks (|d0| ~ 20 µm). Some
    constituents are neutral (no track).
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num_jets) % 2)
    counts = rng.integers(3, 12, num_jets)
    total = int(counts.sum())
    jet_of = np.repeat(np.arange(num_jets), counts)
    phi_jet = rng.uniform(-np.pi, np.pi, num_jets)[jet_of]
    eta_jet = rng.uniform(-2.0, 2.0, num_jets)[jet_of]
    pt = rng.exponential(8.0, total) + 1.0
    eta = eta_jet + rng.normal(0, 0.1, total)
    phi = phi_jet + rng.normal(0, 0.1, total)
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    energy = np.sqrt(px**2 + py**2 + pz**2 + 0.14**2)
    track = (rng.random(total) < 0.7).astype(np.int32)
    charge = track * rng.choice([-1.0, 1.0], total)
    displaced = labels[jet_of] == 1
    flight = np.where(displaced, rng.uniform(1.0, 5.0, total), 0.0)
    d0 = np.where(displaced, flight * rng.normal(0, 0.05, total), rng.normal(0, 0.02, total))
    z0 = rng.normal(0, 0.05, total)
    pca = np.stack([-d0 * np.sin(phi), d0 * np.cos(phi), z0], 1) * track[:, None]
    fields: dict[str, np.ndarray] = {
        "part_charge": charge,
        "part_isElectron": np.zeros(total, np.int32),
        "part_isMuon": (track * (rng.random(total) < 0.05)).astype(np.int32),
        "part_istrack": track,
        "part_d0val": d0 * track,
        "part_d0err": np.where(track == 1, 0.015, 0.0),
        "part_dzval": z0 * track,
        "part_pca_x": pca[:, 0],
        "part_pca_y": pca[:, 1],
        "part_pca_z": pca[:, 2],
    }
    for name, value in (("xx", 2e-4), ("xy", 0.0), ("xz", 0.0), ("yy", 2e-4), ("yz", 0.0),
                        ("zz", 4e-3)):
        fields[f"part_cov_{name}"] = np.full(total, value) * track
    p4 = np.stack([energy, px, py, pz], 1)
    return JetChunk(p4, counts, labels.astype(np.int64), fields, {})


def write_toy_btag(root: Path, sizes: dict[str, int]) -> dict[str, Path]:
    """``root/{split}.root`` in the generator's layout (one-hot label_light, label_b)."""
    root.mkdir(parents=True, exist_ok=True)
    return {split: write_jetclass_root(root / f"{split}.root", toy_btag_jets(n, 20 + k),
                                       label_branches=_BTAG_LABELS)
            for k, (split, n) in enumerate(sizes.items())}


def test_reader_defaults_to_the_btag_labels(tmp_path: Path) -> None:
    chunk = toy_btag_jets(30, 1)
    path = write_jetclass_root(tmp_path / "b.root", chunk, label_branches=_BTAG_LABELS)
    read = open_dataset(path).read_chunk()
    np.testing.assert_array_equal(read.label, chunk.label)
    assert set(BTAG_X_FIELDS) <= set(read.particle_fields)
    # asking for the JetClass labels explicitly still names what is missing
    with pytest.raises(KeyError, match="label_QCD"):
        JetClassReader(path, label_branches=("label_QCD", "label_Hbb")).read_chunk()


def test_track_counting_is_the_second_largest_significance() -> None:
    p4 = np.tile([[10.0, 6.0, 0.0, 8.0]], (6, 1))
    fields = {"part_istrack": np.array([1, 1, 1, 1, 0, 1]),
              "part_d0val": np.array([0.1, -0.5, 0.2, 3.0, 9.0, 0.4]),
              "part_d0err": np.array([0.1, 0.1, 0.1, 1.0, 1.0, 0.2])}
    chunk = JetChunk(p4, np.array([3, 1, 2]), np.array([1, 0, 0]), fields)
    # jet 0: significances 1, 5, 2 -> 2; jet 1: one track; jet 2: one track (one neutral)
    np.testing.assert_allclose(track_counting(chunk), [2.0, 0.0, 0.0])
    np.testing.assert_allclose(track_counting(chunk, rank=1), [5.0, 3.0, 2.0])
    with pytest.raises(ValueError, match="part_d0err"):
        track_counting(JetChunk(p4, np.array([6]), None, {"part_istrack": fields["part_istrack"]}))
    assert BASELINES["btag"].score is track_counting


#: The options in which the shipped b-tagging configurations differ from the paper's
#: defaults (``default_config``), as their YAML comments say: narrower layers.
_REDUCED = {"vector-pfn": {"hidden_channels": 64, "latent_channels": 64,
                           "head_channels": [64, 64]},
            "tensor-pfn": {"hidden_channels": 32, "latent_channels": 32,
                           "head_channels": [64, 64]}}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


@pytest.mark.parametrize("name", ["track-pfn", "vector-pfn", "tensor-pfn"])
def test_btag_configs_build_and_tag_toy_jets(name: str) -> None:
    import torch

    from jettag.configs import load_config
    from jettag.models.btag import default_config

    run = load_config(name, "btag")
    assert run.task == "btag" and run.data["x_fields"] == list(BTAG_X_FIELDS)
    model = run.build_model().eval()
    for key, value in default_config("btag", name).items():
        expected = _REDUCED.get(name, {}).get(key, value)
        assert _plain(run.model.get(key, value)) == _plain(expected), (name, key)
    jets = toy_btag_jets(8, 3).to_batch(x_fields=list(BTAG_X_FIELDS), dtype=torch.float32)
    with torch.no_grad():
        logits = model(jets)
    assert logits.shape == (8, 2) and torch.isfinite(logits).all()
    assert run.train_config().task == "btag"


def _summary(values: dict[str, list[float]]) -> dict[str, Any]:
    out = {}
    for key, v in values.items():
        a = np.asarray(v, dtype=np.float64)
        out[key] = {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else None,
                    "values": a.tolist()}
    return out


def _btag_results(r70: dict[str, list[float]], r85: dict[str, list[float]]) -> dict[str, Any]:
    names = {"track-pfn": "PFN (tracks)", "vector-pfn": "Vector PFN", "tensor-pfn": "Tensor PFN"}
    return {"models": {
        m: {"display_name": names[m],
            "summary": _summary({"rejection@0.7": r70[m], "rejection@0.85": r85[m]})}
        for m in r70}}


def test_btag_criteria_need_a_margin_over_the_spread() -> None:
    r70 = {"track-pfn": [50.0, 52.0, 54.0], "vector-pfn": [53.0, 55.0, 57.0],
           "tensor-pfn": [80.0, 82.0, 84.0]}
    r85 = {"track-pfn": [10.0, 10.5, 11.0], "vector-pfn": [9.0, 9.5, 10.0],
           "tensor-pfn": [14.0, 14.5, 15.0]}
    criteria = btag_criteria(_btag_results(r70, r85))
    names = [c["criterion"] for c in criteria]
    assert names[0].startswith("Vector PFN light rejection at b-efficiency 0.7 > PFN (tracks)")
    assert names[3].startswith("Tensor PFN light rejection at b-efficiency 0.85 >")
    # Vector PFN at 0.7: +3 over the baseline, combined standard error 2*sqrt(2/3) = 1.6 -> pass
    assert [c["passed"] for c in criteria] == [True, False, True, True]
    assert math.isclose(criteria[0]["value"], 55.0)
    # means closer than the spread do not pass
    r70["vector-pfn"] = [51.0, 53.0, 55.0]
    assert not btag_criteria(_btag_results(r70, r85))[0]["passed"]
    # without the baseline tagger the check fails and says why
    del r70["track-pfn"], r85["track-pfn"]
    (only,) = btag_criteria(_btag_results(r70, r85))
    assert not only["passed"] and "track-pfn" in only["criterion"]


def test_btag_benchmark_end_to_end(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "cli"))
    from _bench_helpers import run_cli

    data = tmp_path / "data"
    write_toy_btag(data, {"train": 200, "val": 100, "test": 200})
    out = tmp_path / "bench"
    code = run_cli("benchmark", "btag", "--tiny", "--data-dir", data, "--out", out,
                   "--bootstrap", "0", "--threads", "1", "--jobs", "1", "--quiet", "--check")
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "btag" and results["title"] == "b-tagging benchmark"
    assert list(results["models"]) == ["track-pfn", "vector-pfn", "tensor-pfn"]
    for entry in results["models"].values():
        summary = entry["summary"]
        assert {"auc", "rejection@0.7", "rejection@0.85"} <= set(summary)
        assert 0.0 <= summary["auc"]["mean"] <= 1.0
        (run,) = entry["runs"]
        assert Path(run["out_dir"], "best.pt").is_file()
    # the toy b jets have displaced tracks: track counting separates them
    assert results["baseline"]["metrics"]["auc"] > 0.9
    rows = {r["name"]: r for r in results["cost"]["rows"]}
    assert set(rows) == {"PFN (tracks)", "Vector PFN", "Tensor PFN",
                         "Tensor PFN, e3nn product", "TensorBilinear block", "E3NNTensorBlock"}
    assert rows["Tensor PFN, e3nn product"]["trained"] is False
    assert rows["TensorBilinear block"]["parameters"] == 0
    assert rows["E3NNTensorBlock"]["parameters"] > rows["Tensor PFN"]["parameters"]
    assert all(r["us_per_jet"] > 0 for r in rows.values())
    report = (out / "results.md").read_text()
    assert "1/εB (εS = 0.85)" in report and "## Cost per jet" in report
    assert "| Tensor PFN, e3nn product" in report and "PUBLISHED" not in report
    criteria = [c["criterion"] for c in results["check"]["criteria"]]
    assert sum("light rejection at b-efficiency" in c for c in criteria) == 4
    assert code == (0 if results["check"]["passed"] else 1)


def test_b_tagging_script_is_a_thin_wrapper(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    import runpy
    import sys

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "b_tagging.py"
    monkeypatch.setattr(sys, "argv", [str(path), "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(path), run_name="__main__")
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "jettag benchmark btag" in text
    assert "btag default    20000/4000/20000; 3 epoch(s); 3 seed(s)" in text
