"""Machinery shared by the assertion helpers: inputs, calls, group actions, comparison, report.

Everything here is private; the calling convention it implements is documented in
:mod:`jettag.testing`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from jettag.data.batch import JetBatch

__all__ = ["SymmetryReport", "default_tolerance"]

# (rtol, atol) by the dtype the function runs in. float64 leaves ~8 digits of headroom above
# the rounding of boosts and sums over hundreds of particles in GeV.
_TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-7, 1e-7),
    torch.float32: (1e-3, 1e-3),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (5e-2, 5e-2),
}

Outputs = list[tuple[str, Tensor]]
Describe = Callable[[tuple[int, ...]], str]


def default_tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """Default ``(rtol, atol)`` of the assertion helpers for a function running in ``dtype``.

    ``(1e-7, 1e-7)`` for float64, ``(1e-3, 1e-3)`` for float32, looser for half precision.
    An element passes when ``|got - expected| <= atol + rtol * |expected|``.
    """
    try:
        return _TOLERANCES[dtype]
    except KeyError:
        raise ValueError(
            f"dtype: expected a floating dtype {sorted(str(d) for d in _TOLERANCES)}, "
            f"found {dtype}"
        ) from None


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SymmetryReport:
    """Outcome of one assertion helper: where the output deviated most from what it should be.

    The worst element is the one with the largest ``|got - expected| / (atol + rtol *
    |expected|)`` (``ratio``); the check passes when ``ratio <= 1``. Helpers return the
    report when the check passes and raise :class:`AssertionError` with ``str(report)``
    when it fails. ``print(report)`` gives a one-paragraph summary.

    Attributes:
        check: what was checked, e.g. ``"Lorentz invariance"``.
        passed: whether every compared element was within tolerance.
        n_trials: number of random trials (transformations, permutations, ...) run.
        n_compared: number of output elements compared over all trials.
        rtol, atol: the tolerances used.
        error: ``|got - expected|`` at the worst element (0 if nothing was compared).
        ratio: ``error / (atol + rtol * |expected|)`` at the worst element.
        got, expected: the two values at the worst element.
        output: which output (``"output"``, ``"output[1]"``, ``"output['logits']"``).
        index: index of the worst element inside that output.
        shape: shape of that output.
        trial: the trial (0-based) in which the worst element occurred.
        transform: what was done to the inputs in that trial (and to which jet).
    """

    check: str
    passed: bool
    n_trials: int
    n_compared: int
    rtol: float
    atol: float
    error: float = 0.0
    ratio: float = 0.0
    got: float = math.nan
    expected: float = math.nan
    output: str = ""
    index: tuple[int, ...] = ()
    shape: tuple[int, ...] = ()
    trial: int = -1
    transform: str = ""

    def __str__(self) -> str:
        tol = f"rtol={self.rtol:g}, atol={self.atol:g}"
        totals = f"{self.n_trials} trials, {self.n_compared} output values compared ({tol})"
        if self.n_compared == 0:
            return f"{self.check}: nothing to compare; {totals}"
        where = (
            f"element {list(self.index)} of {self.output} (shape {tuple(self.shape)}) in "
            f"trial {self.trial} of {self.n_trials}: {self.transform}"
        )
        if self.passed:
            return (
                f"{self.check} holds: worst |got - expected| = {self.error:.3g} "
                f"({self.ratio:.3g} of the tolerance) at {where}; {totals}"
            )
        values = f"Got {self.got:.10g}, expected {self.expected:.10g}; {totals}"
        if not (math.isfinite(self.got) and math.isfinite(self.expected)):
            cause = (
                "the unmodified inputs already give it" if not math.isfinite(self.expected)
                else "the unmodified inputs give a finite value"
            )
            return (
                f"{self.check} violated: non-finite output ({cause}), |got - expected| = "
                f"{self.error:.6g} at {where}. {values}"
            )
        allowed = self.atol + self.rtol * abs(self.expected)
        return (
            f"{self.check} violated: |got - expected| = {self.error:.6g} exceeds "
            f"atol + rtol*|expected| = {allowed:.3g} (ratio {self.ratio:.3g}) at {where}. "
            f"{values}"
        )


class Tracker:
    """Keeps the worst element over all comparisons of one check."""

    def __init__(self, check: str, rtol: float, atol: float, n_trials: int) -> None:
        self.check, self.rtol, self.atol, self.n_trials = check, rtol, atol, n_trials
        self.n_compared = 0
        self.worst: dict[str, Any] | None = None

    def compare(
        self,
        got: Tensor,
        expected: Tensor,
        *,
        output: str,
        trial: int,
        transform: str | Describe,
        valid: Tensor | None = None,
        index_of: Callable[[tuple[int, ...]], tuple[int, ...]] | None = None,
        shape: tuple[int, ...] | None = None,
    ) -> None:
        """Compare ``got`` with ``expected`` elementwise (only where ``valid``)."""
        if got.shape != expected.shape:
            raise AssertionError(
                f"{self.check} violated: {output} has shape {tuple(got.shape)} in trial "
                f"{trial} ({_text(transform, ())}), expected {tuple(expected.shape)}"
            )
        got = got.to(torch.float64)
        expected = expected.to(torch.float64)
        diff = (got - expected).abs()
        allowed = self.atol + self.rtol * expected.abs()
        ratio = torch.where(diff == 0, torch.zeros_like(diff), diff / allowed)
        finite = torch.isfinite(got) & torch.isfinite(expected)
        same = got == expected  # equal infinities pass, any NaN fails
        ratio = torch.where(finite | same, ratio, torch.full_like(ratio, math.inf))
        ratio = torch.nan_to_num(ratio, nan=math.inf, posinf=math.inf)
        if valid is not None:
            valid = valid.expand_as(ratio)
            self.n_compared += int(valid.sum())
            ratio = torch.where(valid, ratio, torch.full_like(ratio, -1.0))
        else:
            self.n_compared += ratio.numel()
        if ratio.numel() == 0:
            return
        flat = int(ratio.reshape(-1).argmax())
        value = float(ratio.reshape(-1)[flat])
        if value < 0 or (self.worst is not None and value <= self.worst["ratio"]):
            return
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), ratio.shape))
        out_index = index_of(index) if index_of is not None else index
        self.worst = {
            "ratio": value,
            "error": float(diff[index]),
            "got": float(got[index]),
            "expected": float(expected[index]),
            "output": output,
            "index": out_index,
            "shape": tuple(shape if shape is not None else got.shape),
            "trial": trial,
            "transform": _text(transform, out_index),
        }

    def finish(self) -> SymmetryReport:
        """Return the report, or raise AssertionError if any element was out of tolerance."""
        __tracebackhide__ = True
        worst = self.worst or {}
        report = SymmetryReport(
            check=self.check,
            passed=worst.get("ratio", 0.0) <= 1.0,
            n_trials=self.n_trials,
            n_compared=self.n_compared,
            rtol=self.rtol,
            atol=self.atol,
            **worst,
        )
        if not report.passed:
            raise AssertionError(str(report))
        return report


def _text(transform: str | Describe, index: tuple[int, ...]) -> str:
    return transform if isinstance(transform, str) else transform(index)


# ------------------------------------------------------------------------------------------
# Arguments
# ------------------------------------------------------------------------------------------


def make_generator(generator: torch.Generator | int | None) -> torch.Generator:
    """A CPU generator: the one given, one seeded with the given int, or seeded with 0."""
    if isinstance(generator, torch.Generator):
        return generator
    if generator is None:
        generator = 0
    if isinstance(generator, bool) or not isinstance(generator, int):
        raise TypeError(
            f"generator: expected a torch.Generator, an int seed or None, found {type(generator)}"
        )
    return torch.Generator().manual_seed(generator)


def tolerances(
    rtol: float | None, atol: float | None, dtype: torch.dtype
) -> tuple[float, float]:
    default_rtol, default_atol = default_tolerance(dtype)
    rtol = default_rtol if rtol is None else float(rtol)
    atol = default_atol if atol is None else float(atol)
    if rtol < 0 or atol < 0 or not (rtol > 0 or atol > 0):
        raise ValueError(
            f"rtol, atol: expected non-negative tolerances, not both zero; found {rtol}, {atol}"
        )
    return rtol, atol


def check_trials(n_trials: int) -> int:
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"n_trials: expected a positive int, found {n_trials!r}")
    return n_trials


def prepare_fn(fn: Callable[..., Any], dtype: torch.dtype | None) -> Callable[..., Any]:
    """``fn``, or a copy of it converted to ``dtype`` if it is a module holding other floats.

    The user's module is never modified (in particular not its dtype or train/eval mode).
    """
    if not callable(fn):
        raise TypeError(f"fn: expected a callable (function or nn.Module), found {type(fn)}")
    if dtype is None or not isinstance(fn, torch.nn.Module):
        return fn
    tensors = [*fn.parameters(), *fn.buffers()]
    if all(not t.is_floating_point() or t.dtype == dtype for t in tensors):
        return fn
    return copy.deepcopy(fn).to(dtype)


def flatten_outputs(out: Any) -> Outputs:
    """``fn``'s return value as named tensors in float64, detached."""
    if isinstance(out, Tensor):
        items = [("output", out)]
    elif isinstance(out, (tuple, list)):
        items = [(f"output[{i}]", t) for i, t in enumerate(out)]
    elif isinstance(out, dict):
        items = [(f"output[{k!r}]", t) for k, t in out.items()]
    else:
        raise TypeError(
            "fn must return a tensor, a tuple/list of tensors or a dict of tensors, "
            f"found {type(out)}"
        )
    result = []
    for name, t in items:
        if not isinstance(t, Tensor):
            raise TypeError(f"fn returned a {type(t)} as {name}; expected a torch.Tensor")
        result.append((name, t.detach().to(torch.float64)))
    return result


def call_args(fn: Callable[..., Any], values: Sequence[Any], dtype: torch.dtype) -> Outputs:
    """``fn(*values)`` with floating tensors cast to ``dtype`` (typed-arguments mode)."""
    cast = [v.to(dtype) if isinstance(v, Tensor) and v.is_floating_point() else v for v in values]
    return flatten_outputs(fn(*cast))


def resolve_types(
    out_types: str | Sequence[str | None] | None,
    outputs: Outputs,
    allowed: Sequence[str],
    *,
    argument: str = "out_types",
) -> list[str]:
    """One type per output; a single string applies to every output; None means 'scalar'."""
    if isinstance(out_types, str) or out_types is None:
        types: list[str | None] = [out_types] * len(outputs)
    else:
        types = list(out_types)
    if len(types) != len(outputs):
        raise ValueError(
            f"{argument}: expected one type per output ({len(outputs)} outputs: "
            f"{', '.join(n for n, _ in outputs)}), found {len(types)} types {types}"
        )
    resolved = [t if t is not None else "scalar" for t in types]
    for t in resolved:
        if t not in allowed:
            raise ValueError(f"{argument}: expected types from {list(allowed)}, found {t!r}")
    return resolved


def is_jetbatch(obj: Any) -> bool:
    from jettag.data.batch import JetBatch

    return isinstance(obj, JetBatch)


# ------------------------------------------------------------------------------------------
# Jets under test
# ------------------------------------------------------------------------------------------


@dataclass
class Jets:
    """The jets a helper works on, kept in float64, and how ``fn`` is called on them.

    Either ``batch`` (a JetBatch; ``fn(batch)``) or padded ``p4 (*S, N, 4)`` with optional
    ``x (*S, N, C)`` and ``mask (*S, N)`` (``fn(p4)``, ``fn(p4, x)``, ``fn(p4, mask=mask)``
    or ``fn(p4, x, mask=mask)``). ``S`` are the jet (batch) dimensions.
    """

    fn: Callable[..., Any]
    run_dtype: torch.dtype
    batch: JetBatch | None = None
    p4: Tensor | None = None
    x: Tensor | None = None
    mask: Tensor | None = None
    mask_dtype: torch.dtype = torch.bool

    @property
    def is_batch(self) -> bool:
        return self.batch is not None

    @property
    def jet_shape(self) -> tuple[int, ...]:
        if self.batch is not None:
            return (self.batch.num_jets,)
        assert self.p4 is not None
        return tuple(self.p4.shape[:-2])

    @property
    def device(self) -> torch.device:
        return self.batch.device if self.batch is not None else self.p4.device  # type: ignore[union-attr]

    def real(self) -> Tensor:
        """Bool mask of real particles (padded layout)."""
        assert self.p4 is not None
        if self.mask is None:
            return torch.ones(self.p4.shape[:-1], dtype=torch.bool, device=self.p4.device)
        return self.mask

    def call_padded(
        self, p4: Tensor, x: Tensor | None, mask: Tensor | None
    ) -> Outputs:
        args: list[Any] = [p4.to(self.run_dtype)]
        if x is not None:
            args.append(x.to(self.run_dtype) if x.is_floating_point() else x)
        kwargs = {} if mask is None else {"mask": mask.to(self.mask_dtype)}
        return flatten_outputs(self.fn(*args, **kwargs))

    def call_batch(self, batch: JetBatch) -> Outputs:
        return flatten_outputs(self.fn(batch.to(dtype=self.run_dtype)))

    def call(self) -> Outputs:
        """``fn`` on the unmodified jets."""
        if self.batch is not None:
            return self.call_batch(self.batch)
        assert self.p4 is not None
        return self.call_padded(self.p4, self.x, self.mask)

    def with_p4(self, p4: Tensor) -> Outputs:
        """``fn`` on the same jets with replaced four-vectors (same layout)."""
        if self.batch is not None:
            return self.call_batch(rebuild(self.batch, p4=p4))
        return self.call_padded(p4, self.x, self.mask)

    def owner(self, out: Tensor, name: str) -> Tensor:
        """JetBatch layout: the jet of each row of ``out`` (jet-level or particle-level)."""
        assert self.batch is not None
        return row_owner(self.batch, out.shape, name)

    def jet_of(self, out_shape: Sequence[int]) -> Callable[[tuple[int, ...]], int] | None:
        """Map an element index of an output to the flat index of its jet (None: no jets)."""
        try:
            if self.batch is not None:
                owner = row_owner(self.batch, tuple(out_shape), "output")
                return lambda index: int(owner[index[0]])
            shape = self.jet_shape
            check_lead(out_shape, shape, "output")
        except ValueError:
            return None

        return lambda index: flat_index(index, shape)

    def per_row(self, mats: Tensor, out: Tensor, name: str) -> tuple[Tensor, int]:
        """Per-jet matrices ``(*S, d, d)`` / ``(B, d, d)`` arranged for the rows of ``out``.

        Returns the matrices and the number of leading dimensions of ``out`` they pair with.
        """
        if self.batch is not None:
            return mats[self.owner(out, name)], 1
        shape = self.jet_shape
        check_lead(out.shape, shape, name)
        return mats, len(shape)


def flat_index(index: Sequence[int], shape: Sequence[int]) -> int:
    """Row-major flat position of ``index[:len(shape)]`` in an array of ``shape``."""
    flat = 0
    for i, n in zip(index[: len(shape)], shape, strict=True):
        flat = flat * n + int(i)
    return flat


def check_lead(out_shape: Sequence[int], jet_shape: tuple[int, ...], name: str) -> None:
    if tuple(out_shape[: len(jet_shape)]) != jet_shape:
        raise ValueError(
            f"{name}: expected the output's leading dimensions to be the jet dimensions "
            f"{jet_shape} of p4 (one result per jet or per particle), found shape "
            f"{tuple(out_shape)}"
        )


def row_owner(batch: JetBatch, out_shape: Sequence[int], name: str) -> Tensor:
    """The jet of each row of an output of a JetBatch model: rows are jets or particles."""
    n_jets, n_particles = batch.num_jets, batch.num_particles
    if len(out_shape) == 0:
        raise ValueError(
            f"{name}: expected one row per jet ({n_jets}) or per particle ({n_particles}), "
            "found a 0-d tensor"
        )
    rows = out_shape[0]
    if rows == n_jets and (rows != n_particles or bool((batch.counts == 1).all())):
        return torch.arange(n_jets, device=batch.device)
    if rows == n_particles and rows != n_jets:
        return batch.batch
    if rows == n_jets:
        raise ValueError(
            f"{name}: {rows} rows is both the number of jets and of particles of this batch; "
            "test with a batch where the two differ"
        )
    raise ValueError(
        f"{name}: expected one row per jet ({n_jets}) or per particle ({n_particles}), "
        f"found shape {tuple(out_shape)}"
    )


def parse_jets(
    fn: Callable[..., Any],
    inputs: Any,
    x: Tensor | None,
    mask: Tensor | None,
    dtype: torch.dtype | None,
    *,
    helper: str,
) -> Jets:
    """Validate the jet inputs of a helper and cast them to float64."""
    if is_jetbatch(inputs):
        if x is not None or mask is not None:
            raise ValueError(
                f"{helper}: x= and mask= are for padded tensors; a JetBatch carries its own "
                "x and has no padding"
            )
        run = inputs.dtype if dtype is None else dtype
        default_tolerance(run)
        return Jets(prepare_fn(fn, run), run, batch=inputs.to(dtype=torch.float64))
    if not isinstance(inputs, Tensor):
        raise TypeError(
            f"{helper}: expected four-vectors p4 (..., N, 4) or a JetBatch as inputs, "
            f"found {type(inputs)}"
        )
    p4 = inputs
    if p4.dim() < 2 or p4.shape[-1] != 4 or not p4.is_floating_point():
        raise ValueError(
            f"{helper}: expected floating four-vectors p4 of shape (..., N, 4), found "
            f"{p4.dtype} {tuple(p4.shape)}"
        )
    run = p4.dtype if dtype is None else dtype
    default_tolerance(run)
    if x is not None and (not isinstance(x, Tensor) or x.shape[:-1] != p4.shape[:-1]):
        raise ValueError(
            f"{helper}: expected per-particle features x of shape {tuple(p4.shape[:-1])} + (C,), "
            f"found {tuple(x.shape) if isinstance(x, Tensor) else type(x)}"
        )
    mask_dtype = torch.bool
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.shape != p4.shape[:-1]:
            raise ValueError(
                f"{helper}: expected mask of shape {tuple(p4.shape[:-1])} (True = real "
                f"particle), found {tuple(mask.shape) if isinstance(mask, Tensor) else type(mask)}"
            )
        mask_dtype = mask.dtype
        mask = mask.to(torch.bool)
    x64 = x.to(torch.float64) if x is not None and x.is_floating_point() else x
    return Jets(
        prepare_fn(fn, run), run, p4=p4.to(torch.float64), x=x64, mask=mask,
        mask_dtype=mask_dtype,
    )


def rebuild(batch: JetBatch, **changes: Any) -> JetBatch:
    """A JetBatch like ``batch`` with some of ``p4``, ``ptr``, ``x``, ``label``, ``fields``
    replaced."""
    from jettag.data.batch import JetBatch

    parts = {
        "p4": batch.p4,
        "ptr": batch.ptr,
        "x": batch.x,
        "label": batch.label,
        "fields": dict(batch.fields),
    }
    parts.update(changes)
    return JetBatch(
        parts["p4"], parts["ptr"], x=parts["x"], label=parts["label"], fields=parts["fields"]
    )


# ------------------------------------------------------------------------------------------
# Group actions on outputs
# ------------------------------------------------------------------------------------------


def apply_matrix(mats: Tensor, v: Tensor, lead: int) -> Tensor:
    """``M v`` on the last dimension of ``v (*L, *rest, d)`` with ``mats (*L, d, d)``."""
    d = mats.shape[-1]
    if v.shape[-1:] != (d,) or v.dim() < lead + 1:
        raise ValueError(f"expected vectors of shape (..., {d}), found {tuple(v.shape)}")
    m = mats.reshape(*mats.shape[:-2], *([1] * (v.dim() - lead - 1)), d, d).to(v)
    return (m @ v.unsqueeze(-1)).squeeze(-1)


def apply_matrix2(mats: Tensor, t: Tensor, lead: int) -> Tensor:
    """``M T M^T`` on the last two dimensions of ``t (*L, *rest, d, d)``."""
    d = mats.shape[-1]
    if t.shape[-2:] != (d, d) or t.dim() < lead + 2:
        raise ValueError(f"expected tensors of shape (..., {d}, {d}), found {tuple(t.shape)}")
    m = mats.reshape(*mats.shape[:-2], *([1] * (t.dim() - lead - 2)), d, d).to(t)
    return m @ t @ m.transpose(-1, -2)
