"""ROC plots: files written, axes as the field draws them."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from jettag import MissingExtraError
from jettag.metrics import plot_roc, roc_curve


@pytest.fixture(autouse=True)
def _needs_matplotlib(request: pytest.FixtureRequest) -> None:
    if "without_matplotlib" not in request.node.name:
        pytest.importorskip("matplotlib")


def _tagger(seed: int, separation: float):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 5000)
    return labels, labels * separation + rng.normal(size=5000)


@pytest.mark.parametrize("suffix", [".png", ".pdf"])
def test_plot_roc_writes_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / "plots" / f"roc{suffix}"
    out = plot_roc(
        {"strong": _tagger(0, 3.0), "weak": roc_curve(*_tagger(1, 1.0))},
        path,
        title="toy",
    )
    assert out == path
    data = path.read_bytes()
    signature = b"\x89PNG" if suffix == ".png" else b"%PDF"
    assert data.startswith(signature) and len(data) > 5000


def test_plot_roc_axes(tmp_path: Path, monkeypatch) -> None:
    from matplotlib.figure import Figure

    captured = {}
    real_savefig = Figure.savefig

    def savefig(self, *args, **kwargs):
        captured["axes"] = self.axes[0]
        return real_savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    labels, scores = _tagger(2, 2.0)
    plot_roc({"tagger": (labels, scores)}, tmp_path / "roc.png")
    ax = captured["axes"]
    assert ax.get_yscale() == "log"
    assert "Signal efficiency" in ax.get_xlabel() and "rejection" in ax.get_ylabel()
    line = ax.get_lines()[0]
    assert line.get_label().startswith("tagger (AUC = 0.9")
    curve = roc_curve(labels, scores)
    finite = curve.fpr > 0
    np.testing.assert_allclose(line.get_xdata(), curve.tpr[finite])
    np.testing.assert_allclose(line.get_ydata(), 1.0 / curve.fpr[finite])


def test_plot_roc_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="curves is empty"):
        plot_roc({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="must be a RocCurve or a \\(labels, scores\\) pair"):
        plot_roc({"bad": [1, 2, 3]}, tmp_path / "x.png")


def test_plot_roc_without_matplotlib_names_the_extra(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'jettag\[plot\]'"):
        plot_roc({"x": _tagger(0, 1.0)}, tmp_path / "roc.png")
