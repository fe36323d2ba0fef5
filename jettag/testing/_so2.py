"""SO(2) invariance and equivariance: rotations about the jet axis."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from jettag import physics
from jettag.testing._common import (
    Jets,
    SymmetryReport,
    Tracker,
    apply_matrix,
    apply_matrix2,
    call_args,
    check_lead,
    check_trials,
    flat_index,
    make_generator,
    parse_jets,
    prepare_fn,
    resolve_types,
    tolerances,
)

__all__ = ["assert_so2_equivariant", "assert_so2_invariant"]

_KINDS = ("centroid", "p4", "3d")
_PLANE_OUT_TYPES = ("scalar", "etaphi")
_SPACE_OUT_TYPES = ("scalar", "vector", "tensor", "p4")
_IN_TYPES = ("scalar", "vector", "tensor", "p4", "axis")
_DOC_KIND = {
    "centroid": "in the (eta, phi) plane about the pT-weighted centroid axis",
    "p4": "in the (eta, phi) plane about the axis of the summed four-momentum",
    "3d": "in 3-D about the jet three-momentum",
}


def assert_so2_invariant(
    fn: Callable[..., Any],
    inputs: Any,
    *,
    x: Tensor | None = None,
    mask: Tensor | None = None,
    kind: str | None = None,
    in_types: Sequence[str | None] | None = None,
    axis: Tensor | None = None,
    n_trials: int = 5,
    rtol: float | None = None,
    atol: float | None = None,
    generator: torch.Generator | int | None = None,
    dtype: torch.dtype | None = torch.float64,
) -> SymmetryReport:
    """Assert that ``fn`` does not change when each jet is rotated about its own axis.

    Each trial draws an independent angle in ``[-pi, pi)`` per jet. The rotation depends on
    ``kind``:

    * ``"centroid"`` (default for jets) or ``"p4"``: every constituent's position
      ``(d_eta, d_phi)`` relative to the jet axis is turned by the angle, keeping its pT and
      mass (:func:`jettag.physics.rotate_about_jet_axis`). About the centroid the axis stays
      fixed, so invariance about it holds to rounding; about the ``"p4"`` axis it does not
      (the axis moves), see DESIGN.md.
    * ``"3d"``: the three-momenta are rotated in 3-D about the jet three-momentum ``j``
      (which is left unchanged).

    Features ``x`` and jet-level fields are passed unchanged.

    With a tuple of arguments as ``inputs`` (typed mode, for SO(2)-about-j layers on
    scalars, vectors and order-2 tensors), each argument has a type in ``in_types``:
    ``"scalar"``/``None`` (unchanged), ``"vector"`` (``(..., 3)``, ``v -> R v``),
    ``"tensor"`` (``(..., 3, 3)``, ``T -> R T R^T``), ``"p4"`` (``(..., 4)``, three-momentum
    rotated) or ``"axis"`` (the axis ``j (..., 3)`` itself, unchanged). The axis comes from
    the ``"axis"`` argument or from ``axis=``; it is ``(3,)`` (one rotation for everything)
    or ``(*R, 3)``, one rotation per row, in which case every transformed argument and output
    has leading dimensions ``R``.

    Args:
        fn: the function or model under test, called as described in :mod:`jettag.testing`.
        inputs: ``p4 (..., N, 4)``, a ``JetBatch``, or a tuple of arguments with ``in_types``.
        x, mask: per-particle features and mask for padded ``p4``.
        kind: ``"centroid"``, ``"p4"`` or ``"3d"`` for jets; typed mode is always ``"3d"``.
        in_types, axis: typed mode, see above.
        n_trials: number of random angles per jet.
        rtol, atol: tolerances; defaults from :func:`default_tolerance` of the run dtype.
        generator: a ``torch.Generator``, an int seed, or None (seed 0).
        dtype: the dtype ``fn`` runs in; None keeps the inputs' dtype.

    Returns:
        A :class:`SymmetryReport` of the worst deviation.

    Raises:
        AssertionError: if an output element deviates by more than ``atol + rtol*|expected|``.

    Example:
        >>> from jettag import physics
        >>> from jettag.testing import assert_so2_invariant, random_jets
        >>> jets = random_jets(4, 10, generator=1)
        >>> def spread(p4, mask):
        ...     rel = physics.relative_etaphi(p4, mask=mask)
        ...     return (physics.pt(p4) * rel.norm(dim=-1)).sum(-1)
        >>> report = assert_so2_invariant(spread, jets.p4, mask=jets.mask)
    """
    __tracebackhide__ = True
    return _check(
        fn, inputs, invariant=True, x=x, mask=mask, kind=kind, in_types=in_types, axis=axis,
        out_types=None, n_trials=n_trials, rtol=rtol, atol=atol, generator=generator,
        dtype=dtype,
    )


def assert_so2_equivariant(
    fn: Callable[..., Any],
    inputs: Any,
    *,
    out_types: str | Sequence[str | None],
    x: Tensor | None = None,
    mask: Tensor | None = None,
    kind: str | None = None,
    in_types: Sequence[str | None] | None = None,
    axis: Tensor | None = None,
    n_trials: int = 5,
    rtol: float | None = None,
    atol: float | None = None,
    generator: torch.Generator | int | None = None,
    dtype: torch.dtype | None = torch.float64,
) -> SymmetryReport:
    """Assert ``fn(g . inputs) == g . fn(inputs)`` for rotations g about the jet axis.

    Rotations and arguments as in :func:`assert_so2_invariant`. Each output is declared in
    ``out_types`` and transformed with the rotation of the jet (or row) it belongs to:

    * ``"scalar"``: unchanged;
    * ``"etaphi"`` (``kind="centroid"``/``"p4"``): ``(..., 2)`` positions or displacements in
      the (eta, phi) plane, turned by the angle (counter-clockwise, like
      :func:`jettag.physics.rotate_about_jet_axis`);
    * ``"vector"`` ``(..., 3)``: ``v -> R v``; ``"tensor"`` ``(..., 3, 3)``: ``T -> R T R^T``;
      ``"p4"`` ``(..., 4)``: three-momentum rotated (``kind="3d"`` and typed mode).

    Outputs belong to jets through their leading dimensions (the jet dimensions of padded
    ``p4``, one row per jet or particle of a JetBatch, or the axis rows in typed mode).

    Example:
        >>> import torch
        >>> from jettag.testing import assert_so2_equivariant
        >>> j = torch.randn(8, 3, dtype=torch.float64)
        >>> v = torch.randn(8, 5, 3, dtype=torch.float64)
        >>> def layer(v, j):  # a j (j . v) + b v, per row
        ...     u = j / j.norm(dim=-1, keepdim=True)
        ...     return 2.0 * u[:, None] * (v * u[:, None]).sum(-1, keepdim=True) + 0.5 * v
        >>> report = assert_so2_equivariant(
        ...     layer, (v, j), in_types=("vector", "axis"), out_types="vector")
    """
    __tracebackhide__ = True
    return _check(
        fn, inputs, invariant=False, x=x, mask=mask, kind=kind, in_types=in_types, axis=axis,
        out_types=out_types, n_trials=n_trials, rtol=rtol, atol=atol, generator=generator,
        dtype=dtype,
    )


def _rotation_2d(angle: Tensor) -> Tensor:
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def _rotation_3d(axis: Tensor, angle: Tensor) -> Tensor:
    """Rotations about ``axis``; a zero axis (an empty jet) is replaced by the z axis."""
    zero = (axis == 0).all(-1, keepdim=True)
    z = torch.zeros_like(axis)
    z[..., 2] = 1.0
    return physics.rotation_matrix(torch.where(zero, z, axis), angle)


def _describe(
    angles: Tensor, jet_of: Callable[[tuple[int, ...]], int] | None, what: str, unit: str
) -> Callable[[tuple[int, ...]], str]:
    flat = angles.reshape(-1)

    def describe(index: tuple[int, ...]) -> str:
        if flat.numel() == 1:
            return f"rotation by {float(flat[0]):.4f} rad {what}"
        if jet_of is None:
            return f"random rotations {what}, one per {unit}"
        k = jet_of(index)
        return f"rotation of {unit} {k} by {float(flat[k]):.4f} rad {what}"

    return describe


def _check(
    fn: Callable[..., Any],
    inputs: Any,
    *,
    invariant: bool,
    x: Tensor | None,
    mask: Tensor | None,
    kind: str | None,
    in_types: Sequence[str | None] | None,
    axis: Tensor | None,
    out_types: str | Sequence[str | None] | None,
    n_trials: int,
    rtol: float | None,
    atol: float | None,
    generator: torch.Generator | int | None,
    dtype: torch.dtype | None,
) -> SymmetryReport:
    __tracebackhide__ = True
    helper = "assert_so2_" + ("invariant" if invariant else "equivariant")
    check = "SO(2) " + ("invariance" if invariant else "equivariance")
    check_trials(n_trials)
    if kind is not None and kind not in _KINDS:
        raise ValueError(f"{helper}: kind: expected one of {list(_KINDS)}, found {kind!r}")
    gen = make_generator(generator)
    if isinstance(inputs, (tuple, list)):
        if kind not in (None, "3d"):
            raise ValueError(
                f"{helper}: with a tuple of arguments the rotation is 3-D about the axis "
                f"(kind='3d'), found kind={kind!r}"
            )
        if x is not None or mask is not None:
            raise ValueError(f"{helper}: x= and mask= are not used with a tuple of arguments")
        return _check_args(
            fn, tuple(inputs), check=check, invariant=invariant, in_types=in_types, axis=axis,
            out_types=out_types, n_trials=n_trials, rtol=rtol, atol=atol, gen=gen,
            dtype=dtype, helper=helper,
        )
    if in_types is not None or axis is not None:
        raise ValueError(
            f"{helper}: in_types= and axis= are for a tuple of arguments; jets are rotated "
            "about their own axis"
        )
    kind = kind or "centroid"
    jets = parse_jets(fn, inputs, x, mask, dtype, helper=helper)
    rtol, atol = tolerances(rtol, atol, jets.run_dtype)
    reference = jets.call()
    allowed = _SPACE_OUT_TYPES if kind == "3d" else _PLANE_OUT_TYPES
    types = resolve_types("scalar" if invariant else out_types, reference, allowed)
    tracker = Tracker(f"{check} ({_DOC_KIND[kind]})", rtol, atol, n_trials)
    n_jets = math.prod(jets.jet_shape)
    for trial in range(n_trials):
        angles = (torch.rand(n_jets, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi
        angles = angles.to(jets.device)
        mats = _jet_rotations(jets, angles, kind)
        if kind == "3d":
            lam = physics.lorentz_from_rotation(mats)
            if jets.batch is not None:
                moved = physics.apply_lorentz(lam[jets.batch.batch], jets.batch.p4[:, None])[:, 0]
            else:
                moved = physics.apply_lorentz(lam, jets.p4)
        else:
            moved = _rotate_plane(jets, angles, kind)
        got = jets.with_p4(moved)
        for (name, out), (_, ref), typ in zip(got, reference, types, strict=True):
            expected = ref
            if typ in ("etaphi", "vector"):
                rows, lead = jets.per_row(mats, ref, name)
                expected = apply_matrix(rows, ref, lead)
            elif typ == "tensor":
                rows, lead = jets.per_row(mats, ref, name)
                expected = apply_matrix2(rows, ref, lead)
            elif typ == "p4":
                rows, lead = jets.per_row(physics.lorentz_from_rotation(mats), ref, name)
                expected = apply_matrix(rows, ref, lead)
            describe = _describe(angles, jets.jet_of(ref.shape), _DOC_KIND[kind], "jet")
            tracker.compare(out, expected, output=name, trial=trial, transform=describe)
    return tracker.finish()


def _jet_rotations(jets: Jets, angles: Tensor, kind: str) -> Tensor:
    """Per-jet rotation matrices: 2x2 in the (eta, phi) plane, or 3x3 about the jet momentum."""
    if kind != "3d":
        return _rotation_2d(angles).reshape(*jets.jet_shape, 2, 2)
    if jets.batch is not None:
        b = jets.batch
        j = physics.jet_p4(b.p4, batch=b.batch, num_jets=b.num_jets)[:, 1:]
        return _rotation_3d(j, angles)
    assert jets.p4 is not None
    j = physics.jet_p4(jets.p4, mask=jets.mask)[..., 1:]
    return _rotation_3d(j, angles.reshape(jets.jet_shape))


def _rotate_plane(jets: Jets, angles: Tensor, kind: str) -> Tensor:
    if jets.batch is not None:
        b = jets.batch
        return physics.rotate_about_jet_axis(
            b.p4, angles, batch=b.batch, num_jets=b.num_jets, kind=kind  # type: ignore[arg-type]
        )
    assert jets.p4 is not None
    return physics.rotate_about_jet_axis(
        jets.p4, angles.reshape(jets.jet_shape), mask=jets.mask, kind=kind  # type: ignore[arg-type]
    )


def _check_args(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    *,
    check: str,
    invariant: bool,
    in_types: Sequence[str | None] | None,
    axis: Tensor | None,
    out_types: str | Sequence[str | None] | None,
    n_trials: int,
    rtol: float | None,
    atol: float | None,
    gen: torch.Generator,
    dtype: torch.dtype | None,
    helper: str,
) -> SymmetryReport:
    """Typed-arguments mode: 3-D rotations about ``axis`` (one per axis row)."""
    __tracebackhide__ = True
    if in_types is None:
        raise ValueError(
            f"{helper}: with a tuple of arguments as inputs, give in_types= (one of "
            f"{list(_IN_TYPES)} or None per argument)"
        )
    kinds = resolve_types(
        list(in_types), [(f"argument {i}", a) for i, a in enumerate(args)], _IN_TYPES,
        argument="in_types",
    )
    axes = [a for a, k in zip(args, kinds, strict=True) if k == "axis"]
    if len(axes) + (axis is not None) != 1:
        given = "given" if axis is not None else None
        raise ValueError(
            f"{helper}: expected the rotation axis either as one argument of type 'axis' or as "
            f"axis=, found {len(axes)} 'axis' arguments and axis={given}"
        )
    j = axes[0] if axes else axis
    if not isinstance(j, Tensor) or j.shape[-1:] != (3,) or not j.is_floating_point():
        raise ValueError(f"{helper}: expected a floating axis of shape (..., 3), found {j!r}")
    rows_shape = tuple(j.shape[:-1])
    lead = len(rows_shape)
    sizes = {"vector": (3,), "tensor": (3, 3), "p4": (4,), "axis": (3,)}
    for i, (a, k) in enumerate(zip(args, kinds, strict=True)):
        if k in sizes:
            if not isinstance(a, Tensor) or tuple(a.shape[-len(sizes[k]):]) != sizes[k]:
                raise ValueError(
                    f"{helper}: argument {i} is declared {k!r}: expected a tensor of shape "
                    f"(..., {', '.join(map(str, sizes[k]))}), found "
                    f"{tuple(a.shape) if isinstance(a, Tensor) else type(a)}"
                )
            check_lead(a.shape, rows_shape, f"argument {i}")
    run = j.dtype if dtype is None else dtype
    rtol, atol = tolerances(rtol, atol, run)
    call_fn = prepare_fn(fn, run)
    master = [
        a.to(torch.float64) if isinstance(a, Tensor) and a.is_floating_point() else a
        for a in args
    ]
    j64 = j.to(torch.float64)

    reference = call_args(call_fn, master, run)
    types = resolve_types("scalar" if invariant else out_types, reference, _SPACE_OUT_TYPES)
    tracker = Tracker(f"{check} (3-D rotations about the given axis)", rtol, atol, n_trials)
    n_rows = math.prod(rows_shape)

    def row_of(index: tuple[int, ...]) -> int:
        return flat_index(index, rows_shape)

    for trial in range(n_trials):
        angles = (torch.rand(n_rows, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi
        angles = angles.to(j.device).reshape(rows_shape)
        rot = _rotation_3d(j64, angles)
        lam = physics.lorentz_from_rotation(rot)
        moved = [_act(k, rot, lam, a, lead) for a, k in zip(master, kinds, strict=True)]
        got = call_args(call_fn, moved, run)
        for (name, out), (_, ref), typ in zip(got, reference, types, strict=True):
            if typ != "scalar":
                check_lead(ref.shape, rows_shape, name)
            expected = _act(typ, rot, lam, ref, lead)

            matches = tuple(ref.shape[:lead]) == rows_shape
            describe = _describe(
                angles, row_of if matches else None, "about the given axis", "row"
            )
            tracker.compare(out, expected, output=name, trial=trial, transform=describe)
    return tracker.finish()


def _act(kind: str, rot: Tensor, lam: Tensor, value: Any, lead: int) -> Any:
    if kind == "vector":
        return apply_matrix(rot, value, lead)
    if kind == "tensor":
        return apply_matrix2(rot, value, lead)
    if kind == "p4":
        return apply_matrix(lam, value, lead)
    return value
