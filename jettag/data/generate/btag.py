"""b-tagging recipe: b jets against light-flavour (and optionally c) jets with charged-track
impact parameters, their errors, the perigee point and its covariance.

Modelled on the dataset of the Bilinear Tensor Network paper (Shimmin, Li, Smith,
arXiv:2303.11288): signal b jets from tt-bar events, background jets from inclusive QCD,
Pythia 8 at sqrt(s) = 13 TeV, and per-track transverse and longitudinal impact parameters
and the 3-D point of closest approach. That dataset is not public and used Delphes (CMS
card), anti-kT R = 0.5 jets with pT > 90 GeV; the jet definition here is our choice
(ATLAS-like: anti-kT R = 0.4, pT > 30 GeV, |eta| < 2.5), and every option can be changed to
the paper's values (``jet_radius=0.5, min_jet_pt=90``).

Our choices:

- Events: tt-bar (all decay modes) for b jets, ``HardQCD:all`` with pT-hat > 60 GeV for
  light and c jets, multi-parton interactions on, no pile-up, primary vertex at the
  origin. Unstable particles decay with their lifetimes, so B and D hadron decay products
  are displaced; particles with c tau > 10 mm (K0S, Lambda, Sigma, Xi, Omega) are kept
  stable (``ParticleDecays:limitTau0``), as the LHC experiments do at generator level, so
  that no track starts centimetres away from the beam.
- Jets: anti-kT on all final-state non-neutrino particles, every jet of an event with
  pT > ``min_jet_pt`` and |eta| < ``max_abs_eta`` (the paper kept only the leading jet),
  constituents pT-ordered.
- Flavour labels by hadron matching (the ATLAS convention): b if a b hadron with
  pT > 5 GeV lies within Delta R < 0.3 of the jet axis, else c for a c hadron, else light.
  A b class jet comes from tt-bar, light and c class jets from QCD.
- Tracks: charged constituents with pT > 0.5 GeV and |eta| < 2.5, propagated on a helix in
  a 2 T field to their perigee, with the resolution model of :mod:`.tracks`.

Fields (the JetClass ROOT names where JetClass has them): ``part_px, part_py, part_pz,
part_energy`` (GeV); ``part_pid`` (PDG id), ``part_charge``, JetClass' five particle-type
flags; ``part_istrack`` (1 when the track parameters are set); ``part_d0val, part_d0err,
part_dzval, part_dzerr`` (mm; measured d0 and z0 and their errors, 0 for non-tracks);
``part_phi0`` (azimuth at the perigee); ``part_pca_x, part_pca_y, part_pca_z`` (measured
perigee, mm); ``part_cov_xx, _xy, _xz, _yy, _yz, _zz`` (its covariance, mm^2);
``part_vtx_x, _y, _z`` (true production vertex, mm; truth, not for training); jet scalars
``jet_pt, jet_eta, jet_phi, jet_energy, jet_mass, jet_nparticles``; ``jet_flavour``
(5, 4, 0 from the hadron matching) and ``label`` (0 light, 1 b, 2 c). The ROOT file
stores the label one-hot as ``label_light, label_b`` (and ``label_c``), in that order;
read it back with ``JetClassReader(path, label_branches=("label_light", "label_b"))``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import awkward as ak
import numpy as np

from jettag.data.generate._engine import (
    EventStream,
    cluster,
    final_state,
    hadron_flavour,
    jet_kinematics,
    lookup,
    wrap_phi,
)
from jettag.data.generate.tracks import TrackResolution, perigee, smear

__all__ = ["CLASSES", "DEFAULTS", "classes", "generate_class"]

#: Class name -> label.
CLASSES: dict[str, int] = {"light": 0, "b": 1, "c": 2}
_FLAVOUR = {"light": 0, "b": 5, "c": 4}

DEFAULTS: dict[str, Any] = {
    "ecm": 13000.0,
    "mpi": True,
    "with_charm": False,
    "jet_radius": 0.4,
    "min_jet_pt": 30.0,
    "max_abs_eta": 2.5,
    # pT-hat threshold (GeV) of the QCD events: with 60 GeV the light-jet pT spectrum
    # (median about 62 GeV) resembles that of the b jets from tt-bar (about 73 GeV).
    "qcd_pthat_min": 60.0,
    "hadron_match_radius": 0.3,
    "hadron_min_pt": 5.0,
    "tau0_max": 10.0,
    "track_min_pt": 0.5,
    "track_max_abs_eta": 2.5,
    "bfield": 2.0,
    "d0_resolution": (0.010, 0.140),
    "z0_resolution": (0.091, 0.209),
    "phi0_resolution": (7.0e-5, 2.73e-3),
}


def classes(options: Mapping[str, Any]) -> tuple[str, ...]:
    """Classes generated with these options: b and light, plus c with ``with_charm``."""
    return ("b", "c", "light") if options["with_charm"] else ("b", "light")


def pythia_settings(cls: str, options: Mapping[str, Any]) -> list[str]:
    """Pythia settings of one class."""
    settings = [
        f"Beams:eCM = {float(options['ecm'])}",
        f"PartonLevel:MPI = {'on' if options['mpi'] else 'off'}",
        "ParticleDecays:limitTau0 = on",
        f"ParticleDecays:tau0Max = {float(options['tau0_max'])}",
    ]
    if cls == "b":
        settings += ["Top:gg2ttbar = on", "Top:qqbar2ttbar = on"]
    else:
        settings += ["HardQCD:all = on", f"PhaseSpace:pTHatMin = {float(options['qcd_pthat_min'])}"]
    return settings


def _flat(array: ak.Array) -> np.ndarray:
    return ak.to_numpy(ak.flatten(array, axis=None))


class _Selector:
    """Turns batches of events into the accepted jets of one class, with track parameters."""

    def __init__(self, cls: str, options: Mapping[str, Any], pythia: Any, seed: int):
        self.cls = cls
        self.options = options
        self.charge = pythia.particleData.charge
        self.resolution = TrackResolution(
            d0=tuple(options["d0_resolution"]),
            z0_sin_theta=tuple(options["z0_resolution"]),
            phi0=tuple(options["phi0_resolution"]),
        )
        # Smearing has its own random stream, derived from the unit's seed.
        self.rng = np.random.default_rng([seed, 0xB7A6])

    def _jet_flavour(self, prt: ak.Array, eta: ak.Array, phi: ak.Array) -> ak.Array:
        """Hadron-matched flavour (5, 4 or 0) of every jet (events x jets)."""
        opts = self.options
        counts = ak.num(prt.id, axis=1)
        flavour = ak.unflatten(hadron_flavour(_flat(prt.id)), counts)
        hpt = np.hypot(prt.p.px, prt.p.py)
        hadrons = prt[(flavour > 0) & (hpt > opts["hadron_min_pt"])]
        hflav = flavour[(flavour > 0) & (hpt > opts["hadron_min_pt"])]
        heta = np.arcsinh(hadrons.p.pz / np.hypot(hadrons.p.px, hadrons.p.py))
        hphi = np.arctan2(hadrons.p.py, hadrons.p.px)
        jets = ak.zip({"eta": eta, "phi": phi})
        had = ak.zip({"eta": heta, "phi": hphi, "flavour": hflav})
        pairs = ak.cartesian({"j": jets, "h": had}, axis=1, nested=True)
        dphi = pairs.j.phi - pairs.h.phi
        dphi = (dphi + np.pi) % (2 * np.pi) - np.pi
        near = np.hypot(pairs.j.eta - pairs.h.eta, dphi) < opts["hadron_match_radius"]
        has_b = ak.any(near & (pairs.h.flavour == 5), axis=2)
        has_c = ak.any(near & (pairs.h.flavour == 4), axis=2)
        return ak.where(has_b, 5, ak.where(has_c, 4, 0))

    def __call__(self, batch: ak.Array) -> ak.Array:
        opts = self.options
        prt = batch.prt
        fs = prt[final_state(prt)]
        jets = cluster(
            fs.p.px, fs.p.py, fs.p.pz, fs.p.e, radius=opts["jet_radius"], min_pt=opts["min_jet_pt"]
        )
        jpt = np.hypot(jets.px, jets.py)
        jeta = np.arcsinh(jets.pz / jpt)
        jphi = np.arctan2(jets.py, jets.px)
        flavour = self._jet_flavour(prt, jeta, jphi)
        keep = (abs(jeta) < opts["max_abs_eta"]) & (flavour == _FLAVOUR[self.cls])

        # Flat numpy views: selected jets in event order, their constituents as flat indices
        # into the batch's final-state particles.
        fs_counts = ak.to_numpy(ak.num(fs.id, axis=1))
        fs_start = np.concatenate([[0], np.cumsum(fs_counts)[:-1]])
        index = jets.index[keep]
        n_const = _flat(ak.num(index, axis=2))
        jet_event = np.repeat(np.arange(len(fs_counts)), _flat(ak.num(index, axis=1)))
        const = _flat(index).astype(np.int64) + np.repeat(fs_start[jet_event], n_const)

        def take(field: ak.Array) -> np.ndarray:
            return _flat(field)[const]

        px, py, pz, e = take(fs.p.px), take(fs.p.py), take(fs.p.pz), take(fs.p.e)
        pid = take(fs.id).astype(np.int32)
        vx = take(ak.fill_none(fs.vProd.px, 0.0))
        vy = take(ak.fill_none(fs.vProd.py, 0.0))
        vz = take(ak.fill_none(fs.vProd.pz, 0.0))
        charge = lookup(pid, self.charge)
        parts = self._particle_fields(px, py, pz, e, pid, charge, vx, vy, vz)

        jkin = jet_kinematics(
            _flat(jets.px[keep]), _flat(jets.py[keep]), _flat(jets.pz[keep]), _flat(jets.e[keep])
        )
        n = len(n_const)
        out: dict[str, Any] = {k: ak.unflatten(v, n_const) for k, v in parts.items()}
        out.update(
            jet_pt=jkin["pt"],
            jet_eta=jkin["eta"],
            jet_phi=jkin["phi"],
            jet_energy=_flat(jets.e[keep]),
            jet_mass=jkin["mass"],
            jet_nparticles=n_const.astype(np.int64),
            jet_flavour=np.full(n, _FLAVOUR[self.cls], dtype=np.int64),
            label=np.full(n, CLASSES[self.cls], dtype=np.int64),
        )
        return ak.zip(out, depth_limit=1)

    def _particle_fields(
        self,
        px: np.ndarray,
        py: np.ndarray,
        pz: np.ndarray,
        e: np.ndarray,
        pid: np.ndarray,
        charge: np.ndarray,
        vx: np.ndarray,
        vy: np.ndarray,
        vz: np.ndarray,
    ) -> dict[str, np.ndarray]:
        opts = self.options
        pt = np.hypot(px, py)
        eta = np.arcsinh(pz / pt)
        apid = np.abs(pid)
        charged = charge != 0
        track = charged & (pt > opts["track_min_pt"]) & (np.abs(eta) < opts["track_max_abs_eta"])
        fields: dict[str, np.ndarray] = {
            "part_energy": e,
            "part_px": px,
            "part_py": py,
            "part_pz": pz,
            "part_pid": pid,
            "part_charge": charge,
            "part_isChargedHadron": (charged & (apid != 11) & (apid != 13)).astype(np.int32),
            "part_isNeutralHadron": (~charged & (apid != 22)).astype(np.int32),
            "part_isPhoton": (apid == 22).astype(np.int32),
            "part_isElectron": (apid == 11).astype(np.int32),
            "part_isMuon": (apid == 13).astype(np.int32),
            "part_istrack": track.astype(np.int32),
        }
        names = {
            "d0val": "d0",
            "d0err": "d0err",
            "dzval": "z0",
            "dzerr": "z0err",
            "phi0": "phi0",
            "pca_x": "pca_x",
            "pca_y": "pca_y",
            "pca_z": "pca_z",
            **{f"cov_{ij}": f"cov_{ij}" for ij in ("xx", "xy", "xz", "yy", "yz", "zz")},
        }
        for name in names:
            fields[f"part_{name}"] = np.zeros(len(px))
        t = np.flatnonzero(track)
        if len(t):
            true = perigee(
                vx[t], vy[t], vz[t], px[t], py[t], pz[t], charge[t], bfield=float(opts["bfield"])
            )
            measured = smear(true, pt[t], pz[t], self.resolution, self.rng)
            for name, key in names.items():
                fields[f"part_{name}"][t] = measured[key]
        fields["part_phi0"] = np.where(track, wrap_phi(fields["part_phi0"]), 0.0)
        fields.update(part_vtx_x=vx, part_vtx_y=vy, part_vtx_z=vz)
        return fields


def generate_class(
    cls: str,
    n_jets: int,
    seed: int,
    options: Mapping[str, Any],
    progress: Callable[[int], None] | None = None,
) -> ak.Array:
    """``n_jets`` jets of class ``cls`` ("b", "c" or "light") from a Pythia seeded with
    ``seed``; a call with fewer jets returns a prefix of a call with more."""
    stream = EventStream(pythia_settings(cls, options), seed)
    select = _Selector(cls, options, stream.pythia, seed)
    return stream.collect(n_jets, select, progress)
