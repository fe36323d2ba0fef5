"""ROC plots as the field draws them: signal efficiency vs background rejection (log scale)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jettag._optional import require
from jettag.metrics.roc import RocCurve, roc_auc, roc_curve

__all__ = ["plot_roc"]


def plot_roc(
    curves: Mapping[str, RocCurve | tuple[Any, Any]],
    path: str | Path,
    *,
    title: str | None = None,
    xlim: tuple[float, float] = (0.0, 1.0),
    ylim: tuple[float, float] | None = None,
    random_guess: bool = True,
) -> Path:
    """Plot ROC curves, x = signal efficiency, y = background rejection 1/eps_B (log scale).

    Needs matplotlib (the ``plot`` extra). The format follows the suffix of ``path``
    (``.png``, ``.pdf``, ``.svg``, ...). Points with eps_B = 0 (infinite rejection) are not
    drawn.

    Args:
        curves: legend label -> a :class:`RocCurve`, or ``(labels, scores)`` of a binary
            tagger (then the AUC is added to the legend).
        path: output file; parent directories are created.
        title: optional axes title.
        xlim: signal-efficiency range.
        ylim: rejection range (default: automatic).
        random_guess: also draw the rejection of a random tagger, 1/eps_S.

    Returns:
        The path written.

    Example:
        >>> plot_roc({"PFN": (labels, p_top)}, "roc.pdf")  # doctest: +SKIP
    """
    require("matplotlib", "plot", feature="jettag.metrics.plot_roc")
    from matplotlib.figure import Figure

    path = Path(path)
    if not curves:
        raise ValueError("plot_roc: curves is empty; pass {label: RocCurve or (labels, scores)}")
    fig = Figure(figsize=(5.0, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for label, curve in curves.items():
        legend = str(label)
        if not isinstance(curve, RocCurve):
            if not isinstance(curve, tuple) or len(curve) != 2:
                raise ValueError(
                    f"plot_roc: curve {label!r} must be a RocCurve or a (labels, scores) pair, "
                    f"found {type(curve).__name__}"
                )
            legend = f"{label} (AUC = {roc_auc(*curve):.4f})"
            curve = roc_curve(*curve)
        finite = curve.fpr > 0
        ax.plot(curve.tpr[finite], curve.rejection[finite], label=legend)
    if random_guess:
        eff = np.linspace(max(xlim[0], 1e-3), xlim[1], 200)
        ax.plot(eff, 1.0 / eff, color="0.6", linestyle=":", label="random")
    ax.set_yscale("log")
    ax.set_xlim(*xlim)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(r"Signal efficiency $\varepsilon_S$")
    ax.set_ylabel(r"Background rejection $1/\varepsilon_B$")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(frameon=False)
    if title:
        ax.set_title(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    return path
