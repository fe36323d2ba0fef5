"""Export taggers to ONNX: padded inputs with dynamic numbers of jets and particles.

jettag's models run on packed jets (:class:`~jettag.data.JetBatch`), whose offsets and
neighbour lists have data-dependent sizes that a traced ONNX graph cannot hold. The
exported graph therefore takes the padded layout that inference engines use,

=============  =======================  ==================================================
input          shape, dtype             meaning
=============  =======================  ==================================================
``p4``         (jets, particles, 4) f   constituent four-momenta (E, px, py, pz) in GeV
``mask``       (jets, particles) bool   True = real particle (anywhere in the row)
``features``   (jets, particles, C) f   only when the tagger reads per-particle fields
                                        (``x_fields``, e.g. the PDG id), in that order
=============  =======================  ==================================================

and returns ``probabilities`` (jets, K) (softmax, classes in the order of the metadata;
NaN for a jet without particles). Values under ``mask == False`` are ignored. Both the
number of jets and the number of particles are dynamic axes.

Inside, the model runs a *padded compute path*: the same computation on ``(B, N, ...)``
tensors with the mask, never letting padding into a sum, a mean or a neighbour list. A
model provides it as a method ``forward_padded(p4, mask, x) -> logits``; for PFN, EFN and
ParticleNet(-Lite) this module provides it (:func:`padded_forward`). The input
preprocessing of the tagger (massless constituents, at most ``max_particles``) is part of
the graph.

The ONNX file carries in ``metadata_props`` the class names, the signal class, the input
conventions and units, the preprocessing, the architecture and configuration, the jettag
version and a summary of the model card (:func:`read_onnx_metadata`). After writing,
:func:`export_onnx` checks onnxruntime against PyTorch on jets of other multiplicities
and another batch size than the tracing example.

Example:
    >>> from jettag.hub import Tagger, export_onnx
    >>> tagger = Tagger.from_config("pfn")                         # doctest: +SKIP
    >>> export_onnx(tagger, "pfn.onnx")                            # doctest: +SKIP
    PosixPath('pfn.onnx')
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jettag import physics
from jettag._optional import require
from jettag._version import __version__
from jettag.hub.tagger import MOMENTUM_CONVENTION, Tagger, readable_mode

__all__ = [
    "DEFAULT_OPSET",
    "OnnxExportError",
    "PaddedTagger",
    "export_onnx",
    "padded_forward",
    "read_onnx_metadata",
]

#: ONNX opset of the exported graphs (CastLike needs 15; onnxruntime >= 1.12 runs 17).
DEFAULT_OPSET = 17
#: Prefix of jettag's keys in the ONNX ``metadata_props``.
METADATA_PREFIX = "jettag."

PaddedForward = Callable[[Tensor, Tensor, Tensor | None], Tensor]


class OnnxExportError(ValueError):
    """A tagger cannot be exported to ONNX, or the export does not reproduce PyTorch."""


# --------------------------------------------------------------------------------------
# Padded compute paths
# --------------------------------------------------------------------------------------


def _masked(values: Tensor, mask: Tensor) -> Tensor:
    """Zero ``values (B, N, ...)`` where ``mask (B, N)`` is False (NaN-safe)."""
    shape = mask.shape + (1,) * (values.dim() - mask.dim())
    return torch.where(mask.reshape(shape), values, torch.zeros_like(values))


def _energy_flow_inputs(inputs: nn.Module, p4: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """:class:`~jettag.models.deep_sets.EnergyFlowInputs` on padded jets: ``z (B, N)``,
    angles ``(B, N, 2)`` (zero at padding)."""
    pt = _masked(physics.pt(p4), mask)
    pt_sum = pt.sum(-1)
    has_pt = pt_sum > 0
    safe = torch.where(has_pt, pt_sum, torch.ones_like(pt_sum))
    z = torch.where(has_pt.unsqueeze(-1), pt / safe.unsqueeze(-1), torch.zeros_like(pt))
    rel = physics.relative_etaphi(p4, mask=mask, kind=inputs.axis)
    if inputs.coords == "etaphi":
        return z, rel
    y = physics.rapidity(p4)
    if inputs.axis == "p4":
        y_axis = physics.rapidity(physics.jet_p4(p4, mask=mask))
    else:
        y_axis = torch.where(has_pt, (pt * y).sum(-1) / safe, torch.zeros_like(safe))
    return z, _masked(torch.stack([y - y_axis.unsqueeze(-1), rel[..., 1]], dim=-1), mask)


def _pool(encoder: nn.Module, per_particle: Tensor, mask: Tensor) -> Tensor:
    """The pooling of :class:`~jettag.nn.DeepSetsEncoder` over real particles."""
    if encoder.aggr == "max":
        filled = per_particle.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)
        return torch.where(mask.any(1, keepdim=True), filled, torch.zeros_like(filled))
    total = _masked(per_particle, mask).sum(1)
    if encoder.aggr == "mean":
        return total / mask.sum(1, keepdim=True).clamp_min(1).to(total.dtype)
    return total


def _efn_padded(model: nn.Module) -> PaddedForward:
    def forward(p4: Tensor, mask: Tensor, x: Tensor | None) -> Tensor:
        z, angles = _energy_flow_inputs(model.inputs, p4, mask)
        encoder = model.encoder
        angles = torch.where((z != 0).unsqueeze(-1), angles, torch.zeros_like(angles))
        per_particle = encoder.phi(angles) * z.unsqueeze(-1)
        latent = _pool(encoder, per_particle, mask)
        return model.head(encoder.f(encoder.latent_dropout(latent)))

    return forward


def _pfn_padded(model: nn.Module) -> PaddedForward:
    inputs = model.inputs

    def forward(p4: Tensor, mask: Tensor, x: Tensor | None) -> Tensor:
        z, angles = _energy_flow_inputs(inputs.angular, p4, mask)
        columns = [z.unsqueeze(-1), angles]
        if inputs.pid is not None:
            if x is None or x.shape[-1] <= inputs.pid_column:
                raise OnnxExportError(
                    f"PFN with pid={inputs.pid!r} reads the PDG id from feature column "
                    f"{inputs.pid_column}; export the tagger with x_fields naming it"
                )
            pid = x[..., inputs.pid_column].round().to(torch.int64).unsqueeze(-1)
            match = pid == inputs.pid_ids
            if inputs.pid == "float":
                columns.append((match.to(p4.dtype) * inputs.pid_values.to(p4.dtype)).sum(
                    -1, keepdim=True))
            else:
                other = ~match.any(-1, keepdim=True)
                columns.append(torch.cat([match, other], dim=-1).to(p4.dtype))
        encoder = model.encoder
        latent = _pool(encoder, encoder.phi(torch.cat(columns, dim=-1)), mask)
        return model.head(encoder.f(encoder.latent_dropout(latent)))

    return forward


def _batch_norm(norm: nn.Module, values: Tensor) -> Tensor:
    """Evaluation-mode BatchNorm1d over the last dimension of ``values (..., C)``."""
    if norm.running_mean is None or norm.running_var is None:
        raise OnnxExportError(
            f"{norm!r} keeps no running statistics; a padded export needs evaluation-mode "
            "BatchNorm with track_running_stats=True"
        )
    flat = values.reshape(-1, values.shape[-1])
    out = F.batch_norm(flat, norm.running_mean, norm.running_var, norm.weight, norm.bias,
                       False, 0.0, norm.eps)
    return out.reshape(values.shape)


def _edge_conv_padded(conv: nn.Module, x: Tensor, pos: Tensor, mask: Tensor) -> Tensor:
    """:class:`~jettag.nn.edge_conv.EdgeConv` on padded jets ``(B, N, C)`` with a mask."""
    k = conv.k
    sq = (pos * pos).sum(-1)
    dist = (sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2 * pos @ pos.transpose(1, 2)).clamp_min(0)
    index = torch.arange(pos.shape[1], device=pos.device)
    blocked = (~mask).unsqueeze(1) | (index.unsqueeze(0) == index.unsqueeze(1)).unsqueeze(0)
    dist = dist.masked_fill(blocked, float("inf"))
    # k columns of infinity guarantee k candidates even in jets with fewer particles
    spare = torch.full_like(dist[..., :1], float("inf")).expand(-1, -1, k)
    values, neighbours = torch.topk(torch.cat([dist, spare], dim=-1), k, dim=-1, largest=False)
    valid = torch.isfinite(values)
    own_index = index.view(1, -1, 1).expand_as(neighbours)
    neighbours = torch.where(valid, neighbours, own_index)

    first = conv.linears[0].weight
    w_i, w_j = first[:, : conv.in_channels], first[:, conv.in_channels :]
    own = x @ (w_i - w_j).T
    other = x @ w_j.T
    channels = other.shape[-1]
    gathered = torch.gather(
        other, 1, neighbours.reshape(x.shape[0], -1, 1).expand(-1, -1, channels)
    ).reshape((*neighbours.shape, channels))
    h = own.unsqueeze(2) + gathered
    for i, norm in enumerate(conv.norms):
        if i > 0:
            h = conv.linears[i](h)
        h = torch.relu(_batch_norm(norm, h))
    weight = valid.unsqueeze(-1)
    if conv.aggr == "mean":
        count = valid.sum(-1, keepdim=True).clamp_min(1).to(h.dtype)
        messages = torch.where(weight, h, torch.zeros_like(h)).sum(2) / count
    else:
        filled = h.masked_fill(~weight, float("-inf")).amax(2)
        messages = torch.where(valid.any(-1, keepdim=True), filled, torch.zeros_like(filled))
    skip = x if conv.shortcut is None else _batch_norm(conv.shortcut_norm, conv.shortcut(x))
    return torch.relu(skip + messages)


def _preprocessor_padded(
    preprocessor: Any, p4: Tensor, mask: Tensor, x: Tensor | None, x_names: Any
) -> dict[str, Tensor]:
    """A data card :class:`~jettag.data.features.Preprocessor` on padded jets."""
    from jettag.data import features

    inputs: dict[str, Tensor] = {}
    if x_names:
        if x is None or x.shape[-1] != len(x_names):
            raise OnnxExportError(
                f"the inputs read {list(x_names)} from per-particle features; export the "
                "tagger with x_fields naming them"
            )
        flat_x = x.reshape(-1, x.shape[-1])
        inputs = {name: flat_x[:, i] for i, name in enumerate(x_names)}
    context = _PaddedFeatureContext(p4, mask, inputs, preprocessor.jet_axis)
    names = sorted({v.name for g in preprocessor.groups.values() for v in g.variables})
    raw = {}
    for name in names:
        if name in inputs:
            raw[name] = inputs[name].to(p4.dtype)
        else:
            raw[name] = features._VARIABLES[name](context).to(p4.dtype)
    out = {}
    for group_name, group in preprocessor.groups.items():
        stacked = torch.stack([raw[v.name] for v in group.variables], dim=-1)
        values = preprocessor.transform(stacked, group_name)
        out[group_name] = _masked(values.reshape((*p4.shape[:2], -1)), mask)
    return out


class _PaddedFeatureContext:
    """What the per-particle variables of :mod:`jettag.data.features` read, for padded jets.

    Variables are evaluated on all ``B * N`` slots (flattened); padding holds zero momenta,
    which change no jet sum or axis, and is masked out afterwards.
    """

    def __init__(self, p4: Tensor, mask: Tensor, inputs: dict[str, Tensor], jet_axis: str):
        from jettag.data.features import FeatureContext

        self._context_type = FeatureContext
        self._padded = p4
        self._mask = mask
        self.p4 = p4.reshape(-1, 4)
        self.inputs = inputs
        self.jet_axis = jet_axis
        self._cache: dict[str, Tensor] = {}

    def _per_slot(self, jet_values: Tensor) -> Tensor:
        expanded = jet_values.unsqueeze(1).expand(-1, self._padded.shape[1], -1)
        return expanded.reshape(-1, jet_values.shape[-1])

    def get(self, key: str, compute: Callable[[], Tensor]) -> Tensor:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def jet(self) -> Tensor:
        return self.get(
            "jet", lambda: self._per_slot(physics.jet_p4(self._padded, mask=self._mask))
        )

    def axis(self) -> Tensor:
        return self.get("axis", lambda: self._per_slot(
            physics.jet_axis(self._padded, mask=self._mask, kind=self.jet_axis)))

    def __getattr__(self, name: str) -> Any:
        # eta, phi, pid, pid_table, input: the packed context's own methods work on (P, ...)
        method = getattr(self.__dict__["_context_type"], name)
        return method.__get__(self)


def _particlenet_padded(model: nn.Module) -> PaddedForward:
    from jettag.models.particlenet import ParticleNetInputs

    inputs = model.inputs
    if not isinstance(inputs, ParticleNetInputs):
        raise OnnxExportError(
            f"ParticleNet with custom inputs {inputs!r} has no padded compute path; build it "
            "with inputs given as a data card feature set (e.g. 'top-tagging:kin')"
        )

    def forward(p4: Tensor, mask: Tensor, x: Tensor | None) -> Tensor:
        groups = _preprocessor_padded(inputs.preprocessor, p4, mask, x, inputs.x_names)
        h = groups["features"]
        if model.input_norm is not None:
            h = _masked(_batch_norm(model.input_norm, h), mask)
        pos = groups["points"]
        outputs = []
        for block in model.blocks:
            h = _masked(_edge_conv_padded(block, h, pos, mask), mask)
            pos = h
            outputs.append(h)
        if model.fusion is not None:
            linear, norm, _ = model.fusion
            h = _masked(torch.relu(_batch_norm(norm, linear(torch.cat(outputs, dim=-1)))), mask)
        count = mask.sum(1, keepdim=True).clamp_min(1).to(h.dtype)
        return model.head(h.sum(1) / count)

    return forward


def _sequential(layers: nn.Sequential, values: Tensor) -> Tensor:
    """An ``nn.Sequential`` on ``(..., C)`` tensors, BatchNorm layers in evaluation mode."""
    for layer in layers:
        values = _batch_norm(layer, values) if isinstance(layer, nn.BatchNorm1d) else layer(values)
    return values


def _lgeb_padded(
    block: nn.Module, h: Tensor, x: Tensor, nodes: Tensor, attr: Tensor | None
) -> tuple[Tensor, Tensor]:
    """:class:`~jettag.nn.lorentz.LGEB` on padded jets: every ordered pair of real nodes."""
    from jettag.nn.lorentz import psi

    index = torch.arange(h.shape[1], device=h.device)
    edges = nodes.unsqueeze(2) & nodes.unsqueeze(1) & (index.view(-1, 1) != index.view(1, -1))
    xi, xj = x.unsqueeze(2), x.unsqueeze(1)  # receiver i, sender j
    diff = xi - xj
    norm2 = diff[..., 0] ** 2 - (diff[..., 1:] ** 2).sum(-1)
    invariants = psi(torch.stack([norm2, physics.minkowski_dot(xi, xj)], dim=-1))
    size = h.shape[1]
    pairs = torch.cat([h.unsqueeze(2).expand(-1, -1, size, -1),
                       h.unsqueeze(1).expand(-1, size, -1, -1), invariants], dim=-1)
    m = _sequential(block.phi_e, pairs)
    m = _masked(m * block.phi_m(m), edges)
    if block.phi_x is not None:
        shift = (diff * block.phi_x(m)).clamp(-block.clamp, block.clamp)
        count = edges.sum(2, keepdim=True).clamp_min(1).to(x.dtype)
        x = x + block.c_weight * _masked(shift, edges).sum(2) / count
    parts = [h, m.sum(2)] + ([] if attr is None else [attr])
    return h + _sequential(block.phi_h, torch.cat(parts, dim=-1)), x


def _lorentznet_inputs_padded(
    inputs: nn.Module, p4: Tensor, mask: Tensor, x: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """:class:`~jettag.models.lorentznet.LorentzNetInputs` on padded jets: node scalars,
    four-vectors and node mask, beams first."""
    from jettag.data import JetBatch
    from jettag.data.features import add_beams, pid_one_hot
    from jettag.models.lorentznet import _with_pdg_masses
    from jettag.nn.lorentz import psi

    pid = None
    needs_pid = inputs.scalars == "pid" or inputs.pdg_masses
    if (needs_pid or inputs.scalars == "x") and (
        x is None or (needs_pid and x.shape[-1] <= inputs.pid_column)
    ):
        raise OnnxExportError(
            f"LorentzNet inputs {inputs!r} read per-particle features (the PDG id from column "
            f"{inputs.pid_column}); export the tagger with x_fields naming them"
        )
    if needs_pid:
        assert x is not None
        pid = x[..., inputs.pid_column].round().to(torch.int64)
    if inputs.pdg_masses:
        assert pid is not None
        p4 = _masked(_with_pdg_masses(p4.reshape(-1, 4), pid.reshape(-1)).reshape(p4.shape),
                     mask)
    if inputs.scalars == "x":
        assert x is not None
        scalars = x
    elif inputs.scalars == "pid":
        scalars = pid_one_hot(pid, unknown="zero", dtype=p4.dtype)
    else:
        mass = physics.mass2(p4).abs().sqrt()
        scalars = psi(torch.stack([mass, torch.zeros_like(mass)], dim=-1))
    scalars = _masked(scalars, mask)
    if not inputs.beams:
        return scalars, p4, mask
    # the beams exactly as add_beams makes them, as constants of the graph
    beams, _ = add_beams(JetBatch.from_counts(torch.zeros(0, 4, dtype=p4.dtype), [0]))
    beam_p4 = beams.p4.to(p4.device).unsqueeze(0).expand(p4.shape[0], -1, -1)
    if inputs.scalars == "mass":
        beam_mass = physics.mass2(beam_p4).abs().sqrt()
        beam_scalars = psi(torch.stack([torch.zeros_like(beam_mass), beam_mass], dim=-1))
    else:
        beam_scalars = torch.zeros_like(scalars[:, :2])
    beam_nodes = torch.ones_like(mask[:, :2])
    return (torch.cat([beam_scalars, scalars], dim=1), torch.cat([beam_p4, p4], dim=1),
            torch.cat([beam_nodes, mask], dim=1))


def _lorentznet_padded(model: nn.Module) -> PaddedForward:
    from jettag.models.lorentznet import LorentzNetInputs

    inputs = model.inputs
    if not isinstance(inputs, LorentzNetInputs):
        raise OnnxExportError(
            f"LorentzNet with custom inputs {inputs!r} has no padded compute path"
        )

    def forward(p4: Tensor, mask: Tensor, x: Tensor | None) -> Tensor:
        scalars, vectors, nodes = _lorentznet_inputs_padded(inputs, p4, mask, x)
        h = model.embedding(scalars)
        for block in model.blocks:
            attr = scalars if block.attr_channels > 0 else None
            h, vectors = _lgeb_padded(block, h, vectors, nodes, attr)
        pooled = _masked(h, nodes).sum(1)
        if model.readout == "padded_mean":
            longest = mask.sum(1).max()
            if model.pad_to is not None:
                longest = longest.clamp_min(model.pad_to)
            extra = nodes.shape[1] - mask.shape[1]
            divisor = (longest + extra).clamp_min(1).to(h.dtype)
        else:
            divisor = nodes.sum(1, keepdim=True).clamp_min(1).to(h.dtype)
        return model.decoder(pooled / divisor)

    return forward


def padded_forward(model: nn.Module) -> PaddedForward:
    """The padded compute path of ``model``: ``f(p4 (B,N,4), mask (B,N), x (B,N,C) | None)
    -> logits (B, K)``, equal to ``model(JetBatch.from_padded(p4, mask, x=x))``.

    A model's own ``forward_padded`` method comes first; PFN, EFN, ParticleNet(-Lite) and
    LorentzNet get theirs from this module.

    Raises:
        OnnxExportError: the model has none.
    """
    own = getattr(model, "forward_padded", None)
    if callable(own):
        return own
    from jettag.models.deep_sets import EFN, PFN
    from jettag.models.lorentznet import LorentzNet
    from jettag.models.particlenet import ParticleNet

    builders: dict[type, Callable[[nn.Module], PaddedForward]] = {
        EFN: _efn_padded,
        PFN: _pfn_padded,
        ParticleNet: _particlenet_padded,
        LorentzNet: _lorentznet_padded,
    }
    for cls, builder in builders.items():
        if type(model) is cls:
            return builder(model)
    raise OnnxExportError(
        f"{type(model).__name__} has no padded compute path, which ONNX export needs (packed "
        "jets have data-dependent sizes that a traced graph cannot hold). Give the model a "
        "method forward_padded(p4 (B, N, 4), mask (B, N), x (B, N, C) or None) -> logits "
        f"(B, K) that masks the padding; available for: {sorted(c.__name__ for c in builders)}"
    )


class PaddedTagger(nn.Module):
    """A :class:`~jettag.hub.Tagger` on padded jets: what :func:`export_onnx` traces.

    ``forward(p4 (B, N, 4), mask (B, N) bool[, features (B, N, C)]) -> probabilities
    (B, K)``: values under ``mask == False`` are ignored; the tagger's input preprocessing
    is applied; jets without particles get NaN.

    Args:
        tagger: the tagger.
    """

    def __init__(self, tagger: Tagger) -> None:
        super().__init__()
        self.tagger = tagger
        self._compute = padded_forward(tagger.model)

    def forward(self, p4: Tensor, mask: Tensor, features: Tensor | None = None) -> Tensor:
        mask = mask.to(torch.bool)
        p4 = _masked(p4, mask)
        x = None if features is None else _masked(features.to(p4.dtype), mask)
        inputs = self.tagger.inputs
        if inputs.massless:
            p4 = torch.cat([torch.linalg.vector_norm(p4[..., 1:], dim=-1, keepdim=True),
                            p4[..., 1:]], dim=-1)
        if inputs.max_particles is not None:
            pt = torch.where(mask, physics.pt(p4), torch.full_like(p4[..., 0], -1.0))
            # rank by decreasing pT within the jet, ties to the first stored (as Tagger.prepare)
            index = torch.arange(pt.shape[1], device=pt.device)
            other, own = pt.unsqueeze(1), pt.unsqueeze(2)
            earlier = index.view(1, 1, -1) < index.view(1, -1, 1)
            rank = ((other > own) | ((other == own) & earlier)).sum(-1)
            mask = mask & (rank < inputs.max_particles)
            p4 = _masked(p4, mask)
        logits = self._compute(p4, mask, x)
        probabilities = torch.softmax(logits, dim=-1)
        empty = ~mask.any(dim=1, keepdim=True)
        return torch.where(empty, torch.full_like(probabilities, float("nan")), probabilities)


# --------------------------------------------------------------------------------------
# ONNX symbolics for the elementwise ops of jettag.physics
# --------------------------------------------------------------------------------------


def _hypot(g: Any, a: Any, b: Any) -> Any:
    return g.op("Sqrt", g.op("Add", g.op("Mul", a, a), g.op("Mul", b, b)))


def _unary(op: str) -> Callable[[Any, Any], Any]:
    def symbolic(g: Any, a: Any) -> Any:
        return g.op(op, a)

    return symbolic


def _constant(g: Any, value: float, like: Any) -> Any:
    return g.op("CastLike", g.op("Constant", value_t=torch.tensor(value)), like)


def _copysign(g: Any, a: Any, b: Any) -> Any:
    magnitude = g.op("Abs", a)
    negative = g.op("Less", b, _constant(g, 0.0, b))
    return g.op("Where", negative, g.op("Neg", magnitude), magnitude)


def _atan2(g: Any, y: Any, x: Any) -> Any:
    # torch's own conversion divides y / x first and gives NaN at x = y = 0 (zero padding),
    # where torch.atan2 gives 0
    zero = _constant(g, 0.0, x)
    pi = _constant(g, float(np.pi), x)
    on_axis = g.op("Equal", x, zero)
    safe_x = g.op("Where", on_axis, _constant(g, 1.0, x), x)
    base = g.op("Atan", g.op("Div", y, safe_x))
    turn = g.op("Where", g.op("Less", y, zero), g.op("Neg", pi), pi)
    shifted = g.op("Where", g.op("Less", x, zero), g.op("Add", base, turn), base)
    vertical = g.op("Mul", g.op("Sign", y), _constant(g, float(np.pi / 2), x))
    return g.op("Where", on_axis, vertical, shifted)


_SYMBOLICS = {
    "aten::hypot": _hypot,
    "aten::asinh": _unary("Asinh"),
    "aten::sinh": _unary("Sinh"),
    "aten::cosh": _unary("Cosh"),
    "aten::copysign": _copysign,
    "aten::atan2": _atan2,
}


@contextlib.contextmanager
def _physics_symbolics(opset: int) -> Iterator[None]:
    """Register ONNX conversions of hypot, asinh, sinh, cosh, copysign and a zero-safe atan2
    for the duration of an export."""
    for name, fn in _SYMBOLICS.items():
        torch.onnx.register_custom_op_symbolic(name, fn, opset)
    try:
        yield
    finally:
        for name in _SYMBOLICS:
            with contextlib.suppress(Exception):
                torch.onnx.unregister_custom_op_symbolic(name, opset)


# --------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------


def _example(tagger: Tagger, num_jets: int, num_particles: int, seed: int
             ) -> tuple[Tensor, Tensor, Tensor | None]:
    """Padded jets of varied multiplicity (one of them empty) to trace and verify with."""
    from jettag.testing import random_jets

    padded = random_jets(num_jets, num_particles, generator=seed, min_particles=1,
                         dtype=tagger.dtype)
    p4, mask = padded.p4, padded.mask.clone()
    mask[-1] = False  # an empty jet
    features = None
    if tagger.inputs.x_fields:
        generator = torch.Generator().manual_seed(seed)
        ids = torch.tensor([22.0, 211.0, -211.0, 130.0, 2112.0, 321.0, 11.0, 13.0])
        pick = torch.randint(len(ids), p4.shape[:2], generator=generator)
        columns = [
            ids[pick] if "pid" in name else torch.randn(p4.shape[:2], generator=generator)
            for name in tagger.inputs.x_fields
        ]
        features = torch.stack(columns, dim=-1).to(tagger.dtype)
    return p4, mask, features


def _op_name(err: BaseException) -> str | None:
    match = re.search(r"operator '([\w:.]+)'", str(err)) or re.search(r"(aten::\w+)", str(err))
    return match.group(1) if match else None


def _summary(tagger: Tagger) -> dict[str, Any]:
    card = tagger.card
    keys = ("title", "summary", "intended_use", "limitations")
    out: dict[str, Any] = {k: card[k] for k in keys if k in card}
    training = card.get("training")
    if isinstance(training, Mapping):
        out["training"] = {k: training[k] for k in ("data", "size") if k in training}
    evaluation = card.get("evaluation")
    if isinstance(evaluation, Mapping):
        out["evaluation"] = {
            k: evaluation[k] for k in ("data", "split", "size", "metrics") if k in evaluation
        }
    return out


def onnx_metadata(tagger: Tagger, *, opset: int = DEFAULT_OPSET) -> dict[str, str]:
    """The ``metadata_props`` written into the ONNX file (all values strings)."""
    dtype = str(tagger.dtype).removeprefix("torch.")
    inputs: dict[str, Any] = {
        "p4": {"shape": ["jets", "particles", 4], "dtype": dtype,
               "description": "constituent four-momenta (E, px, py, pz)", "unit": "GeV"},
        "mask": {"shape": ["jets", "particles"], "dtype": "bool",
                 "description": "True = real particle; values under False are ignored"},
    }
    if tagger.inputs.x_fields:
        inputs["features"] = {
            "shape": ["jets", "particles", len(tagger.inputs.x_fields)],
            "dtype": dtype,
            "columns": list(tagger.inputs.x_fields),
            "description": "per-particle fields of the canonical layout, in this order",
        }
    values: dict[str, Any] = {
        "format": "jettag-onnx-tagger/1",
        "version": __version__,
        "name": tagger.name,
        "architecture": tagger.architecture or type(tagger.model).__name__,
        "config": tagger.config,
        "class_names": list(tagger.class_names),
        "signal": tagger.signal_name,
        "inputs": inputs,
        "input_convention": MOMENTUM_CONVENTION,
        "units": "GeV",
        "preprocessing": tagger.inputs.to_dict(),
        "output": {
            "name": "probabilities",
            "shape": ["jets", tagger.num_classes],
            "description": "softmax probabilities in class_names order; NaN for a jet "
                           "without particles",
        },
        "opset": opset,
        "card": _summary(tagger),
    }
    return {METADATA_PREFIX + k: v if isinstance(v, str) else json.dumps(v)
            for k, v in values.items()}


def read_onnx_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """jettag's metadata of an exported ONNX file (JSON values decoded), keys without prefix."""
    onnx = require("onnx", "onnx", feature="reading ONNX metadata")
    model = onnx.load(str(path), load_external_data=False)
    out: dict[str, Any] = {}
    for prop in model.metadata_props:
        if not prop.key.startswith(METADATA_PREFIX):
            continue
        key = prop.key.removeprefix(METADATA_PREFIX)
        try:
            out[key] = json.loads(prop.value)
        except json.JSONDecodeError:
            out[key] = prop.value
    return out


def export_onnx(
    tagger: Tagger,
    path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
    verify: bool = True,
    atol: float = 1e-4,
) -> Path:
    """Export a tagger to ONNX with dynamic numbers of jets and particles.

    Args:
        tagger: the tagger (its model needs a padded compute path, see
            :func:`padded_forward`).
        path: the ``.onnx`` file; written under a temporary name and renamed into place.
        opset: ONNX opset (at least 15).
        overwrite: replace an existing file.
        verify: run the file with onnxruntime on jets of other multiplicities and another
            batch size than the tracing example and compare with PyTorch.
        atol: largest absolute difference of probabilities accepted by ``verify``.

    Returns:
        ``path``.

    Raises:
        OnnxExportError: no padded compute path, an operator without ONNX conversion
            (named), or onnxruntime disagreeing with PyTorch.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    onnx = require("onnx", "onnx", feature="ONNX export")
    path = Path(path).expanduser()
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists (pass overwrite=True / --overwrite to replace it)")
    if opset < 15:
        raise ValueError(f"opset: expected 15 or later, found {opset}")
    device = tagger.device
    tagger = tagger.to("cpu").eval()
    wrapper = PaddedTagger(tagger).eval()
    p4, mask, features = _example(tagger, 3, 6, seed=0)
    args: tuple[Tensor, ...] = (p4, mask) if features is None else (p4, mask, features)
    names = ["p4", "mask"] + ([] if features is None else ["features"])
    dynamic = {name: {0: "jets", 1: "particles"} for name in names}
    dynamic["probabilities"] = {0: "jets"}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, readable_mode())
    try:
        with torch.no_grad(), _physics_symbolics(opset), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            try:
                torch.onnx.export(
                    wrapper, args, str(tmp), dynamo=False, opset_version=opset,
                    input_names=names, output_names=["probabilities"], dynamic_axes=dynamic,
                    do_constant_folding=True,
                )
            except OnnxExportError:
                raise
            except Exception as err:
                op = _op_name(err)
                what = f"the operator {op} has no ONNX conversion" if op else str(err).strip()
                raise OnnxExportError(
                    f"cannot export tagger {tagger.name!r} ({type(tagger.model).__name__}) to "
                    f"ONNX opset {opset}: {what.splitlines()[0]}. Try another opset (--opset), "
                    "or give the model a forward_padded path without it"
                ) from None
        model = onnx.load(str(tmp))
        model.producer_name = "jettag"
        model.producer_version = __version__
        model.doc_string = (
            f"jettag tagger {tagger.name!r}: inputs p4 (jets, particles, 4) (E, px, py, pz) "
            f"in GeV, mask (jets, particles) bool"
            + (", features (jets, particles, C)" if features is not None else "")
            + f"; output probabilities (jets, {tagger.num_classes}) over "
            f"{list(tagger.class_names)}"
        )
        for key, value in onnx_metadata(tagger, opset=opset).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))
        if verify:
            _verify(tagger, tmp, atol)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path}: appeared during the export; not replaced")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        tagger.to(device)
    return path


def _verify(tagger: Tagger, path: Path, atol: float) -> None:
    """onnxruntime against PyTorch on 7 jets of up to 11 particles (the trace had 3 x 6)."""
    ort = require("onnxruntime", "onnx", feature="verifying the ONNX export")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    p4, mask, features = _example(tagger, 7, 11, seed=1)
    feed = {"p4": p4.numpy(), "mask": mask.numpy()}
    if features is not None:
        feed["features"] = features.numpy()
    (found,) = session.run(["probabilities"], feed)
    expected = tagger.predict(p4, mask=mask, features=features, device="cpu").probabilities
    if found.shape != expected.shape or not np.array_equal(np.isnan(found), np.isnan(expected)):
        raise OnnxExportError(
            f"{path}: onnxruntime gives shape {found.shape} (NaN rows "
            f"{np.isnan(found).any(1).tolist()}), PyTorch {expected.shape} (NaN rows "
            f"{np.isnan(expected).any(1).tolist()}) on jets of another size than the tracing "
            "example"
        )
    deviation = float(np.nanmax(np.abs(found - expected))) if found.size else 0.0
    if not deviation <= atol:
        raise OnnxExportError(
            f"{path}: onnxruntime and PyTorch differ by up to {deviation:.3g} (tolerance "
            f"{atol:g}) on jets of another size than the tracing example; the padded compute "
            "path depends on the padded length or lets padding in"
        )
