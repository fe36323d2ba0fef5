"""EdgeConv: per-edge loop reference (eval and train BatchNorm), short jets, symmetries,
gradients, weaver-core's EdgeConvBlock on the same weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from jettag.nn.edge_conv import EdgeConv
from jettag.testing import (
    assert_batch_independent,
    assert_padding_invariant,
    assert_permutation_equivariant,
    random_jets,
)

F64 = torch.float64
BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _ptr(counts: list[int]) -> torch.Tensor:
    return torch.tensor([0, *torch.tensor(counts).cumsum(0).tolist()], dtype=torch.int64)


def _randomize_batchnorm(module: nn.Module, seed: int) -> None:
    """Non-trivial affine parameters and running statistics in every BatchNorm."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in module.modules():
            if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                bn.weight.uniform_(0.5, 1.5, generator=gen)
                bn.bias.normal_(0.0, 0.3, generator=gen)
                bn.running_mean.normal_(0.0, 0.5, generator=gen)
                bn.running_var.uniform_(0.5, 2.0, generator=gen)


def _loop_reference(conv: EdgeConv, x, pos, counts, *, train: bool = False) -> torch.Tensor:
    """Per-edge EdgeConv with brute-force neighbours, jet by jet.

    ``train=True`` normalises each edge layer with the mean and biased variance over all real
    edges of the batch (and the shortcut over all real particles), as BatchNorm in training.
    """

    def norm(bn: nn.BatchNorm1d, h: torch.Tensor) -> torch.Tensor:
        if train:
            mean, var = h.mean(0), h.var(0, unbiased=False)
        else:
            mean, var = bn.running_mean, bn.running_var
        return (h - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias

    edges, receivers, start = [], [], 0
    for n in counts:
        for i in range(start, start + n):
            dist = ((pos[start : start + n] - pos[i]) ** 2).sum(1)
            dist[i - start] = float("inf")
            order = torch.argsort(dist, stable=True)[: min(conv.k, n - 1)] + start
            for j in order.tolist():
                edges.append(torch.cat([x[i], x[j] - x[i]]))
                receivers.append(i)
        start += n
    h = torch.stack(edges) if edges else x.new_zeros(0, 2 * conv.in_channels)
    for linear, bn in zip(conv.linears, conv.norms, strict=True):
        h = torch.relu(norm(bn, h @ linear.weight.T))
    messages = x.new_zeros(x.shape[0], conv.out_channels)
    for i in range(x.shape[0]):
        rows = h[[e for e, r in enumerate(receivers) if r == i]]
        if len(rows):
            messages[i] = rows.mean(0) if conv.aggr == "mean" else rows.max(0).values
    skip = x if conv.shortcut is None else norm(conv.shortcut_norm, x @ conv.shortcut.weight.T)
    return torch.relu(skip + messages)


def _packed_call(conv: EdgeConv):
    """Padded-tensor adapter for the symmetry helpers: points = the first two features."""

    def fn(p4, x, mask):
        counts = mask.sum(-1).reshape(-1)
        out = conv(x[mask], x[mask][:, :2], _ptr(counts.tolist()))
        padded = out.new_zeros(*mask.shape, conv.out_channels)
        padded[mask] = out
        return padded

    return fn


def test_repr_and_parameter_count():
    conv = EdgeConv(7, (64, 64, 64), k=16)
    assert repr(conv) == "EdgeConv(7 -> 64, k=16, aggr=mean)"
    assert repr(EdgeConv(4, (8, 12), k=3, aggr="max")) == "EdgeConv(4 -> (8, 12), k=3, aggr=max)"
    # ParticleNet's first block: 14*64 + 2*64*64 weights, 7*64 shortcut, 4 BatchNorms (64 each).
    assert sum(p.numel() for p in conv.parameters()) == 10_048
    assert EdgeConv(64, 64).shortcut is None
    assert EdgeConv(5, 16).channels == (16, 16, 16)


@pytest.mark.parametrize("aggr", ["mean", "max"])
def test_equals_per_edge_loop_in_eval_mode(aggr):
    torch.manual_seed(0)
    counts = [9, 5, 1, 0, 6]
    conv = EdgeConv(6, (16, 24, 12), k=4, aggr=aggr).double().eval()
    _randomize_batchnorm(conv, 1)
    x = torch.randn(sum(counts), 6, dtype=F64)
    pos = torch.randn(sum(counts), 2, dtype=F64)
    got = conv(x, pos, _ptr(counts))
    expected = _loop_reference(conv, x, pos, counts)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_training_mode_normalises_over_real_edges_and_particles():
    torch.manual_seed(1)
    counts = [12, 3, 1, 8]  # jets with fewer than k + 1 particles have fewer edges
    conv = EdgeConv(5, (8, 8, 10), k=6).double().train()
    x = torch.randn(sum(counts), 5, dtype=F64)
    pos = torch.randn(sum(counts), 2, dtype=F64)
    expected = _loop_reference(conv, x, pos, counts, train=True)
    got = conv(x, pos, _ptr(counts))
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    # Running statistics were updated from the real edges: 12*6 + 3*2 + 0 + 8*6 of them.
    assert int(conv.norms[0].num_batches_tracked) == 1
    assert not torch.allclose(conv.norms[0].running_mean, torch.zeros(8, dtype=F64))


def test_short_jets_use_the_particles_they_have():
    torch.manual_seed(2)
    conv = EdgeConv(3, 8, k=16).double().eval()
    _randomize_batchnorm(conv, 2)
    x, pos = torch.randn(4, 3, dtype=F64), torch.randn(4, 2, dtype=F64)
    out = conv(x, pos, _ptr([3, 1]))
    torch.testing.assert_close(out, _loop_reference(conv, x, pos, [3, 1]), rtol=1e-12, atol=1e-12)
    # A particle alone in its jet has no neighbours: only the shortcut remains.
    alone = torch.relu(conv.shortcut_norm(conv.shortcut(x[3:])))
    torch.testing.assert_close(out[3:], alone)


def test_never_looks_across_jets():
    torch.manual_seed(3)
    conv = EdgeConv(4, 8, k=5).double().eval()
    x, pos = torch.randn(30, 4, dtype=F64), torch.randn(30, 2, dtype=F64)
    ptr = _ptr([10, 20])
    before = conv(x, pos, ptr)
    # Move the second jet's particles right on top of the first jet's: nothing changes there.
    x2, pos2 = x.clone(), pos.clone()
    x2[10:20], pos2[10:20] = x[:10], pos[:10] + 1e-9
    after = conv(x2, pos2, ptr)
    torch.testing.assert_close(after[:10], before[:10], rtol=0, atol=0)


def test_symmetries_through_jettag_testing():
    jets = random_jets(4, 24, generator=4, n_features=5, min_particles=3)
    conv = EdgeConv(5, (16, 16, 16), k=6).double().eval()
    fn = _packed_call(conv)
    assert_permutation_equivariant(fn, jets.p4, x=jets.x, mask=jets.mask, generator=5)
    assert_padding_invariant(fn, jets.p4, x=jets.x, mask=jets.mask, generator=6)
    assert_batch_independent(fn, jets.p4, x=jets.x, mask=jets.mask, generator=7)


def test_permutation_check_catches_position_dependence():
    # Negative control: a layer that looks at neighbours by position in the jet is caught.
    jets = random_jets(3, 12, generator=8, n_features=4, min_particles=12)
    conv = EdgeConv(4, 8, k=3).double().eval()

    def by_position(p4, x, mask):
        index = torch.arange(x.shape[-2], dtype=x.dtype)
        return _packed_call(conv)(p4, x + index[:, None], mask)

    with pytest.raises(AssertionError, match="ermutation"):
        assert_permutation_equivariant(by_position, jets.p4, x=jets.x, mask=jets.mask)


def test_gradcheck_float64():
    torch.manual_seed(5)
    conv = EdgeConv(3, (4, 5), k=2).double().eval()
    _randomize_batchnorm(conv, 5)
    x = torch.randn(6, 3, dtype=F64, requires_grad=True)
    pos = torch.randn(6, 2, dtype=F64)
    assert torch.autograd.gradcheck(lambda v: conv(v, pos, _ptr([4, 2])), (x,), fast_mode=True)


def test_float32_and_float64_agree():
    torch.manual_seed(6)
    conv = EdgeConv(5, 16, k=4).eval()
    _randomize_batchnorm(conv, 6)
    x, pos = torch.randn(25, 5), torch.randn(25, 2)
    out32 = conv(x, pos, _ptr([10, 15]))
    out64 = conv.double()(x.double(), pos.double(), _ptr([10, 15]))
    assert out32.dtype == torch.float32 and out64.dtype == F64
    torch.testing.assert_close(out32.double(), out64, rtol=1e-5, atol=1e-5)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="aggr"):
        EdgeConv(3, 8, aggr="sum")
    with pytest.raises(ValueError, match="k must be"):
        EdgeConv(3, 8, k=0)
    with pytest.raises(ValueError, match="out_channels"):
        EdgeConv(3, ())
    conv = EdgeConv(3, 8)
    with pytest.raises(ValueError, match=r"x must be \(P, 3\)"):
        conv(torch.randn(5, 4), torch.randn(5, 2), _ptr([5]))
    with pytest.raises(ValueError, match="pos must be"):
        conv(torch.randn(5, 3), torch.randn(4, 2), _ptr([5]))
    with pytest.raises(ValueError, match="ptr"):
        conv(torch.randn(5, 3), torch.randn(5, 2), _ptr([4]))


def test_matches_weaver_edge_conv_block():
    weaver = pytest.importorskip("weaver.nn.model.ParticleNet")
    torch.manual_seed(7)
    conv = EdgeConv(7, (32, 48, 64), k=5).eval()
    _randomize_batchnorm(conv, 7)
    block = weaver.EdgeConvBlock(5, 7, (32, 48, 64)).eval()
    state = {"sc.weight": conv.shortcut.weight[:, :, None]}
    for j, (linear, bn) in enumerate(zip(conv.linears, conv.norms, strict=True)):
        state[f"convs.{j}.weight"] = linear.weight[:, :, None, None]
        state.update({f"bns.{j}.{key}": getattr(bn, key) for key in BN_KEYS})
    state.update({f"sc_bn.{key}": getattr(conv.shortcut_norm, key) for key in BN_KEYS})
    block.load_state_dict(state)
    x, pos = torch.randn(3, 20, 7), torch.randn(3, 20, 2)
    with torch.no_grad():
        got = conv(x.reshape(-1, 7), pos.reshape(-1, 2), _ptr([20, 20, 20]))
        expected = block(pos.transpose(1, 2), x.transpose(1, 2)).transpose(1, 2).reshape(-1, 64)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_fused_path_equals_the_plain_layer(training):
    from jettag.ops.fused import use_fused

    torch.manual_seed(11)
    fused_layer = EdgeConv(5, (16, 16, 16), k=4).double()
    plain = EdgeConv(5, (16, 16, 16), k=4).double()
    plain.load_state_dict(fused_layer.state_dict())
    plain.fused = False
    fused_layer.train(training)
    plain.train(training)
    jets = random_jets(6, 20, generator=3, min_particles=1, layout="batch", dtype=torch.float64)
    x = torch.randn(jets.num_particles, 5, dtype=torch.float64, requires_grad=True)
    pos = torch.randn(jets.num_particles, 2, dtype=torch.float64)
    assert use_fused(x)
    out_fused = fused_layer(x, pos, jets.ptr)
    (grad_fused,) = torch.autograd.grad(out_fused.square().sum(), x)
    out_plain = plain(x, pos, jets.ptr)
    (grad_plain,) = torch.autograd.grad(out_plain.square().sum(), x)
    torch.testing.assert_close(out_fused, out_plain, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grad_fused, grad_plain, rtol=1e-9, atol=1e-9)
    for a, b in zip(fused_layer.norms, plain.norms, strict=True):
        torch.testing.assert_close(a.running_mean, b.running_mean, rtol=1e-12, atol=1e-12)
