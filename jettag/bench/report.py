"""Benchmark reports: ``results.md``, ``results.json`` and the overlaid ROC curves.

The Markdown report has our results first (the baseline and every tagger on the same test
jets) and, in a separate section headed as such, the PUBLISHED results on the REFERENCE
datasets with their sources (:mod:`jettag.bench.published`), which are never ours.

JSON is strict: infinite or undefined values (an infinite rejection when no background jet
passes the cut, a standard deviation of one value) are written as the strings ``"inf"`` and
``"nan"``, or ``null`` where there is no value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from jettag.bench.published import DATASETS, PUBLISHED

__all__ = ["format_table", "json_ready", "write_report"]

_COLUMNS = ("Tagger", "Params", "Accuracy", "AUC", "1/εB (εS = 0.5)", "1/εB (εS = 0.3)",
            "Train time [s]", "Inference [jets/s]")


def json_ready(value: Any) -> Any:
    """``value`` with NumPy scalars and arrays made plain and non-finite floats as strings."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.generic):
        return json_ready(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Path):
        return str(value)
    return value


def _number(value: float | None, key: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if math.isinf(value):
        return "∞"
    if key.startswith("rejection"):
        digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
        return f"{value:.{digits}f}"
    return f"{value:.4f}"


def _cell(entry: Mapping[str, Any], key: str, seeds: int) -> str:
    mean = entry["mean"]
    spread = entry.get("std") if seeds > 1 else entry.get("bootstrap_std")
    text = _number(mean, key)
    if spread is not None and math.isfinite(mean) and math.isfinite(spread):
        text += f" ± {_number(spread, key)}"
    return text


def _table_metrics(task: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Metric keys and column names of a task's table (rejections at its efficiencies)."""
    from jettag.metrics import TASKS, rejection_key

    efficiencies = TASKS[task].signal_efficiencies if task in TASKS else (0.5, 0.3)
    if tuple(efficiencies) == (0.5, 0.3):
        return ("accuracy", "auc", "rejection@0.5", "rejection@0.3"), _COLUMNS
    keys = ("accuracy", "auc", *(rejection_key(e) for e in efficiencies))
    columns = (*_COLUMNS[:4], *(f"1/εB (εS = {e:g})" for e in efficiencies), *_COLUMNS[-2:])
    return keys, columns


def format_table(results: Mapping[str, Any]) -> str:
    """The Markdown results table: the baseline row, then one row per tagger."""
    seeds = int(results["budget"]["seeds"])
    metrics, columns = _table_metrics(results["task"])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    base = results["baseline"]["metrics"]
    cells = [results["baseline"]["label"], "0"]
    for key in metrics:
        cells.append(_cell({"mean": base[key], "bootstrap_std": base.get(f"{key}_std")}, key, 1))
    cells += ["—", "—"]
    lines.append("| " + " | ".join(cells) + " |")
    for entry in results["models"].values():
        summary = entry["summary"]
        cells = [entry["display_name"], f"{entry['parameters']:,}"]
        cells += [_cell(summary[k], k, seeds) for k in metrics]
        train = summary["train_time_s"]
        speed = summary["inference_jets_per_s"]
        cells.append("—" if train["mean"] is None else f"{train['mean']:.0f}")
        cells.append("—" if speed["mean"] is None else f"{speed['mean']:,.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _published_section(task: str) -> str:
    rows = PUBLISHED.get(task, ())
    head = [
        "## PUBLISHED results on the REFERENCE dataset (not ours)",
        "",
        f"> **Not results of this benchmark.** Published numbers on the {DATASETS[task]}, "
        "copied from the sources named in each row, for orientation only. They are not "
        "comparable with the table above: the reference jets differ from ours (detector "
        "simulation, sample size, training budget). Only numbers read in the paper or in "
        "the authors' own files are listed (see `jettag/bench/published.py`).",
        "",
        "| Model (published) | Accuracy | AUC | 1/εB (εS = 0.5) | 1/εB (εS = 0.3) | Source |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r.model, r.accuracy, r.auc, r.rejection_50, r.rejection_30, r.source]
        head.append("| " + " | ".join(c if c is not None else "—" for c in cells) + " |")
    return "\n".join(head)


def _markdown(results: Mapping[str, Any], plots: list[str]) -> str:
    data = results["data"]
    budget = results["budget"]
    env = results["environment"]
    seeds = int(budget["seeds"])
    if data["source"] == "generated":
        origin = (f"generated with the `{data['recipe']}` recipe (Pythia 8 + FastJet, "
                  f"particle level; data card `{data['data_card']}`), generator seeds "
                  + ", ".join(f"{s} = {v}" for s, v in data["seeds"].items())
                  + " (a seed per split: the splits never share a jet)")
    else:
        origin = f"read from `{data['directory']}`"
    jets = ", ".join(f"{s} {n:,} ({data['signal_jets'][s]:,} signal)"
                     for s, n in data["jets"].items())
    spread = (f"mean ± standard deviation over {seeds} training seeds" if seeds > 1 else
              f"one training seed; ± is the bootstrap standard deviation of the test set "
              f"({results['bootstrap']} replicates)")
    kind = "generated jets" if data["source"] == "generated" else "dataset"
    lines = [
        f"# {results['title']} ({kind})",
        "",
        f"Command: `{results['command']}`",
        "",
        f"- Data: {origin}.",
        f"- Jets: {jets}.",
        f"- Budget: {budget['epochs']} epoch(s) per run, {seeds} seed(s) per tagger"
        + (f" (preset `{results['preset']}`)" if results.get("preset") else "")
        + (f"; overrides `{' '.join(results['overrides'])}`" if results["overrides"] else "")
        + ".",
        f"- Machine: {env['platform']}, {env['cpu_count']} CPU(s), {env['torch_threads']} torch "
        f"thread(s), load average {env['load_average_start'][0]} at the start and "
        f"{env['load_average_end'][0]} at the end; jettag {env['jettag']}, torch {env['torch']}.",
        f"- Wall time: {results['wall_time_s']:.0f} s in total, of which "
        f"{data['preparation_time_s']:.0f} s preparing the data.",
        "",
        "## Results on these jets",
        "",
        format_table(results),
        "",
        f"Uncertainties: {spread}. Rejections 1/εB at the nearest ROC point (the published "
        "convention). Baseline: "
        f"{results['baseline']['description']}; its accuracy uses the cut that is best on the "
        "validation jets. Train time: wall time of training and validation epochs; inference: "
        "test jets per second, one process, after training; both depend on the machine's load.",
    ]
    check = results.get("check")
    if check is not None:
        lines += ["", "## Acceptance check", "",
                  f"**{'PASSED' if check['passed'] else 'FAILED'}**", ""]
        for c in check["criteria"]:
            value = c["value"]
            shown = "not run" if value is None else (
                f"{value:.4f}" if isinstance(value, float) else str(value))
            lines.append(f"- [{'x' if c['passed'] else ' '}] {c['criterion']}: {shown}")
    if results.get("cost"):
        from jettag.bench.btag import format_cost_table

        lines += ["", "## Cost per jet", "", format_cost_table(results["cost"])]
    if plots:
        lines += ["", "ROC curves (test jets, first seed): " + ", ".join(
            f"[{p}]({p})" for p in plots) + "."]
    if results["task"] in DATASETS:
        lines += ["", _published_section(results["task"])]
    lines.append("")
    return "\n".join(lines)


def _largest_rejection(labels: np.ndarray, scores: np.ndarray) -> float:
    from jettag.metrics import roc_curve

    rejection = roc_curve(labels, scores).rejection
    finite = rejection[np.isfinite(rejection)]
    return float(finite.max()) if finite.size else 10.0


def write_report(
    results: dict[str, Any],
    out: str | Path,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
) -> dict[str, Path]:
    """Write ``results.json``, ``results.md``, ``roc.png`` and ``roc.pdf`` to ``out``.

    ``curves`` maps legend labels to ``(labels, scores)`` of the test jets. Without
    matplotlib (the ``plot`` extra) the plots are skipped and the report says so.

    Returns:
        The files written, by kind.
    """
    from jettag.metrics import plot_roc

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    title = f"{results['title']}: {results['data']['jets']['test']:,} test jets"
    # headroom above the curves for the legend
    top = max((_largest_rejection(y, s) for y, s in curves.values()), default=10.0)
    try:
        for suffix in ("png", "pdf"):
            written[f"roc_{suffix}"] = plot_roc(dict(curves), out / f"roc.{suffix}", title=title,
                                                ylim=(1.0, 30.0 * top))
        results["roc_plot"] = ["roc.png", "roc.pdf"]
    except ImportError as err:
        results["roc_plot"] = f"not drawn: {err}"
    plots = results["roc_plot"] if isinstance(results["roc_plot"], list) else []
    results["published"] = None if results["task"] not in DATASETS else {
        "note": "PUBLISHED results on the REFERENCE dataset, not results of this benchmark",
        "dataset": DATASETS[results["task"]],
        "rows": [asdict(r) for r in PUBLISHED.get(results["task"], ())],
    }
    written["json"] = out / "results.json"
    written["json"].write_text(json.dumps(json_ready(results), indent=2) + "\n",
                               encoding="utf-8")
    written["markdown"] = out / "results.md"
    written["markdown"].write_text(_markdown(results, plots), encoding="utf-8")
    return written
