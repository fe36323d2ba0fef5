"""Infrared and collinear safety: soft or zero-momentum emissions and exact collinear splits."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from jettag import physics
from jettag.testing._common import (
    Jets,
    Outputs,
    SymmetryReport,
    Tracker,
    check_trials,
    make_generator,
    parse_jets,
    rebuild,
    tolerances,
)

__all__ = ["assert_collinear_safe", "assert_ir_safe"]


def assert_ir_safe(
    fn: Callable[..., Any],
    inputs: Any,
    *,
    x: Tensor | None = None,
    mask: Tensor | None = None,
    n_trials: int = 4,
    soft_scale: float = 1e-9,
    max_soft: int = 3,
    radius: float = 0.8,
    zero_momentum: bool = True,
    rtol: float | None = None,
    atol: float | None = None,
    generator: torch.Generator | int | None = None,
    dtype: torch.dtype | None = torch.float64,
) -> SymmetryReport:
    """Assert infrared safety: adding soft particles changes no output beyond tolerance.

    Each trial adds the same number (1 to ``max_soft``) of massless particles to every jet,
    at random angles: uniformly in a disc of ``radius`` in (eta, phi) around the direction
    of the jet momentum. In soft trials each carries an energy ``soft_scale`` times the jet
    energy (times a random factor in [0.5, 1.5]); with ``zero_momentum`` every second trial
    adds exact zero four-vectors instead (no angle at all: a model must not produce NaN for
    them). New particles are placed after each jet's real particles (padded jets are
    re-packed with real particles first) and get the features ``x`` of a random particle of
    the same jet. An IR-safe output changes by O(``soft_scale``); a multiplicity-like output
    changes by O(1).

    Only jet-level outputs are compared (per-particle outputs change length): padded
    outputs ``(..., *)`` that keep their shape, JetBatch outputs with one row per jet.

    Args:
        fn: the function or model under test, called as described in :mod:`jettag.testing`.
        inputs: four-vectors ``p4 (..., N, 4)`` or a ``JetBatch``.
        x, mask: per-particle features and mask for padded ``p4``; without a mask every jet
            gets the same number of new particles, so no mask is needed.
        n_trials: number of random additions.
        soft_scale: energy of a soft particle relative to its jet's energy.
        max_soft: largest number of particles added per jet.
        radius: angular spread of the added particles around the jet direction.
        zero_momentum: also test exact zero-momentum particles (every second trial).
        rtol, atol: tolerances; defaults from :func:`default_tolerance` of the run dtype.
        generator: a ``torch.Generator``, an int seed, or None (seed 0).
        dtype: the dtype ``fn`` runs in; None keeps the inputs' dtype.

    Returns:
        A :class:`SymmetryReport` of the worst deviation.

    Raises:
        AssertionError: if an output element deviates by more than ``atol + rtol*|expected|``.

    Example:
        >>> from jettag import physics
        >>> from jettag.testing import assert_ir_safe, random_jets
        >>> jets = random_jets(4, 10, generator=1)
        >>> jet_mass = lambda p4, mask: physics.mass(physics.jet_p4(p4, mask=mask))
        >>> report = assert_ir_safe(jet_mass, jets.p4, mask=jets.mask)
    """
    __tracebackhide__ = True
    helper = "assert_ir_safe"
    check_trials(n_trials)
    if max_soft < 1:
        raise ValueError(f"{helper}: max_soft must be >= 1, found {max_soft}")
    if not soft_scale >= 0 or not radius >= 0:
        raise ValueError(
            f"{helper}: expected soft_scale >= 0 and radius >= 0, found {soft_scale}, {radius}"
        )
    gen = make_generator(generator)
    jets = parse_jets(fn, inputs, x, mask, dtype, helper=helper)
    rtol, atol = tolerances(rtol, atol, jets.run_dtype)
    tracker = Tracker("IR safety", rtol, atol, n_trials)
    reference = jets.call()
    p4, x_packed, ptr = _packed(jets)
    counts = ptr.diff()
    n_jets = counts.shape[0]
    jet = physics.jet_p4(p4, batch=_jet_index(ptr), num_jets=n_jets)
    jet_eta, jet_phi = physics.eta(jet), physics.phi(jet)

    def draw(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=gen, dtype=torch.float64).to(p4.device)

    for trial in range(n_trials):
        k = int(torch.randint(1, max_soft + 1, (1,), generator=gen))
        zero = zero_momentum and trial % 2 == 1
        r, turn = radius * draw(n_jets, k).sqrt(), 2 * math.pi * draw(n_jets, k)
        eta = jet_eta[:, None] + r * torch.cos(turn)
        phi = jet_phi[:, None] + r * torch.sin(turn)
        energy = soft_scale * jet[:, None, 0] * (0.5 + draw(n_jets, k))
        soft = physics.from_ptetaphim(energy / torch.cosh(eta), eta, phi, torch.zeros_like(eta))
        if zero:
            soft = torch.zeros_like(soft)
        new_x = None
        if x_packed is not None:
            donor = ptr[:-1, None] + (draw(n_jets, k) * counts[:, None]).long()
            has = (counts > 0)[:, None].expand(n_jets, k)
            new_x = torch.zeros(n_jets, k, x_packed.shape[1], dtype=x_packed.dtype,
                                device=p4.device)
            new_x[has] = x_packed[donor[has]]
            new_x = new_x.reshape(n_jets * k, -1)
        new_counts = torch.full_like(counts, k)
        plural = "s" if k > 1 else ""
        what = (
            f"{k} zero-momentum particle{plural} added to every jet" if zero else
            f"{k} soft particle{plural} (energy {soft_scale:g} x jet energy) added to every "
            f"jet within {radius:g} of its axis"
        )
        merged = _append(p4, x_packed, ptr, soft.reshape(-1, 4), new_x, new_counts)
        got = _call_packed(jets, *merged)
        _compare(tracker, jets, got, reference, trial, lambda jet, what=what: what, helper)
    return tracker.finish()


def assert_collinear_safe(
    fn: Callable[..., Any],
    inputs: Any,
    *,
    x: Tensor | None = None,
    mask: Tensor | None = None,
    n_trials: int = 4,
    max_pieces: int = 3,
    rtol: float | None = None,
    atol: float | None = None,
    generator: torch.Generator | int | None = None,
    dtype: torch.dtype | None = torch.float64,
) -> SymmetryReport:
    """Assert collinear safety: splitting a particle into collinear pieces changes nothing.

    Each trial picks one random particle in every non-empty jet and splits it into ``k``
    pieces (``k`` from 2 to ``max_pieces``, the same for all jets) with random momentum
    fractions ``f_i`` summing to one: piece ``i`` is ``f_i p``, the whole four-vector scaled,
    so the pieces are exactly collinear, energy and momentum are conserved and each piece
    has mass ``f_i m``. The first piece replaces the particle; the others follow the jet's
    real particles and carry its features ``x``.

    Only jet-level outputs are compared, as in :func:`assert_ir_safe`.

    Args:
        fn: the function or model under test, called as described in :mod:`jettag.testing`.
        inputs: four-vectors ``p4 (..., N, 4)`` or a ``JetBatch``.
        x, mask: per-particle features and mask for padded ``p4``.
        n_trials: number of random splits.
        max_pieces: largest number of pieces a particle is split into (>= 2).
        rtol, atol: tolerances; defaults from :func:`default_tolerance` of the run dtype.
        generator: a ``torch.Generator``, an int seed, or None (seed 0).
        dtype: the dtype ``fn`` runs in; None keeps the inputs' dtype.

    Returns:
        A :class:`SymmetryReport` of the worst deviation.

    Raises:
        AssertionError: if an output element deviates by more than ``atol + rtol*|expected|``.

    Example:
        >>> from jettag import physics
        >>> from jettag.testing import assert_collinear_safe, random_jets
        >>> jets = random_jets(4, 10, generator=1, massive=True)
        >>> jet_mass = lambda p4, mask: physics.mass(physics.jet_p4(p4, mask=mask))
        >>> report = assert_collinear_safe(jet_mass, jets.p4, mask=jets.mask)
    """
    __tracebackhide__ = True
    helper = "assert_collinear_safe"
    check_trials(n_trials)
    if max_pieces < 2:
        raise ValueError(f"{helper}: max_pieces must be >= 2, found {max_pieces}")
    gen = make_generator(generator)
    jets = parse_jets(fn, inputs, x, mask, dtype, helper=helper)
    rtol, atol = tolerances(rtol, atol, jets.run_dtype)
    tracker = Tracker("Collinear safety", rtol, atol, n_trials)
    reference = jets.call()
    p4, x_packed, ptr = _packed(jets)
    counts = ptr.diff()
    has = counts > 0
    for trial in range(n_trials):
        k = int(torch.randint(2, max_pieces + 1, (1,), generator=gen))
        pick = torch.rand(counts.shape, generator=gen, dtype=torch.float64).to(p4.device)
        parent = (ptr[:-1] + (pick * counts).long())[has]
        weights = torch.empty(int(has.sum()), k, dtype=torch.float64).exponential_(
            generator=gen
        ).to(p4.device)
        fractions = weights / weights.sum(-1, keepdim=True)
        split = p4.clone()
        split[parent] = fractions[:, :1] * p4[parent]
        pieces = (fractions[:, 1:, None] * p4[parent][:, None, :]).reshape(-1, 4)
        new_x = None
        if x_packed is not None:
            new_x = x_packed[parent].repeat_interleave(k - 1, dim=0)
        merged = _append(split, x_packed, ptr, pieces, new_x, has.long() * (k - 1))
        got = _call_packed(jets, *merged)
        describe = _describe_split(k, parent.cpu(), ptr.cpu(), fractions.cpu(), has.cpu())
        _compare(tracker, jets, got, reference, trial, describe, helper)
    return tracker.finish()


def _describe_split(
    k: int, parent: Tensor, ptr: Tensor, fractions: Tensor, has: Tensor
) -> Callable[[int | None], str]:
    row = torch.cumsum(has.long(), 0) - 1  # row of each non-empty jet in parent/fractions

    def describe(jet: int | None) -> str:
        text = f"one random particle of every jet split into {k} collinear pieces"
        if jet is None or not bool(has[jet]):
            return text
        r = int(row[jet])
        frac = ", ".join(f"{float(f):.3f}" for f in fractions[r])
        return f"{text}; in jet {jet}: particle {int(parent[r] - ptr[jet])}, fractions {frac}"

    return describe


def _jet_index(ptr: Tensor) -> Tensor:
    counts = ptr.diff()
    return torch.repeat_interleave(torch.arange(counts.shape[0], device=ptr.device), counts)


def _packed(jets: Jets) -> tuple[Tensor, Tensor | None, Tensor]:
    """Packed ``(p4 (P, 4), x (P, C) float64 or None, ptr (B + 1,))`` of the jets under test;
    padded jets are flattened to one jet dimension."""
    if jets.batch is not None:
        return jets.batch.p4, jets.batch.x, jets.batch.ptr
    from jettag.data.batch import JetBatch

    assert jets.p4 is not None
    n = jets.p4.shape[-2]
    x = None if jets.x is None else jets.x.reshape(-1, n, jets.x.shape[-1]).to(torch.float64)
    packed = JetBatch.from_padded(jets.p4.reshape(-1, n, 4), jets.real().reshape(-1, n), x=x)
    return packed.p4, packed.x, packed.ptr


def _append(
    p4: Tensor, x: Tensor | None, ptr: Tensor, new_p4: Tensor, new_x: Tensor | None,
    new_counts: Tensor,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Insert ``new_counts[b]`` new particles (packed jet by jet) after the particles of jet b."""
    counts = ptr.diff()
    total = counts + new_counts
    out_ptr = torch.zeros_like(ptr)
    torch.cumsum(total, 0, out=out_ptr[1:])
    old_jet, new_jet = _jet_index(ptr), _jet_index(torch.cat([ptr[:1], new_counts.cumsum(0)]))
    new_start = new_counts.cumsum(0) - new_counts
    old_dest = out_ptr[:-1][old_jet] + torch.arange(p4.shape[0], device=p4.device) - ptr[:-1][
        old_jet
    ]
    new_dest = (
        out_ptr[:-1][new_jet] + counts[new_jet]
        + torch.arange(new_p4.shape[0], device=p4.device) - new_start[new_jet]
    )
    out_p4 = p4.new_empty(int(out_ptr[-1]), 4)
    out_p4[old_dest], out_p4[new_dest] = p4, new_p4
    out_x = None
    if x is not None:
        assert new_x is not None
        out_x = x.new_empty(int(out_ptr[-1]), x.shape[1])
        out_x[old_dest], out_x[new_dest] = x, new_x
    return out_p4, out_x, out_ptr


def _call_packed(jets: Jets, p4: Tensor, x: Tensor | None, ptr: Tensor) -> Outputs:
    """Call ``fn`` on modified packed jets, in the layout of the jets under test."""
    if jets.batch is not None:
        return jets.call_batch(rebuild(jets.batch, p4=p4, x=x, ptr=ptr))
    from jettag.data.batch import JetBatch

    assert jets.p4 is not None
    shape, n = jets.jet_shape, jets.p4.shape[-2]
    longest = int(ptr.diff().max()) if ptr.shape[0] > 1 else 0
    p4_pad, x_pad, mask = JetBatch(p4, ptr, x=x).to_padded(max(n, longest))
    width = p4_pad.shape[1]
    p4_pad = p4_pad.reshape(*shape, width, 4)
    if x_pad is not None:
        assert jets.x is not None
        x_pad = x_pad.reshape(*shape, width, -1).to(jets.x.dtype)
    mask = mask.reshape(*shape, width)
    if jets.mask is None:
        # Every jet grew by the same number of particles, so no slot is padding.
        assert bool(mask.all())
        return jets.call_padded(p4_pad, x_pad, None)
    return jets.call_padded(p4_pad, x_pad, mask)


def _compare(
    tracker: Tracker, jets: Jets, got: Outputs, reference: Outputs, trial: int,
    describe: Callable[[int | None], str], helper: str,
) -> None:
    for (name, out), (_, ref) in zip(got, reference, strict=True):
        if out.shape != ref.shape:
            raise ValueError(
                f"{helper}: {name} changed shape from {tuple(ref.shape)} to {tuple(out.shape)} "
                "when particles were added; IR and collinear safety are defined for jet-level "
                "outputs (one result per jet), return only those"
            )
        jet_of = jets.jet_of(ref.shape)

        def transform(
            index: tuple[int, ...], jet_of: Callable[[tuple[int, ...]], int] | None = jet_of
        ) -> str:
            return describe(None if jet_of is None else jet_of(index))

        tracker.compare(out, ref, output=name, trial=trial, transform=transform)
