"""``jettag benchmark`` end to end with tiny budgets: on a dataset directory of toy files,
and on "generated" data with the generator replaced by toy files (the seed split is what
is checked)."""

from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _bench_helpers import run_cli, toy_top_jets, write_toy_dataset

from jettag.data.formats import write_top_hdf5

REPO = Path(__file__).resolve().parents[2]
# one process (test_parallel_runs_give_the_same_results checks --jobs 2 against it)
TINY = ("--tiny", "--jobs", "1", "--bootstrap", "10", "--quiet", "--set",
        "model.phi_channels=[16,16]", "model.f_channels=[16]")


def _strict_json(path: Path) -> Any:
    def refuse(name: str) -> None:
        raise AssertionError(f"{path}: non-standard JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    root = tmp_path_factory.mktemp("bench")
    write_toy_dataset(root / "data", {"train": 400, "val": 200, "test": 400})
    out = root / "out"
    code = run_cli("benchmark", "top", *TINY, "--data-dir", root / "data", "--out", out,
                   "--check")
    return out, code


def test_tiny_benchmark_writes_report(tiny_run: tuple[Path, int]) -> None:
    out, _ = tiny_run
    for name in ("results.md", "results.json", "roc.png", "roc.pdf"):
        assert (out / name).is_file(), name
    assert (out / "roc.png").read_bytes()[:4] == b"\x89PNG"
    results = _strict_json(out / "results.json")
    assert results["benchmark"] == "top" and results["preset"] == "tiny"
    assert results["data"]["source"] == "directory"
    assert results["data"]["jets"] == {"train": 400, "val": 200, "test": 400}
    assert list(results["models"]) == ["pfn", "efn"]
    for entry in results["models"].values():
        run = entry["runs"][0]
        assert run["epochs"] == 1 and run["seed"] == 0
        assert Path(run["out_dir"], "best.pt").is_file()
        assert Path(run["out_dir"], "test_scores.npz").is_file()
        assert entry["summary"]["auc"]["mean"] == run["metrics"]["auc"]
        assert entry["summary"]["auc"]["bootstrap_std"] > 0
        assert run["inference_jets_per_s"] > 0 and run["train_time_s"] > 0
        assert entry["parameters"] == run["parameters"] > 0
    # the toy signal jets sit near the top mass: the mass window separates them well
    baseline = results["baseline"]
    assert baseline["name"] == "mass-window" and baseline["metrics"]["auc"] > 0.8
    assert results["environment"]["cpu_count"] >= 1
    assert "benchmark" in results["command"] and "--tiny" in results["command"]


def test_tiny_benchmark_markdown_sections(tiny_run: tuple[Path, int]) -> None:
    out, _ = tiny_run
    text = (out / "results.md").read_text()
    ours, published = text.split("## PUBLISHED results on the REFERENCE dataset (not ours)")
    assert "jet-mass window (baseline)" in ours and "| PFN |" in ours and "| EFN |" in ours
    assert "Command: `" in ours
    # the published numbers stand apart, each with its source, and never in our table
    assert "Not results of this benchmark" in published
    assert "| ParticleNet | 0.940 | 0.9858 | 397 ± 7 | 1615 ± 93 | L-GATr paper" in published
    assert "0.9858" not in ours


def test_tiny_benchmark_check_fails_and_says_why(tiny_run: tuple[Path, int]) -> None:
    out, code = tiny_run
    assert code == 1  # 400 training jets cannot pass the acceptance criteria
    results = _strict_json(out / "results.json")
    criteria = {c["criterion"]: c for c in results["check"]["criteria"]}
    assert not criteria["at least 20000 training jets"]["passed"]
    assert criteria["ParticleNet-Lite AUC >= 0.95"]["value"] is None  # not selected
    assert "**FAILED**" in (out / "results.md").read_text()


def test_generated_splits_use_a_seed_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    import jettag.data.generate as generate_module

    calls: list[dict[str, Any]] = []

    def fake_generate(recipe: str, n_jets: int, *, seed: int, **kwargs: Any) -> Path:
        calls.append({"recipe": recipe, "n_jets": n_jets, "seed": seed})
        return write_top_hdf5(tmp_path / f"gen-{seed}.h5", toy_top_jets(2 * n_jets, seed))

    monkeypatch.setattr(generate_module, "generate", fake_generate)
    out = tmp_path / "out"
    run_cli("benchmark", "top", *TINY, "--models", "efn", "--data-seed", "5",
            "--train-jets", "301", "--out", out)
    # jets per class = ceil(n / 2); seeds 3 * 5 + (0, 1, 2): disjoint samples
    assert calls == [
        {"recipe": "top-tagging", "n_jets": 151, "seed": 15},
        {"recipe": "top-tagging", "n_jets": 100, "seed": 16},
        {"recipe": "top-tagging", "n_jets": 200, "seed": 17},
    ]
    results = _strict_json(out / "results.json")
    assert results["data"]["seeds"] == {"train": 15, "val": 16, "test": 17}
    assert results["data"]["jets"] == {"train": 301, "val": 200, "test": 400}  # as asked
    assert "generated with the `top-tagging` recipe" in (out / "results.md").read_text()
    # the printed table is the Markdown one
    assert "| EFN |" in capsys.readouterr().out


def test_two_seeds_report_spread_over_seeds(tmp_path: Path) -> None:
    write_toy_dataset(tmp_path / "data", {"train": 200, "val": 100, "test": 200})
    out = tmp_path / "out"
    run_cli("benchmark", "top", *TINY, "--models", "efn", "--seeds", "2",
            "--data-dir", tmp_path / "data", "--out", out)
    results = _strict_json(out / "results.json")
    entry = results["models"]["efn"]
    aucs = entry["summary"]["auc"]["values"]
    assert len(entry["runs"]) == 2 and [r["seed"] for r in entry["runs"]] == [0, 1]
    assert entry["summary"]["auc"]["mean"] == pytest.approx(float(np.mean(aucs)))
    assert entry["summary"]["auc"]["std"] == pytest.approx(float(np.std(aucs, ddof=1)))
    assert math.isfinite(entry["summary"]["auc"]["std"])
    assert "over 2 training seeds" in (out / "results.md").read_text()


def test_parallel_runs_give_the_same_results(tmp_path: Path) -> None:
    # Every run is seeded: two processes side by side train the same taggers as one loop.
    write_toy_dataset(tmp_path / "data", {"train": 200, "val": 100, "test": 200})
    aucs = {}
    for jobs in ("1", "2"):
        out = tmp_path / f"out{jobs}"
        run_cli("benchmark", "top", *TINY, "--models", "pfn,efn", "--jobs", jobs,
                "--threads", "1", "--data-dir", tmp_path / "data", "--out", out)
        results = _strict_json(out / "results.json")
        assert results["environment"]["parallel_runs"] == int(jobs)
        aucs[jobs] = {name: entry["summary"]["auc"]["values"]
                      for name, entry in results["models"].items()}
    assert list(aucs["2"]) == ["pfn", "efn"]          # table order is the --models order
    assert aucs["1"] == aucs["2"]


def test_quark_gluon_uses_the_multiplicity_baseline(tmp_path: Path) -> None:
    write_toy_dataset(tmp_path / "data", {"train": 200, "val": 100, "test": 200}, task="qg")
    out = tmp_path / "out"
    run_cli("benchmark", "qg", *TINY, "--models", "pfn", "--data-dir", tmp_path / "data",
            "--out", out)
    results = _strict_json(out / "results.json")
    assert results["baseline"]["name"] == "multiplicity"
    assert results["models"]["pfn"]["config"]["data"]["x_fields"] == ["part_pid"]
    text = (out / "results.md").read_text()
    assert "constituent multiplicity (baseline)" in text
    assert "LorentzNet (released checkpoint) | 0.84424 | 0.91613" in text


def test_bad_model_names_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--models: \['nonet'\].*particlenet-lite"):
        run_cli("benchmark", "top", "--tiny", "--models", "pfn,nonet", "--out", tmp_path)


def test_missing_split_is_a_clear_error(tmp_path: Path) -> None:
    write_toy_dataset(tmp_path / "data", {"train": 50, "val": 50})
    with pytest.raises(FileNotFoundError, match="no test split"):
        run_cli("benchmark", "top", *TINY, "--data-dir", tmp_path / "data", "--out", tmp_path)


@pytest.mark.parametrize(("script", "task"), [("top_tagging.py", "top"),
                                             ("quark_gluon.py", "qg")])
def test_benchmark_scripts_are_thin_wrappers(script: str, task: str,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = REPO / "benchmarks" / script
    monkeypatch.setattr(sys, "argv", [str(path), "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(path), run_name="__main__")
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert f"jettag benchmark {task}" in text
    assert "--train-jets" in text and "acceptance" in text
