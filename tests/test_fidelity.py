"""The weaver-core training-fidelity benchmark (jettag.bench.fidelity)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from jettag.bench import Budget
from jettag.models import create
from jettag.testing import random_jets

pytest.importorskip("weaver.nn.model.ParticleNet")

from jettag.bench.fidelity import WeaverParticleNet, format_fidelity, run_fidelity


def _lite():
    torch.manual_seed(0)
    return create("particlenet-lite", inputs="top-tagging:kin", num_classes=2)


def test_weaver_wrapper_starts_from_the_same_weights():
    model = _lite().eval()
    wrapped = WeaverParticleNet(model).eval()
    # more than k + 1 = 8 particles per jet: weaver's neighbours are then all real particles
    jets = random_jets(5, 40, generator=1, min_particles=9, layout="batch", dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(jets), model(jets), rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in wrapped.parameters()) == sum(
        p.numel() for p in model.parameters())


def test_weaver_wrapper_needs_inputs():
    model = create("particlenet-lite", input_dims=7, num_classes=2)
    with pytest.raises(ValueError, match="must have inputs"):
        WeaverParticleNet(model)


@pytest.mark.slow
def test_tiny_fidelity_run_writes_its_report(tmp_path: Path):
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "cli"))
    from _bench_helpers import write_toy_dataset

    write_toy_dataset(tmp_path / "data", {"train": 200, "val": 100, "test": 200})
    results = run_fidelity("top", budget=Budget(200, 100, 200, epochs=1), out=tmp_path / "out",
                           data_dir=tmp_path / "data", bootstrap=0, progress=False)
    saved = json.loads((tmp_path / "out" / "fidelity.json").read_text())
    assert [r["implementation"] for r in saved["runs"]] == ["jettag", "weaver-core"]
    assert saved["auc_difference"] == pytest.approx(
        saved["mean_auc"]["jettag"] - saved["mean_auc"]["weaver-core"])
    assert saved["passed"] == (abs(saved["auc_difference"]) <= 0.005)
    assert "weaver-core AUC" in format_fidelity(results)
