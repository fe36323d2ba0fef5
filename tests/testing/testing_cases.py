"""Observables, tiny JetBatch models and message parsing shared by the tests of jettag.testing."""

from __future__ import annotations

import re

import pytest
import torch
from torch import Tensor, nn

from jettag import physics
from jettag.data import JetBatch


def parse_violation(message: str) -> dict[str, float]:
    """The numbers of a failure message of a helper; checks they are self-consistent."""
    error = re.search(r"\|got - expected\| = ([-+.\deinfa]+)", message)
    values = re.search(r"Got ([-+.\deinfa]+), expected ([-+.\deinfa]+)", message)
    assert error and values, message
    parsed = {"error": float(error.group(1)), "got": float(values.group(1)),
              "expected": float(values.group(2))}
    if all(map(lambda v: abs(v) < float("inf"), parsed.values())):
        assert parsed["error"] == pytest.approx(abs(parsed["got"] - parsed["expected"]),
                                                rel=1e-5), message
    return parsed


def unit(v: Tensor) -> Tensor:
    """Unit vectors, zero for zero vectors (so zero-momentum particles stay finite)."""
    norm = v.norm(dim=-1, keepdim=True)
    return v / torch.where(norm > 0, norm, torch.ones_like(norm))


def broadening(p4: Tensor, mask: Tensor | None = None) -> Tensor:
    """Energy-weighted angular sum ``sum_i E_i (1 - cos theta_iJ) / E_J``: IRC safe."""
    if mask is not None:
        p4 = p4 * mask[..., None]
    jet = p4.sum(-2)
    cos = (unit(p4[..., 1:]) * unit(jet[..., 1:])[..., None, :]).sum(-1)
    return (p4[..., 0] * (1 - cos)).sum(-1) / jet[..., 0]


def multiplicity(p4: Tensor, mask: Tensor | None = None) -> Tensor:
    """Number of particles: IR and collinear unsafe."""
    if mask is None:
        return torch.full(p4.shape[:-2], float(p4.shape[-2]), dtype=p4.dtype)
    return mask.sum(-1).to(p4.dtype)


class LorentzDeepSet(nn.Module):
    """Tiny JetBatch model on Lorentz invariants: logits from sum_i MLP(<p_i, J>, m_i^2).

    Lorentz, permutation, padding and batch invariant; also returns per-particle and jet
    four-vectors ``w_i p_i`` and ``sum_i w_i p_i`` (Lorentz equivariant).
    """

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.phi = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 3))

    def forward(self, jets: JetBatch) -> tuple[Tensor, Tensor, Tensor]:
        jet = physics.jet_p4(jets.p4, batch=jets.batch, num_jets=jets.num_jets)
        dots = physics.minkowski_dot(jets.p4, jet[jets.batch]) / 1e4
        m2 = physics.mass2(jets.p4)
        h = self.phi(torch.stack([dots, m2], -1))
        w = h[:, 2:3]
        weighted = w * jets.p4
        logits = h[:, :2].new_zeros(jets.num_jets, 2).index_add_(0, jets.batch, h[:, :2])
        jet_weighted = weighted.new_zeros(jets.num_jets, 4).index_add_(0, jets.batch, weighted)
        return logits, weighted, jet_weighted


class EnergyFlowNet(nn.Module):
    """Tiny EFN on a JetBatch: F(sum_i z_i Phi(cos theta_iJ)), z_i = E_i / E_J: IRC safe."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.phi = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 4))
        self.head = nn.Linear(4, 2)

    def forward(self, jets: JetBatch) -> Tensor:
        jet = physics.jet_p4(jets.p4, batch=jets.batch, num_jets=jets.num_jets)
        z = jets.p4[:, 0] / jet[jets.batch, 0]
        cos = (unit(jets.p4[:, 1:]) * unit(jet[jets.batch, 1:])).sum(-1, keepdim=True)
        summed = jet.new_zeros(jets.num_jets, 4)
        summed.index_add_(0, jets.batch, z[:, None] * self.phi(cos))
        return self.head(summed)


class ParticleFlowNet(nn.Module):
    """Tiny PFN on a JetBatch: sum_i Phi(p_i): not IR safe (soft particles add Phi(0))."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.phi = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))

    def forward(self, jets: JetBatch) -> Tensor:
        h = self.phi(jets.p4 / 100)
        return h.new_zeros(jets.num_jets, 2).index_add_(0, jets.batch, h)


class PaddedMean(nn.Module):
    """A JetBatch model that pads internally and averages over the padded length: leaks."""

    def forward(self, jets: JetBatch) -> Tensor:
        p4, _, _ = jets.to_padded()
        return p4.mean(-2)


class BatchNormModel(nn.Module):
    """Batch norm over jets: batch independent in eval mode only."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(4)

    def forward(self, jets: JetBatch) -> Tensor:
        jet = physics.jet_p4(jets.p4, batch=jets.batch, num_jets=jets.num_jets)
        return self.norm(jet / 100)


class BatchCentred(nn.Module):
    """Jet masses minus their mean over the batch: depends on the other jets."""

    def forward(self, jets: JetBatch) -> Tensor:
        jet = physics.jet_p4(jets.p4, batch=jets.batch, num_jets=jets.num_jets)
        m = physics.mass(jet)
        return m - m.mean()
