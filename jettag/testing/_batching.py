"""Padding never leaks, and a jet's result does not depend on the other jets in its batch."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from jettag import physics
from jettag.testing._common import (
    Jets,
    Outputs,
    SymmetryReport,
    Tracker,
    check_lead,
    check_trials,
    make_generator,
    parse_jets,
    rebuild,
    row_owner,
    tolerances,
)
from jettag.testing._jets import random_jets

__all__ = ["assert_batch_independent", "assert_padding_invariant"]


def assert_padding_invariant(
    fn: Callable[..., Any],
    inputs: Any,
    *,
    x: Tensor | None = None,
    mask: Tensor | None = None,
    n_trials: int = 3,
    max_extra: int = 5,
    fill: Literal["random", "zeros"] = "random",
    rtol: float | None = None,
    atol: float | None = None,
    generator: torch.Generator | int | None = None,
    dtype: torch.dtype | None = torch.float64,
) -> SymmetryReport:
    """Assert that padding never leaks: longer padding with any content changes no result.

    Padded inputs (``fn`` must take ``mask=``; a missing mask means every slot is real):
    each trial appends 1 to ``max_extra`` padded slots to every jet (mask False) and fills
    *every* padded slot, old and new, with random four-vectors and features (``fill=
    "random"``: physical massless momenta of 1-100 GeV and standard-normal features, so that
    logs and square roots stay finite; ``"zeros"`` keeps zeros). Jet-level outputs must not
    change; per-particle outputs ``(..., N, *)`` must not change at real particles.

    JetBatch inputs have no padding, but a model that pads internally pads each jet to the
    longest jet of the batch. Each trial therefore appends one extra random jet longer than
    every other (by 1 to ``max_extra`` particles; its label and jet-level fields copied from
    jet 0); the outputs of the original jets and their particles must not change.

    Args:
        fn: the function or model under test, called as described in :mod:`jettag.testing`.
        inputs: four-vectors ``p4 (..., N, 4)`` or a ``JetBatch``.
        x, mask: per-particle features and mask for padded ``p4``.
        n_trials: number of random paddings.
        max_extra: largest number of padded slots (or extra particles) added.
        fill: content of padded slots, ``"random"`` or ``"zeros"``.
        rtol, atol: tolerances; defaults from :func:`default_tolerance` of the run dtype.
        generator: a ``torch.Generator``, an int seed, or None (seed 0).
        dtype: the dtype ``fn`` runs in; None keeps the inputs' dtype.

    Returns:
        A :class:`SymmetryReport` of the worst deviation.

    Raises:
        AssertionError: if an output element deviates by more than ``atol + rtol*|expected|``.

    Example:
        >>> from jettag.testing import assert_padding_invariant, random_jets
        >>> jets = random_jets(4, 10, generator=1)
        >>> def masked_mean(p4, mask):
        ...     w = mask[..., None].double()
        ...     return (p4 * w).sum(-2) / w.sum(-2)
        >>> report = assert_padding_invariant(masked_mean, jets.p4, mask=jets.mask)
    """
    __tracebackhide__ = True
    helper = "assert_padding_invariant"
    check_trials(n_trials)
    if max_extra < 1:
        raise ValueError(f"{helper}: max_extra must be >= 1, found {max_extra}")
    if fill not in ("random", "zeros"):
        raise ValueError(f"{helper}: fill must be 'random' or 'zeros', found {fill!r}")
    gen = make_generator(generator)
    jets = parse_jets(fn, inputs, x, mask, dtype, helper=helper)
    rtol, atol = tolerances(rtol, atol, jets.run_dtype)
    tracker = Tracker("Padding invariance", rtol, atol, n_trials)
    if jets.batch is not None:
        _padding_batch(jets, tracker, n_trials, max_extra, gen, helper)
    else:
        _padding_padded(jets, tracker, n_trials, max_extra, fill, gen)
    return tracker.finish()


def _garbage_p4(shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    pt = 1.0 + 99.0 * torch.rand(shape, generator=gen, dtype=torch.float64)
    eta = 2.0 * torch.randn(shape, generator=gen, dtype=torch.float64)
    phi = (2.0 * torch.rand(shape, generator=gen, dtype=torch.float64) - 1.0) * math.pi
    return physics.from_ptetaphim(pt, eta, phi, torch.zeros_like(pt))


def _padding_padded(
    jets: Jets, tracker: Tracker, n_trials: int, max_extra: int, fill: str,
    gen: torch.Generator,
) -> None:
    assert jets.p4 is not None
    real = jets.real()
    shape, n = jets.jet_shape, real.shape[-1]
    lead = len(shape)
    reference = jets.call_padded(jets.p4, jets.x, real)
    for trial in range(n_trials):
        extra = int(torch.randint(1, max_extra + 1, (1,), generator=gen))
        new_real = torch.cat([real, real.new_zeros(*shape, extra)], dim=-1)
        p4 = torch.cat([jets.p4, jets.p4.new_zeros(*shape, extra, 4)], dim=-2)
        x = jets.x
        if x is not None:
            x = torch.cat([x, x.new_zeros(*shape, extra, x.shape[-1])], dim=-2)
        if fill == "random":
            garbage = _garbage_p4((*shape, n + extra), gen).to(p4.device)
            p4 = torch.where(new_real[..., None], p4, garbage)
            if x is not None and x.is_floating_point():
                noise = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x)
                x = torch.where(new_real[..., None], x, noise)
        got = jets.call_padded(p4, x, new_real)
        what = f"{extra} padded slots appended, all padded slots filled with {fill} values"
        for (name, out), (_, ref) in zip(got, reference, strict=True):
            if out.shape == ref.shape:
                tracker.compare(out, ref, output=name, trial=trial, transform=what)
                continue
            check_lead(ref.shape, (*shape, n), name)
            if out.shape[:lead] != ref.shape[:lead] or out.shape[lead + 1:] != ref.shape[lead + 1:]:
                raise AssertionError(
                    f"Padding invariance violated: {name} has shape {tuple(out.shape)} with "
                    f"{n + extra} slots per jet, but shape {tuple(ref.shape)} with {n} slots"
                )
            valid = real.reshape(*real.shape, *([1] * (ref.dim() - lead - 1)))
            tracker.compare(out.narrow(lead, 0, n), ref, output=name, trial=trial,
                            transform=what, valid=valid)


def _padding_batch(
    jets: Jets, tracker: Tracker, n_trials: int, max_extra: int, gen: torch.Generator,
    helper: str,
) -> None:
    batch = jets.batch
    assert batch is not None
    if batch.num_jets == 0:
        raise ValueError(f"{helper}: expected a JetBatch with at least one jet, found none")
    reference = jets.call()
    for name, ref in reference:
        row_owner(batch, ref.shape, name)  # one row per jet or per particle, else ValueError
    longest = int(batch.counts.max())
    n_features = 0 if batch.x is None else batch.x.shape[1]
    for trial in range(n_trials):
        size = longest + int(torch.randint(1, max_extra + 1, (1,), generator=gen))
        extra = random_jets(1, size, min_particles=size, n_features=n_features, generator=gen,
                            layout="batch", device=batch.device)
        longer = rebuild(
            batch,
            p4=torch.cat([batch.p4, extra.p4]),
            ptr=torch.cat([batch.ptr, batch.ptr[-1:] + size]),
            x=None if batch.x is None else torch.cat([batch.x, extra.x]),
            label=None if batch.label is None else torch.cat([batch.label, batch.label[:1]]),
            fields={k: torch.cat([v, v[:1]]) for k, v in batch.fields.items()},
        )
        got = jets.call_batch(longer)
        what = f"batched with an extra jet of {size} particles (longest was {longest})"
        for (name, out), (_, ref) in zip(got, reference, strict=True):
            rows = ref.shape[0]
            if out.dim() != ref.dim() or out.shape[1:] != ref.shape[1:] or out.shape[0] < rows:
                raise AssertionError(
                    f"Padding invariance violated: {name} has shape {tuple(out.shape)} with the "
                    f"extra jet, expected {tuple(ref.shape)} plus the extra jet's rows"
                )
            tracker.compare(out[:rows], ref, output=name, trial=trial, transform=what)


def assert_batch_independent(
    fn: Callable[..., Any],
    inputs: Any,
    *,
    x: Tensor | None = None,
    mask: Tensor | None = None,
    n_trials: int = 3,
    max_single: int = 8,
    rtol: float | None = None,
    atol: float | None = None,
    generator: torch.Generator | int | None = None,
    dtype: torch.dtype | None = torch.float64,
) -> SymmetryReport:
    """Assert that a jet's results do not depend on the other jets in the batch.

    Compares the outputs of the full batch with those of (1) up to ``max_single`` randomly
    chosen jets run alone, as a batch of one, and (2) ``n_trials`` random reorderings of the
    whole batch. Padded inputs must have one jet dimension, ``p4 (B, N, 4)``, and every
    output one row per jet (``(B, *)``, per-particle outputs ``(B, N, *)`` included); JetBatch
    outputs have one row per jet or per particle. Typical failures: batch-norm in training
    mode, normalising by batch statistics, reductions over the batch dimension.

    Args:
        fn: the function or model under test, called as described in :mod:`jettag.testing`.
        inputs: four-vectors ``p4 (B, N, 4)`` or a ``JetBatch``.
        x, mask: per-particle features and mask for padded ``p4``.
        n_trials: number of shuffled batches.
        max_single: number of jets also run alone.
        rtol, atol: tolerances; defaults from :func:`default_tolerance` of the run dtype.
        generator: a ``torch.Generator``, an int seed, or None (seed 0).
        dtype: the dtype ``fn`` runs in; None keeps the inputs' dtype.

    Returns:
        A :class:`SymmetryReport` of the worst deviation.

    Raises:
        AssertionError: if an output element deviates by more than ``atol + rtol*|expected|``.

    Example:
        >>> from jettag import physics
        >>> from jettag.testing import assert_batch_independent, random_jets
        >>> jets = random_jets(6, 10, generator=1)
        >>> fn = lambda p4, mask: physics.mass(physics.jet_p4(p4, mask=mask))
        >>> report = assert_batch_independent(fn, jets.p4, mask=jets.mask)
    """
    __tracebackhide__ = True
    helper = "assert_batch_independent"
    check_trials(n_trials)
    if max_single < 0:
        raise ValueError(f"{helper}: max_single must be >= 0, found {max_single}")
    gen = make_generator(generator)
    jets = parse_jets(fn, inputs, x, mask, dtype, helper=helper)
    if jets.p4 is not None and jets.p4.dim() != 3:
        raise ValueError(
            f"{helper}: expected padded jets p4 of shape (B, N, 4) with one jet dimension, "
            f"found {tuple(jets.p4.shape)}"
        )
    rtol, atol = tolerances(rtol, atol, jets.run_dtype)
    n_jets = jets.jet_shape[0]
    singles = torch.randperm(n_jets, generator=gen)[:max_single].tolist()
    tracker = Tracker("Batch independence", rtol, atol, len(singles) + n_trials)
    reference = jets.call()
    rows = [_row_kind(jets, ref, name) for name, ref in reference]
    trial = 0
    for jet in singles:
        _compare_selection(jets, reference, rows, torch.tensor([jet]), tracker, trial,
                           f"jet {jet} run alone, as a batch of one jet")
        trial += 1
    for _ in range(n_trials):
        perm = torch.randperm(n_jets, generator=gen)
        _compare_selection(jets, reference, rows, perm, tracker, trial,
                           f"the {n_jets} jets reordered at random")
        trial += 1
    return tracker.finish()


def _row_kind(jets: Jets, ref: Tensor, name: str) -> str:
    if jets.batch is None:
        check_lead(ref.shape, jets.jet_shape, name)
        return "jet"
    owner = row_owner(jets.batch, ref.shape, name)
    return "particle" if owner is jets.batch.batch else "jet"


def _compare_selection(
    jets: Jets,
    reference: Outputs,
    rows: list[str],
    idx: Tensor,
    tracker: Tracker,
    trial: int,
    what: str,
) -> None:
    """Run ``fn`` on the jets ``idx`` (in that order) and compare with the full batch."""
    if jets.batch is not None:
        sub = jets.batch[idx.to(jets.batch.device)]
        got = jets.call_batch(sub)
        counts = jets.batch.counts[idx]
        starts = jets.batch.ptr[:-1][idx]
        offsets = torch.repeat_interleave(starts - (sub.ptr[:-1]), counts)
        particles = torch.arange(sub.num_particles, device=offsets.device) + offsets
    else:
        assert jets.p4 is not None
        got = jets.call_padded(
            jets.p4[idx],
            None if jets.x is None else jets.x[idx],
            None if jets.mask is None else jets.mask[idx],
        )
        particles = idx
    for (name, out), (_, ref), kind in zip(got, reference, rows, strict=True):
        pick = particles if kind == "particle" else idx
        expected = ref[pick.to(ref.device)]

        def index_of(index: tuple[int, ...], pick: Tensor = pick) -> tuple[int, ...]:
            return (int(pick[index[0]]), *index[1:])

        tracker.compare(out, expected, output=name, trial=trial, transform=what,
                        index_of=index_of, shape=tuple(ref.shape))
