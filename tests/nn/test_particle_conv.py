"""Rotational particle convolution layers: loop references, exact C_n equivariance, IRC safety."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from jettag import physics
from jettag.data import JetBatch
from jettag.nn.particle_conv import (
    CyclicGroupConv,
    IRCSafeRotationalParticleConv,
    RotationalParticleConv,
    cyclic_angles,
    group_pool,
)
from jettag.ops import segment_sum
from jettag.testing import (
    assert_batch_independent,
    assert_padding_invariant,
    assert_permutation_invariant,
    random_jets,
)

F64 = torch.float64


def _ptr(counts: list[int]) -> torch.Tensor:
    return torch.tensor([0, *torch.tensor(counts).cumsum(0).tolist()], dtype=torch.int64)


def _rotation(angle: float) -> torch.Tensor:
    """Counter-clockwise rotation of (d_eta, d_phi), as physics.rotate_about_jet_axis."""
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s], [s, c]], dtype=F64)


def _z_and_angles(batch: JetBatch) -> tuple[torch.Tensor, torch.Tensor]:
    pt = physics.pt(batch.p4)
    z = pt / segment_sum(pt, batch.ptr)[batch.batch]
    angles = physics.relative_etaphi(batch.p4, batch=batch.batch, num_jets=batch.num_jets)
    return z, angles


def _rotate(batch: JetBatch, angle: float | torch.Tensor) -> JetBatch:
    p4 = physics.rotate_about_jet_axis(batch.p4, angle, batch=batch.batch,
                                       num_jets=batch.num_jets)
    return JetBatch(p4, batch.ptr, x=batch.x)


# ----------------------------------------------------------------------------- references


def test_cyclic_angles():
    torch.testing.assert_close(cyclic_angles(4, dtype=F64),
                               torch.tensor([0, math.pi / 2, math.pi, 3 * math.pi / 2],
                                            dtype=F64))
    with pytest.raises(ValueError, match="num_rotations: expected a positive number"):
        cyclic_angles(0)


@pytest.mark.parametrize("weighted", [False, True])
def test_lift_equals_loop_over_jets_particles_and_angles(weighted):
    """f_c(theta_k) = sum_i w_i Phi_c(R(-theta_k) x_i, s_i), jet by jet in Python loops."""
    torch.manual_seed(0)
    counts, n = [3, 0, 1, 5], 6
    angles = 0.3 * torch.randn(sum(counts), 2, dtype=F64)
    x = torch.rand(sum(counts), 2, dtype=F64)
    weight = torch.rand(sum(counts), dtype=F64) if weighted else None
    lift = RotationalParticleConv(2, 7, hidden_channels=(11,), num_rotations=n).double()
    got = lift(angles, _ptr(counts), x, weight)
    assert got.shape == (len(counts), n, 7)
    start = 0
    for b, count in enumerate(counts):
        for k in range(n):
            expected = torch.zeros(7, dtype=F64)
            for i in range(start, start + count):
                rotated = _rotation(-2 * math.pi * k / n) @ angles[i]
                w = 1.0 if weight is None else weight[i]
                expected = expected + w * lift.phi(torch.cat([rotated, x[i]]))
            torch.testing.assert_close(got[b, k], expected, rtol=1e-13, atol=1e-14)
        start += count


def _group_conv_loop(conv: CyclicGroupConv, h: torch.Tensor) -> torch.Tensor:
    """h'_d(k) = b_d + sum_c sum_j psi_dc(j) h_c(k + j), j from -K//2, indices modulo n."""
    n, size = h.shape[1], conv.kernel_size
    out = torch.zeros(h.shape[0], n, conv.out_channels, dtype=h.dtype)
    for k in range(n):
        for tap in range(size):
            j = tap - size // 2
            out[:, k] += h[:, (k + j) % n] @ conv.weight[:, :, tap].T
    return out + (0 if conv.bias is None else conv.bias)


@pytest.mark.parametrize(("kernel_size", "n"), [(1, 5), (3, 8), (4, 8), (8, 8), (5, 5)])
def test_group_conv_equals_circular_correlation(kernel_size, n):
    torch.manual_seed(1)
    conv = CyclicGroupConv(3, 4, kernel_size=kernel_size).double()
    torch.nn.init.normal_(conv.bias)
    h = torch.randn(2, n, 3, dtype=F64)
    torch.testing.assert_close(conv(h), _group_conv_loop(conv, h), rtol=1e-13, atol=1e-13)


# ----------------------------------------------------------------------------- C_n equivariance


@pytest.mark.parametrize("n", [4, 7, 16])
def test_lift_shifts_the_group_axis_exactly(n):
    """Rotating every particle by 2 pi m / n rolls the lifted map by m, for every m."""
    torch.manual_seed(2)
    lift = RotationalParticleConv(1, 8, hidden_channels=(16, 16), num_rotations=n).double()
    counts = [4, 1, 6]
    angles = 0.4 * torch.randn(sum(counts), 2, dtype=F64)
    x = torch.rand(sum(counts), 1, dtype=F64)
    ref = lift(angles, _ptr(counts), x)
    for m in range(n):
        rotated = angles @ _rotation(2 * math.pi * m / n).T
        got = lift(rotated, _ptr(counts), x)
        torch.testing.assert_close(got, ref.roll(m, dims=1), rtol=0, atol=1e-13)


def test_lifted_jets_shift_exactly_under_rotations_about_the_centroid():
    """Physical rotations of whole jets (rotate_about_jet_axis) by 2 pi m / n, different m per
    jet: z and the angles from the recomputed centroid give a lift rolled by m per jet."""
    n = 12
    torch.manual_seed(3)
    lift = IRCSafeRotationalParticleConv(8, hidden_channels=(16,), num_rotations=n).double()
    batch = random_jets(6, 15, generator=3, massive=True, layout="batch", min_particles=2)
    ref = lift(*_z_and_angles(batch), batch.ptr)
    steps = torch.tensor([0, 1, 5, 6, 11, 3])
    got = lift(*_z_and_angles(_rotate(batch, steps.to(F64) * (2 * math.pi / n))), batch.ptr)
    for b in range(batch.num_jets):
        torch.testing.assert_close(got[b], ref[b].roll(int(steps[b]), dims=0), rtol=0,
                                   atol=1e-12)


def test_lift_generic_angle_is_not_a_shift():
    """Control: a rotation by half a step is no element of C_n, and no roll reproduces it."""
    n = 8
    torch.manual_seed(4)
    lift = RotationalParticleConv(0, 8, hidden_channels=(16,), num_rotations=n).double()
    angles = 0.4 * torch.randn(9, 2, dtype=F64)
    with torch.no_grad():
        ref = lift(angles, _ptr([9]))
        got = lift(angles @ _rotation(math.pi / n).T, _ptr([9]))
    assert min(float((got - ref.roll(m, dims=1)).abs().max()) for m in range(n)) > 1e-3


@pytest.mark.parametrize("kernel_size", [1, 3, 6])
def test_group_conv_commutes_with_cyclic_shifts(kernel_size):
    torch.manual_seed(5)
    n = 6
    conv = CyclicGroupConv(5, 3, kernel_size=kernel_size).double()
    h = torch.randn(4, n, 5, dtype=F64)
    out = conv(h)
    for m in range(n):
        torch.testing.assert_close(conv(h.roll(m, dims=1)), out.roll(m, dims=1), rtol=0,
                                   atol=1e-14)
    pooled = group_pool(torch.relu(out))
    for m in range(n):
        torch.testing.assert_close(group_pool(torch.relu(conv(h.roll(m, dims=1)))), pooled,
                                   rtol=0, atol=1e-14)


def test_zero_padded_convolution_is_not_equivariant():
    """Control: the same filter with zero padding (an ordinary Conv1d) breaks the symmetry."""
    torch.manual_seed(6)
    conv = CyclicGroupConv(2, 2, kernel_size=3).double()
    h = torch.randn(1, 6, 2, dtype=F64) + 1.0

    def zero_padded(t: torch.Tensor) -> torch.Tensor:
        return F.conv1d(t.transpose(1, 2), conv.weight, conv.bias, padding=1).transpose(1, 2)

    torch.testing.assert_close(zero_padded(h)[:, 1:-1], conv(h)[:, 1:-1])
    with torch.no_grad():
        shifted = zero_padded(h.roll(1, dims=1)) - zero_padded(h).roll(1, dims=1)
    assert float(shifted.abs().max()) > 1e-2


def test_group_pool():
    h = torch.tensor([[[1.0, -2.0], [3.0, 0.0], [2.0, 5.0]]])
    torch.testing.assert_close(group_pool(h), torch.tensor([[2.0, 1.0]]))
    torch.testing.assert_close(group_pool(h, "max"), torch.tensor([[3.0, 5.0]]))
    with pytest.raises(ValueError, match="aggr: expected 'mean' or 'max'"):
        group_pool(h, "sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"expected feature maps on the group \(B, n, C\)"):
        group_pool(h[0])


# ----------------------------------------------------------------------------- IRC safety


def test_irc_safe_lift_is_infrared_and_collinear_safe_exactly():
    torch.manual_seed(7)
    lift = IRCSafeRotationalParticleConv(6, hidden_channels=(12,), num_rotations=5).double()
    z = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
    angles = torch.tensor([[0.1, -0.2], [0.0, 0.3], [-0.25, 0.05]], dtype=F64)
    ref = lift(z, angles, _ptr([3]))
    # Zero-pT particles add nothing, whatever (even non-finite) angles they have.
    z_ir = torch.cat([z, torch.zeros(2, dtype=F64)])
    angles_ir = torch.cat([angles, torch.tensor([[0.7, -0.6], [math.nan, math.inf]],
                                                dtype=F64)])
    torch.testing.assert_close(lift(z_ir, angles_ir, _ptr([5])), ref, rtol=1e-14, atol=1e-14)
    # A collinear split of particle 0 into 0.2 + 0.3 at the same angles.
    z_col = torch.tensor([0.2, 0.3, 0.2, 0.3], dtype=F64)
    angles_col = torch.cat([angles, angles[:1]])
    torch.testing.assert_close(lift(z_col, angles_col, _ptr([4])), ref, rtol=1e-14, atol=1e-14)
    # Control: the PFN-like lift with z as a feature is neither.
    pfn_like = RotationalParticleConv(1, 6, hidden_channels=(12,), num_rotations=5).double()
    assert not torch.allclose(pfn_like(angles_col, _ptr([4]), z_col[:, None]),
                              pfn_like(angles, _ptr([3]), z[:, None]))
    assert not torch.allclose(pfn_like(angles_ir[:4], _ptr([4]), z_ir[:4, None]),
                              pfn_like(angles, _ptr([3]), z[:, None]))


# ----------------------------------------------------------------------------- batching


@pytest.mark.parametrize("irc_safe", [False, True])
def test_lift_permutation_padding_and_batch_independence(irc_safe):
    torch.manual_seed(8)
    batch = random_jets(5, 12, generator=8, n_features=2, layout="batch")
    if irc_safe:
        lift = IRCSafeRotationalParticleConv(8, hidden_channels=(16,), num_rotations=6)
    else:
        lift = RotationalParticleConv(3, 8, hidden_channels=(16,), num_rotations=6)
    lift = lift.double()
    conv = CyclicGroupConv(8, 4).double()

    def fn(b: JetBatch) -> torch.Tensor:
        z, angles = _z_and_angles(b)
        if irc_safe:
            maps = lift(z, angles, b.ptr)
        else:
            maps = lift(angles, b.ptr, torch.cat([z[:, None], b.x], dim=1))
        return conv(maps)

    assert_permutation_invariant(fn, batch, n_trials=3)
    assert_padding_invariant(fn, batch, n_trials=2)
    assert_batch_independent(fn, batch, n_trials=2)


# ----------------------------------------------------------------------------- API


def test_float32_matches_float64_and_gradients():
    torch.manual_seed(9)
    lift = RotationalParticleConv(1, 4, hidden_channels=(8,), num_rotations=5)
    conv = CyclicGroupConv(4, 3)
    angles, x = 0.3 * torch.randn(7, 2), torch.rand(7, 1)
    out32 = conv(lift(angles, _ptr([3, 4]), x))
    out64 = conv.double()(lift.double()(angles.double(), _ptr([3, 4]), x.double()))
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), out64, rtol=1e-5, atol=1e-5)
    a = angles.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: conv(lift(t, _ptr([3, 4]), x.double())), (a,))


def test_repr_and_parameter_counts():
    lift = RotationalParticleConv(1, 64, hidden_channels=(64, 64), num_rotations=16)
    assert repr(lift) == "RotationalParticleConv(2 + 1 -> C16 x 64, hidden=(64, 64))"
    assert sum(p.numel() for p in lift.parameters()) == sum(
        a * b + b for a, b in itertools.pairwise((3, 64, 64, 64)))
    irc = IRCSafeRotationalParticleConv(8, hidden_channels=(), num_rotations=4)
    assert repr(irc) == "IRCSafeRotationalParticleConv(2 -> C4 x 8, hidden=(), weight=z)"
    conv = CyclicGroupConv(64, 32, kernel_size=5)
    assert repr(conv) == "CyclicGroupConv(64 -> 32, kernel_size=5)"
    assert sum(p.numel() for p in conv.parameters()) == 64 * 32 * 5 + 32
    no_bias = CyclicGroupConv(2, 2, bias=False)
    assert repr(no_bias) == "CyclicGroupConv(2 -> 2, kernel_size=3, bias=False)"


def test_errors_name_the_argument():
    lift = RotationalParticleConv(2, 4, num_rotations=4)
    ptr = _ptr([3])
    with pytest.raises(ValueError, match=r"angles: expected \(d_eta, d_phi\)"):
        lift(torch.zeros(3, 3), ptr, torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"x: expected 2 rotation-invariant features .* none"):
        lift(torch.zeros(3, 2), ptr)
    with pytest.raises(ValueError, match=r"weight: expected one weight per particle \(3,\)"):
        lift(torch.zeros(3, 2), ptr, torch.zeros(3, 2), torch.zeros(2))
    with pytest.raises(ValueError, match="in_channels=0 and takes no per-particle features"):
        RotationalParticleConv(0, 4)(torch.zeros(3, 2), ptr, torch.zeros(3, 1))
    with pytest.raises(ValueError, match="in_channels: expected a number"):
        RotationalParticleConv(-1, 4)
    with pytest.raises(ValueError, match="num_rotations"):
        RotationalParticleConv(0, 4, num_rotations=0)
    with pytest.raises(ValueError, match="z: expected one pT fraction per particle"):
        IRCSafeRotationalParticleConv(4)(torch.zeros(2), torch.zeros(3, 2), ptr)
    with pytest.raises(ValueError, match="kernel_size: a filter of 5 angular steps does not fit"):
        CyclicGroupConv(2, 2, kernel_size=5)(torch.zeros(1, 4, 2))
    with pytest.raises(ValueError, match=r"h: expected feature maps on the group \(B, n, 2\)"):
        CyclicGroupConv(2, 2)(torch.zeros(1, 4, 3))
