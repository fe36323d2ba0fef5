"""Standard model inputs computed on a :class:`~jettag.data.JetBatch`.

Per-particle variables are computed on packed particles, ``(P, C)``, one row per
constituent, so empty jets produce no rows and padding never enters a computation. Their
names and definitions follow the Particle Transformer / weaver data cards, so that a data
card's feature set (``jettag/data/cards/*.yaml``) can be evaluated by name:

============================  =============================================================
variable                      definition
============================  =============================================================
``part_px`` ... ``part_energy``  the four-momentum components (GeV)
``part_pt``                   ``hypot(px, py)``
``part_eta``, ``part_phi``    pseudorapidity, azimuth
``part_mask``                 1 for every real particle
``part_pt_log``               ``log(pT)``
``part_e_log``                ``log(E)``
``part_logptrel``             ``log(pT / pT_jet)``
``part_logerel``              ``log(E / E_jet)``
``part_deta``                 ``(eta - eta_jet) * sign(eta_jet)`` (sign +1 when eta_jet = 0)
``part_etarel``               ``eta - eta_jet`` (no sign flip)
``part_dphi``                 ``phi - phi_jet`` wrapped into [-pi, pi)
``part_deltaR``               ``hypot(part_deta, part_dphi)``
``part_charge``               electric charge from the PDG id
``part_isChargedHadron``      hadron with non-zero charge (+-211, +-321, +-2212, ...)
``part_isNeutralHadron``      hadron without charge (130, +-2112, ...)
``part_isPhoton``             ``pid == 22``
``part_isElectron``           ``|pid| == 11``
``part_isMuon``               ``|pid| == 13``
``part_isCHad``               ``[|pid|=211] + 0.5 [|pid|=321] + 0.2 [|pid|=2212]`` (kinpidplus)
``part_isNHad``               ``[|pid|=130] + 0.2 [|pid|=2112]`` (kinpidplus)
``part_d0``, ``part_dz``      ``tanh`` of the inputs ``part_d0val``, ``part_dzval``
============================  =============================================================

The jet is the sum of its constituents' four-momenta (``pT_jet``, ``E_jet``), and its axis
is that sum's ``(eta, phi)`` (``jet_axis="p4"``, as the reference converters compute it) or
jettag's pT-weighted centroid (``jet_axis="centroid"``; see :func:`jettag.physics.jet_axis`).
Variables that a batch cannot provide by itself (the PDG id, stored impact parameters,
JetClass's stored flags) come in through ``inputs``: a mapping of names to ``(P,)``
tensors, or ``x_names`` naming the columns of ``batch.x``. An input with the name of a
variable replaces its computation (pass JetClass's stored ``part_deta`` to use it).

:class:`Preprocessor` applies a card's declared preprocessing, weaver's manual
standardisation: ``clip((value - centre) * scale, min, max)`` for variables with a centre,
untouched values otherwise, then truncation and padding to the declared length.

:func:`lorentznet_inputs` builds LorentzNet's inputs (beams and mass scalars for top
tagging, a one-hot of the PDG id for quark/gluon tagging).

Example:
    >>> import torch
    >>> from jettag.data import JetBatch
    >>> from jettag.data.features import Preprocessor
    >>> p4 = torch.tensor([[100.0, 60.0, 0.0, 80.0], [50.0, 0.0, 30.0, 40.0]])
    >>> jets = JetBatch.from_counts(p4, [2])
    >>> pre = Preprocessor.from_card("top-tagging")
    >>> packed = pre(jets)
    >>> packed["features"].shape, packed["points"].shape
    (torch.Size([2, 7]), torch.Size([2, 2]))
    >>> padded, mask = pre.padded(jets)
    >>> padded["features"].shape, mask.shape
    (torch.Size([1, 128, 7]), torch.Size([1, 128]))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from jettag import physics
from jettag.data.batch import JetBatch
from jettag.nn.lorentz import psi

__all__ = [
    "KINEMATIC_FEATURES",
    "LORENTZNET_PIDS",
    "PID_FEATURES",
    "FeatureContext",
    "Preprocessor",
    "VariableSpec",
    "add_beams",
    "available_variables",
    "kinematic_features",
    "lorentznet_inputs",
    "particle_features",
    "pdg_charge",
    "pid_features",
    "pid_one_hot",
]

#: The ParticleNet / ParT kinematic feature set ("kin"), in the reference order.
KINEMATIC_FEATURES: tuple[str, ...] = (
    "part_pt_log",
    "part_e_log",
    "part_logptrel",
    "part_logerel",
    "part_deltaR",
    "part_deta",
    "part_dphi",
)

#: The particle-ID variables of ParT's quark/gluon "kinpid" set, in the reference order.
PID_FEATURES: tuple[str, ...] = (
    "part_charge",
    "part_isChargedHadron",
    "part_isNeutralHadron",
    "part_isPhoton",
    "part_isElectron",
    "part_isMuon",
)

#: |PDG id| classes of LorentzNet's quark/gluon node scalars, in its one-hot order.
LORENTZNET_PIDS: tuple[int, ...] = (11, 13, 22, 130, 211, 321, 2112, 2212)

JetAxis = Literal["p4", "centroid"]

# Three times the electric charge of quarks 1..6 (d, u, s, c, b, t).
_QUARK_3CHARGE = (0, -1, 2, -1, 2, -1, 2)
# Three times the charge of non-hadrons with |id| < 100 that can appear in a jet.
_LEPTON_BOSON_3CHARGE = {11: -3, 13: -3, 15: -3, 12: 0, 14: 0, 16: 0, 22: 0, 23: 0, 24: 3, 25: 0}


# --------------------------------------------------------------------------------------
# Particle identification
# --------------------------------------------------------------------------------------


def _as_pid(pid: Tensor) -> Tensor:
    """PDG ids as int64 (ids stored as floats, as in the quark/gluon files, are rounded)."""
    if pid.is_floating_point():
        return torch.round(pid).to(torch.int64)
    return pid.to(torch.int64)


def _digits(code: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Quark digits (q1, q2, q3) = thousands, hundreds, tens digits of |id| % 10000."""
    return (code // 1000) % 10, (code // 100) % 10, (code // 10) % 10


def pdg_charge(pid: Tensor) -> Tensor:
    """Electric charge (in units of e) of particles given by PDG id, as float.

    Leptons and bosons from a table; hadrons from the quark content in the PDG numbering
    scheme (mesons ``q2 q3bar`` or ``q3 q2bar``, baryons ``q1 q2 q3``); the sign of the id
    flips the charge. Unknown or non-hadronic codes (nuclei, diquarks) give 0.

    Args:
        pid: ``(...)`` PDG ids, integer or float.
    """
    pid = _as_pid(pid)
    aid = pid.abs()
    code = aid % 10000
    q1, q2, q3 = _digits(code)
    table = torch.tensor(_QUARK_3CHARGE, dtype=torch.int64, device=pid.device)

    def quark(q: Tensor) -> Tensor:
        return table[q.clamp(0, 6)]

    meson = (q1 == 0) & (q2 > 0) & (q3 > 0) & (code % 10 > 0) & (code >= 100)
    baryon = (q1 > 0) & (q2 > 0) & (q3 > 0) & (code % 10 > 0)
    # Meson q2 q3bar, except that s and b (q2 = 3, 5) mesons hold the antiquark of q2.
    meson_charge = torch.where((q2 == 3) | (q2 == 5), quark(q3) - quark(q2), quark(q2) - quark(q3))
    baryon_charge = quark(q1) + quark(q2) + quark(q3)
    other = torch.zeros_like(aid)
    for code_, charge in _LEPTON_BOSON_3CHARGE.items():
        other = torch.where(aid == code_, torch.full_like(aid, charge), other)
    three = torch.where(meson, meson_charge, torch.where(baryon, baryon_charge, other))
    three = torch.where(aid == 130, torch.zeros_like(three), three)
    return (torch.sign(pid) * three).to(torch.get_default_dtype()) / 3.0


def _is_hadron(pid: Tensor) -> Tensor:
    code = _as_pid(pid).abs() % 10000
    _, q2, q3 = _digits(code)
    regular = (code >= 100) & (q2 > 0) & (q3 > 0) & (code % 10 > 0)
    # K0L and K0S break the numbering scheme's rule that the last digit is 2J + 1 > 0.
    return regular | (code == 130) | (code == 310)


def pid_features(pid: Tensor, *, dtype: torch.dtype | None = None) -> Tensor:
    """The six particle-ID variables of :data:`PID_FEATURES` from PDG ids.

    Charge, then the flags charged hadron (a hadron with non-zero charge: +-211, +-321,
    +-2212 among stable particles), neutral hadron (130, +-2112, ...), photon (22),
    electron (+-11), muon (+-13): on the particles of the quark/gluon dataset exactly the
    Particle Transformer's definitions (``utils/convert_qg_datasets.py``).

    Args:
        pid: ``(P,)`` PDG ids (integer or float).
        dtype: output dtype (default: the default float dtype).

    Returns:
        ``(P, 6)``.
    """
    dtype = dtype or torch.get_default_dtype()
    pid = _as_pid(pid)
    aid = pid.abs()
    charge = pdg_charge(pid).to(dtype)
    hadron = _is_hadron(pid)
    cols = [
        charge,
        (hadron & (charge != 0)).to(dtype),
        (hadron & (charge == 0)).to(dtype),
        (pid == 22).to(dtype),
        (aid == 11).to(dtype),
        (aid == 13).to(dtype),
    ]
    return torch.stack(cols, dim=-1)


def pid_one_hot(
    pid: Tensor,
    classes: Sequence[int] = LORENTZNET_PIDS,
    *,
    unknown: Literal["error", "zero"] = "error",
    dtype: torch.dtype | None = None,
) -> Tensor:
    """One-hot encoding of ``|pid|`` over ``classes`` (LorentzNet's quark/gluon scalars).

    Args:
        pid: ``(P,)`` PDG ids.
        classes: the absolute ids, in column order.
        unknown: ``"error"`` raises on an id outside ``classes``; ``"zero"`` gives it an
            all-zero row (as LorentzNet's ``OneHotEncoder(handle_unknown="ignore")``).
        dtype: output dtype (default: the default float dtype).

    Returns:
        ``(P, len(classes))``.

    Raises:
        ValueError: an unknown id with ``unknown="error"``, naming the ids found.
    """
    aid = _as_pid(pid).abs()
    table = torch.tensor(list(classes), dtype=torch.int64, device=aid.device)
    hits = aid.unsqueeze(-1) == table
    if unknown == "error":
        missing = ~hits.any(-1)
        if bool(missing.any()):
            found = sorted({int(v) for v in aid[missing].unique()})
            raise ValueError(
                f"pid_one_hot: |PDG id| {found} not among the classes {list(classes)}; pass "
                "unknown='zero' to encode them as all-zero rows"
            )
    elif unknown != "zero":
        raise ValueError(f"pid_one_hot: unknown must be 'error' or 'zero', found {unknown!r}")
    return hits.to(dtype or torch.get_default_dtype())


# --------------------------------------------------------------------------------------
# Per-particle variables
# --------------------------------------------------------------------------------------


class FeatureContext:
    """Lazily computed quantities of one batch shared by the variables (cached per batch).

    Args:
        batch: the jets.
        inputs: extra per-particle tensors by name, each ``(P,)``.
        jet_axis: ``"p4"`` or ``"centroid"``.
    """

    def __init__(self, batch: JetBatch, inputs: Mapping[str, Tensor], jet_axis: JetAxis):
        if jet_axis not in ("p4", "centroid"):
            raise ValueError(f"jet_axis: expected 'p4' or 'centroid', found {jet_axis!r}")
        self.batch = batch
        self.inputs = dict(inputs)
        self.jet_axis = jet_axis
        self._cache: dict[str, Tensor] = {}

    def get(self, key: str, compute: Callable[[], Tensor]) -> Tensor:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    @property
    def p4(self) -> Tensor:
        return self.batch.p4

    def jet(self) -> Tensor:
        """Summed four-momentum of each particle's jet, ``(P, 4)``."""

        def compute() -> Tensor:
            b = self.batch
            total = physics.jet_p4(b.p4, batch=b.batch, num_jets=b.num_jets)
            return total[b.batch]

        return self.get("jet", compute)

    def axis(self) -> Tensor:
        """Jet axis ``(eta, phi)`` of each particle's jet, ``(P, 2)``."""

        def compute() -> Tensor:
            b = self.batch
            ax = physics.jet_axis(b.p4, batch=b.batch, num_jets=b.num_jets, kind=self.jet_axis)
            return ax[b.batch]

        return self.get("axis", compute)

    def eta(self) -> Tensor:
        return self.get("eta", lambda: physics.eta(self.p4))

    def phi(self) -> Tensor:
        return self.get("phi", lambda: physics.phi(self.p4))

    def pid(self) -> Tensor:
        for key in ("pid", "part_pid"):
            if key in self.inputs:
                return _as_pid(self.inputs[key])
        raise KeyError(
            "this variable needs the PDG id of each particle: pass inputs={'pid': tensor (P,)} "
            "or name the column of batch.x holding it with x_names=[..., 'pid', ...]"
        )

    def pid_table(self) -> Tensor:
        return self.get("pid_table", lambda: pid_features(self.pid(), dtype=self.p4.dtype))

    def input(self, name: str) -> Tensor:
        if name not in self.inputs:
            raise KeyError(
                f"this variable needs the per-particle input {name!r}: pass "
                f"inputs={{{name!r}: tensor (P,)}} or name it in x_names"
            )
        return self.inputs[name].to(self.p4.dtype)


def _deta(ctx: FeatureContext) -> Tensor:
    jet_eta = ctx.axis()[:, 0]
    sign = torch.where(jet_eta < 0, -torch.ones_like(jet_eta), torch.ones_like(jet_eta))
    return (ctx.eta() - jet_eta) * sign


def _dphi(ctx: FeatureContext) -> Tensor:
    return physics.delta_phi(ctx.phi(), ctx.axis()[:, 1])


def _pid_column(index: int) -> Callable[[FeatureContext], Tensor]:
    return lambda ctx: ctx.pid_table()[:, index]


def _weighted_flag(weights: Mapping[int, float]) -> Callable[[FeatureContext], Tensor]:
    def compute(ctx: FeatureContext) -> Tensor:
        aid = ctx.pid().abs()
        out = torch.zeros(aid.shape, dtype=ctx.p4.dtype, device=aid.device)
        for code, weight in weights.items():
            out = out + weight * (aid == code).to(out.dtype)
        return out

    return compute


_VARIABLES: dict[str, Callable[[FeatureContext], Tensor]] = {
    "part_energy": lambda c: c.p4[:, 0],
    "part_px": lambda c: c.p4[:, 1],
    "part_py": lambda c: c.p4[:, 2],
    "part_pz": lambda c: c.p4[:, 3],
    "part_pt": lambda c: physics.pt(c.p4),
    "part_eta": FeatureContext.eta,
    "part_phi": FeatureContext.phi,
    "part_mask": lambda c: torch.ones_like(c.p4[:, 0]),
    "part_pt_log": lambda c: torch.log(physics.pt(c.p4)),
    "part_e_log": lambda c: torch.log(c.p4[:, 0]),
    "part_logptrel": lambda c: torch.log(physics.pt(c.p4) / physics.pt(c.jet())),
    "part_logerel": lambda c: torch.log(c.p4[:, 0] / c.jet()[:, 0]),
    "part_deta": _deta,
    "part_etarel": lambda c: c.eta() - c.axis()[:, 0],
    "part_dphi": _dphi,
    "part_deltaR": lambda c: torch.hypot(_deta(c), _dphi(c)),
    "part_charge": _pid_column(0),
    "part_isChargedHadron": _pid_column(1),
    "part_isNeutralHadron": _pid_column(2),
    "part_isPhoton": _pid_column(3),
    "part_isElectron": _pid_column(4),
    "part_isMuon": _pid_column(5),
    "part_isCHad": _weighted_flag({211: 1.0, 321: 0.5, 2212: 0.2}),
    "part_isNHad": _weighted_flag({130: 1.0, 2112: 0.2}),
    "part_d0": lambda c: torch.tanh(c.input("part_d0val")),
    "part_dz": lambda c: torch.tanh(c.input("part_dzval")),
}


def available_variables() -> list[str]:
    """Names of the variables :func:`particle_features` computes (inputs add more)."""
    return sorted(_VARIABLES)


def _collect_inputs(
    batch: JetBatch, inputs: Mapping[str, Tensor] | None, x_names: Sequence[str] | None
) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    if x_names is not None:
        if batch.x is None or batch.x.shape[1] != len(x_names):
            found = "no x" if batch.x is None else f"x with {batch.x.shape[1]} columns"
            raise ValueError(
                f"x_names: names {len(x_names)} columns of batch.x ({list(x_names)}), "
                f"but the batch has {found}"
            )
        out.update({name: batch.x[:, i] for i, name in enumerate(x_names)})
    for name, value in (inputs or {}).items():
        value = torch.as_tensor(value, device=batch.device)
        if value.shape != (batch.num_particles,):
            raise ValueError(
                f"inputs[{name!r}]: expected one value per particle, shape "
                f"({batch.num_particles},), found {tuple(value.shape)}"
            )
        out[name] = value
    return out


def particle_features(
    batch: JetBatch,
    names: Sequence[str],
    *,
    inputs: Mapping[str, Tensor] | None = None,
    x_names: Sequence[str] | None = None,
    jet_axis: JetAxis = "p4",
) -> Tensor:
    """Evaluate per-particle variables by name (see the module table), ``(P, len(names))``.

    Args:
        batch: the jets.
        names: variable names, in column order.
        inputs: extra per-particle tensors ``(P,)`` by name: ``"pid"`` for the PID
            variables, ``"part_d0val"`` etc., or any variable to use as given.
        x_names: names of the columns of ``batch.x``, added to ``inputs``.
        jet_axis: ``"p4"`` (the summed four-momentum, as the reference converters) or
            ``"centroid"`` (:func:`jettag.physics.jet_axis`).

    Returns:
        ``(P, len(names))`` in the dtype of ``batch.p4``; no rows for empty jets.

    Raises:
        KeyError: an unknown name, or a variable whose input (e.g. ``pid``) is missing.
        ValueError: inputs of the wrong shape.
    """
    ctx = FeatureContext(batch, _collect_inputs(batch, inputs, x_names), jet_axis)
    columns = []
    for name in names:
        if name in ctx.inputs:
            columns.append(ctx.inputs[name].to(batch.dtype))
        elif name in _VARIABLES:
            columns.append(_VARIABLES[name](ctx).to(batch.dtype))
        else:
            raise KeyError(
                f"unknown per-particle variable {name!r}: not among the computed variables "
                f"({', '.join(available_variables())}) nor the inputs given "
                f"({', '.join(ctx.inputs) or 'none'})"
            )
    if not columns:
        return batch.p4.new_zeros(batch.num_particles, 0)
    return torch.stack(columns, dim=1)


def kinematic_features(batch: JetBatch, *, jet_axis: JetAxis = "p4") -> Tensor:
    """The ParticleNet / ParT kinematic features :data:`KINEMATIC_FEATURES`, ``(P, 7)``,
    untransformed (see :class:`Preprocessor` for the standardisation)."""
    return particle_features(batch, KINEMATIC_FEATURES, jet_axis=jet_axis)


# --------------------------------------------------------------------------------------
# Preprocessing declared in data cards
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VariableSpec:
    """Preprocessing of one variable, as a card declares it.

    ``centre=None`` passes the value through untouched (no scaling, no clipping); otherwise
    the value becomes ``clip((value - centre) * scale, clip[0], clip[1])`` (no clipping when
    ``clip`` is None). ``pad_value`` fills padding in ``constant`` pad mode.
    """

    name: str
    centre: float | None = None
    scale: float = 1.0
    clip: tuple[float, float] | None = (-5.0, 5.0)
    pad_value: float = 0.0

    @classmethod
    def from_card(cls, spec: Mapping[str, Any]) -> VariableSpec:
        clip = spec.get("clip", (-5.0, 5.0))
        return cls(
            name=spec["name"],
            centre=None if spec.get("centre") is None else float(spec["centre"]),
            scale=float(spec.get("scale", 1.0)),
            clip=None if clip is None else (float(clip[0]), float(clip[1])),
            pad_value=float(spec.get("pad_value", 0.0)),
        )


@dataclass(frozen=True)
class _Group:
    length: int
    pad_mode: str
    variables: tuple[VariableSpec, ...]


class Preprocessor:
    """Model inputs of a data card's feature set: variables, standardisation, padding.

    Built from a card (:meth:`from_card`) or from the feature-set mapping itself. Calling it
    on a batch gives each input group (``points``, ``features``, ``vectors``, ``mask`` for
    the ParticleNet / ParT cards) as packed ``(P, C)`` tensors; :meth:`padded` gives the
    fixed-length ``(B, N, C)`` arrays the reference models take, with the boolean mask.

    Args:
        spec: a feature set as in a card: ``{"jet_axis": ..., "groups": {name: {"length",
            "pad_mode", "vars": [{"name", "centre", "scale", "clip", "pad_value"}]}}}``.
        name: for messages and ``repr``.

    Example:
        >>> pre = Preprocessor.from_card("quark-gluon", "kinpid")
        >>> pre
        Preprocessor('quark-gluon:kinpid', points=2, features=13, vectors=4, mask=1; length 128)
    """

    def __init__(self, spec: Mapping[str, Any], *, name: str = "features") -> None:
        groups = spec.get("groups")
        if not isinstance(groups, Mapping) or not groups:
            raise ValueError(f"{name}: a feature set needs a non-empty 'groups' mapping")
        self.name = name
        self.jet_axis: JetAxis = spec.get("jet_axis", "p4")
        self.requires = tuple(spec.get("requires", ()))
        self.groups: dict[str, _Group] = {}
        for group_name, group in groups.items():
            if group.get("pad_mode") not in ("wrap", "constant"):
                raise ValueError(
                    f"{name}: group {group_name!r} pad_mode must be 'wrap' or 'constant', "
                    f"found {group.get('pad_mode')!r}"
                )
            self.groups[group_name] = _Group(
                length=int(group["length"]),
                pad_mode=group["pad_mode"],
                variables=tuple(VariableSpec.from_card(v) for v in group["vars"]),
            )

    @classmethod
    def from_card(cls, card: Any, feature_set: str | None = None) -> Preprocessor:
        """The preprocessor of ``feature_set`` (default: the card's default set).

        Args:
            card: a card name, a card YAML path or a :class:`~jettag.data.cards.DataCard`.
            feature_set: name of the set in the card's ``features.sets``.
        """
        from jettag.data.cards import DataCard, load_card

        if not isinstance(card, DataCard):
            card = load_card(card)
        key = feature_set or card.features["default"]
        return cls(card.feature_set(key), name=f"{card.name}:{key}")

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(g.variables)}" for k, g in self.groups.items())
        lengths = sorted({g.length for g in self.groups.values()})
        length = ", ".join(str(n) for n in lengths)
        return f"Preprocessor({self.name!r}, {sizes}; length {length})"

    def names(self, group: str) -> list[str]:
        """Variable names of ``group``, in column order."""
        return [v.name for v in self._group(group).variables]

    def _group(self, group: str) -> _Group:
        if group not in self.groups:
            raise KeyError(f"{self.name}: no input group {group!r}; groups: {list(self.groups)}")
        return self.groups[group]

    def transform(self, values: Tensor, group: str) -> Tensor:
        """Apply the declared standardisation to raw values ``(..., C)`` of ``group``."""
        specs = self._group(group).variables
        if values.shape[-1] != len(specs):
            raise ValueError(
                f"{self.name}: group {group!r} has {len(specs)} variables, values have "
                f"{values.shape[-1]} columns"
            )
        columns = []
        for i, spec in enumerate(specs):
            v = values[..., i]
            if spec.centre is not None:
                v = (v - spec.centre) * spec.scale
                if spec.clip is not None:
                    v = v.clamp(spec.clip[0], spec.clip[1])
            columns.append(v)
        return torch.stack(columns, dim=-1)

    def __call__(
        self,
        batch: JetBatch,
        *,
        inputs: Mapping[str, Tensor] | None = None,
        x_names: Sequence[str] | None = None,
    ) -> dict[str, Tensor]:
        """Packed, standardised inputs: ``{group: (P, C_group)}`` (no padding, no truncation).

        ``inputs`` and ``x_names`` as in :func:`particle_features`.
        """
        merged = _collect_inputs(batch, inputs, x_names)
        names = sorted({v.name for g in self.groups.values() for v in g.variables})
        raw = particle_features(batch, names, inputs=merged, jet_axis=self.jet_axis)
        column = {name: raw[:, i] for i, name in enumerate(names)}
        return {
            group_name: self.transform(
                torch.stack([column[v.name] for v in group.variables], dim=1)
                if group.variables
                else raw[:, :0],
                group_name,
            )
            for group_name, group in self.groups.items()
        }

    def padded(
        self,
        batch: JetBatch,
        *,
        inputs: Mapping[str, Tensor] | None = None,
        x_names: Sequence[str] | None = None,
        length: int | None = None,
        channels_first: bool = False,
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Fixed-length inputs as the reference models take them, and the particle mask.

        Each jet keeps its first ``length`` particles (in stored order, pT-ordered for the
        public datasets) and is padded to ``length``: ``constant`` groups with each
        variable's ``pad_value``, ``wrap`` groups by repeating the jet's own particles
        cyclically (empty jets get the pad values). weaver's original wrap padding filled
        the slots with particles of other jets of the batch; models mask the padding
        either way.

        Args:
            batch, inputs, x_names: as in :meth:`__call__`.
            length: padded length for every group (default: each group's declared length).
            channels_first: return ``(B, C, N)`` (weaver's layout) instead of ``(B, N, C)``.

        Returns:
            ``({group: (B, N, C)}, mask (B, N) bool)``, ``True`` = real particle (the mask
            of the first group's length when lengths differ).
        """
        packed = self(batch, inputs=inputs, x_names=x_names)
        out: dict[str, Tensor] = {}
        first_mask: Tensor | None = None
        for group_name, group in self.groups.items():
            n = group.length if length is None else int(length)
            values, mask = _pad(packed[group_name], batch, n, group)
            if first_mask is None:
                first_mask = mask
            out[group_name] = values.transpose(1, 2) if channels_first else values
        assert first_mask is not None
        return out, first_mask


def _pad(values: Tensor, batch: JetBatch, n: int, group: _Group) -> tuple[Tensor, Tensor]:
    """Truncate / pad packed ``values (P, C)`` to ``(B, n, C)``; returns values and mask."""
    counts = batch.counts
    positions = torch.arange(n, device=values.device)
    mask = positions < counts.unsqueeze(1)
    pad = torch.tensor(
        [v.pad_value for v in group.variables], dtype=values.dtype, device=values.device
    )
    out = pad.expand(batch.num_jets, n, len(group.variables)).clone()
    if group.pad_mode == "wrap":
        has = counts > 0
        cyc = positions.unsqueeze(0) % counts.clamp_min(1).unsqueeze(1)
        source = batch.ptr[:-1].unsqueeze(1) + cyc
        fill = has.unsqueeze(1).expand(-1, n)
    else:
        source = batch.ptr[:-1].unsqueeze(1) + positions.unsqueeze(0)
        fill = mask
    if values.shape[0] > 0:
        out[fill] = values[source[fill]]
    return out, mask


# --------------------------------------------------------------------------------------
# LorentzNet inputs
# --------------------------------------------------------------------------------------


def add_beams(batch: JetBatch, *, mass: float = 1.0, pz: float = 1.0) -> tuple[JetBatch, Tensor]:
    """Prepend two beam particles to every jet, as LorentzNet's top-tagging collate does.

    The beams are ``(sqrt(pz^2 + mass^2), 0, 0, +pz)`` then ``(sqrt(pz^2 + mass^2), 0, 0,
    -pz)``; with the defaults ``(sqrt 2, 0, 0, +-1)``. Rows of ``x`` for the beams are
    zero. Empty jets get the two beams only.

    Returns:
        ``(batch with B * 2 more particles, is_beam (P + 2B,) bool)``.
    """
    b = batch
    dtype, device = b.dtype, b.device
    energy = math.sqrt(pz * pz + mass * mass)
    beams = torch.tensor(
        [[energy, 0.0, 0.0, pz], [energy, 0.0, 0.0, -pz]], dtype=dtype, device=device
    )
    counts = b.counts + 2
    ptr = torch.zeros(b.num_jets + 1, dtype=torch.int64, device=device)
    torch.cumsum(counts, 0, out=ptr[1:])
    total = int(ptr[-1])
    is_beam = torch.zeros(total, dtype=torch.bool, device=device)
    starts = ptr[:-1]
    is_beam[starts] = True
    is_beam[starts + 1] = True
    p4 = b.p4.new_empty(total, 4)
    p4[is_beam] = beams.repeat(b.num_jets, 1)
    p4[~is_beam] = b.p4
    x = None
    if b.x is not None:
        x = b.x.new_zeros(total, b.x.shape[1])
        x[~is_beam] = b.x
    out = JetBatch(p4, ptr, x=x, label=b.label, fields=b.fields)
    return out, is_beam


def lorentznet_inputs(
    batch: JetBatch,
    *,
    scalars: Literal["mass", "pid"] = "mass",
    pid: Tensor | None = None,
    beams: bool | None = None,
    beam_mass: float = 1.0,
    unknown_pid: Literal["error", "zero"] = "error",
) -> JetBatch:
    """LorentzNet's inputs: four-momenta (possibly with beams) and node scalars as ``x``.

    - ``scalars="mass"`` (top tagging; beams by default): two beams prepended per jet
      (:func:`add_beams` with mass ``beam_mass``) and ``x = psi(one_hot(particle, beam) *
      m)`` with ``m = sqrt(|E^2 - p^2|)`` and :func:`jettag.nn.lorentz.psi`: column 0 is
      ``psi(m)`` for particles, column 1 ``psi(m)`` for beams (``log 2`` for the default
      unit-mass beams).
    - ``scalars="pid"`` (quark/gluon tagging; no beams): ``x`` = one-hot of ``|pid|`` over
      :data:`LORENTZNET_PIDS`, not passed through ``psi``.

    Momenta stay in GeV, as the published checkpoints expect.

    Args:
        batch: the jets (their ``x`` is replaced).
        scalars: ``"mass"`` or ``"pid"``.
        pid: ``(P,)`` PDG ids, required for ``scalars="pid"``.
        beams: prepend the beams (default: ``True`` for ``"mass"``, ``False`` for ``"pid"``).
        beam_mass: mass of the beam particles (their ``|pz|`` is 1).
        unknown_pid: as ``unknown`` of :func:`pid_one_hot`.

    Returns:
        A :class:`~jettag.data.JetBatch` with the LorentzNet four-momenta and ``x``.
    """
    if scalars == "mass":
        beams = True if beams is None else beams
        plain = JetBatch(batch.p4, batch.ptr, label=batch.label, fields=batch.fields)
        if beams:
            out, is_beam = add_beams(plain, mass=beam_mass)
        else:
            out = plain
            is_beam = torch.zeros(out.num_particles, dtype=torch.bool, device=out.device)
        m = physics.mass2(out.p4).abs().sqrt()
        one_hot = torch.stack([(~is_beam).to(m.dtype), is_beam.to(m.dtype)], dim=1)
        x = psi(one_hot * m.unsqueeze(1))
        return JetBatch(out.p4, out.ptr, x=x, label=out.label, fields=out.fields)
    if scalars == "pid":
        if beams:
            raise ValueError(
                "lorentznet_inputs: scalars='pid' has no scalars for beam particles; "
                "LorentzNet's quark/gluon inputs have no beams (pass beams=False)"
            )
        if pid is None:
            raise ValueError("lorentznet_inputs: scalars='pid' needs pid= (P,) PDG ids")
        if pid.shape != (batch.num_particles,):
            raise ValueError(
                f"lorentznet_inputs: pid must have shape ({batch.num_particles},), "
                f"found {tuple(pid.shape)}"
            )
        x = pid_one_hot(pid, unknown=unknown_pid, dtype=batch.dtype).to(batch.device)
        return JetBatch(batch.p4, batch.ptr, x=x, label=batch.label, fields=batch.fields)
    raise ValueError(f"lorentznet_inputs: scalars must be 'mass' or 'pid', found {scalars!r}")
