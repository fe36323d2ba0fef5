"""`jettag demo`, the README's main job until the benchmark lands, runs end to end."""

from __future__ import annotations

import json

import pytest

from jettag.cli import main

pytest.importorskip("pythia8mc")
pytest.importorskip("fastjet")


@pytest.mark.generate
def test_demo_writes_summary_and_plot(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--jets", "30", "--workers", "1", "--out", str(out),
                 "--data-dir", str(tmp_path / "cache")])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["jets"] == {"top": 30, "qcd": 30}
    # physics of the recipe: top jets near the top mass, QCD jets much lighter
    assert 140 < summary["median_mass_gev"]["top"] < 190
    assert summary["median_mass_gev"]["qcd"] < 120
    assert 0.5 < summary["mass_baseline_auc"] <= 1.0
    assert (out / "summary.md").exists()
    assert "Lorentz invariance holds" in capsys.readouterr().out


def test_demo_rejects_bad_jets(capsys):
    assert main(["demo", "--jets", "0"]) == 2
    assert "--jets" in capsys.readouterr().err
