"""Lorentz invariance and equivariance under random proper orthochronous transformations."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from jettag import physics
from jettag.testing._common import (
    SymmetryReport,
    Tracker,
    apply_matrix,
    call_args,
    check_trials,
    make_generator,
    parse_jets,
    prepare_fn,
    resolve_types,
    tolerances,
)

__all__ = ["assert_lorentz_equivariant", "assert_lorentz_invariant"]

_OUT_TYPES = ("scalar", "p4")
_IN_TYPES = ("scalar", "p4")


def assert_lorentz_invariant(
    fn: Callable[..., Any],
    inputs: Any,
    *,
    x: Tensor | None = None,
    mask: Tensor | None = None,
    in_types: Sequence[str | None] | None = None,
    n_trials: int = 5,
    max_rapidity: float = 1.0,
    rtol: float | None = None,
    atol: float | None = None,
    generator: torch.Generator | int | None = None,
    dtype: torch.dtype | None = torch.float64,
) -> SymmetryReport:
    """Assert ``fn(L p) == fn(p)`` for random proper orthochronous Lorentz transformations L.

    Each trial draws an independent transformation per jet (a Haar-random rotation followed
    by a boost of rapidity up to ``max_rapidity`` in a random direction, from
    :func:`jettag.physics.random_lorentz`), applies it in float64 to every four-vector of that
    jet, and compares every output element with the untransformed call. Features ``x`` and
    jet-level fields of a JetBatch are treated as Lorentz scalars and passed unchanged.

    Args:
        fn: the function or model under test, called as described in :mod:`jettag.testing`.
        inputs: four-vectors ``p4 (..., N, 4)``, a ``JetBatch``, or a tuple of arguments for
            ``fn(*inputs)`` with ``in_types`` (then one transformation per trial, shared by
            all arguments).
        x: per-particle features ``(..., N, C)`` passed as ``fn(p4, x)``.
        mask: ``(..., N)``, True for real particles, passed as ``fn(..., mask=mask)``.
        in_types: with a tuple of arguments: ``"p4"`` (four-vectors in the last dimension,
            transformed) or ``"scalar"``/``None`` (passed unchanged) for each argument.
        n_trials: number of random transformations per jet.
        max_rapidity: boost rapidities are drawn uniformly from ``[0, max_rapidity]``.
        rtol, atol: tolerances; defaults from :func:`default_tolerance` of the run dtype.
        generator: a ``torch.Generator``, an int seed, or None (seed 0).
        dtype: the dtype ``fn`` runs in (inputs and a copy of a module are cast to it);
            None keeps the inputs' dtype.

    Returns:
        A :class:`SymmetryReport` of the worst deviation.

    Raises:
        AssertionError: if an output element deviates by more than ``atol + rtol*|expected|``.

    Example:
        >>> from jettag import physics
        >>> from jettag.testing import assert_lorentz_invariant, random_jets
        >>> jets = random_jets(4, 10, generator=1)
        >>> mass2 = lambda p4, mask: physics.mass2(physics.jet_p4(p4, mask=mask))
        >>> report = assert_lorentz_invariant(mass2, jets.p4, mask=jets.mask)
    """
    __tracebackhide__ = True
    return _check(
        fn, inputs, invariant=True, x=x, mask=mask, in_types=in_types, out_types=None,
        n_trials=n_trials, max_rapidity=max_rapidity, rtol=rtol, atol=atol,
        generator=generator, dtype=dtype,
    )


def assert_lorentz_equivariant(
    fn: Callable[..., Any],
    inputs: Any,
    *,
    x: Tensor | None = None,
    mask: Tensor | None = None,
    in_types: Sequence[str | None] | None = None,
    out_types: str | Sequence[str | None] | None = None,
    n_trials: int = 5,
    max_rapidity: float = 1.0,
    rtol: float | None = None,
    atol: float | None = None,
    generator: torch.Generator | int | None = None,
    dtype: torch.dtype | None = torch.float64,
) -> SymmetryReport:
    """Assert ``fn(L p) == L fn(p)`` on four-vector outputs (and invariance of scalar outputs).

    Transformations and arguments as in :func:`assert_lorentz_invariant`. Each output is
    declared ``"p4"`` (four-vectors in its last dimension, ``(..., 4)``, transformed with the
    transformation of the jet it belongs to) or ``"scalar"`` (must not change). Outputs
    belong to jets through their leading dimensions: the jet dimensions of a padded ``p4``,
    or one row per jet / per particle for a JetBatch.

    Args:
        out_types: one type per output, or one string for all. Default: ``"p4"`` for a single
            tensor, ``("scalar", "p4")`` for a pair of outputs.
        (others): as in :func:`assert_lorentz_invariant`.

    Example:
        >>> from jettag import physics
        >>> from jettag.testing import assert_lorentz_equivariant, random_jets
        >>> jets = random_jets(4, 10, generator=1)
        >>> fn = lambda p4, mask: physics.jet_p4(p4, mask=mask)
        >>> report = assert_lorentz_equivariant(fn, jets.p4, mask=jets.mask)
    """
    __tracebackhide__ = True
    return _check(
        fn, inputs, invariant=False, x=x, mask=mask, in_types=in_types, out_types=out_types,
        n_trials=n_trials, max_rapidity=max_rapidity, rtol=rtol, atol=atol,
        generator=generator, dtype=dtype,
    )


def _default_out_types(
    out_types: str | Sequence[str | None] | None, n_outputs: int
) -> str | Sequence[str | None] | None:
    if out_types is not None:
        return out_types
    if n_outputs == 2:
        return ("scalar", "p4")
    return "p4"


def _describe(
    lam: Tensor, jet_of: Callable[[tuple[int, ...]], int] | None
) -> Callable[[tuple[int, ...]], str]:
    flat = lam.reshape(-1, 4, 4)

    def rapidity(jet: int) -> float:
        return math.acosh(max(1.0, float(flat[jet, 0, 0])))

    def describe(index: tuple[int, ...]) -> str:
        if flat.shape[0] == 1:
            return (
                f"random Lorentz transformation (boost rapidity {rapidity(0):.4f} after a "
                "rotation)"
            )
        if jet_of is None:
            return "random Lorentz transformations, one per jet"
        jet = jet_of(index)
        return (
            f"random Lorentz transformation of jet {jet} (boost rapidity {rapidity(jet):.4f} "
            "after a rotation)"
        )

    return describe


def _check(
    fn: Callable[..., Any],
    inputs: Any,
    *,
    invariant: bool,
    x: Tensor | None,
    mask: Tensor | None,
    in_types: Sequence[str | None] | None,
    out_types: str | Sequence[str | None] | None,
    n_trials: int,
    max_rapidity: float,
    rtol: float | None,
    atol: float | None,
    generator: torch.Generator | int | None,
    dtype: torch.dtype | None,
) -> SymmetryReport:
    __tracebackhide__ = True
    helper = "assert_lorentz_" + ("invariant" if invariant else "equivariant")
    check_trials(n_trials)
    if not max_rapidity >= 0:
        raise ValueError(f"max_rapidity: expected a non-negative rapidity, found {max_rapidity}")
    gen = make_generator(generator)
    if isinstance(inputs, (tuple, list)):
        return _check_args(
            fn, tuple(inputs), invariant=invariant, in_types=in_types, out_types=out_types,
            n_trials=n_trials, max_rapidity=max_rapidity, rtol=rtol, atol=atol, gen=gen,
            dtype=dtype, helper=helper, has_jet_kwargs=x is not None or mask is not None,
        )
    if in_types is not None:
        raise ValueError(f"{helper}: in_types= is only for a tuple of arguments as inputs")
    jets = parse_jets(fn, inputs, x, mask, dtype, helper=helper)
    rtol, atol = tolerances(rtol, atol, jets.run_dtype)
    reference = jets.call()
    types = resolve_types(
        "scalar" if invariant else _default_out_types(out_types, len(reference)),
        reference, _OUT_TYPES,
    )
    check = "Lorentz " + ("invariance" if invariant else "equivariance")
    tracker = Tracker(check, rtol, atol, n_trials)
    n_jets = math.prod(jets.jet_shape)
    for trial in range(n_trials):
        lam = physics.random_lorentz(n_jets, max_rapidity=max_rapidity, generator=gen)
        lam = lam.to(jets.device)
        if jets.batch is not None:
            moved = physics.apply_lorentz(lam[jets.batch.batch], jets.batch.p4[:, None, :])
            got = jets.with_p4(moved[:, 0, :])
        else:
            assert jets.p4 is not None
            lam = lam.reshape(*jets.jet_shape, 4, 4)
            got = jets.with_p4(physics.apply_lorentz(lam, jets.p4))
        for (name, out), (_, ref), kind in zip(got, reference, types, strict=True):
            jet_of = jets.jet_of(ref.shape)
            expected = ref
            if kind == "p4":
                mats, lead = jets.per_row(lam, ref, name)
                expected = apply_matrix(mats, ref, lead)
            tracker.compare(
                out, expected, output=name, trial=trial, transform=_describe(lam, jet_of)
            )
    return tracker.finish()


def _check_args(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    *,
    invariant: bool,
    in_types: Sequence[str | None] | None,
    out_types: str | Sequence[str | None] | None,
    n_trials: int,
    max_rapidity: float,
    rtol: float | None,
    atol: float | None,
    gen: torch.Generator,
    dtype: torch.dtype | None,
    helper: str,
    has_jet_kwargs: bool,
) -> SymmetryReport:
    """Typed-arguments mode: one transformation per trial for all "p4" arguments."""
    __tracebackhide__ = True
    if has_jet_kwargs:
        raise ValueError(f"{helper}: x= and mask= are not used with a tuple of arguments")
    kinds = _arg_types(in_types, args, helper)
    floats = [a for a in args if isinstance(a, Tensor) and a.is_floating_point()]
    if not floats:
        raise ValueError(f"{helper}: expected at least one floating-point tensor argument")
    run = floats[0].dtype if dtype is None else dtype
    rtol, atol = tolerances(rtol, atol, run)
    call_fn = prepare_fn(fn, run)
    master = [a.to(torch.float64) if k == "p4" else a for a, k in zip(args, kinds, strict=True)]

    reference = call_args(call_fn, master, run)
    types = resolve_types(
        "scalar" if invariant else _default_out_types(out_types, len(reference)),
        reference, _OUT_TYPES,
    )
    check = "Lorentz " + ("invariance" if invariant else "equivariance")
    tracker = Tracker(check, rtol, atol, n_trials)
    device = floats[0].device
    for trial in range(n_trials):
        lam = physics.random_lorentz(1, max_rapidity=max_rapidity, generator=gen)[0].to(device)
        moved = [
            apply_matrix(lam, a, 0) if k == "p4" else a for a, k in zip(master, kinds, strict=True)
        ]
        got = call_args(call_fn, moved, run)
        describe = _describe(lam, None)
        for (name, out), (_, ref), kind in zip(got, reference, types, strict=True):
            expected = apply_matrix(lam, ref, 0) if kind == "p4" else ref
            tracker.compare(out, expected, output=name, trial=trial, transform=describe)
    return tracker.finish()


def _arg_types(
    in_types: Sequence[str | None] | None, args: tuple[Any, ...], helper: str
) -> list[str]:
    if in_types is None:
        raise ValueError(
            f"{helper}: with a tuple of arguments as inputs, give in_types= (one of "
            f"{list(_IN_TYPES)} or None per argument)"
        )
    kinds = resolve_types(list(in_types), [(f"argument {i}", a) for i, a in enumerate(args)],
                          _IN_TYPES, argument="in_types")
    for i, (a, k) in enumerate(zip(args, kinds, strict=True)):
        if k == "p4" and (not isinstance(a, Tensor) or a.shape[-1:] != (4,)):
            raise ValueError(
                f"{helper}: argument {i} is declared 'p4' but is not a tensor of shape (..., 4)"
            )
    return kinds
