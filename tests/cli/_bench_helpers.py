"""Toy top/QCD jets for the CLI tests: three-prong signal jets near the top mass, one-prong
background jets, so that the jet-mass baseline and any tagger separate them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jettag.data.formats import JetChunk, write_qg_npz, write_top_hdf5


def toy_top_jets(num_jets: int, seed: int, *, pid: bool = False) -> JetChunk:
    """Balanced toy jets of massless constituents, pT about 600 GeV.

    Signal (label 1): three prongs of similar pT, 0.15-0.35 from the axis at 120 degrees
    (masses around the top mass); background (label 0): one to three prongs with a
    hierarchy of pT (mostly light), so the classes overlap but are well separated.
    """
    from jettag.physics import from_ptetaphim

    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num_jets) % 2)
    pts, etas, phis, counts = [], [], [], []
    for label in labels:
        eta0, phi0 = rng.uniform(-1.5, 1.5), rng.uniform(-np.pi, np.pi)
        if label == 1:
            n_prongs, shares = 3, rng.dirichlet([3.0, 3.0, 3.0])
            distance = rng.uniform(0.1, 0.35, 3)
        else:
            n_prongs = int(rng.integers(1, 4))
            shares = rng.dirichlet([3.0, 1.5, 1.0][:n_prongs]) if n_prongs > 1 else [1.0]
            distance = rng.uniform(0.1, 0.5, n_prongs) * (np.arange(n_prongs) > 0)
        angles = rng.uniform(0, 2 * np.pi) + np.arange(n_prongs) * 2 * np.pi / 3
        n_total = 0
        for k in range(n_prongs):
            n = int(rng.integers(4, 15))
            frac = rng.dirichlet(np.ones(n)) * shares[k] * 600.0
            pts.append(frac)
            etas.append(eta0 + distance[k] * np.cos(angles[k]) + rng.normal(0, 0.03, n))
            phis.append(phi0 + distance[k] * np.sin(angles[k]) + rng.normal(0, 0.03, n))
            n_total += n
        counts.append(n_total)
    pt = torch.from_numpy(np.concatenate(pts))
    eta = torch.from_numpy(np.concatenate(etas))
    phi = torch.from_numpy(np.concatenate(phis))
    phi = torch.remainder(phi + np.pi, 2 * np.pi) - np.pi
    p4 = from_ptetaphim(pt, eta, phi, torch.zeros_like(pt)).numpy().astype(np.float32)
    fields = {}
    if pid:
        fields["part_pid"] = rng.choice([22, 211, -211, 130], size=len(p4)).astype(np.int64)
    return JetChunk(p4, np.array(counts), labels.astype(np.int64), fields, {})


def write_toy_dataset(root: Path, sizes: dict[str, int], *, task: str = "top") -> dict[str, Path]:
    """``root/{train,val,test}.{h5,npz}`` of toy jets (npz with PDG ids for ``task="qg"``)."""
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for k, (split, n) in enumerate(sizes.items()):
        if task == "top":
            out[split] = write_top_hdf5(root / f"{split}.h5", toy_top_jets(n, 10 + k))
        else:
            out[split] = write_qg_npz(root / f"{split}.npz", toy_top_jets(n, 10 + k, pid=True))
    return out


def run_cli(*argv: Any) -> int:
    """Run ``jettag train|evaluate|benchmark ...`` in this process (parsers of the modules
    under test, whether or not the lead has wired them into ``jettag.cli``)."""
    from jettag.cli import benchmark, evaluate, train

    parser = argparse.ArgumentParser(prog="jettag")
    sub = parser.add_subparsers()
    for module in (train, evaluate, benchmark):
        module.register(sub)
    words = [str(a) for a in argv]
    args = parser.parse_args(words)
    saved = sys.argv
    sys.argv = ["jettag", *words]  # what the console script sees; the commands record it
    try:
        return int(args.func(args) or 0)
    finally:
        sys.argv = saved
