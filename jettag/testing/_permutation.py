"""Permutation invariance and equivariance over the particles of each jet."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from jettag.testing._common import (
    Jets,
    SymmetryReport,
    Tracker,
    check_lead,
    check_trials,
    make_generator,
    parse_jets,
    rebuild,
    resolve_types,
    tolerances,
)

__all__ = ["assert_permutation_equivariant", "assert_permutation_invariant"]


def assert_permutation_invariant(
    fn: Callable[..., Any],
    inputs: Any,
    *,
    x: Tensor | None = None,
    mask: Tensor | None = None,
    n_trials: int = 5,
    rtol: float | None = None,
    atol: float | None = None,
    generator: torch.Generator | int | None = None,
    dtype: torch.dtype | None = torch.float64,
) -> SymmetryReport:
    """Assert that reordering the particles of each jet leaves every output unchanged.

    Each trial shuffles the real particles of every jet independently (four-vectors and
    features together). With padded inputs only the real slots are shuffled among
    themselves, so the mask is unchanged (moving padding around is
    :func:`assert_padding_invariant`'s business); a JetBatch is shuffled inside each jet.

    Args:
        fn: the function or model under test, called as described in :mod:`jettag.testing`.
        inputs: four-vectors ``p4 (..., N, 4)`` or a ``JetBatch``.
        x, mask: per-particle features and mask for padded ``p4``.
        n_trials: number of random permutations.
        rtol, atol: tolerances; defaults from :func:`default_tolerance` of the run dtype.
        generator: a ``torch.Generator``, an int seed, or None (seed 0).
        dtype: the dtype ``fn`` runs in; None keeps the inputs' dtype.

    Returns:
        A :class:`SymmetryReport` of the worst deviation.

    Raises:
        AssertionError: if an output element deviates by more than ``atol + rtol*|expected|``.

    Example:
        >>> from jettag.testing import assert_permutation_invariant, random_jets
        >>> jets = random_jets(4, 10, generator=1)
        >>> report = assert_permutation_invariant(
        ...     lambda p4, mask: (p4 * mask[..., None]).sum(-2), jets.p4, mask=jets.mask)
    """
    __tracebackhide__ = True
    return _check(fn, inputs, x=x, mask=mask, out_types="jet", n_trials=n_trials, rtol=rtol,
                  atol=atol, generator=generator, dtype=dtype, invariant=True)


def assert_permutation_equivariant(
    fn: Callable[..., Any],
    inputs: Any,
    *,
    x: Tensor | None = None,
    mask: Tensor | None = None,
    out_types: str | Sequence[str | None] = "particle",
    n_trials: int = 5,
    rtol: float | None = None,
    atol: float | None = None,
    generator: torch.Generator | int | None = None,
    dtype: torch.dtype | None = torch.float64,
) -> SymmetryReport:
    """Assert that per-particle outputs follow a reordering of the particles of each jet.

    Permutations as in :func:`assert_permutation_invariant`. Each output is declared
    ``"particle"`` (one row per particle: shape ``(..., N, *)`` for padded inputs, compared
    at real particles only, or ``(P, *)`` for a JetBatch) or ``"jet"`` (must not change).

    Args:
        out_types: one of ``"particle"``, ``"jet"`` per output, or one string for all.
        (others): as in :func:`assert_permutation_invariant`.

    Example:
        >>> from jettag.testing import assert_permutation_equivariant, random_jets
        >>> jets = random_jets(4, 10, generator=1)
        >>> report = assert_permutation_equivariant(lambda p4: p4[..., :1] ** 2, jets.p4)
    """
    __tracebackhide__ = True
    return _check(fn, inputs, x=x, mask=mask, out_types=out_types, n_trials=n_trials,
                  rtol=rtol, atol=atol, generator=generator, dtype=dtype, invariant=False)


def _padded_permutation(real: Tensor, gen: torch.Generator) -> Tensor:
    """Indices ``(*S, N)`` that shuffle the real slots of each row among themselves.

    ``new[..., i] = old[..., index[..., i]]``; padded slots map to themselves.
    """
    n = real.shape[-1]
    slots = torch.arange(n, device=real.device).expand_as(real)
    keys = torch.rand(real.shape, generator=gen, dtype=torch.float64).to(real.device)
    # real slots in position order (then padded ones in order) ...
    in_order = torch.argsort(torch.where(real, slots, slots + n), dim=-1)
    # ... and the same real slots in random order (then padded ones in order)
    shuffled = torch.argsort(torch.where(real, keys, 2.0 + slots.double()), dim=-1)
    return torch.empty_like(in_order).scatter_(-1, in_order, shuffled)


def _batch_permutation(jets: Jets, gen: torch.Generator) -> Tensor:
    """A shuffle of the particles of a JetBatch inside each jet (``new = old[perm]``)."""
    assert jets.batch is not None
    b = jets.batch.batch
    keys = torch.rand(b.shape, generator=gen, dtype=torch.float64).to(b.device)
    return torch.argsort(b.double() + keys)


def _check(
    fn: Callable[..., Any],
    inputs: Any,
    *,
    x: Tensor | None,
    mask: Tensor | None,
    out_types: str | Sequence[str | None],
    n_trials: int,
    rtol: float | None,
    atol: float | None,
    generator: torch.Generator | int | None,
    dtype: torch.dtype | None,
    invariant: bool,
) -> SymmetryReport:
    __tracebackhide__ = True
    helper = "assert_permutation_" + ("invariant" if invariant else "equivariant")
    check_trials(n_trials)
    gen = make_generator(generator)
    jets = parse_jets(fn, inputs, x, mask, dtype, helper=helper)
    rtol, atol = tolerances(rtol, atol, jets.run_dtype)
    reference = jets.call()
    types = resolve_types(out_types, reference, ("particle", "jet"))
    check = "Permutation " + ("invariance" if invariant else "equivariance")
    tracker = Tracker(check, rtol, atol, n_trials)
    for trial in range(n_trials):
        if jets.batch is not None:
            perm = _batch_permutation(jets, gen)
            b = jets.batch
            got = jets.call_batch(
                rebuild(b, p4=b.p4[perm], x=None if b.x is None else b.x[perm])
            )
        else:
            assert jets.p4 is not None
            real = jets.real()
            index = _padded_permutation(real, gen)
            p4 = jets.p4.gather(-2, index[..., None].expand_as(jets.p4))
            x_new = None if jets.x is None else jets.x.gather(
                -2, index[..., None].expand_as(jets.x)
            )
            got = jets.call_padded(p4, x_new, jets.mask)
        for (name, out), (_, ref), kind in zip(got, reference, types, strict=True):
            what = "random permutation of the particles of every jet"
            if kind == "jet":
                tracker.compare(out, ref, output=name, trial=trial, transform=what)
                continue
            if jets.batch is not None:
                if ref.dim() == 0 or ref.shape[0] != jets.batch.num_particles:
                    raise ValueError(
                        f"{helper}: {name} is declared 'particle' but has shape "
                        f"{tuple(ref.shape)}; expected one row per particle "
                        f"({jets.batch.num_particles})"
                    )
                tracker.compare(out, ref[perm], output=name, trial=trial, transform=what)
                continue
            lead = len(jets.jet_shape)
            check_lead(ref.shape, (*jets.jet_shape, real.shape[-1]), name)
            extra = ref.dim() - lead - 1
            idx = index.reshape(*index.shape, *([1] * extra)).expand_as(ref)
            valid = real.reshape(*real.shape, *([1] * extra))
            tracker.compare(out, ref.gather(lead, idx), output=name, trial=trial,
                            transform=what, valid=valid)
    return tracker.finish()
