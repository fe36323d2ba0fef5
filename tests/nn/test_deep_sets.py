"""Deep Sets layers: explicit per-jet loops, packed vs padded, symmetry helpers, counts."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from jettag.data import JetBatch
from jettag.nn.deep_sets import DeepSetsEncoder, EnergyFlowLayer
from jettag.testing import (
    assert_batch_independent,
    assert_padding_invariant,
    assert_permutation_invariant,
    random_jets,
)

F64 = torch.float64


def _ptr(counts: list[int]) -> torch.Tensor:
    return torch.tensor([0, *torch.tensor(counts).cumsum(0).tolist()], dtype=torch.int64)


def _dense_count(sizes: tuple[int, ...]) -> int:
    """Weights + biases of a chain of dense layers ``sizes[0] -> sizes[1] -> ...``."""
    return sum(a * b + b for a, b in itertools.pairwise(sizes))


def _loop_reference(enc: DeepSetsEncoder, x, counts, weight=None) -> torch.Tensor:
    """Jet by jet, particle by particle: F(pool_i w_i Phi(x_i)), in plain Python loops."""
    rows, start = [], 0
    for n in counts:
        terms = []
        for i in range(start, start + n):
            w = 1.0 if weight is None else weight[i]
            terms.append(w * enc.phi(x[i : i + 1])[0])
        if not terms:
            pooled = torch.zeros(enc.latent_channels, dtype=x.dtype)
        elif enc.aggr == "sum":
            pooled = sum(terms[1:], terms[0])
        elif enc.aggr == "mean":
            pooled = sum(terms[1:], terms[0]) / n
        else:
            pooled = torch.stack(terms).max(0).values
        rows.append(enc.f(pooled[None])[0])
        start += n
    return torch.stack(rows)


@pytest.mark.parametrize("aggr", ["sum", "mean", "max"])
@pytest.mark.parametrize("weighted", [False, True])
def test_encoder_equals_loop_over_jets(aggr, weighted):
    torch.manual_seed(0)
    counts = [3, 0, 1, 7, 2]
    x = torch.randn(sum(counts), 5, dtype=F64)
    weight = torch.rand(sum(counts), dtype=F64) if weighted else None
    enc = DeepSetsEncoder(5, (16, 12), (8, 6), aggr=aggr).double()
    got = enc(x, _ptr(counts), weight)
    expected = _loop_reference(enc, x, counts, weight)
    assert got.shape == (5, 6)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    # The empty jet is F(0): a fixed vector independent of every particle.
    torch.testing.assert_close(got[1], enc.f(torch.zeros(1, 12, dtype=F64))[0])


def test_energy_flow_layer_equals_loop_over_jets():
    torch.manual_seed(1)
    counts = [4, 1, 0, 6]
    z = torch.rand(sum(counts), dtype=F64)
    angles = 0.4 * torch.randn(sum(counts), 2, dtype=F64)
    efn = EnergyFlowLayer((20, 10), (7,)).double()
    got = efn(z, angles, _ptr(counts))
    torch.testing.assert_close(got, _loop_reference(efn, angles, counts, z), rtol=1e-12,
                               atol=1e-12)
    latent = efn.latent(z, angles, _ptr(counts))
    assert latent.shape == (4, 10)
    torch.testing.assert_close(latent[0], (z[:4, None] * efn.phi(angles[:4])).sum(0))


@pytest.mark.parametrize("aggr", ["sum", "mean", "max"])
def test_packed_equals_padded(aggr):
    jets = random_jets(6, 9, generator=3, n_features=4, min_particles=0)
    enc = DeepSetsEncoder(4, (10, 10), (5,), aggr=aggr).double()
    packed = JetBatch.from_padded(jets.p4, jets.mask, x=jets.x)
    got = enc(packed.x, packed.ptr)
    # Padded computation: Phi on every slot, padding removed by the mask before pooling.
    phi = enc.phi(jets.x)
    m = jets.mask[..., None]
    if aggr == "sum":
        pooled = (phi * m).sum(1)
    elif aggr == "mean":
        pooled = (phi * m).sum(1) / m.sum(1).clamp_min(1)
    else:
        pooled = phi.masked_fill(~m, -math.inf).max(1).values
        pooled = torch.where(m.any(1), pooled, torch.zeros_like(pooled))
    torch.testing.assert_close(got, enc.f(pooled), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("aggr", ["sum", "mean", "max"])
def test_encoder_symmetries(aggr):
    batch = random_jets(5, 12, generator=4, n_features=3, layout="batch")
    enc = DeepSetsEncoder(3, (16, 16), (8,), aggr=aggr).double().eval()

    def fn(b: JetBatch) -> torch.Tensor:
        return enc(b.x, b.ptr)

    assert_permutation_invariant(fn, batch, n_trials=3)
    assert_padding_invariant(fn, batch, n_trials=2)
    assert_batch_independent(fn, batch, n_trials=2)


def test_permutation_control_fails():
    """Negative control: weighting particles by their position breaks the invariance."""
    batch = random_jets(4, 10, generator=5, n_features=3, layout="batch", min_particles=3)
    enc = DeepSetsEncoder(3, (8,), (4,)).double().eval()

    def ordered(b: JetBatch) -> torch.Tensor:
        position = torch.arange(b.num_particles, dtype=b.dtype) - b.ptr[b.batch].to(b.dtype)
        return enc(b.x, b.ptr, 1.0 + position)

    with pytest.raises(AssertionError, match="violated"):
        assert_permutation_invariant(ordered, batch)


def test_energy_flow_layer_infrared_and_collinear_exact():
    torch.manual_seed(2)
    efn = EnergyFlowLayer((12, 12), (6,)).double()
    z = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
    angles = torch.tensor([[0.1, -0.2], [0.0, 0.3], [-0.25, 0.05]], dtype=F64)
    ref = efn(z, angles, _ptr([3]))
    # A particle with z = 0 adds nothing (up to BLAS rounding of a longer matmul), whatever
    # (even non-finite) angles it has.
    z_ir = torch.cat([z, torch.zeros(2, dtype=F64)])
    angles_ir = torch.cat([angles, torch.tensor([[0.7, -0.6], [math.nan, math.inf]])])
    torch.testing.assert_close(efn(z_ir, angles_ir, _ptr([5])), ref, rtol=1e-14, atol=1e-14)
    # Splitting particle 0 into collinear pieces 0.2 + 0.3 at the same angles.
    z_col = torch.tensor([0.2, 0.3, 0.2, 0.3], dtype=F64)
    angles_col = torch.cat([angles, angles[:1]])
    torch.testing.assert_close(efn(z_col, angles_col, _ptr([4])), ref, rtol=1e-14, atol=1e-14)
    # A Deep Sets encoder of (z, angles) is neither: the control.
    enc = DeepSetsEncoder(3, (12, 12), (6,)).double()
    feats = torch.cat([z[:, None], angles], 1)
    feats_col = torch.cat([z_col[:, None], angles_col], 1)
    assert not torch.allclose(enc(feats_col, _ptr([4])), enc(feats, _ptr([3])))


def test_parameter_counts():
    enc = DeepSetsEncoder(3, (100, 100, 128), (100, 100, 100))
    expected = _dense_count((3, 100, 100, 128)) + _dense_count((128, 100, 100, 100))
    assert expected == (3 * 100 + 100) + (100 * 100 + 100) + (100 * 128 + 128) + (
        128 * 100 + 100) + 2 * (100 * 100 + 100) == 56528
    assert sum(p.numel() for p in enc.parameters()) == expected
    efn = EnergyFlowLayer((100, 100, 128), (100, 100, 100))
    assert sum(p.numel() for p in efn.parameters()) == expected - 100 == 56428


def test_initialisation_is_he_uniform_with_zero_bias():
    enc = DeepSetsEncoder(50, (400,), (300,))
    for layer, fan_in in ((enc.phi[0], 50), (enc.f[0], 400)):
        bound = math.sqrt(6.0 / fan_in)
        w = layer.weight.detach()
        assert float(w.abs().max()) <= bound
        assert float(w.abs().max()) > 0.95 * bound
        # Uniform on [-b, b] has standard deviation b / sqrt(3).
        assert abs(float(w.std()) - bound / math.sqrt(3)) < 0.03 * bound
        assert torch.count_nonzero(layer.bias) == 0


def test_dropout_and_shapes_and_repr():
    enc = DeepSetsEncoder(3, (8, 4), aggr="mean", latent_dropout=0.5)
    assert repr(enc) == "DeepSetsEncoder(3 -> 4, phi=(8, 4), f=(), aggr=mean)"
    assert enc.out_channels == enc.latent_channels == 4
    x, ptr = torch.randn(5, 3), _ptr([2, 3])
    enc.eval()
    torch.testing.assert_close(enc(x, ptr), enc.latent(x, ptr))
    f32 = enc(x, ptr)
    assert f32.dtype == torch.float32 and f32.shape == (2, 4)
    efn = EnergyFlowLayer((8, 8), (3, 3), f_dropout=0.1)
    assert repr(efn) == "EnergyFlowLayer(2 -> 3, phi=(8, 8), f=(3, 3), aggr=sum)"


def test_gradcheck():
    enc = DeepSetsEncoder(2, (4,), (3,)).double()
    x = torch.randn(5, 2, dtype=F64, requires_grad=True)
    w = torch.rand(5, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: enc(x, _ptr([2, 0, 3]), w), (x, w))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"in_channels": 0, "phi_channels": (4,)}, "in_channels"),
        ({"in_channels": 3, "phi_channels": ()}, "phi_channels"),
        ({"in_channels": 3, "phi_channels": (4, 0)}, "phi_channels"),
        ({"in_channels": 3, "phi_channels": (4,), "f_channels": (2.5,)}, "f_channels"),
        ({"in_channels": 3, "phi_channels": (4,), "aggr": "min"}, "aggr"),
        ({"in_channels": 3, "phi_channels": (4,), "f_dropout": 1.0}, "f_dropout"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DeepSetsEncoder(**kwargs)


def test_forward_errors_name_the_argument():
    enc = DeepSetsEncoder(3, (4,))
    with pytest.raises(ValueError, match=r"x: expected per-particle features \(P, 3\)"):
        enc(torch.randn(5, 2), _ptr([5]))
    with pytest.raises(ValueError, match="ptr"):
        enc(torch.randn(5, 3), _ptr([4]))
    with pytest.raises(ValueError, match="weight"):
        enc(torch.randn(5, 3), _ptr([5]), torch.ones(4))
    with pytest.raises(ValueError, match="z: expected one energy fraction"):
        EnergyFlowLayer((4,))(torch.ones(3, 1), torch.zeros(3, 2), _ptr([3]))
