"""SO(2) helpers: rotations in the (eta, phi) plane and 3-D rotations about the jet axis."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from jettag import physics
from jettag.data import JetBatch
from jettag.testing import assert_so2_equivariant, assert_so2_invariant, random_jets

from .testing_cases import parse_violation

F64 = torch.float64
E_X = torch.tensor([1.0, 0.0, 0.0], dtype=F64)


def spread(p4, mask):
    """Sum of pT-weighted distances from the centroid: invariant about the centroid."""
    rel = physics.relative_etaphi(p4, mask=mask)
    return (physics.pt(p4) * rel.norm(dim=-1)).sum(-1)


def eta_projection(p4, mask):
    """pT-weighted d_eta moment: a fixed direction in the plane, not invariant."""
    rel = physics.relative_etaphi(p4, mask=mask)
    return (physics.pt(p4) * rel[..., 0] ** 2).sum(-1)


def test_plane_invariant_passes_about_centroid(jets):
    report = assert_so2_invariant(spread, jets.p4, mask=jets.mask, x=None)
    assert report.passed
    assert "centroid" in report.check


def test_plane_invariant_fails_on_fixed_direction(jets):
    with pytest.raises(AssertionError, match=r"SO\(2\) invariance .* violated") as info:
        assert_so2_invariant(eta_projection, jets.p4, mask=jets.mask)
    message = str(info.value)
    assert "rad in the (eta, phi) plane" in message and "rotation of jet" in message
    assert parse_violation(message)["error"] > 1e-3


def test_plane_kind_p4_keeps_pt_but_moves_the_axis(jets):
    def scalar_pt(p4, mask):
        return (physics.pt(p4) * mask).sum(-1)

    def spread_about_p4_axis(p4, mask):
        rel = physics.relative_etaphi(p4, mask=mask, kind="p4")
        return (physics.pt(p4) * rel.norm(dim=-1)).sum(-1)

    assert assert_so2_invariant(scalar_pt, jets.p4, mask=jets.mask, kind="p4").passed
    # A rigid rotation keeps distances from the (co-moving) centroid ...
    assert assert_so2_invariant(spread, jets.p4, mask=jets.mask, kind="p4").passed
    # ... but the four-momentum axis moves under it (by percents on these sparse jets).
    with pytest.raises(AssertionError) as info:
        assert_so2_invariant(spread_about_p4_axis, jets.p4, mask=jets.mask, kind="p4")
    values = parse_violation(str(info.value))
    assert 1e-4 < values["error"] / abs(values["expected"]) < 1.0


def test_plane_equivariant_etaphi_outputs(jets):
    def positions(p4, mask):
        return physics.relative_etaphi(p4, mask=mask)

    def mirrored(p4, mask):  # (d_eta, -d_phi) turns the other way
        return positions(p4, mask) * torch.tensor([1.0, -1.0], dtype=F64)

    report = assert_so2_equivariant(positions, jets.p4, mask=jets.mask, out_types="etaphi")
    assert report.passed
    with pytest.raises(AssertionError, match="SO\\(2\\) equivariance"):
        assert_so2_equivariant(mirrored, jets.p4, mask=jets.mask, out_types="etaphi")


def test_3d_rotation_about_jet_momentum(jets):
    def invariants(p4, mask):
        jet = physics.jet_p4(p4, mask=mask)
        along = (p4[..., 1:] * jet[..., None, 1:]).sum(-1)
        return physics.mass2(jet), (along * mask).sum(-1), (physics.p3_norm(p4) * mask).sum(-1)

    def px_squared(p4, mask):
        return (p4[..., 1] ** 2 * mask).sum(-1)

    assert assert_so2_invariant(invariants, jets.p4, mask=jets.mask, kind="3d").passed
    with pytest.raises(AssertionError, match="about the jet three-momentum"):
        assert_so2_invariant(px_squared, jets.p4, mask=jets.mask, kind="3d")

    def typed(p4, mask):
        p3 = p4[..., 1:] * mask[..., None]
        return physics.mass2(p4), p3, p3[..., :, None] * p3[..., None, :], p4

    report = assert_so2_equivariant(
        typed, jets.p4, mask=jets.mask, kind="3d", out_types=("scalar", "vector", "tensor", "p4")
    )
    assert report.passed


def _projector(j: Tensor) -> tuple[Tensor, Tensor]:
    u = j / j.norm(dim=-1, keepdim=True)
    along = u[..., :, None] * u[..., None, :]
    return along, torch.eye(3, dtype=j.dtype) - along


def so2_vector_map(v: Tensor, j: Tensor) -> Tensor:
    """v -> a j (j . v) + b v + c R_j(0.7) v: the SO(2)_j-equivariant linear map."""
    along, _ = _projector(j)
    rot = physics.rotation_matrix(j, 0.7)
    a, b, c = 1.5, -0.4, 0.8
    return (
        a * (along[:, None] @ v[..., None])[..., 0]
        + b * v
        + c * (rot[:, None] @ v[..., None])[..., 0]
    )


def so2_tensor_map(t: Tensor, j: Tensor) -> Tensor:
    """T -> A T A^T + d I with A = a j j^T + b (I - j j^T) R_j(phi)."""
    along, across = _projector(j)
    a_mat = 1.3 * along + 0.6 * across @ physics.rotation_matrix(j, -1.1)
    return a_mat[:, None] @ t @ a_mat[:, None].transpose(-1, -2) + 0.2 * torch.eye(3, dtype=F64)


def x_axis_projection(v: Tensor, j: Tensor) -> Tensor:
    """v -> e_x (e_x . v): breaks SO(3), and SO(2) about j unless j is along x."""
    return E_X * v[..., :1] + 0.0 * j[:, None]


@pytest.fixture
def typed_inputs() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(7)
    j = torch.randn(6, 3, generator=g, dtype=F64)
    s = torch.randn(6, 2, generator=g, dtype=F64)
    v = torch.randn(6, 4, 3, generator=g, dtype=F64)
    t = torch.randn(6, 4, 3, 3, generator=g, dtype=F64)
    return s, v, t, j


def test_typed_vector_and_tensor_layer_passes(typed_inputs):
    s, v, t, j = typed_inputs

    def layer(s, v, t, j):
        u = j / j.norm(dim=-1, keepdim=True)
        vj = (v * u[:, None]).sum(-1)  # invariant: component along j
        return (s.sum(-1, keepdim=True) + vj, so2_vector_map(v, j) * s[:, :1, None],
                so2_tensor_map(t, j))

    report = assert_so2_equivariant(
        layer, (s, v, t, j), in_types=("scalar", "vector", "tensor", "axis"),
        out_types=("scalar", "vector", "tensor"),
    )
    assert report.passed
    assert "about the given axis" in report.check


def test_typed_fixed_axis_projection_fails(typed_inputs):
    _, v, _, j = typed_inputs
    with pytest.raises(AssertionError, match=r"SO\(2\) equivariance .* violated") as info:
        assert_so2_equivariant(
            x_axis_projection, (v, j), in_types=("vector", "axis"), out_types="vector"
        )
    message = str(info.value)
    assert "rotation of row" in message and "of output (shape (6, 4, 3))" in message
    assert parse_violation(message)["error"] > 1e-3


def test_typed_tensor_fixed_axis_fails_and_isotropic_map_passes(typed_inputs):
    _, _, t, j = typed_inputs
    e_xx = torch.outer(E_X, E_X)
    with pytest.raises(AssertionError):
        assert_so2_equivariant(lambda t: e_xx @ t, (t,), in_types=("tensor",),
                               axis=j, out_types="tensor")
    trace = assert_so2_invariant(lambda t: t.diagonal(dim1=-2, dim2=-1).sum(-1), (t,),
                                 in_types=("tensor",), axis=j)
    assert trace.passed


def test_typed_single_axis_and_p4_arguments():
    p4 = random_jets(1, 7, generator=3, min_particles=7).p4[0]
    j = p4[:, 1:].sum(0)

    def layer(p4, j):
        u = j / j.norm()
        return p4 * ((p4[:, 1:] * u).sum(-1, keepdim=True) / 100)

    assert assert_so2_equivariant(layer, (p4, j), in_types=("p4", "axis"), out_types="p4").passed
    with pytest.raises(AssertionError):
        assert_so2_invariant(lambda p4: p4[:, 1], (p4,), in_types=("p4",), axis=j)


class RadialModel(nn.Module):
    """JetBatch model: sum_i pT_i MLP(|(d_eta, d_phi)_i|) about the centroid; invariant."""

    def __init__(self, fixed_direction: bool = False) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.mlp = nn.Sequential(nn.Linear(1, 6), nn.Tanh(), nn.Linear(6, 2)).double()
        self.fixed_direction = fixed_direction

    def forward(self, jets: JetBatch) -> Tensor:
        rel = physics.relative_etaphi(jets.p4, batch=jets.batch, num_jets=jets.num_jets)
        r = rel[:, :1] if self.fixed_direction else rel.norm(dim=-1, keepdim=True)
        h = physics.pt(jets.p4)[:, None] * self.mlp(r)
        return h.new_zeros(jets.num_jets, 2).index_add_(0, jets.batch, h)


def test_jetbatch_model(batch):
    assert assert_so2_invariant(RadialModel(), batch).passed
    with pytest.raises(AssertionError, match="rotation of jet"):
        assert_so2_invariant(RadialModel(fixed_direction=True), batch)

    def particle_positions(jets):
        return physics.relative_etaphi(jets.p4, batch=jets.batch, num_jets=jets.num_jets)

    assert assert_so2_equivariant(particle_positions, batch, out_types="etaphi").passed


def test_bad_arguments(jets, typed_inputs):
    _, v, _, j = typed_inputs
    with pytest.raises(ValueError, match="kind"):
        assert_so2_invariant(spread, jets.p4, mask=jets.mask, kind="beam")
    with pytest.raises(ValueError, match="out_types"):
        assert_so2_equivariant(spread, jets.p4, mask=jets.mask, out_types="vector")
    with pytest.raises(ValueError, match="axis"):
        assert_so2_equivariant(lambda v: v, (v,), in_types=("vector",), out_types="vector")
    with pytest.raises(ValueError, match="argument 0"):
        assert_so2_equivariant(lambda v, j: v, (v[:3], j), in_types=("vector", "axis"),
                               out_types="vector")
    with pytest.raises(ValueError, match="in_types"):
        assert_so2_invariant(spread, jets.p4, mask=jets.mask, in_types=("p4",))
    assert math.isfinite(assert_so2_invariant(spread, jets.p4, mask=jets.mask).error)
