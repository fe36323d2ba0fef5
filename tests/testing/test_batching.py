"""Padding and batch-independence helpers, with the leaks they must catch."""

from __future__ import annotations

import pytest
import torch

from jettag import physics
from jettag.testing import assert_batch_independent, assert_padding_invariant

from .testing_cases import BatchCentred, BatchNormModel, LorentzDeepSet, PaddedMean, parse_violation


def masked_mean(p4, x, mask):
    w = mask[..., None].to(p4.dtype)
    return (p4 * w).sum(-2) / w.sum(-2), (x * w).sum(-2) / w.sum(-2)


def padded_length_mean(p4, x, mask):
    return (p4 * mask[..., None]).mean(-2)


def jet_mass(p4, mask=None):
    return physics.mass(physics.jet_p4(p4, mask=mask))


def test_padding_passes_on_masked_mean(jets):
    report = assert_padding_invariant(masked_mean, jets.p4, x=jets.x, mask=jets.mask)
    assert report.passed and report.check == "Padding invariance"


def test_padding_fails_on_mean_over_padded_length(jets):
    for fill in ("random", "zeros"):
        with pytest.raises(AssertionError, match="Padding invariance violated") as info:
            assert_padding_invariant(padded_length_mean, jets.p4, x=jets.x, mask=jets.mask,
                                     fill=fill)
        message = str(info.value)
        assert "padded slots appended" in message
        assert parse_violation(message)["error"] > 1.0


def test_padding_catches_garbage_leaking_through_an_unmasked_sum(jets):
    def sums_padding(p4, x, mask):  # correct on zero padding, wrong on anything else
        return p4.sum(-2)

    assert assert_padding_invariant(sums_padding, jets.p4, x=jets.x, mask=jets.mask,
                                    fill="zeros").passed
    with pytest.raises(AssertionError):
        assert_padding_invariant(sums_padding, jets.p4, x=jets.x, mask=jets.mask)


def test_padding_per_particle_outputs_compared_at_real_particles(jets):
    def per_particle(p4, mask):
        jet = (p4 * mask[..., None]).sum(-2, keepdim=True)
        return physics.minkowski_dot(p4, jet) * mask

    def leaky(p4, mask):
        return per_particle(p4, mask) + p4[..., 1] * 0 + p4.sum(-2)[..., 1:2]

    assert assert_padding_invariant(per_particle, jets.p4, mask=jets.mask).passed
    with pytest.raises(AssertionError):
        assert_padding_invariant(leaky, jets.p4, mask=jets.mask)


def test_padding_without_mask_means_all_real(jets):
    p4 = jets.p4[:, :3]  # every jet has >= 3 particles
    assert assert_padding_invariant(jet_mass, p4).passed


def test_padding_jetbatch_models(batch):
    assert assert_padding_invariant(LorentzDeepSet().double(), batch).passed
    with pytest.raises(AssertionError, match="batched with an extra jet"):
        assert_padding_invariant(PaddedMean(), batch)


def test_batch_independence_passes_on_per_jet_function(jets):
    report = assert_batch_independent(jet_mass, jets.p4, mask=jets.mask)
    assert report.passed
    assert report.n_trials == 8 + 3  # 8 jets alone, 3 shuffles


def test_batch_independence_fails_on_batch_mean_and_reports_the_worst_jet(jets):
    def centred(p4, mask):
        m = jet_mass(p4, mask)
        return m - m.mean()

    with pytest.raises(AssertionError, match="Batch independence violated") as info:
        assert_batch_independent(centred, jets.p4, mask=jets.mask, max_single=12)
    message = str(info.value)
    # Alone, every jet gives 0; the worst is the jet farthest from the batch mean.
    deviation = centred(jets.p4, jets.mask)
    worst = int(deviation.abs().argmax())
    values = parse_violation(message)
    assert values["got"] == 0.0
    assert values["expected"] == pytest.approx(float(deviation[worst]), rel=1e-9)
    assert f"element [{worst}] of output" in message and f"jet {worst} run alone" in message


def test_batch_independence_per_particle_outputs(jets):
    def per_particle(p4, x, mask):
        return torch.cat([p4, x], -1) * mask[..., None]

    def mixes_jets(p4, x, mask):
        return per_particle(p4, x, mask).roll(1, dims=0)

    assert assert_batch_independent(per_particle, jets.p4, x=jets.x, mask=jets.mask).passed
    with pytest.raises(AssertionError, match=r"reordered at random|run alone"):
        assert_batch_independent(mixes_jets, jets.p4, x=jets.x, mask=jets.mask)


def test_batch_independence_jetbatch_models(batch):
    model = LorentzDeepSet().double()
    assert assert_batch_independent(model, batch).passed
    assert assert_batch_independent(BatchNormModel().double().eval(), batch).passed
    with pytest.raises(AssertionError, match="run alone"):
        assert_batch_independent(BatchCentred(), batch)


def test_batch_independence_needs_one_jet_dimension(jets):
    with pytest.raises(ValueError, match="one jet dimension"):
        assert_batch_independent(jet_mass, jets.p4[0])
    with pytest.raises(ValueError, match="max_extra"):
        assert_padding_invariant(jet_mass, jets.p4, mask=jets.mask, max_extra=0)
