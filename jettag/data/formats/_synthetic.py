"""Random jets in the canonical layout, for tests and examples (not physics)."""

from __future__ import annotations

import numpy as np
import torch

from jettag.data.formats._common import JetChunk
from jettag.data.formats.qg_npz import pdg_mass

__all__ = ["random_jets"]

_PIDS = np.array([22, 211, -211, 321, -321, 130, 2112, -2112, 2212, -2212, 11, -11, 13, -13])


def random_jets(
    num_jets: int,
    *,
    seed: int = 0,
    min_particles: int = 0,
    max_particles: int = 30,
    num_classes: int = 2,
    dtype: type | np.dtype = np.float32,
    pid: bool = True,
    truth: bool = True,
) -> JetChunk:
    """``num_jets`` jets of PDG-mass particles around a random axis, pT-ordered.

    Momenta are built in float64 from (pT, rapidity, phi, PDG mass of the id) and cast to
    ``dtype``. Fields: ``part_pid`` (int64, if ``pid``), ``label`` in ``[0, num_classes)``,
    ``truth_p4`` ``(B, 4)`` (if ``truth``).
    """
    from jettag.physics import from_ptyphim

    rng = np.random.default_rng(seed)
    counts = rng.integers(min_particles, max_particles + 1, num_jets).astype(np.int64)
    total = int(counts.sum())
    jet_y = np.repeat(rng.uniform(-2.0, 2.0, num_jets), counts)
    jet_phi = np.repeat(rng.uniform(-np.pi, np.pi, num_jets), counts)
    pt = rng.exponential(20.0, total) + 0.5
    order = np.argsort(-pt + np.repeat(np.arange(num_jets), counts) * 1e6, kind="stable")
    pt = pt[order]  # descending pT inside each jet
    y = jet_y + rng.normal(0.0, 0.3, total)
    phi = jet_phi + rng.normal(0.0, 0.3, total)
    pids = rng.choice(_PIDS, total)
    p4 = from_ptyphim(
        torch.from_numpy(pt),
        torch.from_numpy(y),
        torch.from_numpy(phi),
        torch.from_numpy(pdg_mass(pids)),
    ).numpy()
    label = rng.integers(0, num_classes, num_jets)
    jet_fields = {}
    if truth:
        jet_fields["truth_p4"] = rng.normal(0.0, 100.0, (num_jets, 4)).astype(dtype)
    return JetChunk(
        p4.astype(dtype),
        counts,
        label,
        {"part_pid": pids.astype(np.int64)} if pid else {},
        jet_fields,
    )
