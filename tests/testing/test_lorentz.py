"""Lorentz helpers: pass on invariants and four-vector maps, fail on E and on covectors."""

from __future__ import annotations

import pytest
import torch

from jettag import physics
from jettag.testing import (
    SymmetryReport,
    assert_lorentz_equivariant,
    assert_lorentz_invariant,
    random_jets,
)

from .testing_cases import LorentzDeepSet, parse_violation

COVECTOR = torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=torch.float64)


def jet_mass2(p4, mask):
    return physics.minkowski_norm2(physics.jet_p4(p4, mask=mask))


def jet_energy(p4, mask):
    return physics.jet_p4(p4, mask=mask)[..., 0]


def test_invariant_passes_on_jet_mass(jets):
    report = assert_lorentz_invariant(jet_mass2, jets.p4, mask=jets.mask, generator=3)
    assert isinstance(report, SymmetryReport)
    assert report.passed and report.ratio <= 1.0
    assert report.n_compared == 5 * jets.p4.shape[0]
    assert "Lorentz invariance holds" in str(report)


def test_invariant_fails_on_energy_and_names_the_worst_element(jets):
    with pytest.raises(AssertionError, match="Lorentz invariance violated") as info:
        assert_lorentz_invariant(jet_energy, jets.p4, mask=jets.mask, generator=3)
    message = str(info.value)
    values = parse_violation(message)
    assert values["error"] > 1.0  # a boost of rapidity O(1) changes E by O(E) GeV
    assert "of output (shape (12,))" in message
    assert "boost rapidity" in message and "of jet" in message


def test_invariant_with_features_and_no_mask():
    p4, x, _ = random_jets(5, 6, generator=2, min_particles=6, n_features=2)

    def fn(p4, x):
        dots = physics.minkowski_dot(p4[..., :, None, :], p4[..., None, :, :])
        return (dots.sum(-1) * x[..., 0]).sum(-1)

    assert assert_lorentz_invariant(fn, p4, x=x).passed


def test_invariant_on_a_single_jet_and_several_jet_dimensions():
    p4, _, _ = random_jets(6, 5, generator=4, min_particles=5)
    single = assert_lorentz_invariant(lambda p: physics.mass2(p.sum(-2)), p4[0])
    assert single.passed
    grid = assert_lorentz_invariant(lambda p: physics.mass2(p.sum(-2)), p4.reshape(2, 3, 5, 4))
    assert grid.passed


def test_equivariant_passes_on_jet_p4(jets):
    report = assert_lorentz_equivariant(
        lambda p4, mask: physics.jet_p4(p4, mask=mask), jets.p4, mask=jets.mask
    )
    assert report.passed


def test_equivariant_per_particle_and_pair_of_outputs(jets):
    def fn(p4, mask):
        jet = physics.jet_p4(p4, mask=mask)
        weight = physics.minkowski_dot(p4, jet[..., None, :]) / 1e5
        return physics.mass2(jet), weight[..., None] * p4

    assert assert_lorentz_equivariant(fn, jets.p4, mask=jets.mask).passed


def test_equivariant_fails_on_covector_output(jets):
    # (E, -p) transforms with the inverse transpose, not with L.
    def covector(p4, mask):
        return physics.jet_p4(p4, mask=mask) * COVECTOR

    with pytest.raises(AssertionError, match="Lorentz equivariance violated") as info:
        assert_lorentz_equivariant(covector, jets.p4, mask=jets.mask)
    assert parse_violation(str(info.value))["error"] > 1.0


def test_equivariant_fails_when_a_scalar_is_declared_for_a_four_vector(jets):
    with pytest.raises(AssertionError, match=r"of output\[1\] "):
        assert_lorentz_equivariant(
            lambda p4, mask: (jet_mass2(p4, mask), physics.jet_p4(p4, mask=mask)),
            jets.p4, mask=jets.mask, out_types=("scalar", "scalar"),
        )


def test_typed_arguments_pyg_style_layer(batch):
    def layer(h, p4, index):
        jet = physics.jet_p4(p4, batch=index)
        w = physics.minkowski_dot(p4, jet[index]) / 1e5
        return h * w[:, None], w[:, None] * p4

    h = torch.randn(batch.num_particles, 3, dtype=torch.float64)
    report = assert_lorentz_equivariant(
        layer, (h, batch.p4, batch.batch), in_types=("scalar", "p4", None)
    )
    assert report.passed
    with pytest.raises(AssertionError, match="Lorentz invariance violated"):
        assert_lorentz_invariant(
            lambda h, p4, index: layer(h, p4, index)[1], (h, batch.p4, batch.batch),
            in_types=("scalar", "p4", None),
        )


def test_jetbatch_model(batch):
    model = LorentzDeepSet().double().eval()
    report = assert_lorentz_equivariant(
        model, batch, out_types=("scalar", "p4", "p4"), generator=5
    )
    assert report.passed
    with pytest.raises(AssertionError, match=r"of output \(shape \(10, 4\)\)"):
        assert_lorentz_invariant(lambda b: model(b)[2], batch)
    with pytest.raises(AssertionError, match=r"of output\[1\] \(shape \(38, 4\)\)"):
        assert_lorentz_invariant(model, batch)


def test_float32_module_runs_as_float64_copy(batch):
    model = LorentzDeepSet().float()
    copy_report = assert_lorentz_equivariant(model, batch, out_types=("scalar", "p4", "p4"))
    assert copy_report.passed
    assert next(model.parameters()).dtype == torch.float32


def test_float32_run_with_float32_tolerance(jets):
    report = assert_lorentz_invariant(
        lambda p4, mask: jet_mass2(p4, mask) / 1e4, jets.p4.float(), mask=jets.mask,
        dtype=None,
    )
    assert report.passed and report.rtol == pytest.approx(1e-3)


def test_bad_arguments(jets):
    with pytest.raises(ValueError, match="out_types"):
        assert_lorentz_equivariant(jet_mass2, jets.p4, mask=jets.mask, out_types=("p4", "p4"))
    with pytest.raises(ValueError, match="out_types"):
        assert_lorentz_equivariant(jet_mass2, jets.p4, mask=jets.mask, out_types="vector")
    with pytest.raises(ValueError, match="mask"):
        assert_lorentz_invariant(jet_mass2, jets.p4, mask=jets.mask[:, :3])
    with pytest.raises(ValueError, match="in_types"):
        assert_lorentz_invariant(lambda p: p, (jets.p4,))
    with pytest.raises(ValueError, match="n_trials"):
        assert_lorentz_invariant(jet_mass2, jets.p4, mask=jets.mask, n_trials=0)
    with pytest.raises(TypeError, match="four-vectors"):
        assert_lorentz_invariant(jet_mass2, jets.p4.numpy())


def test_same_seed_same_report(jets):
    a = assert_lorentz_invariant(jet_mass2, jets.p4, mask=jets.mask, generator=11)
    b = assert_lorentz_invariant(jet_mass2, jets.p4, mask=jets.mask, generator=11)
    assert a == b
