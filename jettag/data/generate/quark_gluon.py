"""Quark/gluon recipe: the Pythia 8 Z + jet samples of Komiske, Metodiev and Thaler
(Energy Flow Networks, arXiv:1810.05165; Zenodo 3164691, read by ``energyflow.qg_jets``).

Published recipe (followed): sqrt(s) = 14 TeV; quark jets from ``WeakBosonAndParton:qg2gmZq``
with light quarks (u, d, s) only, gluon jets from ``WeakBosonAndParton:qqbar2gmZg``; Z only
(``WeakZ0:gmZmode = 2``) decaying to neutrinos; default tune with hadronisation and
multi-parton interactions on; no detector; all final-state non-neutrino particles clustered
with anti-kT R = 0.4; jets with 500 < pT < 550 GeV and |y| < 2 (the 8.226 sample's
documentation; later documentation says 1.7, hence the ``max_rapidity`` option); the PDG
id of every constituent; label 1 for quark, 0 for gluon.

Our choices (not published): the leading jet of each event is the one tested against the
cuts; the quark flavour is restricted by vetoing events whose hard-process outgoing quark is
c or b (``with_bc=True`` keeps them, like the later "withbc" files); the pT-hat window
(see :data:`DEFAULTS`); constituents are stored pT-ordered (the published files are not
ordered, and no reader depends on the order).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import awkward as ak
import numpy as np

from jettag.data.generate._engine import EventStream, cluster, final_state, jet_kinematics

__all__ = ["CLASSES", "DEFAULTS", "generate_class"]

#: Class name -> label (``y`` of the energyflow files).
CLASSES: dict[str, int] = {"quark": 1, "gluon": 0}

DEFAULTS: dict[str, Any] = {
    "ecm": 14000.0,
    "mpi": True,
    "with_bc": False,
    "jet_radius": 0.4,
    "min_jet_pt": 500.0,
    "max_jet_pt": 550.0,
    "max_rapidity": 2.0,
    # pT-hat window (GeV) of the hard 2 -> 2 process. The jet recoils against the Z, so
    # pT-hat follows the jet pT. Measured here (cross-section weighted pT-hat slices from
    # 250 GeV up): this window keeps about 94% of the accepted quark jets and 95% of the
    # gluon jets (the rest: 350-400 GeV at < 1% acceptance per event, and above 700 GeV);
    # the constituent multiplicities of the slices agree within the statistics.
    "pthat": (400.0, 700.0),
}


def pythia_settings(cls: str, options: Mapping[str, Any]) -> list[str]:
    """Pythia settings of one class."""
    process = "qg2gmZq" if cls == "quark" else "qqbar2gmZg"
    return [
        f"Beams:eCM = {float(options['ecm'])}",
        f"WeakBosonAndParton:{process} = on",
        "WeakZ0:gmZmode = 2",
        "23:onMode = off",
        "23:onIfAny = 12 14 16",
        f"PhaseSpace:pTHatMin = {float(options['pthat'][0])}",
        f"PhaseSpace:pTHatMax = {float(options['pthat'][1])}",
        f"PartonLevel:MPI = {'on' if options['mpi'] else 'off'}",
    ]


def _hard_quark_ok(prt: ak.Array, with_bc: bool) -> np.ndarray:
    """Per event: the outgoing quark of the hard process is u, d or s (or any, ``with_bc``)."""
    if with_bc:
        return np.ones(len(prt), dtype=bool)
    aid = abs(prt.id)
    outgoing_quark = (prt.status == -23) & (aid >= 1) & (aid <= 6)
    heavy = ak.any(outgoing_quark & (aid >= 4), axis=1)
    return ~ak.to_numpy(heavy)


def _select(batch: ak.Array, cls: str, options: Mapping[str, Any]) -> ak.Array:
    prt = batch.prt
    fs = prt[final_state(prt)]
    px, py, pz, e, pid = fs.p.px, fs.p.py, fs.p.pz, fs.p.e, fs.id
    jets = cluster(px, py, pz, e, radius=options["jet_radius"], min_pt=options["min_jet_pt"])
    has_jet = ak.to_numpy(ak.num(jets.px, axis=1)) > 0
    lead = {
        k: ak.to_numpy(ak.fill_none(ak.firsts(getattr(jets, k), axis=1), 0.0))
        for k in ("px", "py", "pz", "e")
    }
    kin = jet_kinematics(lead["px"], lead["py"], lead["pz"], lead["e"])
    accept = (
        has_jet
        & (kin["pt"] > options["min_jet_pt"])
        & (kin["pt"] < options["max_jet_pt"])
        & (np.abs(kin["y"]) < options["max_rapidity"])
    )
    if cls == "quark":
        accept &= _hard_quark_ok(prt, bool(options["with_bc"]))
    rows = np.flatnonzero(accept)
    index = jets.index[rows][:, 0]
    out = {
        "part_energy": e[rows][index],
        "part_px": px[rows][index],
        "part_py": py[rows][index],
        "part_pz": pz[rows][index],
        "part_pid": ak.values_astype(pid[rows][index], np.int32),
        "label": np.full(len(rows), CLASSES[cls], dtype=np.int64),
        "jet_pt": kin["pt"][rows],
        "jet_y": kin["y"][rows],
        "jet_eta": kin["eta"][rows],
        "jet_phi": kin["phi"][rows],
        "jet_mass": kin["mass"][rows],
    }
    return ak.zip(out, depth_limit=1)


def generate_class(
    cls: str,
    n_jets: int,
    seed: int,
    options: Mapping[str, Any],
    progress: Callable[[int], None] | None = None,
) -> ak.Array:
    """``n_jets`` accepted jets of class ``cls`` ("quark" or "gluon") from a Pythia seeded
    with ``seed``; a call with fewer jets returns a prefix of a call with more."""
    stream = EventStream(pythia_settings(cls, options), seed)
    return stream.collect(n_jets, lambda batch: _select(batch, cls, options), progress)
