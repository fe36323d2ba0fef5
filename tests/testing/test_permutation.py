"""Permutation helpers: sums pass, first-particle selection and order-dependent maps fail."""

from __future__ import annotations

import pytest
import torch

from jettag.testing import (
    assert_permutation_equivariant,
    assert_permutation_invariant,
    random_jets,
)
from jettag.testing._permutation import _padded_permutation

from .testing_cases import LorentzDeepSet, parse_violation


def masked_sum(p4, x, mask):
    return (p4 * mask[..., None]).sum(-2), (x * mask[..., None]).sum(-2)


def first_particle(p4, x, mask):
    return p4[..., 0, :]


def test_padded_permutation_shuffles_real_slots_only():
    gen = torch.Generator().manual_seed(0)
    real = torch.tensor([[True, True, True, False, False], [True, False, True, True, False]])
    for _ in range(20):
        index = _padded_permutation(real, gen)
        assert torch.equal(index[~real], torch.arange(5).expand(2, 5)[~real])
        for row in range(2):
            assert sorted(index[row][real[row]].tolist()) == torch.nonzero(real[row]).flatten(
            ).tolist()


def test_invariant_passes_on_masked_sum(jets):
    report = assert_permutation_invariant(masked_sum, jets.p4, x=jets.x, mask=jets.mask)
    assert report.passed
    assert report.check == "Permutation invariance"


def test_invariant_fails_on_first_particle_selection(jets):
    with pytest.raises(AssertionError, match="Permutation invariance violated") as info:
        assert_permutation_invariant(first_particle, jets.p4, x=jets.x, mask=jets.mask)
    message = str(info.value)
    assert "random permutation of the particles" in message
    assert parse_violation(message)["error"] > 1.0


def test_invariant_without_mask():
    p4, _, _ = random_jets(4, 6, generator=5, min_particles=6)
    assert assert_permutation_invariant(lambda p4: p4.sum(-2), p4).passed
    with pytest.raises(AssertionError):
        assert_permutation_invariant(lambda p4: p4[..., -1, 0], p4)


def test_equivariant_passes_on_per_particle_map(jets):
    def per_particle(p4, x, mask):
        jet = (p4 * mask[..., None]).sum(-2, keepdim=True)
        return torch.cat([p4 * jet[..., :1] / 1e3, x.tanh()], dim=-1), jet[..., 0, :]

    report = assert_permutation_equivariant(
        per_particle, jets.p4, x=jets.x, mask=jets.mask, out_types=("particle", "jet")
    )
    assert report.passed


def test_equivariant_fails_on_order_dependent_map(jets):
    def cumulative(p4, x, mask):
        return (p4 * mask[..., None]).cumsum(-2)

    with pytest.raises(AssertionError, match="Permutation equivariance violated") as info:
        assert_permutation_equivariant(cumulative, jets.p4, x=jets.x, mask=jets.mask)
    assert parse_violation(str(info.value))["error"] > 1.0


def test_equivariant_ignores_padded_slots_of_per_particle_outputs(jets):
    def garbage_at_padding(p4, x, mask):
        noise = torch.randn(p4.shape, dtype=p4.dtype)  # differs at every call
        return torch.where(mask[..., None], p4, noise)

    assert assert_permutation_equivariant(garbage_at_padding, jets.p4, x=jets.x,
                                          mask=jets.mask).passed


def test_jetbatch_model(batch):
    model = LorentzDeepSet().double()
    assert assert_permutation_equivariant(
        model, batch, out_types=("jet", "particle", "jet")
    ).passed
    with pytest.raises(AssertionError, match="of output\\[1\\]"):
        assert_permutation_invariant(model, batch)

    def first_of_each_jet(jets):
        return jets.p4[jets.ptr[:-1]]

    with pytest.raises(AssertionError):
        assert_permutation_invariant(first_of_each_jet, batch)


def test_bad_arguments(jets, batch):
    with pytest.raises(ValueError, match="out_types"):
        assert_permutation_equivariant(masked_sum, jets.p4, x=jets.x, mask=jets.mask,
                                       out_types=("particle", "vector"))
    with pytest.raises(ValueError, match="jet dimensions"):
        assert_permutation_equivariant(lambda p4, x, mask: p4.sum(), jets.p4, x=jets.x,
                                       mask=jets.mask)
    with pytest.raises(ValueError, match="'particle'"):
        assert_permutation_equivariant(lambda b: b.p4[: b.num_jets], batch)
    with pytest.raises(ValueError, match="x="):
        assert_permutation_invariant(lambda b: b.p4.sum(0), batch, x=jets.x)
    with pytest.raises(ValueError, match="features x"):
        assert_permutation_invariant(masked_sum, jets.p4, x=jets.x[:, :2], mask=jets.mask)
