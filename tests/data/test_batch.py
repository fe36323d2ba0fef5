"""Tests of jettag.data.JetBatch: validation, indexing, collation and exact round trips."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys

import awkward as ak
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.data import Batch, Data

from jettag.data import JetBatch

# Jet-size patterns: empty jets first, in the middle, last, all empty, a single jet.
SIZES = [
    [0, 3, 2],
    [3, 0, 2],
    [3, 2, 0],
    [0, 0, 0],
    [4],
    [0],
    [1, 5, 0, 2, 0, 7],
]
DTYPES = [torch.float32, torch.float64]


def massless_p4(n: int, dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    """Massless four-vectors (E, px, py, pz) with pT in [1, 100] GeV, |eta| < 2."""
    pt = 1 + 99 * torch.rand(n, generator=generator, dtype=torch.float64)
    eta = 4 * torch.rand(n, generator=generator, dtype=torch.float64) - 2
    phi = 2 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64) - math.pi
    px, py, pz = pt * torch.cos(phi), pt * torch.sin(phi), pt * torch.sinh(eta)
    return torch.stack([pt * torch.cosh(eta), px, py, pz], dim=1).to(dtype)


def make_jets(
    sizes: list[int],
    dtype: torch.dtype = torch.float32,
    *,
    x: bool = True,
    label: bool = True,
    fields: bool = True,
    seed: int = 0,
) -> JetBatch:
    g = torch.Generator().manual_seed(seed)
    num_particles, num_jets = sum(sizes), len(sizes)
    p4 = massless_p4(num_particles, dtype, g)
    kwargs: dict = {}
    if x:
        kwargs["x"] = torch.randn(num_particles, 3, generator=g, dtype=dtype)
    if label:
        kwargs["label"] = torch.randint(0, 10, (num_jets,), generator=g)
    if fields:
        kwargs["fields"] = {
            "truth_p4": massless_p4(num_jets, dtype, g),
            "jet_pt": torch.rand(num_jets, generator=g, dtype=dtype),
            "n_charged": torch.randint(0, 5, (num_jets,), generator=g, dtype=torch.int32),
        }
    return JetBatch.from_counts(p4, sizes, **kwargs)


def assert_same(a: JetBatch, b: JetBatch) -> None:
    """Bit-for-bit equality of two batches (values, dtypes, optional parts, field names)."""
    assert a.p4.dtype == b.p4.dtype
    assert torch.equal(a.p4, b.p4)
    assert a.ptr.dtype == b.ptr.dtype == torch.int64
    assert torch.equal(a.ptr, b.ptr)
    for part in ("x", "label"):
        u, v = getattr(a, part), getattr(b, part)
        assert (u is None) == (v is None), part
        if u is not None:
            assert u.dtype == v.dtype, part
            assert torch.equal(u, v), part
    assert list(a.fields) == list(b.fields)
    for name in a.fields:
        assert a.fields[name].dtype == b.fields[name].dtype, name
        assert torch.equal(a.fields[name], b.fields[name]), name


VARIANTS = [
    pytest.param({"x": True, "label": True, "fields": True}, id="full"),
    pytest.param({"x": False, "label": False, "fields": False}, id="bare"),
    pytest.param({"x": True, "label": False, "fields": False}, id="x-only"),
    pytest.param({"x": False, "label": True, "fields": True}, id="no-x"),
]


# ---------------------------------------------------------------------- basics


def test_sizes_batch_and_repr():
    jets = make_jets([2, 0, 3])
    assert len(jets) == jets.num_jets == 3
    assert jets.num_particles == 5
    assert torch.equal(jets.ptr, torch.tensor([0, 2, 2, 5]))
    assert torch.equal(jets.counts, torch.tensor([2, 0, 3]))
    assert torch.equal(jets.jet_sizes, jets.counts)
    assert torch.equal(jets.batch, torch.tensor([0, 0, 2, 2, 2]))
    assert jets.batch.dtype == torch.int64
    assert jets.batch is jets.batch  # cached
    assert jets.dtype == torch.float32
    assert jets.device == torch.device("cpu")
    assert repr(jets) == (
        "JetBatch(jets=3, particles=5, x=3, fields=[truth_p4, jet_pt, n_charged], dtype=float32)"
    )
    bare = make_jets([1], torch.float64, x=False, label=False, fields=False)
    assert repr(bare) == "JetBatch(jets=1, particles=1, x=None, fields=[], dtype=float64)"


def test_field_attribute_fallback():
    jets = make_jets([1, 2])
    assert jets.truth_p4 is jets.fields["truth_p4"]
    with pytest.raises(AttributeError, match="no attribute or jet-level field 'truth_p3'"):
        _ = jets.truth_p3


def test_pickle_roundtrip():
    jets = make_jets([2, 0, 1])
    _ = jets.batch
    assert_same(pickle.loads(pickle.dumps(jets)), jets)


def test_import_is_light():
    code = (
        "import sys; from jettag.data import JetBatch; "
        "assert 'torch_geometric' not in sys.modules and 'awkward' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_from_counts_matches_explicit_ptr():
    p4 = massless_p4(4, torch.float64, torch.Generator().manual_seed(1))
    a = JetBatch.from_counts(p4, torch.tensor([1, 0, 3], dtype=torch.int32))
    b = JetBatch(p4, torch.tensor([0, 1, 1, 4]))
    assert_same(a, b)


# ---------------------------------------------------------------------- indexing


def per_jet(jets: JetBatch, j: int) -> tuple[torch.Tensor, torch.Tensor]:
    lo, hi = int(jets.ptr[j]), int(jets.ptr[j + 1])
    return jets.p4[lo:hi], jets.x[lo:hi]


def assert_selects(jets: JetBatch, sub: JetBatch, chosen: list[int]) -> None:
    assert sub.num_jets == len(chosen)
    for k, j in enumerate(chosen):
        p4, x = per_jet(jets, j)
        p4_sub, x_sub = per_jet(sub, k)
        assert torch.equal(p4_sub, p4)
        assert torch.equal(x_sub, x)
        assert sub.label[k] == jets.label[j]
        for name in jets.fields:
            assert torch.equal(sub.fields[name][k], jets.fields[name][j])
    assert torch.equal(sub.batch, torch.repeat_interleave(torch.arange(len(chosen)), sub.counts))


@pytest.mark.parametrize(
    ("index", "chosen"),
    [
        (0, [0]),
        (2, [2]),
        (-1, [5]),
        (-6, [0]),
        (np.int64(3), [3]),
        (torch.tensor(4), [4]),
        (slice(1, 4), [1, 2, 3]),
        (slice(None, None, 2), [0, 2, 4]),
        (slice(None, None, -1), [5, 4, 3, 2, 1, 0]),
        (slice(4, 2), []),
        ([5, 0, 0, -2], [5, 0, 0, 4]),
        ([], []),
        (range(2, 5), [2, 3, 4]),
        (np.array([3, 1]), [3, 1]),
        (torch.tensor([2, 1], dtype=torch.int32), [2, 1]),
        (torch.tensor([True, False, True, True, False, False]), [0, 2, 3]),
        ([False] * 6, []),
    ],
)
def test_indexing_matches_per_jet_slices(index, chosen):
    jets = make_jets([1, 5, 0, 2, 0, 7])
    assert_selects(jets, jets[index], chosen)


def test_iteration_yields_single_jets():
    jets = make_jets([2, 0, 1])
    parts = list(jets)
    assert [len(p) for p in parts] == [1, 1, 1]
    assert_same(JetBatch.collate(parts), jets)


@pytest.mark.parametrize(
    ("index", "error", "match"),
    [
        (3, IndexError, "index 3 is out of range for a batch of 3 jets"),
        (-4, IndexError, "index -4 is out of range"),
        ([0, 7], IndexError, "index 7 is out of range"),
        (torch.tensor([True, False]), IndexError, r"bool mask must have shape \(3,\)"),
        (torch.tensor([[0, 1]]), IndexError, "must be 1-D"),
        (torch.tensor([0.5]), TypeError, "integer or bool"),
        ((0, 1), TypeError, "tuple is not supported"),
        ("truth_p4", TypeError, "string is not a jet index"),
        (True, TypeError, "bool is not a jet index"),
        (1.0, TypeError, "expected an int, slice"),
    ],
)
def test_bad_index(index, error, match):
    with pytest.raises(error, match=match):
        make_jets([1, 0, 2])[index]


# ---------------------------------------------------------------------- collate


def test_collate_dicts_equals_from_counts():
    jets = make_jets([2, 0, 3, 1])
    dicts = []
    for j in range(jets.num_jets):
        p4, x = per_jet(jets, j)
        dicts.append(
            {"p4": p4, "x": x, "label": jets.label[j]}
            | {name: value[j] for name, value in jets.fields.items()}
        )
    assert_same(JetBatch.collate(dicts), jets)


def test_collate_python_scalars_and_mixed_items():
    p4 = torch.tensor([[5.0, 3.0, 4.0, 0.0], [2.0, 0.0, 0.0, 2.0]])
    out = JetBatch.collate(
        [
            {"p4": p4[:1], "label": 1, "jet_pt": 5.0},
            JetBatch.from_counts(
                p4[1:],
                [0, 1],
                label=torch.tensor([0, 1]),
                fields={"jet_pt": torch.tensor([0.0, 0.0])},
            ),
        ]
    )
    assert torch.equal(out.ptr, torch.tensor([0, 1, 1, 2]))
    assert torch.equal(out.p4, p4)
    assert torch.equal(out.label, torch.tensor([1, 0, 1]))
    assert torch.equal(out.jet_pt, torch.tensor([5.0, 0.0, 0.0]))


def test_collate_concatenates_batches():
    jets = make_jets([1, 5, 0, 2, 0, 7], torch.float64)
    assert_same(JetBatch.collate([jets[:2], jets[2:3], jets[3:]]), jets)
    assert_same(JetBatch.collate([jets[:0], jets]), jets)


@pytest.mark.parametrize(
    ("items", "match"),
    [
        ([], "empty list"),
        ({"p4": torch.zeros(1, 4)}, "wrap it in a list"),
        ([{"x": torch.zeros(1, 2)}], "item 0 has no key 'p4'"),
        ([{"p4": torch.zeros(1, 3)}], r"item 0 'p4' must have shape \(n, 4\), found \(1, 3\)"),
        (
            [{"p4": torch.zeros(1, 4), "label": 1}, {"p4": torch.zeros(2, 4)}],
            "item 1 has x=False, label=False",
        ),
        (
            [{"p4": torch.zeros(1, 4)}, {"p4": torch.zeros(2, 4, dtype=torch.float64)}],
            "item 1 has p4 dtype torch.float64 but item 0 has torch.float32",
        ),
        ([{"p4": torch.zeros(1, 4), "label": torch.tensor([1, 2])}], "'label' must be a scalar"),
        ([{"p4": torch.zeros(2, 4), "x": torch.zeros(3, 1)}], r"'x' must have shape \(n, C\)"),
        (
            [
                {"p4": torch.zeros(1, 4), "x": torch.zeros(1, 2)},
                {"p4": torch.zeros(1, 4), "x": torch.zeros(1, 3)},
            ],
            "item 1 has x with 3 columns but item 0 has 2",
        ),
        ([{"p4": torch.zeros(1, 4)}, "jet"], "item 1 must be a JetBatch or a dict"),
        ([{"p4": torch.full((1, 4), math.nan)}], "JetBatch.collate: p4 must be finite"),
    ],
)
def test_collate_errors(items, match):
    with pytest.raises(ValueError, match=match):
        JetBatch.collate(items)


# ---------------------------------------------------------------------- to()


def test_to_float64_casts_floats_only():
    jets = make_jets([2, 0, 3])
    out = jets.to(dtype=torch.float64)
    assert out.p4.dtype == out.x.dtype == out.truth_p4.dtype == out.jet_pt.dtype == torch.float64
    assert out.ptr.dtype == out.label.dtype == torch.int64
    assert out.n_charged.dtype == torch.int32
    assert torch.equal(out.p4, jets.p4.double())
    assert torch.equal(out.x, jets.x.double())
    assert torch.equal(out.ptr, jets.ptr)
    assert torch.equal(out.label, jets.label)
    assert_same(jets.to(torch.float64), out)
    assert_same(out.to(torch.float32), jets)  # float32 -> float64 -> float32 is exact
    assert jets.to() is jets
    assert_same(jets.to("cpu"), jets)


def test_to_rejects_integer_dtype_and_overflow():
    jets = make_jets([2])
    with pytest.raises(ValueError, match=r"dtype must be a floating-point dtype.*torch\.int64"):
        jets.to(dtype=torch.int64)
    big = JetBatch.from_counts(torch.tensor([[1e6, 0.0, 0.0, 1e6]]), [1])
    with pytest.raises(ValueError, match=r"JetBatch\.to: p4 must be finite, found 2 non-finite"):
        big.to(torch.float16)


# ---------------------------------------------------------------------- validation


def _p4(n: int) -> torch.Tensor:
    return massless_p4(n, torch.float32, torch.Generator().manual_seed(n))


MALFORMED = [
    pytest.param(
        dict(p4=torch.zeros(3, 3), ptr=torch.tensor([0, 3])),
        r"p4 must be a tensor of shape \(P, 4\).*\(3, 3\)",
        id="p4-last-dim",
    ),
    pytest.param(
        dict(p4=torch.zeros(4), ptr=torch.tensor([0, 1])),
        r"p4 must be a tensor of shape \(P, 4\).*\(4,\)",
        id="p4-1d",
    ),
    pytest.param(
        dict(p4=np.zeros((1, 4)), ptr=torch.tensor([0, 1])),
        "p4 must be a tensor.*found ndarray",
        id="p4-numpy",
    ),
    pytest.param(
        dict(p4=torch.zeros(2, 4, dtype=torch.int64), ptr=torch.tensor([0, 2])),
        "p4 must have a floating-point dtype.*torch.int64",
        id="p4-int",
    ),
    pytest.param(
        dict(p4=torch.zeros(2, 4), ptr=torch.tensor([0, 2], dtype=torch.int32)),
        "ptr must be a 1-D int64 tensor.*torch.int32",
        id="ptr-int32",
    ),
    pytest.param(
        dict(p4=torch.zeros(2, 4), ptr=torch.tensor([[0, 2]])),
        r"ptr must be a 1-D int64 tensor.*\(1, 2\)",
        id="ptr-2d",
    ),
    pytest.param(
        dict(p4=torch.zeros(0, 4), ptr=torch.zeros(0, dtype=torch.int64)),
        "ptr must have B\\+1 >= 1 entries",
        id="ptr-empty",
    ),
    pytest.param(
        dict(p4=torch.zeros(2, 4), ptr=torch.tensor([1, 2])),
        r"ptr\[0\] must be 0, found 1",
        id="ptr-start",
    ),
    pytest.param(
        dict(p4=torch.zeros(2, 4), ptr=torch.tensor([0, 2, 1, 2])),
        r"ptr must be nondecreasing, found ptr\[1\] = 2 > ptr\[2\] = 1",
        id="ptr-decreasing",
    ),
    pytest.param(
        dict(p4=torch.zeros(3, 4), ptr=torch.tensor([0, 2])),
        r"ptr\[-1\] must equal the number of particles P = 3.*found 2",
        id="ptr-end",
    ),
    pytest.param(
        dict(
            p4=torch.tensor([[1.0, 0, 0, 1], [1, 0, 0, 1], [math.nan, math.inf, 0, 1]]),
            ptr=torch.tensor([0, 2, 2, 3]),
        ),
        r"p4 must be finite, found 2 non-finite value\(s\) in 1 particle\(s\); "
        r"the first is particle 2 \(jet 2\)",
        id="p4-nonfinite",
    ),
    pytest.param(
        dict(p4=_p4(2), ptr=torch.tensor([0, 2]), x=torch.zeros(3, 2)),
        r"x must be a tensor of shape \(P, C\) with P = 2.*\(3, 2\)",
        id="x-rows",
    ),
    pytest.param(
        dict(p4=_p4(2), ptr=torch.tensor([0, 2]), x=torch.zeros(2)),
        r"x must be a tensor of shape \(P, C\)",
        id="x-1d",
    ),
    pytest.param(
        dict(p4=_p4(2), ptr=torch.tensor([0, 2]), x=torch.zeros(2, 1, dtype=torch.float64)),
        r"x must have the dtype of p4 \(torch.float32\), found torch.float64",
        id="x-dtype",
    ),
    pytest.param(
        dict(p4=_p4(2), ptr=torch.tensor([0, 1, 2]), x=torch.tensor([[0.0], [-math.inf]])),
        r"x must be finite, found 1 non-finite value\(s\).*particle 1 \(jet 1\)",
        id="x-nonfinite",
    ),
    pytest.param(
        dict(p4=_p4(2), ptr=torch.tensor([0, 1, 2]), label=torch.tensor([1])),
        r"label must be a 1-D tensor with one entry per jet \(B = 2\), found shape \(1,\)",
        id="label-length",
    ),
    pytest.param(
        dict(p4=_p4(2), ptr=torch.tensor([0, 1, 2]), label=torch.tensor([[1], [0]])),
        r"label must be a 1-D tensor.*\(2, 1\)",
        id="label-2d",
    ),
    pytest.param(
        dict(p4=_p4(2), ptr=torch.tensor([0, 1, 2]), fields={"truth_p4": torch.zeros(3, 4)}),
        r"field 'truth_p4' must be a tensor with first dim B = 2, found shape \(3, 4\)",
        id="field-length",
    ),
    pytest.param(
        dict(p4=_p4(2), ptr=torch.tensor([0, 1, 2]), fields={"jet_pt": torch.tensor(1.0)}),
        r"field 'jet_pt' must be a tensor with first dim B = 2, found shape \(\)",
        id="field-0d",
    ),
    pytest.param(
        dict(p4=_p4(2), ptr=torch.tensor([0, 1, 2]), fields={"jet_pt": [1.0, 2.0]}),
        "field 'jet_pt' must be a tensor.*found list",
        id="field-list",
    ),
    pytest.param(
        dict(p4=_p4(2), ptr=torch.tensor([0, 1, 2]), fields={"counts": torch.zeros(2)}),
        "field name 'counts' is an attribute of JetBatch",
        id="field-name-property",
    ),
    pytest.param(
        dict(p4=_p4(2), ptr=torch.tensor([0, 1, 2]), fields={"label": torch.zeros(2)}),
        "field name 'label' is an attribute of JetBatch",
        id="field-name-label",
    ),
    pytest.param(
        dict(p4=_p4(2), ptr=torch.tensor([0, 1, 2]), fields=[("a", torch.zeros(2))]),
        "fields must be a dict",
        id="fields-not-dict",
    ),
]


@pytest.mark.parametrize(("kwargs", "match"), MALFORMED)
def test_constructor_rejects(kwargs, match):
    kwargs = dict(kwargs)
    p4, ptr = kwargs.pop("p4"), kwargs.pop("ptr")
    with pytest.raises(ValueError, match=f"^JetBatch: {match}"):
        JetBatch(p4, ptr, **kwargs)


@pytest.mark.parametrize(
    ("counts", "match"),
    [
        ([1, -1, 2], r"counts must be nonnegative, found counts\[1\] = -1"),
        ([1, 1], "counts sum to 2 particles but p4 has 3 rows"),
        ([[1, 2]], "counts must be a 1-D integer tensor"),
        ([1.5, 1.5], "counts must be a 1-D integer tensor.*torch.float32"),
    ],
)
def test_from_counts_rejects(counts, match):
    with pytest.raises(ValueError, match=f"^JetBatch.from_counts: {match}"):
        JetBatch.from_counts(_p4(3), counts)


# ---------------------------------------------------------------------- padded


@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_padded_roundtrip(sizes, dtype, variant):
    jets = make_jets(sizes, dtype, **variant)
    p4, x, mask = jets.to_padded()
    longest = max(sizes)
    assert p4.shape == (len(sizes), longest, 4)
    assert p4.dtype == dtype
    assert mask.dtype == torch.bool
    assert torch.equal(mask.sum(dim=1), jets.counts)
    assert (x is None) == (jets.x is None)
    for j in range(len(sizes)):
        lo, hi = int(jets.ptr[j]), int(jets.ptr[j + 1])
        assert torch.equal(p4[j, : hi - lo], jets.p4[lo:hi])
        assert not p4[j, hi - lo :].any()  # zero padding
        if x is not None:
            assert torch.equal(x[j, : hi - lo], jets.x[lo:hi])
    back = JetBatch.from_padded(p4, mask, x=x, label=jets.label, fields=jets.fields)
    assert_same(back, jets)
    # padding longer changes nothing but the view
    p4_long, _, mask_long = jets.to_padded(longest + 3)
    assert p4_long.shape[1] == longest + 3
    assert_same(
        JetBatch.from_padded(
            p4_long,
            mask_long,
            x=jets.to_padded(longest + 3)[1],
            label=jets.label,
            fields=jets.fields,
        ),
        jets,
    )


def test_to_padded_truncation():
    jets = make_jets([4, 0, 2, 3])
    with pytest.raises(
        ValueError,
        match=r"max_particles=2 is smaller than the longest jet \(jet 0 has 4 particles\)"
        r".*truncate=True",
    ):
        jets.to_padded(2)
    with pytest.raises(ValueError, match="max_particles must be >= 0, found -1"):
        jets.to_padded(-1)
    p4, x, mask = jets.to_padded(2, truncate=True)
    assert torch.equal(mask.sum(dim=1), torch.tensor([2, 0, 2, 2]))
    for j, keep in enumerate([2, 0, 2, 2]):
        lo = int(jets.ptr[j])
        assert torch.equal(p4[j, :keep], jets.p4[lo : lo + keep])
        assert torch.equal(x[j, :keep], jets.x[lo : lo + keep])
    kept = JetBatch.from_padded(p4, mask, x=x)
    assert torch.equal(kept.p4, jets.p4[[0, 1, 4, 5, 6, 7]])
    # truncate=True with a length that fits is a plain padding
    assert torch.equal(jets.to_padded(5, truncate=True)[0], jets.to_padded(5)[0])
    p4_0, x_0, mask_0 = jets.to_padded(0, truncate=True)
    assert p4_0.shape == (4, 0, 4) and x_0.shape == (4, 0, 3) and mask_0.shape == (4, 0)


def test_from_padded_gathers_noncontiguous_mask_and_ignores_padding():
    p4 = torch.full((2, 3, 4), math.nan, dtype=torch.float64)  # padding may hold anything
    p4[0, 0] = torch.tensor([5.0, 3.0, 4.0, 0.0])
    p4[0, 2] = torch.tensor([2.0, 0.0, 0.0, 2.0])
    p4[1, 1] = torch.tensor([1.0, 1.0, 0.0, 0.0])
    mask = torch.tensor([[True, False, True], [False, True, False]])
    jets = JetBatch.from_padded(p4, mask)
    assert torch.equal(jets.ptr, torch.tensor([0, 2, 3]))
    assert torch.equal(jets.p4, p4[mask])
    assert torch.equal(jets.p4[1], torch.tensor([2.0, 0.0, 0.0, 2.0], dtype=torch.float64))
    _, _, new_mask = jets.to_padded()
    assert torch.equal(new_mask, torch.tensor([[True, True], [True, False]]))  # left-aligned


def test_padded_is_differentiable():
    p4 = _p4(3).requires_grad_()
    jets = JetBatch.from_counts(p4, [1, 2])
    padded, _, _ = jets.to_padded(4)
    (padded * 2).sum().backward()
    assert torch.equal(p4.grad, torch.full((3, 4), 2.0))


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (
            (torch.zeros(2, 4), torch.ones(2, dtype=torch.bool)),
            {},
            r"p4 must be a tensor of shape \(B, N, 4\)",
        ),
        ((torch.zeros(2, 3, 4), torch.ones(2, 3)), {}, "mask must be a bool tensor.*torch.float32"),
        (
            (torch.zeros(2, 3, 4), torch.ones(2, 2, dtype=torch.bool)),
            {},
            r"mask must have shape \(B, N\) = \(2, 3\) like p4, found \(2, 2\)",
        ),
        (
            (torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.bool)),
            {"x": torch.zeros(2, 2, 1)},
            r"x must have shape \(B, N, C\)",
        ),
        (
            (torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.bool)),
            {"label": torch.zeros(3)},
            "label must be a 1-D tensor with one entry per jet",
        ),
        (
            (torch.zeros(1, 2, 4), torch.ones(1, 2, dtype=torch.bool)),
            {"x": torch.zeros(1, 2, 1, dtype=torch.float64)},
            "x must have the dtype of p4",
        ),
        (
            (torch.full((1, 2, 4), math.inf), torch.tensor([[True, False]])),
            {},
            r"p4 must be finite, found 4 non-finite value\(s\) in 1 particle",
        ),
    ],
)
def test_from_padded_rejects(args, kwargs, match):
    with pytest.raises(ValueError, match=f"^JetBatch.from_padded: {match}"):
        JetBatch.from_padded(*args, **kwargs)


# ---------------------------------------------------------------------- PyTorch Geometric


@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_pyg_roundtrip(sizes, dtype, variant):
    jets = make_jets(sizes, dtype, **variant)
    graph = jets.to_pyg()
    assert isinstance(graph, Batch)
    assert graph.num_graphs == len(sizes)
    assert torch.equal(graph.ptr, jets.ptr)
    assert torch.equal(graph.batch, jets.batch)
    assert torch.equal(graph.p4, jets.p4)
    assert_same(JetBatch.from_pyg(graph), jets)


def test_to_pyg_equals_from_data_list():
    jets = make_jets([0, 3, 0, 2, 0])
    data = []
    for j in range(jets.num_jets):
        p4, x = per_jet(jets, j)
        fields = {name: value[j : j + 1] for name, value in jets.fields.items()}
        data.append(Data(p4=p4, x=x, y=jets.label[j : j + 1], num_nodes=p4.shape[0], **fields))
    reference = Batch.from_data_list(data)
    graph = jets.to_pyg()
    assert sorted(graph.keys()) == sorted(reference.keys())
    for key in reference.keys():
        assert torch.equal(torch.as_tensor(graph[key]), torch.as_tensor(reference[key])), key
    # PyG can split it back into the per-jet graphs, empty ones included
    for mine, theirs in zip(graph.to_data_list(), data, strict=True):
        assert mine.num_nodes == theirs.num_nodes
        for key in theirs.keys():
            assert torch.equal(torch.as_tensor(mine[key]), torch.as_tensor(theirs[key])), key
    assert_same(JetBatch.from_pyg(reference), jets)
    assert_same(JetBatch.from_pyg(Batch.from_data_list(graph.index_select([3, 1]))), jets[[3, 1]])


def test_from_pyg_single_data_and_batch_vector():
    p4 = _p4(3)
    one = JetBatch.from_pyg(Data(p4=p4, y=torch.tensor(1)))
    assert torch.equal(one.ptr, torch.tensor([0, 3]))
    assert torch.equal(one.label, torch.tensor([1]))
    no_ptr = JetBatch.from_pyg(Data(p4=p4, batch=torch.tensor([0, 2, 2])))
    assert torch.equal(no_ptr.ptr, torch.tensor([0, 1, 1, 3]))


def test_pyg_errors():
    p4 = _p4(3)
    with pytest.raises(ValueError, match=r"from_pyg: expected .* node attribute 'p4'.*\['pos'\]"):
        JetBatch.from_pyg(Data(pos=p4[:, :3]))
    with pytest.raises(
        ValueError, match="from_pyg: expected a torch_geometric Batch or Data, found list"
    ):
        JetBatch.from_pyg([Data(p4=p4)])
    with pytest.raises(ValueError, match=r"from_pyg: attribute 'edge_index' has shape \(2, 2\)"):
        JetBatch.from_pyg(
            Batch.from_data_list(
                [Data(p4=p4, edge_index=torch.tensor([[0, 1], [1, 2]]), num_nodes=3)]
            )
        )
    with pytest.raises(ValueError, match=r"from_pyg: batch\.batch must be sorted"):
        JetBatch.from_pyg(Data(p4=p4, batch=torch.tensor([1, 0, 1])))
    with pytest.raises(ValueError, match="from_pyg: p4 must be finite"):
        JetBatch.from_pyg(Data(p4=torch.full((1, 4), math.nan)))
    for name in ("y", "num_nodes", "track_index", "face"):
        jets = JetBatch.from_counts(p4, [3], fields={name: torch.zeros(1)})
        with pytest.raises(ValueError, match=f"to_pyg: jet-level field '{name}' clashes"):
            jets.to_pyg()


# ---------------------------------------------------------------------- awkward


@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_awkward_roundtrip(sizes, dtype, variant):
    jets = make_jets(sizes, dtype, **variant)
    array = jets.to_awkward()
    assert len(array) == len(sizes)
    assert ak.to_list(ak.num(array.part_energy, axis=1)) == sizes
    assert_same(JetBatch.from_awkward(array), jets)


def test_awkward_layout():
    jets = make_jets([2, 0, 1], torch.float64)
    array = jets.to_awkward()
    assert str(array.type) == (
        "3 * {part_energy: var * float64, part_px: var * float64, part_py: var * float64, "
        "part_pz: var * float64, part_x: var * 3 * float64, label: int64, "
        "truth_p4: 4 * float64, jet_pt: float64, n_charged: int32}"
    )
    assert ak.to_list(array[2].part_px) == [jets.p4[2, 1].item()]
    assert ak.to_list(array.label) == jets.label.tolist()
    assert ak.to_list(array[1].truth_p4) == jets.truth_p4[1].tolist()


def test_from_awkward_field_selection():
    array = ak.Array(
        {
            "part_energy": [[5.0, 2.0], []],
            "part_px": [[3.0, 0.0], []],
            "part_py": [[4.0, 0.0], []],
            "part_pz": [[0.0, 2.0], []],
            "part_charge": [[1, -1], []],
            "part_d0": [[0.1, 0.2], []],
            "part_pair": [[[1.0, 2.0], [3.0, 4.0]], []],
            "is_signal": [1, 0],
            "jet_pt": [5.0, 0.0],
            "tag": [[1, 2, 3], [4]],
        }
    )
    jets = JetBatch.from_awkward(
        array,
        x_fields=["part_charge", "part_pair", "part_d0"],
        label_field="is_signal",
        jet_fields=["jet_pt"],
    )
    assert jets.dtype == torch.float64
    assert torch.equal(jets.ptr, torch.tensor([0, 2, 2]))
    assert torch.equal(
        jets.x,
        torch.tensor([[1.0, 1.0, 2.0, 0.1], [-1.0, 3.0, 4.0, 0.2]], dtype=torch.float64),
    )
    assert torch.equal(jets.label, torch.tensor([1, 0]))
    assert list(jets.fields) == ["jet_pt"]
    # defaults: no part_x -> no x; label "label" absent -> no label; every non-part_ field
    with pytest.raises(ValueError, match="from_awkward: field 'tag' must be numbers with regular"):
        JetBatch.from_awkward(array)
    plain = JetBatch.from_awkward(
        array[["part_energy", "part_px", "part_py", "part_pz", "is_signal"]]
    )
    assert plain.x is None and plain.label is None
    assert torch.equal(plain.is_signal, torch.tensor([1, 0]))
    assert JetBatch.from_awkward(array, x_fields=[], jet_fields=[], label_field=None).fields == {}


def test_from_awkward_float32_kept_and_x_cast():
    array = ak.Array(
        {
            "part_energy": np.array([[5.0]], dtype=np.float32).tolist(),
            "part_px": [[3.0]],
            "part_py": [[4.0]],
            "part_pz": [[0.0]],
        }
    )
    array = ak.with_field(array, ak.values_astype(array.part_energy, np.float32), "part_energy")
    for name in ("part_px", "part_py", "part_pz"):
        array = ak.with_field(array, ak.values_astype(array[name], np.float32), name)
    array = ak.with_field(array, ak.Array([[[1.0, 2.0]]]), "part_x")  # float64 features
    jets = JetBatch.from_awkward(array)
    assert jets.dtype == torch.float32
    assert jets.x.dtype == torch.float32
    assert torch.equal(jets.x, torch.tensor([[1.0, 2.0]]))


def test_from_awkward_parquet_roundtrip(tmp_path):
    pytest.importorskip("pyarrow")
    jets = make_jets([3, 0, 2])
    path = tmp_path / "jets.parquet"
    ak.to_parquet(jets.to_awkward(), path)
    assert_same(JetBatch.from_awkward(ak.from_parquet(path)), jets)


def _canonical(**extra):
    base = {
        "part_energy": [[5.0, 2.0], [1.0]],
        "part_px": [[3.0, 0.0], [1.0]],
        "part_py": [[4.0, 0.0], [0.0]],
        "part_pz": [[0.0, 2.0], [0.0]],
    }
    return ak.Array(base | extra)


@pytest.mark.parametrize(
    ("array", "kwargs", "match"),
    [
        (ak.Array([1.0, 2.0]), {}, r"expected an awkward Array of jet records.*2 \* float64"),
        (np.zeros((2, 4)), {}, "expected an awkward Array of jet records.*ndarray"),
        (
            ak.Array({"part_energy": [[1.0]], "part_px": [[1.0]]}),
            {},
            r"array has no field\(s\) \['part_py', 'part_pz'\]",
        ),
        (_canonical(part_px=[3.0, 1.0]), {}, "field 'part_px' must be a jagged list per jet"),
        (
            _canonical(part_py=[[4.0], [0.0]]),
            {},
            "per-particle field 'part_py' has 1 entries in jet 0 but 'part_energy' has 2",
        ),
        (
            _canonical(part_pz=[[0, 2], [0]]),
            {},
            "momentum fields must share one dtype; 'part_energy' is torch.float64 but "
            "'part_pz' is torch.int64",
        ),
        (
            _canonical(part_pz=[[0.0, None], [0.0]]),
            {},
            "field 'part_pz' must be numbers .* no missing values",
        ),
        (
            _canonical(part_pz=[[[0.0], [2.0]], [[0.0]]]),
            {},
            "field 'part_pz' must hold one number per particle",
        ),
        (
            _canonical(part_px=[[3.0, math.nan], [1.0]]),
            {},
            r"p4 must be finite, found 1 non-finite value\(s\).*particle 1 \(jet 0\)",
        ),
        (
            _canonical(),
            {"x_fields": ["part_pid"]},
            "x_fields names 'part_pid', which is not a field",
        ),
        (
            _canonical(part_q=[[1, 1, 1], [0]]),
            {"x_fields": ["part_q"]},
            "per-particle field 'part_q' has 3 entries in jet 0",
        ),
        (
            _canonical(),
            {"jet_fields": ["jet_pt"]},
            "jet_fields names 'jet_pt', which is not a field",
        ),
        (_canonical(name=["a", "b"]), {}, "field 'name' must be numeric"),
        (
            _canonical(label=[1, 2], jet_e=[[1.0], [2.0, 3.0]]),
            {},
            "field 'jet_e' must be numbers with regular inner",
        ),
    ],
)
def test_from_awkward_rejects(array, kwargs, match):
    with pytest.raises(ValueError, match=f"^JetBatch.from_awkward: {match}"):
        JetBatch.from_awkward(array, **kwargs)


# ---------------------------------------------------------------------- property-based


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=8),
    dtype=st.sampled_from(DTYPES),
    with_extras=st.booleans(),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_roundtrips_property(sizes, dtype, with_extras, seed):
    jets = make_jets(sizes, dtype, x=with_extras, label=with_extras, fields=with_extras, seed=seed)
    p4, x, mask = jets.to_padded()
    assert_same(JetBatch.from_padded(p4, mask, x=x, label=jets.label, fields=jets.fields), jets)
    assert_same(JetBatch.from_pyg(jets.to_pyg()), jets)
    assert_same(JetBatch.from_awkward(jets.to_awkward()), jets)
    # reversing the jets twice through index lists is the identity
    reverse = list(range(len(sizes)))[::-1]
    assert_same(jets[reverse][reverse], jets)
    assert_same(JetBatch.collate([jets[i] for i in range(len(sizes))]), jets)
