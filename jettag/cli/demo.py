"""``jettag demo``: an end-to-end run on generated top-tagging jets, no download needed.

Generates top and QCD jets with the Pythia 8 + FastJet ``top-tagging`` recipe (cached),
reads the file back through the top-tagging HDF5 reader into ``JetBatch``es, checks with
``jettag.testing`` that the jet mass is Lorentz invariant, and scores the jet-mass baseline
(distance of the jet mass from the top mass). Writes ``summary.json``, ``summary.md`` and a
jet-mass histogram to the output directory.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from jettag._optional import require

TOP_MASS = 172.5  # GeV


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="end-to-end demo on generated top-tagging jets (no download needed)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--jets", type=int, default=1000, help="jets per class (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument("--workers", type=int, default=2, help="generator processes (default 2)")
    p.add_argument("--out", type=Path, default=Path("results/demo"),
                   help="output directory (default results/demo)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="cache for generated files (default $JETTAG_DATA or ~/.cache/jettag)")
    p.set_defaults(func=run)


def _jet_masses(path: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]:
    from jettag import physics
    from jettag.data.formats import open_dataset

    reader = open_dataset(path)
    masses, labels, counts, first = [], [], [], None
    for batch in reader.iter_batches(4096):
        batch = batch.to(dtype=torch.float64)
        first = batch if first is None else first
        jet = physics.jet_p4(batch.p4, batch=batch.batch, num_jets=len(batch))
        masses.append(physics.mass(jet))
        labels.append(batch.label)
        counts.append(batch.counts)
    return torch.cat(masses), torch.cat(labels), torch.cat(counts), first


def _plot(masses: torch.Tensor, labels: torch.Tensor, path: Path) -> bool:
    try:
        plt = require("matplotlib.pyplot", "plot", feature="The demo's plot")
    except ImportError as err:
        print(f"(no plot: {err})", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(5, 3.6))
    bins = torch.linspace(0, 300, 61).numpy()
    for value, name in ((1, "top"), (0, "QCD")):
        ax.hist(masses[labels == value].numpy(), bins=bins, histtype="step", density=True,
                label=f"{name} jets", linewidth=1.5)
    ax.axvline(TOP_MASS, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("jet mass [GeV]")
    ax.set_ylabel("normalised")
    ax.set_title("generated top-tagging jets (Pythia 8, anti-kT R=0.8)", fontsize=9)
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def run(args: argparse.Namespace) -> int:
    from sklearn.metrics import roc_auc_score

    from jettag import physics
    from jettag.data.generate import generate
    from jettag.testing import assert_lorentz_invariant

    if args.jets < 1:
        raise ValueError(f"--jets: expected a positive number of jets per class, found {args.jets}")
    start = time.perf_counter()
    print(f"[1/4] generating {args.jets} top + {args.jets} QCD jets (cached after the first run)")
    path = generate("top-tagging", args.jets, seed=args.seed, workers=args.workers,
                    data_dir=args.data_dir)
    print(f"      {path}")

    print("[2/4] reading them back through the top-tagging HDF5 reader into JetBatches")
    masses, labels, counts, first = _jet_masses(path)

    print("[3/4] checking that the jet mass is Lorentz invariant (jettag.testing)")
    sample = first[: min(64, len(first))]
    report = assert_lorentz_invariant(
        lambda b: physics.mass(physics.jet_p4(b.p4, batch=b.batch, num_jets=len(b))), sample,
        max_rapidity=2.0,
    )
    print(f"      {report}")

    print("[4/4] scoring the jet-mass baseline")
    score = -(masses - TOP_MASS).abs()
    auc = float(roc_auc_score(labels.numpy(), score.numpy()))
    top, qcd = labels == 1, labels == 0
    summary = {
        "command": " ".join(["jettag", *sys.argv[1:]]) if sys.argv else "jettag demo",
        "file": str(path),
        "jets": {"top": int(top.sum()), "qcd": int(qcd.sum())},
        "median_mass_gev": {"top": float(masses[top].median()), "qcd": float(masses[qcd].median())},
        "median_constituents": {"top": float(counts[top].double().median()),
                                "qcd": float(counts[qcd].double().median())},
        "mass_baseline_auc": auc,
        "lorentz_check_worst_abs_error": report.error,
        "seconds": round(time.perf_counter() - start, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    plotted = _plot(masses, labels, args.out / "jet_mass.png")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = "\n".join([
        "| | top | QCD |",
        "|---|---|---|",
        f"| jets | {summary['jets']['top']} | {summary['jets']['qcd']} |",
        f"| median jet mass [GeV] | {summary['median_mass_gev']['top']:.1f} | "
        f"{summary['median_mass_gev']['qcd']:.1f} |",
        f"| median constituents | {summary['median_constituents']['top']:.0f} | "
        f"{summary['median_constituents']['qcd']:.0f} |",
    ])
    text = (f"# jettag demo\n\n{table}\n\nJet-mass baseline (|m - {TOP_MASS}|) ROC AUC: "
            f"**{auc:.4f}**\n")
    (args.out / "summary.md").write_text(text)
    print()
    print(table)
    print(f"\njet-mass baseline ROC AUC = {auc:.4f}")
    written = ["summary.json", "summary.md"] + (["jet_mass.png"] if plotted else [])
    print(f"wrote {', '.join(str(args.out / w) for w in written)} "
          f"in {summary['seconds']:.0f} s")
    return 0
