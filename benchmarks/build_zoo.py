"""Build the model zoo (jettag/hub/zoo/) from the training runs made here.

Each entry names the run directory it is built from (``results/<benchmark>/runs/<model>/
seed0-*``, written by ``jettag benchmark``), the exact command that trained it, and its
card's intended use and limitations; :func:`jettag.hub._build.build_entry` computes the
test metrics from the run's held-out test scores (1000 bootstrap replicates), checks that
the rebuilt tagger reproduces those scores, and writes ``<name>.safetensors`` and
``<name>.yaml``.

    python benchmarks/build_zoo.py                 # every entry whose run has finished
    python benchmarks/build_zoo.py --only top-particlenet-lite --out /tmp/zoo

Entries whose run is missing or unfinished are listed and skipped (exit code 1).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Entry:
    name: str
    runs: str  # glob under the repository root; exactly one finished match
    title: str
    summary: str
    command: str | None
    intended_use: list[str]
    limitations: list[str]
    notes: list[str] = field(default_factory=list)


_TOP_USE = [
    "tagging hadronically decaying top quarks against light-quark and gluon jets in "
    "anti-kT R = 0.8 jets with pT 550-650 GeV and |eta| < 2 built from particle-level "
    "constituents, as in the Top Quark Tagging Reference Dataset's recipe",
    "a starting point for studies, fine-tuning, ONNX export and examples of jettag predict",
]
_TOP_LIMITS = [
    "trained on generated jets of the top-tagging recipe only (massless constituents with "
    "pT > 1 GeV, pT 550-650 GeV, no pile-up): outside this phase space the scores are not "
    "validated",
    "small training budgets on a shared CPU (stated in the recipe); a larger budget gives a "
    "higher AUC",
]
_ACCEPTANCE = "jettag benchmark top --preset acceptance --threads 1 --quiet"

ENTRIES: list[Entry] = [
    Entry(
        name="top-particlenet-lite",
        runs="results/benchmark-top-acceptance/runs/particlenet-lite/seed0-*",
        title="ParticleNet-Lite top tagger, generated top-tagging jets",
        summary="ParticleNet-Lite (EdgeConv on kNN graphs in (eta, phi), arXiv:1902.08570) "
        "trained here on 20,000 jets of jettag's top-tagging recipe",
        command=_ACCEPTANCE,
        intended_use=_TOP_USE,
        limitations=_TOP_LIMITS,
    ),
    Entry(
        name="top-rpcn-irc",
        runs="results/benchmark-top-acceptance/runs/rpcn-irc/seed0-*",
        title="IRC-safe rotational particle convolution network (rPCN) top tagger",
        summary="IRC-safe rPCN: energy-weighted, SO(2)-about-the-jet-axis invariant particle "
        "convolutions (infrared and collinear safe by construction), trained here on 20,000 "
        "jets of jettag's top-tagging recipe",
        command=_ACCEPTANCE,
        intended_use=[*_TOP_USE, "analyses that need an infrared- and collinear-safe tagger "
                      "(e.g. comparisons with fixed-order calculations)"],
        limitations=_TOP_LIMITS,
    ),
    Entry(
        name="top-lorentznet",
        runs="results/benchmark-top-lorentznet/runs/lorentznet/seed0-*",
        title="LorentzNet top tagger (reduced), generated top-tagging jets",
        summary="LorentzNet (Lorentz-group-equivariant message passing with beam spurions, "
        "arXiv:2201.08187), reduced to 32 hidden channels and 3 blocks, trained here on "
        "5,000 jets of jettag's top-tagging recipe for 6 epochs",
        command=(
            "jettag benchmark top --models lorentznet --data-dir "
            "results/benchmark-top-lorentznet/data --train-jets 5000 --val-jets 1000 "
            "--test-jets 4000 --epochs 6 --seeds 1 --set model.hidden_channels=32 "
            "model.num_layers=3 train.schedule=one-cycle train.lr=2e-3 --threads 1 "
            "--out results/benchmark-top-lorentznet   # data/{train,val,test}.h5 link to the "
            "acceptance preset's generated files (seeds 0, 1, 2)"
        ),
        intended_use=_TOP_USE,
        limitations=[
            *_TOP_LIMITS,
            "reduced model (32 hidden channels, 3 blocks instead of the published 72 and 6) "
            "and budget, chosen to train in about 40 minutes of one shared CPU core: far "
            "below the published LorentzNet's performance",
        ],
        notes=["budget: 6 epochs of 5,000 jets, planned as about 40 minutes of one CPU "
               "thread; it took 74 minutes of training and validation (4,436 s) on one thread "
               "of a 2-core machine shared with other jobs (load average 7-13), 82 minutes "
               "with the test evaluation (LorentzNet's fully connected message passing costs "
               "about 20 jets/s in training on one free core)"],
    ),
    Entry(
        name="qg-particlenet-lite",
        runs="results/benchmark-qg/runs/particlenet-lite/seed0-*",
        title="ParticleNet-Lite quark/gluon tagger, generated quark-gluon jets",
        summary="ParticleNet-Lite with kinematic and particle-identification inputs, trained "
        "here on 6,000 jets of jettag's quark-gluon recipe (Z + quark vs Z + gluon) for 6 "
        "epochs",
        command="jettag benchmark qg --models particlenet-lite,pfn,efn,rpcn-irc --seeds 3 --jobs 1 "
        "--threads 1 --workers 1 --quiet",
        intended_use=[
            "separating light-quark from gluon jets (anti-kT R = 0.4, pT 500-550 GeV, "
            "|y| < 2) at particle level, as in the EnergyFlow quark/gluon dataset's recipe",
            "reads the PDG id of each constituent (part_pid)",
        ],
        limitations=[
            "trained on generated quark-gluon jets only; quark/gluon labels are those of "
            "the hard process in Pythia, which is model dependent (Herwig differs)",
            "needs exact particle identification (part_pid), unavailable as such in "
            "detector data",
        ],
    ),
    Entry(
        name="btag-track-pfn",
        runs="results/benchmark-btag/runs/track-pfn/seed0-*",
        title="Track PFN b-tagger, generated b-tagging jets",
        summary="Particle flow network on 12 features per charged track (jet and track "
        "kinematics, signed-log impact parameters d0 and z0, charge, a learned type "
        "embedding), the baseline of arXiv:2303.11288 and the best b-tagger of our "
        "benchmark (the SO(2)-equivariant Vector/Tensor PFNs did not beat it there), trained "
        "here on 20,000 jets of jettag's b-tagging recipe for 3 epochs",
        command="jettag benchmark btag --threads 1 --jobs 1 --workers 1 --check",
        intended_use=[
            "b-jet versus light-jet tagging of anti-kT R = 0.4 jets with pT > 30 GeV and "
            "|eta| < 2.5 at particle level, from charged-track impact parameters, perigee "
            "points and their covariance as the b-tagging recipe computes them",
            "reads the per-particle fields part_charge, part_isElectron, part_isMuon, "
            "part_istrack, part_d0val and part_dzval (mm); the other b-tagging fields "
            "(part_pca_*, part_cov_*) are read but not used by this model",
        ],
        limitations=[
            "track parameters come from the recipe's helix propagation in a 2 T field and its "
            "parametrised resolution model, not from a detector's tracking and vertexing",
            "trained on b jets from tt-bar against light jets from inclusive QCD (pT-hat > "
            "60 GeV), no charm class: c jets are not part of the training",
        ],
    ),
]


def _find_run(entry: Entry) -> Path | str:
    matches = sorted(p for p in ROOT.glob(entry.runs) if p.is_dir())
    finished = [p for p in matches if (p / "test_scores.npz").is_file()]
    if not finished:
        state = "unfinished (no test_scores.npz)" if matches else "missing"
        return f"{entry.runs}: {state}"
    if len(finished) > 1:
        return f"{entry.runs}: {len(finished)} finished runs, expected one: {finished}"
    return finished[0]


def main(argv: list[str] | None = None) -> int:
    from jettag.hub._build import build_entry

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="build only this entry (repeatable)")
    parser.add_argument("--out", default=None, help="zoo directory (default: jettag/hub/zoo)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args(argv)
    known = {e.name for e in ENTRIES}
    unknown = sorted(set(args.only) - known)
    if unknown:
        parser.error(f"--only: unknown entries {unknown}; known: {sorted(known)}")
    failed = []
    for entry in ENTRIES:
        if args.only and entry.name not in args.only:
            continue
        run = _find_run(entry)
        if isinstance(run, str):
            print(f"{entry.name}: skipped, {run}", file=sys.stderr)
            failed.append(entry.name)
            continue
        kwargs = {} if args.out is None else {"out_dir": args.out}
        path = build_entry(
            run, name=entry.name, title=entry.title, summary=entry.summary,
            intended_use=entry.intended_use, limitations=entry.limitations,
            command=entry.command, bootstrap=args.bootstrap, notes=entry.notes, **kwargs,
        )
        print(f"{entry.name}: {path} from {run.relative_to(ROOT)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
