"""LGEB and the Minkowski edge features: closed-form values, a per-jet loop reference of the
block's equations, Lorentz invariance of h and equivariance of x, edge cases, gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from jettag import physics
from jettag.nn.lorentz import LGEB, lorentz_edge_features, pairwise_minkowski, psi
from jettag.ops import fully_connected_edges
from jettag.testing import assert_lorentz_equivariant, random_jets

F64 = torch.float64


def _ptr(counts: list[int]) -> torch.Tensor:
    return torch.tensor([0, *torch.tensor(counts).cumsum(0).tolist()], dtype=torch.int64)


def _randomize(module: nn.Module, seed: int, *, x_scale: float = 1.0) -> None:
    """Non-trivial BatchNorm statistics and affine parameters; ``x_scale`` multiplies the
    last layer of phi_x (initialised with gain 1e-3) so that coordinate updates matter."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in module.modules():
            if isinstance(bn, nn.BatchNorm1d):
                bn.weight.uniform_(0.5, 1.5, generator=gen)
                bn.bias.normal_(0.0, 0.3, generator=gen)
                bn.running_mean.normal_(0.0, 0.5, generator=gen)
                bn.running_var.uniform_(0.5, 2.0, generator=gen)
        for block in module.modules():
            if isinstance(block, LGEB) and block.phi_x is not None:
                block.phi_x[-1].weight.mul_(x_scale)


def _jets(counts: list[int], seed: int = 0) -> torch.Tensor:
    """Massive constituents (GeV) for the given multiplicities, packed."""
    gen = torch.Generator().manual_seed(seed)
    n = sum(counts)
    pt = 1.0 + 200.0 * torch.rand(n, generator=gen, dtype=F64)
    eta = torch.randn(n, generator=gen, dtype=F64)
    phi = math.pi * (2 * torch.rand(n, generator=gen, dtype=F64) - 1)
    m = torch.rand(n, generator=gen, dtype=F64)
    return physics.from_ptetaphim(pt, eta, phi, m)


def _minkowski(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a[..., 0] * b[..., 0] - (a[..., 1:] * b[..., 1:]).sum(-1)


def _loop_reference(block: LGEB, h, x, counts, attr=None):
    """The block's equations, particle by particle and neighbour by neighbour (eval mode)."""
    h_out, x_out, start = h.clone(), x.clone(), 0
    for n in counts:
        for i in range(start, start + n):
            messages, shifts = [], []
            for j in range(start, start + n):
                if j == i:
                    continue
                d = x[i] - x[j]
                feats = torch.stack([psi(_minkowski(d, d)), psi(_minkowski(x[i], x[j]))])
                m = block.phi_e(torch.cat([h[i], h[j], feats]).unsqueeze(0))[0]
                m = m * torch.sigmoid(block.phi_m[0](m))
                messages.append(m)
                if block.phi_x is not None:
                    shifts.append((d * block.phi_x(m)).clamp(-block.clamp, block.clamp))
            total = torch.stack(messages).sum(0) if messages else h.new_zeros(block.hidden_channels)
            parts = [h[i], total] + ([attr[i]] if attr is not None else [])
            h_out[i] = h[i] + block.phi_h(torch.cat(parts).unsqueeze(0))[0]
            if shifts:
                x_out[i] = x[i] + block.c_weight * torch.stack(shifts).mean(0)
        start += n
    return h_out, x_out


# ------------------------------------------------------------------------------------------
# Minkowski features
# ------------------------------------------------------------------------------------------


def test_psi_values_and_symmetry() -> None:
    a = torch.tensor([-(math.e - 1), -1.0, 0.0, 1e-9, 1.0, math.e**2 - 1], dtype=F64)
    expected = torch.tensor([-1.0, -math.log(2), 0.0, 1e-9 - 5e-19, math.log(2), 2.0], dtype=F64)
    torch.testing.assert_close(psi(a), expected, rtol=1e-15, atol=0)
    torch.testing.assert_close(psi(-a), -psi(a), rtol=0, atol=0)


def test_pairwise_minkowski_closed_form() -> None:
    # a = (5, 3, 0, 4) massless, b = (13, 5, 12, 0) massless, c at rest with mass 2
    x = torch.tensor([[5.0, 3, 0, 4], [13, 5, 12, 0], [2, 0, 0, 0]], dtype=F64)
    edges = torch.tensor([[0, 0, 1, 2], [1, 2, 2, 2]])
    out = pairwise_minkowski(x, edges)
    # <a,b> = 65 - 15 = 50; |a-b|^2 = 0 + 0 - 2*50 = -100; <a,c> = 10; |a-c|^2 = 0 + 4 - 20;
    # <b,c> = 26; |c-c|^2 = 0, <c,c> = 4
    expected = torch.tensor([[-100.0, 50], [-16, 10], [-48, 26], [0, 4]], dtype=F64)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(lorentz_edge_features(x, edges), psi(expected))


def test_edge_features_are_lorentz_invariant() -> None:
    x = _jets([12], seed=3)
    edges = fully_connected_edges(_ptr([12]))
    lam = physics.random_lorentz(4, generator=torch.Generator().manual_seed(1))
    ref = pairwise_minkowski(x, edges)
    for k in range(4):
        moved = pairwise_minkowski(physics.apply_lorentz(lam[k], x), edges)
        torch.testing.assert_close(moved, ref, rtol=1e-9, atol=1e-6)
    # and not under a Galilean-like shift of energies (negative control)
    shifted = x.clone()
    shifted[:, 0] += 1.0
    assert (pairwise_minkowski(shifted, edges) - ref).abs().max() > 1.0


def test_edge_features_check_shapes() -> None:
    with pytest.raises(ValueError, match=r"x: expected four-vectors of shape \(P, 4\)"):
        pairwise_minkowski(torch.zeros(3, 3), torch.zeros(2, 1, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"edge_index: expected shape \(2, E\)"):
        pairwise_minkowski(torch.zeros(3, 4), torch.zeros(3, 1, dtype=torch.int64))


def test_edge_features_gradcheck_including_identical_momenta() -> None:
    x = _jets([4], seed=5)[:, :].clone()
    x = torch.cat([x, x[:1]]) / 100  # a duplicate particle: x_i - x_j = 0 on two edges
    edges = fully_connected_edges(_ptr([5]))
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: lorentz_edge_features(v, edges), (x,))
    grad = torch.autograd.grad(lorentz_edge_features(x, edges).sum(), x)[0]
    assert torch.isfinite(grad).all()


# ------------------------------------------------------------------------------------------
# LGEB
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("update_x", [True, False])
def test_lgeb_matches_loop_reference(update_x: bool) -> None:
    torch.manual_seed(0)
    counts = [5, 1, 0, 7, 2]
    block = LGEB(6, hidden_channels=10, attr_channels=3, c_weight=0.3, update_x=update_x)
    _randomize(block, 1, x_scale=50.0)
    block = block.double().eval()
    x = _jets(counts, seed=2)
    h = torch.randn(x.shape[0], 6, dtype=F64)
    attr = torch.randn(x.shape[0], 3, dtype=F64)
    with torch.no_grad():
        got_h, got_x = block(h, x, _ptr(counts), attr)
        ref_h, ref_x = _loop_reference(block, h, x, counts, attr)
    torch.testing.assert_close(got_h, ref_h, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_x, ref_x, rtol=1e-12, atol=1e-12)
    moved = (got_x - x).abs().max()
    assert (moved > 1e-3) if update_x else (moved == 0)


def test_lgeb_clamps_coordinate_shifts_elementwise() -> None:
    block = LGEB(4, c_weight=1.0, clamp=0.5).double().eval()
    with torch.no_grad():
        block.phi_x[-1].weight.fill_(0.0)
        block.phi_x[-1].weight[0, 0] = 1e6  # huge phi_x: every shift component saturates
        block.phi_x[0].weight.fill_(0.0)
        block.phi_x[0].bias.fill_(1.0)
    x = torch.tensor([[10.0, 0, 0, 9], [10, 0, 0, -9], [20, 1, 1, 1]], dtype=F64)
    h = torch.zeros(3, 4, dtype=F64)
    with torch.no_grad():
        _, new_x = block(h, x, _ptr([3]))
    # particle 0: shifts (0, 0, 0, 18)*big and (-10, -1, -1, 8)*big, clamped to +-0.5
    expected0 = x[0] + torch.tensor([-0.25, -0.25, -0.25, 0.5], dtype=F64)
    torch.testing.assert_close(new_x[0], expected0)


def test_lgeb_outputs_are_lorentz_invariant_and_equivariant() -> None:
    torch.manual_seed(3)
    jets = random_jets(3, 9, generator=4, massive=True, layout="batch")
    block = LGEB(5, attr_channels=2, c_weight=1.0)
    _randomize(block, 2, x_scale=20.0)
    block.double().eval()
    h = torch.randn(jets.num_particles, 5, dtype=F64)
    attr = torch.randn(jets.num_particles, 2, dtype=F64)

    def fn(h, x, ptr, attr):
        return block(h, x, ptr, attr)

    report = assert_lorentz_equivariant(
        fn, (h, jets.p4, jets.ptr, attr), in_types=("scalar", "p4", "scalar", "scalar"),
        out_types=("scalar", "p4"), generator=5, rtol=1e-7, atol=1e-6,
    )
    assert report.n_compared > 0
    with torch.no_grad():
        _, new_x = block(h, jets.p4, jets.ptr, attr)
    assert (new_x - jets.p4).abs().max() > 1e-2  # the x update is exercised


def test_lgeb_single_and_empty_jets() -> None:
    block = LGEB(3, attr_channels=1).double().eval()
    h = torch.randn(1, 3, dtype=F64)
    x = torch.tensor([[5.0, 1, 2, 3]], dtype=F64)
    attr = torch.ones(1, 1, dtype=F64)
    with torch.no_grad():
        new_h, new_x = block(h, x, _ptr([0, 1, 0]), attr)
        expected = h + block.phi_h(torch.cat([h, torch.zeros(1, 3, dtype=F64), attr], 1))
    torch.testing.assert_close(new_h, expected)
    torch.testing.assert_close(new_x, x)
    empty_h, empty_x = block(h[:0], x[:0], _ptr([0, 0]), attr[:0])
    assert empty_h.shape == (0, 3) and empty_x.shape == (0, 4)


def test_lgeb_precomputed_edges_and_training_mode_backward() -> None:
    counts = [4, 6]
    block = LGEB(8, attr_channels=2).double()
    x = _jets(counts, seed=7)
    h = torch.randn(x.shape[0], 8, dtype=F64, requires_grad=True)
    attr = torch.randn(x.shape[0], 2, dtype=F64)
    ptr = _ptr(counts)
    a = block(h, x, ptr, attr)
    b = block(h, x, ptr, attr, edge_index=fully_connected_edges(ptr))
    torch.testing.assert_close(a, b)
    (a[0].sum() + a[1].sum()).backward()
    assert h.grad is not None and torch.isfinite(h.grad).all()
    assert all(p.grad is not None for p in block.parameters())


def test_lgeb_parameters_and_repr() -> None:
    block = LGEB(72, attr_channels=2, c_weight=5e-3)
    assert sum(p.numel() for p in block.parameters()) == 37297
    last = LGEB(72, attr_channels=2, update_x=False)
    assert last.phi_x is None
    assert sum(p.numel() for p in last.parameters()) == 37297 - (72 * 72 + 72) - 72
    assert repr(block) == "LGEB(72 -> 72, hidden=72, attr=2, c_weight=0.005, update_x=True)"
    # phi_x's last layer starts tiny (Xavier gain 1e-3): coordinates barely move at first
    assert block.phi_x[-1].weight.abs().max() < 1e-3 * math.sqrt(6 / 73) * 1.0001


def test_lgeb_rejects_bad_inputs() -> None:
    block = LGEB(4, attr_channels=2)
    h, x, ptr = torch.zeros(3, 4), torch.zeros(3, 4), _ptr([3])
    with pytest.raises(ValueError, match=r"h must have shape \(P, 4\)"):
        block(torch.zeros(3, 5), x, ptr, torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"x must have shape \(P, 4\) = \(3, 4\)"):
        block(h, torch.zeros(2, 4), ptr, torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"attr must have shape \(P, 2\) = \(3, 2\), found None"):
        block(h, x, ptr)
    with pytest.raises(ValueError, match="attr_channels=0"):
        LGEB(4)(h, x, ptr, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="channels must be a positive integer"):
        LGEB(0)


def test_fused_evaluation_equals_the_plain_block():
    from jettag.ops.fused import use_fused

    torch.manual_seed(12)
    block = LGEB(6, hidden_channels=8, attr_channels=0, c_weight=0.3).double().eval()
    jets = random_jets(5, 12, generator=4, min_particles=1, layout="batch", dtype=torch.float64)
    h = torch.randn(jets.num_particles, 6, dtype=torch.float64)
    x = jets.p4 / 100.0
    assert use_fused(h)
    with torch.no_grad():
        h_fused, x_fused = block(h, x, jets.ptr)
        block.fused = False
        h_plain, x_plain = block(h, x, jets.ptr)
    torch.testing.assert_close(h_fused, h_plain, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x_fused, x_plain, rtol=1e-10, atol=1e-10)
