"""``random_jets`` produces plausible jets; reports and tolerances behave as documented."""

from __future__ import annotations

import math

import pytest
import torch

from jettag import physics
from jettag.data import JetBatch
from jettag.testing import (
    SymmetryReport,
    assert_permutation_invariant,
    default_tolerance,
    random_jets,
)


def test_random_jets_shapes_mask_and_padding():
    p4, x, mask = random_jets(50, 20, generator=0, n_features=3)
    assert p4.shape == (50, 20, 4) and x.shape == (50, 20, 3) and mask.shape == (50, 20)
    assert p4.dtype == torch.float64 and mask.dtype == torch.bool
    counts = mask.sum(-1)
    assert int(counts.min()) >= 10 and int(counts.max()) <= 20  # default min = n // 2
    assert torch.equal(mask, torch.arange(20) < counts[:, None])  # real particles first
    assert bool((p4[~mask] == 0).all()) and bool((x[~mask] == 0).all())
    assert random_jets(4, 6, generator=0, n_features=0).x is None


def test_random_jets_physics():
    p4, _, mask = random_jets(200, 30, generator=1, pt_range=(400.0, 600.0), eta_range=(-1, 1))
    pt = physics.pt(p4)
    scalar_sum = (pt * mask).sum(-1)
    assert bool(((scalar_sum > 400 - 1e-9) & (scalar_sum < 600 + 1e-9)).all())
    assert bool((pt[mask] > 0).all())
    # sorted by decreasing pT
    assert bool((pt[:, :-1] >= pt[:, 1:]).all())
    # massless constituents, within the radius of the axis (here the p4 axis is close)
    assert physics.mass2(p4[mask]).abs().max() < 1e-6 * (p4[mask][:, 0] ** 2).max()
    rel = physics.relative_etaphi(p4, mask=mask, kind="p4")
    assert float(rel.norm(dim=-1).max()) < 2 * 0.8
    jet_mass = physics.mass(physics.jet_p4(p4, mask=mask))
    assert 10 < float(jet_mass.median()) < 300  # like QCD jets of pT ~ 500 GeV


def test_random_jets_massive_constituents():
    p4, _, mask = random_jets(20, 10, generator=2, massive=True)
    masses = physics.mass(p4[mask])
    allowed = torch.tensor([0.0, 0.13957, 0.49368, 0.93827], dtype=torch.float64)
    assert bool(((masses[:, None] - allowed).abs().min(-1).values < 1e-4).all())
    assert int((masses > 0.1).sum()) > 0


def test_random_jets_reproducible_and_batch_layout():
    a = random_jets(5, 7, generator=3, n_features=2)
    b = random_jets(5, 7, generator=torch.Generator().manual_seed(3), n_features=2)
    assert torch.equal(a.p4, b.p4) and torch.equal(a.x, b.x)
    packed = random_jets(5, 7, generator=3, n_features=2, layout="batch")
    assert isinstance(packed, JetBatch)
    p4, x, mask = packed.to_padded(7)
    assert torch.equal(p4, a.p4) and torch.equal(x, a.x) and torch.equal(mask, a.mask)
    f32 = random_jets(5, 7, generator=3, dtype=torch.float32)
    assert f32.p4.dtype == torch.float32
    empty = random_jets(6, 4, generator=3, min_particles=0)
    assert bool((empty.p4.isfinite()).all())


def test_random_jets_bad_arguments():
    with pytest.raises(ValueError, match="min_particles"):
        random_jets(2, 5, min_particles=6)
    with pytest.raises(ValueError, match="layout"):
        random_jets(2, 5, layout="dense")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="generator"):
        random_jets(2, 5, generator=1.5)  # type: ignore[call-overload]


def test_default_tolerances():
    assert default_tolerance(torch.float64) == (1e-7, 1e-7)
    assert default_tolerance(torch.float32) == (1e-3, 1e-3)
    with pytest.raises(ValueError, match="dtype"):
        default_tolerance(torch.int64)


def test_report_on_pass_and_explicit_tolerances(jets):
    report = assert_permutation_invariant(
        lambda p4, mask: (p4 * mask[..., None]).sum(-2), jets.p4, mask=jets.mask,
        rtol=0.0, atol=1e-9,
    )
    assert isinstance(report, SymmetryReport) and report.passed
    assert (report.rtol, report.atol) == (0.0, 1e-9)
    assert report.error <= 1e-9 and report.n_compared == 5 * 12 * 4
    text = str(report)
    assert text.startswith("Permutation invariance holds") and "5 trials" in text
    with pytest.raises(ValueError, match="rtol, atol"):
        assert_permutation_invariant(lambda p4: p4, jets.p4, rtol=0.0, atol=0.0)


def test_report_when_the_reference_itself_is_not_finite(jets):
    def nan_jet(p4, mask):
        out = (p4 * mask[..., None]).sum(-2)
        out[0, 0] = math.nan
        return out

    with pytest.raises(AssertionError, match="unmodified inputs already give it"):
        assert_permutation_invariant(nan_jet, jets.p4, mask=jets.mask)
