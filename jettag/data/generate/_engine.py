"""Shared machinery of the generator: Pythia set-up, seeds, event records and jet clustering.

Everything here works on whole batches of events (``Pythia.nextBatch`` gives an awkward
array of event records) so that no Python loop runs over particles or events.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import awkward as ak
import numpy as np

from jettag._optional import require

__all__ = [
    "NEUTRINOS",
    "Clustered",
    "EventStream",
    "cluster",
    "derive_seed",
    "final_state",
    "flat_record",
    "hadron_flavour",
    "jet_kinematics",
    "lookup",
    "make_pythia",
    "wrap_phi",
]

NEUTRINOS = (12, 14, 16)

# Pythia accepts seeds 1..900_000_000; 0 would mean "seed from the clock".
_MAX_SEED = 900_000_000

# A stream that accepts nothing in this many events is misconfigured, not unlucky.
_MAX_BARREN_EVENTS = 200_000

# Settings applied to every Pythia instance: no per-event printout, quiet initialisation.
_COMMON_SETTINGS = (
    "Next:numberCount = 0",
    "Next:numberShowEvent = 0",
    "Next:numberShowInfo = 0",
    "Next:numberShowProcess = 0",
    "Print:quiet = on",
)


def derive_seed(base_seed: int, *keys: object) -> int:
    """A Pythia seed in ``[1, 900_000_000]`` derived from a base seed and any number of keys.

    The derivation is a cryptographic hash, so seeds of different work units are
    unrelated and the same ``(base_seed, *keys)`` always gives the same seed, whatever
    the process or machine.
    """
    text = repr((int(base_seed), *keys)).encode()
    digest = hashlib.blake2b(text, digest_size=8).digest()
    return int.from_bytes(digest, "little") % _MAX_SEED + 1


def make_pythia(settings: Sequence[str], seed: int) -> Any:
    """Construct and initialise a quiet ``pythia8mc.Pythia`` with ``settings`` and ``seed``.

    Raises:
        ValueError: a setting is not known to Pythia, or initialisation fails.
    """
    pythia8mc = require("pythia8mc", "generate", feature="the jet generator")
    pythia = pythia8mc.Pythia("", False)
    for line in (*_COMMON_SETTINGS, *settings, "Random:setSeed = on", f"Random:seed = {seed}"):
        if not pythia.readString(line):
            raise ValueError(f"Pythia rejected the setting {line!r}; check its spelling")
    if not pythia.init():
        raise ValueError(f"Pythia failed to initialise with settings {list(settings)!r}")
    return pythia


class EventStream:
    """Batches of events from one Pythia instance, with a batch size adapted to the need.

    The events do not depend on how they are split into batches (Pythia generates them one
    after the other from one random stream), so choosing the batch size from the number of
    jets still missing keeps the output deterministic while avoiding wasted events.
    """

    def __init__(self, settings: Sequence[str], seed: int, *, max_batch: int = 1000):
        self.pythia = make_pythia(settings, seed)
        self.max_batch = max_batch
        self.events = 0
        self.accepted = 0

    def next_batch(self, missing: int) -> ak.Array:
        """The next batch of events, sized for ``missing`` more accepted jets."""
        # Start from one jet per event so that small requests generate few events.
        rate = (self.accepted + 1) / (self.events + 1)
        size = int(np.clip(np.ceil(1.15 * missing / rate) + 8, 16, self.max_batch))
        batch = self.pythia.nextBatch(size)
        self.events += size
        return batch

    def collect(
        self,
        n_jets: int,
        select: Callable[[ak.Array], ak.Array],
        progress: Callable[[int], None] | None = None,
    ) -> ak.Array:
        """The first ``n_jets`` jets that ``select`` accepts from the stream's batches.

        ``select`` maps a batch of events to its accepted jets in event order, so that a
        call with fewer jets returns a prefix of a call with more. ``progress`` is called
        with the number of jets accepted from each batch.
        """
        parts: list[ak.Array] = []
        total = 0
        while total < n_jets:
            if self.accepted == 0 and self.events >= _MAX_BARREN_EVENTS:
                raise ValueError(
                    f"no jet passed the selection in {self.events} events; the options "
                    "(cuts, pT-hat window) admit no jets"
                )
            jets = select(self.next_batch(n_jets - total))[: n_jets - total]
            self.accepted += len(jets)
            total += len(jets)
            parts.append(jets)
            if progress is not None and len(jets):
                progress(len(jets))
        if not parts:
            raise ValueError(f"n_jets must be positive, got {n_jets}")
        return ak.concatenate(parts) if len(parts) > 1 else parts[0]


def flat_record(prt: ak.Array) -> dict[str, np.ndarray]:
    """Flatten a batch's event records into numpy arrays with global indices.

    Returns a dict with ``id``, ``status``, ``px``, ``py``, ``pz``, ``e`` (flat over all
    events), ``mother1``, ``daughter1``, ``daughter2`` (converted from indices within the
    event to indices into the flat arrays; 0 -> the event's first entry), ``event``
    (event number of each entry) and ``offsets`` (start of each event, length n+1).
    """
    counts = ak.to_numpy(ak.num(prt.id, axis=1))
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    event = np.repeat(np.arange(len(counts)), counts)
    start = offsets[:-1][event]
    flat = {
        "id": ak.to_numpy(ak.flatten(prt.id)),
        "status": ak.to_numpy(ak.flatten(prt.status)),
        "px": ak.to_numpy(ak.flatten(prt.p.px)),
        "py": ak.to_numpy(ak.flatten(prt.p.py)),
        "pz": ak.to_numpy(ak.flatten(prt.p.pz)),
        "e": ak.to_numpy(ak.flatten(prt.p.e)),
        "event": event,
        "offsets": offsets,
    }
    for key in ("mother1", "daughter1", "daughter2"):
        flat[key] = ak.to_numpy(ak.flatten(prt[key])).astype(np.int64) + start
    return flat


def final_state(prt: ak.Array) -> ak.Array:
    """Boolean mask of final-state particles that are not neutrinos (jagged like ``prt``)."""
    aid = abs(prt.id)
    mask = prt.status > 0
    for nu in NEUTRINOS:
        mask = mask & (aid != nu)
    return mask


@dataclass
class Clustered:
    """Jets of a batch of events, pT-ordered within each event.

    ``px, py, pz, e`` are jagged (events x jets); ``index`` is jagged (events x jets x
    constituents) and indexes the clustering input of each event, its constituents
    ordered by decreasing pT.
    """

    px: ak.Array
    py: ak.Array
    pz: ak.Array
    e: ak.Array
    index: ak.Array


_FASTJET_READY = False


@contextlib.contextmanager
def _stdout_silenced() -> Iterator[None]:
    """Redirect the C-level stdout to /dev/null (FastJet prints its banner there)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _fastjet() -> Any:
    global _FASTJET_READY
    fastjet = require("fastjet", "generate", feature="the jet generator")
    if not _FASTJET_READY:
        # The first clustering prints FastJet's banner on stdout, which would break
        # progress bars and piped output; trigger it once with stdout redirected.
        one = ak.Array([[{"px": 1.0, "py": 0.0, "pz": 0.0, "E": 1.0}]])
        try:
            with _stdout_silenced():
                fastjet.ClusterSequence(
                    one, fastjet.JetDefinition(fastjet.antikt_algorithm, 0.4)
                ).inclusive_jets()
        except OSError:  # no usable file descriptor 1: let the banner through
            pass
        _FASTJET_READY = True
    return fastjet


def cluster(
    px: ak.Array, py: ak.Array, pz: ak.Array, e: ak.Array, *, radius: float, min_pt: float
) -> Clustered:
    """Anti-kT jets (E-scheme) with pT > ``min_pt`` of jagged particle arrays (events x particles).

    Jets come pT-ordered within each event, each with its constituents' input indices
    pT-ordered.
    """
    fastjet = _fastjet()
    particles = ak.zip({"px": px, "py": py, "pz": pz, "E": e})
    definition = fastjet.JetDefinition(fastjet.antikt_algorithm, float(radius))
    sequence = fastjet.ClusterSequence(particles, definition)
    jets = sequence.inclusive_jets(min_pt=float(min_pt))
    index = sequence.constituent_index(min_pt=float(min_pt))
    order = ak.argsort(np.hypot(jets.px, jets.py), axis=1, ascending=False)
    jets = jets[order]
    index = index[order]
    # Constituents by decreasing pT: gather the pT of each constituent through its index.
    ppt = np.hypot(px, py)
    cpt = ppt[ak.flatten(index, axis=2)]
    cpt = ak.unflatten(cpt, ak.flatten(ak.num(index, axis=2)), axis=1)
    index = index[ak.argsort(cpt, axis=2, ascending=False)]
    return Clustered(jets.px, jets.py, jets.pz, jets.E, index)


def wrap_phi(phi: np.ndarray) -> np.ndarray:
    """Wrap angles to [-pi, pi)."""
    return (np.asarray(phi) + np.pi) % (2 * np.pi) - np.pi


def jet_kinematics(px: Any, py: Any, pz: Any, e: Any) -> dict[str, Any]:
    """pt, eta, rapidity, phi and (signed) mass of four-momenta given as arrays."""
    pt = np.hypot(px, py)
    p = np.sqrt(pt**2 + pz**2)
    eta = np.arcsinh(pz / np.maximum(pt, 1e-300))
    y = 0.5 * np.log(np.maximum(e + pz, 1e-300) / np.maximum(e - pz, 1e-300))
    m2 = e**2 - p**2
    mass = np.sign(m2) * np.sqrt(np.abs(m2))
    return {"pt": pt, "eta": eta, "y": y, "phi": wrap_phi(np.arctan2(py, px)), "mass": mass}


def hadron_flavour(pid: np.ndarray) -> np.ndarray:
    """Heaviest quark flavour (5 = b, 4 = c, 0 otherwise) of hadrons given by PDG id.

    Mesons carry their quarks in the hundreds and tens digits, baryons in the thousands,
    hundreds and tens digits; the heaviest one is the hundreds digit (mesons) or the
    thousands digit (baryons). Quarks, leptons, gauge bosons and diquarks give 0.
    """
    code = np.abs(np.asarray(pid, dtype=np.int64)) % 10000
    thousands = code // 1000
    hundreds = (code // 100) % 10
    is_hadron = (code >= 100) & ((code // 10) % 10 != 0) & (code % 10 != 0)
    heaviest = np.where(thousands > 0, thousands, hundreds)
    flavour = np.where(is_hadron & (heaviest >= 4) & (heaviest <= 5), heaviest, 0)
    return flavour.astype(np.int64)


def lookup(values: np.ndarray, table: Callable[[int], float]) -> np.ndarray:
    """Apply a scalar function of a PDG id to an array of ids, calling it once per distinct id."""
    unique, inverse = np.unique(np.asarray(values), return_inverse=True)
    mapped = np.array([table(int(v)) for v in unique], dtype=np.float64)
    return mapped[inverse].reshape(np.shape(values))
