"""IR and collinear safety helpers: energy-weighted observables pass, multiplicity fails."""

from __future__ import annotations

import pytest
import torch

from jettag import physics
from jettag.data import JetBatch
from jettag.testing import assert_collinear_safe, assert_ir_safe, random_jets
from jettag.testing._safety import _append

from .testing_cases import EnergyFlowNet, ParticleFlowNet, broadening, multiplicity, parse_violation


def test_append_puts_new_particles_after_each_jet():
    p4 = torch.arange(12, dtype=torch.float64).reshape(3, 4)
    ptr = torch.tensor([0, 2, 2, 3])
    new = -torch.arange(1, 13, dtype=torch.float64).reshape(3, 4)
    out, x, out_ptr = _append(p4, None, ptr, new, None, torch.tensor([1, 2, 0]))
    assert x is None
    assert out_ptr.tolist() == [0, 3, 5, 6]
    assert out[:, 0].tolist() == [0, 4, -1, -5, -9, 8]


def test_ir_safe_passes_on_energy_weighted_angular_sum(jets):
    report = assert_ir_safe(broadening, jets.p4, mask=jets.mask)
    assert report.passed and report.check == "IR safety"
    assert report.error < 1e-6 * float(broadening(jets.p4, jets.mask).abs().max())


def test_ir_safe_fails_on_multiplicity(jets):
    with pytest.raises(AssertionError, match="IR safety violated") as info:
        assert_ir_safe(multiplicity, jets.p4, mask=jets.mask, max_soft=1)
    message = str(info.value)
    values = parse_violation(message)
    assert values["got"] - values["expected"] == 1.0  # exactly one particle added
    assert "1 soft particle (energy 1e-09 x jet energy) added to every jet" in message


def test_ir_safe_with_features_and_without_mask():
    p4, x, _ = random_jets(5, 6, generator=4, min_particles=6, n_features=2)

    def weighted_features(p4, x):
        z = p4[..., 0] / p4[..., 0].sum(-1, keepdim=True)
        return (z[..., None] * x).sum(-2)

    assert assert_ir_safe(weighted_features, p4, x=x).passed
    assert assert_ir_safe(broadening, p4).passed
    with pytest.raises(AssertionError):
        assert_ir_safe(multiplicity, p4)
    with pytest.raises(AssertionError):
        assert_ir_safe(lambda p4, x: x.sum(-2), p4, x=x)  # soft particles bring features


def test_zero_momentum_particles_must_not_produce_nan(jets):
    def unsafe_angles(p4, mask):  # handles padding, but 0/0 for a real zero vector
        cos = torch.where(mask, p4[..., 3] / p4[..., 1:].norm(dim=-1), 0.0)
        return (p4[..., 0] * cos).sum(-1)

    with pytest.raises(AssertionError, match="non-finite output") as info:
        assert_ir_safe(unsafe_angles, jets.p4, mask=jets.mask, n_trials=2)
    message = str(info.value)
    assert "zero-momentum particle" in message and "Got nan" in message
    values = parse_violation(message)
    assert values["expected"] == pytest.approx(float(unsafe_angles(jets.p4, jets.mask)[0]))
    assert assert_ir_safe(unsafe_angles, jets.p4, mask=jets.mask, zero_momentum=False).passed


def test_soft_scale_is_configurable(jets):
    # A mildly IR-unsafe observable, sum_i E_i^2, passes for tiny soft scales only.
    def energy_squares(p4, mask):
        return ((p4[..., 0] / 100) ** 2 * mask).sum(-1)

    assert assert_ir_safe(energy_squares, jets.p4, mask=jets.mask).passed
    with pytest.raises(AssertionError):
        assert_ir_safe(energy_squares, jets.p4, mask=jets.mask, soft_scale=0.1)


def test_collinear_safe_passes_on_energy_weighted_sums(jets):
    massive = random_jets(8, 10, generator=6, massive=True)
    assert assert_collinear_safe(broadening, jets.p4, mask=jets.mask).passed
    report = assert_collinear_safe(
        lambda p4, mask: physics.mass(physics.jet_p4(p4, mask=mask)), massive.p4,
        mask=massive.mask, max_pieces=4,
    )
    assert report.passed and report.check == "Collinear safety"


def test_collinear_safe_fails_on_multiplicity_and_energy_squares(jets):
    with pytest.raises(AssertionError, match="Collinear safety violated") as info:
        assert_collinear_safe(multiplicity, jets.p4, mask=jets.mask)
    message = str(info.value)
    values = parse_violation(message)
    assert values["got"] - values["expected"] in (1.0, 2.0)
    assert "collinear pieces; in jet" in message and "fractions" in message

    def energy_squares(p4, mask):
        return ((p4[..., 0] / 100) ** 2 * mask).sum(-1)

    with pytest.raises(AssertionError):
        assert_collinear_safe(energy_squares, jets.p4, mask=jets.mask)


def test_jetbatch_models(batch):
    efn, pfn = EnergyFlowNet().double(), ParticleFlowNet().double()
    assert assert_ir_safe(efn, batch).passed
    assert assert_collinear_safe(efn, batch).passed
    with pytest.raises(AssertionError, match="IR safety violated"):
        assert_ir_safe(pfn, batch)
    with pytest.raises(AssertionError, match="Collinear safety violated"):
        assert_collinear_safe(pfn, batch)


def test_jetbatch_keeps_labels_and_fields(batch):
    labelled = JetBatch(batch.p4, batch.ptr, x=batch.x, label=torch.arange(batch.num_jets),
                        fields={"truth_p4": torch.zeros(batch.num_jets, 4, dtype=batch.dtype)})

    def uses_label(jets):
        assert torch.equal(jets.label, torch.arange(jets.num_jets))
        return jets.truth_p4 + physics.jet_p4(jets.p4, batch=jets.batch, num_jets=len(jets))

    assert assert_collinear_safe(uses_label, labelled).passed
    assert assert_ir_safe(uses_label, labelled).passed


def test_per_particle_outputs_are_rejected(jets, batch):
    with pytest.raises(ValueError, match="jet-level"):
        assert_ir_safe(lambda p4, mask: p4, jets.p4, mask=jets.mask)
    with pytest.raises(ValueError, match="jet-level"):
        assert_collinear_safe(lambda b: b.p4, batch)
    with pytest.raises(ValueError, match="max_pieces"):
        assert_collinear_safe(broadening, jets.p4, mask=jets.mask, max_pieces=1)
