"""SO(2)-about-the-jet-axis layers (arXiv:2303.11288): closed forms, symmetries, counts.

Global SO(3) equivariance (vectors, tensors and the axis rotated together) is checked with
e3nn's ``assert_equivariant`` in float64 at 1e-10; rotations about a fixed axis with
``jettag.testing.assert_so2_equivariant``; the intended symmetry breaking with negative
checks (a fixed axis and rotations about another axis must fail).
"""

from __future__ import annotations

import math

import pytest
import torch
from e3nn import o3
from e3nn.util.test import assert_equivariant

from jettag import physics
from jettag.nn.so2 import (
    SVT,
    BilinearTensorLayer,
    E3NNTensorBlock,
    EquivariantActivation,
    EquivariantRMSNorm,
    InvariantNorms,
    SO2Linear,
    SO3Affine,
    TensorBilinear,
    TReLU,
    VReLU,
    cartesian_to_irreps,
    irreps_to_cartesian,
    squared_norms,
    trelu,
    vrelu,
)
from jettag.testing import assert_so2_equivariant

F64 = torch.float64
TOL = 1e-10
ROWS = 6


@pytest.fixture(autouse=True)
def _float64_default():
    """e3nn computes its rotation matrices (``D_from_matrix``) and Clebsch-Gordan
    coefficients in the default dtype: float64 makes them exact to 1e-15."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    yield
    torch.set_default_dtype(old)


def _features(channels: tuple[int, int, int], *, rows: int = ROWS, seed: int = 0,
              scale: float = 1.0) -> SVT:
    g = torch.Generator().manual_seed(seed)
    cs, cv, ct = channels

    def randn(*shape: int) -> torch.Tensor:
        return scale * torch.randn(*shape, generator=g, dtype=F64)

    return SVT(
        randn(rows, cs) if cs else None,
        randn(rows, cv, 3) if cv else None,
        randn(rows, ct, 3, 3) if ct else None,
    )


def _axis(rows: int = ROWS, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 3.0 * torch.randn(rows, 3, generator=g, dtype=F64)


def _randomise(module: torch.nn.Module, seed: int = 2) -> torch.nn.Module:
    """Non-zero values everywhere (biases included), so that no term hides behind a zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module.double()


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------- e3nn bookkeeping of features


def _irreps(channels: tuple[int, int, int]) -> list[object]:
    """e3nn irreps of the flattened (s, v, t): scalars 0e, vectors 1o, tensors 0e+1e+2e each."""
    cs, cv, ct = channels
    return [
        o3.Irreps(f"{cs}x0e") if cs else None,
        o3.Irreps(f"{cv}x1o") if cv else None,
        o3.Irreps("+".join(["0e+1e+2e"] * ct)) if ct else None,
    ]


def _flatten(x: SVT) -> list[torch.Tensor]:
    s, v, t = x
    out = []
    if s is not None:
        out.append(s)
    if v is not None:
        out.append(v.flatten(-2))
    if t is not None:
        out.append(cartesian_to_irreps(t).flatten(-2))
    return out


def _unflatten(args: list[torch.Tensor], channels: tuple[int, int, int]) -> SVT:
    it = iter(args)
    cs, cv, ct = channels
    s = next(it) if cs else None
    v = next(it).unflatten(-1, (cv, 3)) if cv else None
    t = irreps_to_cartesian(next(it).unflatten(-1, (ct, 9))) if ct else None
    return SVT(s, v, t)


def _assert_so3(layer, channels, *, axis: bool, fixed_axis: bool = False, out_channels=None,
                invariant_out: bool = False) -> None:
    """Global SO(3) check with e3nn: every vector, tensor and (unless fixed) the axis rotate."""
    x = _features(channels)
    args = _flatten(x)
    irreps_in = [ir for ir in _irreps(channels) if ir is not None]
    if axis:
        args.append(_axis())
        irreps_in.append(None if fixed_axis else o3.Irreps("1x1o"))
    out_channels = out_channels or channels

    def fn(*flat: torch.Tensor):
        feats = _unflatten(list(flat[: len(flat) - axis]), channels)
        out = layer(*feats, flat[-1]) if axis else layer(*feats)
        if invariant_out:
            return out
        return _flatten(out)

    if invariant_out:
        irreps_out = o3.Irreps(f"{sum(out_channels)}x0e")
    else:
        irreps_out = [ir for ir in _irreps(out_channels) if ir is not None]
    torch.manual_seed(0)
    assert_equivariant(fn, args_in=args, irreps_in=irreps_in, irreps_out=irreps_out,
                       tolerance=TOL, ntrials=4, do_parity=False, do_translation=False)


def test_e3nn_bookkeeping_matches_cartesian_rotations():
    """The irreps helpers are exact: 0e+1e+2e with e3nn's D == R T R^T, round trip exact."""
    t = _features((0, 0, 4)).t
    rot = o3.rand_matrix(dtype=F64)
    x = cartesian_to_irreps(t)
    d = o3.Irreps("0e+1e+2e").D_from_matrix(rot)
    assert torch.allclose(cartesian_to_irreps(rot @ t @ rot.T), x @ d.T, atol=1e-12)
    assert torch.allclose(irreps_to_cartesian(x), t, atol=1e-13)
    assert torch.allclose(o3.Irreps("1o").D_from_matrix(rot), rot, atol=1e-12)
    # Trace part: identity -> (sqrt 3, 0, ...); antisymmetric -> 1e only; symmetric -> 0e+2e.
    assert torch.allclose(cartesian_to_irreps(torch.eye(3, dtype=F64))[0], torch.tensor(3.0,
                          dtype=F64).sqrt())
    a = t[0, 0] - t[0, 0].T
    assert cartesian_to_irreps(a)[[0, 4, 5, 6, 7, 8]].abs().max() < 1e-13
    sym = t[0, 0] + t[0, 0].T
    assert cartesian_to_irreps(sym)[1:4].abs().max() < 1e-13


# ----------------------------------------------------------------------------- affine


def test_affine_closed_form_and_biases():
    layer = _randomise(SO3Affine((3, 2, 4), (5, 6, 7)))
    s, v, t = _features((3, 2, 4))
    out = layer(s, v, t)
    eye = torch.eye(3, dtype=F64)
    assert torch.allclose(out.s, s @ layer.weight_s.T + layer.bias_s, atol=1e-13)
    assert torch.allclose(out.v, torch.einsum("oi,ric->roc", layer.weight_v, v), atol=1e-13)
    expected_t = torch.einsum("oi,riab->roab", layer.weight_t, t) + layer.bias_t[:, None,
                                                                                 None] * eye
    assert torch.allclose(out.t, expected_t, atol=1e-13)
    # Zero inputs: no vector bias, the tensor bias is b I.
    zero = layer(torch.zeros_like(s), torch.zeros_like(v), torch.zeros_like(t))
    assert zero.v.abs().max() == 0
    assert torch.allclose(zero.t, layer.bias_t[:, None, None] * eye)
    assert _count(layer) == 5 * 3 + 5 + 6 * 2 + 7 * 4 + 7
    assert repr(SO3Affine((4, 3, 0), 8)) == "SO3Affine((4, 3, 0) -> (8, 8, 0))"


def test_affine_global_so3_equivariance():
    _assert_so3(_randomise(SO3Affine((3, 2, 4), (5, 6, 7))), (3, 2, 4), axis=False,
                out_channels=(5, 6, 7))


# ----------------------------------------------------------------------------- SO(2)_j


def _explicit_a(a: torch.Tensor, b: torch.Tensor, phi: torch.Tensor, axis: torch.Tensor):
    """Eq. (4) term by term: (a j j^T + b (I - j j^T)) R_j(phi) with jettag.physics."""
    j = axis / axis.norm(dim=-1, keepdim=True)
    jj = j[:, :, None] * j[:, None, :]
    eye = torch.eye(3, dtype=F64)
    rot = physics.rotation_matrix(j, phi.expand(j.shape[0]))
    return (a * jj + b * (eye - jj)) @ rot


def test_so2_linear_matches_equation_4_to_6():
    layer = _randomise(SO2Linear((2, 3, 4), (2, 5, 3)))
    s, v, t = _features((2, 3, 4))
    axis = _axis()
    out = layer(s, v, t, axis)
    assert out.s is s  # scalars pass through
    eye = torch.eye(3, dtype=F64)
    for i in range(5):
        expected = sum(
            torch.einsum("rab,rb->ra",
                         _explicit_a(layer.a_v[i, k], layer.b_v[i, k], layer.phi_v[i, k], axis),
                         v[:, k])
            for k in range(3)
        )
        assert torch.allclose(out.v[:, i], expected, atol=1e-12)
    for i in range(3):
        expected = layer.bias_t[i] * eye
        for k in range(4):
            left = _explicit_a(layer.a_t[i, k], layer.b_t[i, k], layer.phi_t[i, k], axis)
            right = _explicit_a(layer.a_t2[i, k], layer.b_t2[i, k], layer.phi_t2[i, k], axis)
            expected = expected + left @ t[:, k] @ right.transpose(-1, -2)
        assert torch.allclose(out.t[:, i], expected, atol=1e-12)
    # The slow reference of the layer itself agrees.
    mats = layer.matrices(axis)
    assert torch.allclose(torch.einsum("roiab,rib->roa", mats, v), out.v, atol=1e-12)


def test_so2_linear_isotropic_special_case_is_the_affine_map():
    """a = b, phi = 0 gives W v and W T W'^T (eq. 5: 'the isotropic linear neuron')."""
    layer = _randomise(SO2Linear((0, 3, 2), (0, 4, 2)))
    with torch.no_grad():
        layer.b_v.copy_(layer.a_v)
        layer.b_t.copy_(layer.a_t)
        layer.b_t2.copy_(layer.a_t2)
        for phi in (layer.phi_v, layer.phi_t, layer.phi_t2):
            phi.zero_()
    _, v, t = _features((0, 3, 2))
    out = layer(None, v, t, _axis())
    assert torch.allclose(out.v, torch.einsum("oi,ric->roc", layer.a_v, v), atol=1e-12)
    expected = torch.einsum("oi,riab->roab", layer.a_t * layer.a_t2, t)
    expected = expected + layer.bias_t[:, None, None] * torch.eye(3, dtype=F64)
    assert torch.allclose(out.t, expected, atol=1e-12)


def test_so2_matrices_commute_with_rotations_about_the_axis_only():
    layer = _randomise(SO2Linear((0, 2, 0), (0, 2, 0)))
    axis = _axis()
    mats = layer.matrices(axis)
    about = physics.rotation_matrix(axis, torch.full((ROWS,), 0.7, dtype=F64))[:, None, None]
    other = physics.rotation_matrix(torch.randn(ROWS, 3, dtype=F64), 0.7)[:, None, None]
    assert torch.allclose(mats @ about, about @ mats, atol=1e-12)
    assert (mats @ other - other @ mats).abs().amax() > 1e-2


def test_so2_linear_global_so3_equivariance():
    layer = _randomise(SO2Linear((2, 3, 4), (2, 5, 3)))
    _assert_so3(layer, (2, 3, 4), axis=True, out_channels=(2, 5, 3))


def test_so2_linear_breaks_so3_when_the_axis_is_held_fixed():
    """Negative check: rotate features but not the axis, and equivariance must fail."""
    layer = _randomise(SO2Linear((2, 3, 4), (2, 5, 3)))
    with pytest.raises(AssertionError, match="equivariance error"):
        _assert_so3(layer, (2, 3, 4), axis=True, fixed_axis=True, out_channels=(2, 5, 3))


def _so2_checks(layer, channels, out_types=("scalar", "vector", "tensor")) -> None:
    """Equivariant about the axis (rotating or held fixed); not about any other axis."""
    s, v, t = _features(channels)
    axis = _axis()
    in_types = ("scalar", "vector", "tensor", "axis")
    report = assert_so2_equivariant(layer, (s, v, t, axis), in_types=in_types,
                                    out_types=out_types, rtol=TOL, atol=TOL)
    assert report.passed and report.n_compared > 0

    def fixed(s, v, t):  # the axis held fixed, captured
        return tuple(layer(s, v, t, axis))

    assert_so2_equivariant(fixed, (s, v, t), in_types=in_types[:3], axis=axis,
                           out_types=out_types, rtol=TOL, atol=TOL)
    other = torch.linalg.cross(axis, torch.randn(ROWS, 3, dtype=F64))  # perpendicular axes
    with pytest.raises(AssertionError, match="SO\\(2\\) equivariance"):
        assert_so2_equivariant(fixed, (s, v, t), in_types=in_types[:3], axis=other,
                               out_types=out_types, rtol=TOL, atol=TOL)


def test_so2_linear_equivariant_about_the_axis_and_not_about_others():
    _so2_checks(_randomise(SO2Linear((2, 3, 4), (2, 5, 3))), (2, 3, 4))


def test_so2_linear_zero_axis_is_finite():
    """Empty jets have a zero axis: A reduces to b cos(phi), values and gradients finite."""
    layer = _randomise(SO2Linear((0, 2, 2), (0, 2, 2)))
    _, v, t = _features((0, 2, 2), rows=2)
    axis = torch.zeros(2, 3, dtype=F64, requires_grad=True)
    out = layer(None, v, t, axis)
    expected = torch.einsum("oi,ric->roc", layer.b_v * torch.cos(layer.phi_v), v)
    assert torch.allclose(out.v, expected, atol=1e-13)
    (out.v.sum() + out.t.sum()).backward()
    assert torch.isfinite(axis.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


def test_so2_linear_gradcheck():
    layer = _randomise(SO2Linear((0, 2, 2), (0, 2, 1)))
    _, v, t = _features((0, 2, 2), rows=2)
    axis = _axis(rows=2)
    v.requires_grad_(True)
    t.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v, t: tuple(layer(None, v, t, axis))[1:], (v, t))


def test_so2_linear_parameter_count_and_float32():
    layer = SO2Linear((4, 128, 128), (4, 128, 128)).float()
    # 3 numbers per vector connection, 6 per tensor connection, one tensor bias per output.
    assert _count(layer) == 3 * 128 * 128 + 6 * 128 * 128 + 128 == 147584
    s, v, t = (y.float() for y in _features((4, 128, 128), rows=3))
    out = layer(s, v, t, _axis(rows=3).float())
    assert out.v.dtype == out.t.dtype == torch.float32
    assert torch.isfinite(out.t).all()


# ----------------------------------------------------------------------------- bilinear


def test_bilinear_closed_forms():
    layer = TensorBilinear((4, 4, 4))
    assert layer.out_channels == (6, 6, 6) and _count(layer) == 0
    s, v, t = _features((4, 4, 4))
    out = layer(s, v, t)
    sa, sb, va, vb, ta, tb = s[:, :2], s[:, 2:], v[:, :2], v[:, 2:], t[:, :2], t[:, 2:]
    # Scalars: s_a s_b, dot products, Frobenius products tr(T_a^T T_b).
    assert torch.allclose(out.s[:, :2], sa * sb)
    assert torch.allclose(out.s[:, 2:4], torch.einsum("rkc,rkc->rk", va, vb))
    trace = torch.einsum("rkab,rkab->rk", ta, tb)
    assert torch.allclose(trace, torch.diagonal(ta.transpose(-1, -2) @ tb, dim1=-2,
                                                dim2=-1).sum(-1))
    assert torch.allclose(out.s[:, 4:], trace)
    # Vectors: s_a v_b, cross products, T_a v_b.
    assert torch.allclose(out.v[:, :2], sa[..., None] * vb)
    cross = torch.stack([va[..., 1] * vb[..., 2] - va[..., 2] * vb[..., 1],
                         va[..., 2] * vb[..., 0] - va[..., 0] * vb[..., 2],
                         va[..., 0] * vb[..., 1] - va[..., 1] * vb[..., 0]], dim=-1)
    assert torch.allclose(out.v[:, 2:4], cross)
    assert torch.allclose(out.v[:, 4:], torch.einsum("rkab,rkb->rka", ta, vb))
    # Tensors: s_a T_b, outer products, matrix products.
    assert torch.allclose(out.t[:, :2], sa[..., None, None] * tb)
    assert torch.allclose(out.t[:, 2:4], torch.einsum("rka,rkb->rkab", va, vb))
    assert torch.allclose(out.t[:, 4:], torch.einsum("rkab,rkbc->rkac", ta, tb))


def test_bilinear_simple_values():
    x, y = torch.eye(3, dtype=F64)[:2]
    out = TensorBilinear((0, 2, 0))(None, torch.stack([x, y])[None], None)
    assert out.s.tolist() == [[0.0]] and out.v.tolist() == [[[0.0, 0.0, 1.0]]]  # x.y, x cross y
    rot90 = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=F64)
    out = TensorBilinear((2, 2, 2))(
        torch.tensor([[2.0, 3.0]], dtype=F64), torch.stack([x, x])[None],
        torch.stack([rot90, rot90])[None],
    )
    assert out.s.tolist() == [[6.0, 1.0, 3.0]]  # 2*3, x.x, tr(R^T R)
    assert torch.allclose(out.v[0, 2], torch.tensor([0.0, 1.0, 0.0], dtype=F64))  # R x = y
    assert torch.allclose(out.t[0, 2], rot90 @ rot90)  # half turn
    assert torch.allclose(out.t[0, 1], torch.outer(x, x))


def test_bilinear_without_tensors_and_validation():
    layer = TensorBilinear((6, 6, 0))
    assert layer.out_channels == (6, 6, 0)  # [s s, v.v] and [s v, v x v]: 2F each
    out = layer(*_features((6, 6, 0))[:2], None)
    assert out.t is None
    with pytest.raises(ValueError, match="same even number"):
        TensorBilinear((4, 6, 4))
    with pytest.raises(ValueError, match="same even number"):
        TensorBilinear(3)
    with pytest.raises(ValueError, match=r"vector features of shape \(\.\.\., 6, 3\)"):
        layer(torch.zeros(2, 6), torch.zeros(2, 5, 3), None)


def test_bilinear_global_so3_equivariance():
    _assert_so3(TensorBilinear((4, 4, 4)), (4, 4, 4), axis=False, out_channels=(6, 6, 6))
    _assert_so3(TensorBilinear((4, 4, 0)), (4, 4, 0), axis=False, out_channels=(4, 4, 0))


# ----------------------------------------------------------------------------- nonlinear


def test_vrelu_and_trelu_closed_forms():
    v = torch.tensor([[0.3, 0.0, 0.4], [0.0, 3.0, 4.0], [0.0, 0.0, 0.0], [0.6, 0.0, 0.8]],
                     dtype=F64, requires_grad=True)
    out = vrelu(v)
    # |v| < 1 unchanged; |v| >= 1 scaled to unit length, direction kept; 0 stays 0.
    assert torch.allclose(out, torch.tensor(
        [[0.3, 0.0, 0.4], [0.0, 0.6, 0.8], [0.0, 0.0, 0.0], [0.6, 0.0, 0.8]], dtype=F64))
    out.sum().backward()
    assert torch.isfinite(v.grad).all()
    assert torch.allclose(v.grad[0], torch.ones(3, dtype=F64))  # identity below 1
    t = torch.stack([0.5 * torch.eye(3, dtype=F64) / math.sqrt(3), 4.0 * torch.eye(3,
                    dtype=F64), torch.zeros(3, 3, dtype=F64)])
    out = trelu(t)
    assert torch.allclose(out[0], t[0])  # ||T||_F = 0.5
    assert torch.allclose(out[1], torch.eye(3, dtype=F64) / math.sqrt(3))  # ||T||_F = 4*sqrt 3
    assert torch.linalg.matrix_norm(out[1]).item() == pytest.approx(1.0)
    assert out[2].abs().max() == 0
    assert torch.equal(VReLU()(v), vrelu(v)) and torch.equal(TReLU()(t), trelu(t))
    s, v2, t2 = EquivariantActivation()(torch.tensor([-2.0, 0.5]), 5 * torch.eye(3), None)
    assert s.tolist() == [0.0, 0.5] and torch.allclose(v2, torch.eye(3)) and t2 is None


def test_activation_and_norms_global_so3():
    channels = (3, 4, 5)
    _assert_so3(EquivariantActivation(), channels, axis=False)
    _assert_so3(InvariantNorms(), channels, axis=False, invariant_out=True)
    _assert_so3(EquivariantRMSNorm(), channels, axis=False)


def test_rms_norm_closed_form():
    s, v, t = _features((3, 4, 5), scale=7.0)
    out = EquivariantRMSNorm(eps=1e-12)(s, v, t)
    assert torch.allclose(out.s.pow(2).mean(-1), torch.ones(ROWS, dtype=F64))
    assert torch.allclose(out.v.pow(2).sum(-1).mean(-1), torch.ones(ROWS, dtype=F64))
    assert torch.allclose(out.t.pow(2).sum((-2, -1)).mean(-1), torch.ones(ROWS, dtype=F64))
    # One factor per row and representation: directions and channel ratios kept.
    assert torch.allclose(out.v / v, (out.v / v)[:, :1, :1].expand_as(v))
    zero = EquivariantRMSNorm()(torch.zeros(2, 3), None, None)
    assert torch.equal(zero.s, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="eps"):
        EquivariantRMSNorm(eps=0.0)


def test_squared_norms_closed_form():
    s, v, t = _features((2, 3, 4))
    out = squared_norms(s, v, t)
    assert out.shape == (ROWS, 9)
    assert torch.allclose(out[:, 2:5], v.norm(dim=-1) ** 2)
    assert torch.allclose(out[:, 5:], torch.linalg.matrix_norm(t) ** 2)
    with pytest.raises(ValueError, match="at least one"):
        squared_norms(None, None, None)


# ----------------------------------------------------------------------------- block


def test_block_structure_and_counts():
    layer = BilinearTensorLayer((4, 3, 9), 128)
    assert layer.out_channels == (192, 192, 192)
    affine = 128 * 4 + 128 + 128 * 3 + 128 * 9 + 128
    so2 = 3 * 128 * 128 + 6 * 128 * 128 + 128
    assert _count(layer) == affine + so2 == 149_888
    vector = BilinearTensorLayer((4, 3, 0), 128)
    assert vector.out_channels == (128, 128, 0)
    assert _count(vector) == 128 * 4 + 128 + 128 * 3 + 3 * 128 * 128
    out_layer = BilinearTensorLayer((192, 192, 192), 128, product=None, activation=False)
    assert out_layer.out_channels == (128, 128, 128)
    assert repr(out_layer) == (
        "BilinearTensorLayer((192, 192, 192) -> (128, 128, 128), hidden=(128, 128, 128), "
        "so2=True, product=None, activation=False)"
    )
    # The block is Affine -> SO(2) -> RMS norm -> product -> activation, in that order.
    s, v, t = _features((1, 1, 1))
    axis = _axis()
    layer = _randomise(BilinearTensorLayer((1, 1, 1), 2))
    x = layer.activation(*layer.product(*layer.norm(*layer.so2(*layer.affine(s, v, t), axis))))
    for got, expected in zip(layer(s, v, t, axis), x, strict=True):
        assert torch.equal(got, expected)
    literal = BilinearTensorLayer((1, 1, 1), 2, norm=False)
    assert literal.norm is None and "norm=False" in repr(literal)
    with pytest.raises(ValueError, match="needs the jet axis"):
        BilinearTensorLayer((1, 1, 1), 2)(*_features((1, 1, 1)), None)
    with pytest.raises(ValueError, match="product"):
        BilinearTensorLayer((1, 1, 1), 2, product="cg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scalars, vectors, tensors"):
        SO3Affine((1, 2), 3)


@pytest.mark.parametrize("norm", [True, False])
def test_block_global_so3_and_axis_symmetry_breaking(norm):
    layer = _randomise(BilinearTensorLayer((3, 2, 4), 6, norm=norm))
    _assert_so3(layer, (3, 2, 4), axis=True, out_channels=(9, 9, 9))
    with pytest.raises(AssertionError, match="equivariance error"):
        _assert_so3(layer, (3, 2, 4), axis=True, fixed_axis=True, out_channels=(9, 9, 9))
    _so2_checks(layer, (3, 2, 4))
    # Without the SO(2) map the axis is unused: fully SO(3) even with the axis fixed.
    iso = _randomise(BilinearTensorLayer((3, 2, 4), 6, so2=False))
    _assert_so3(iso, (3, 2, 4), axis=True, fixed_axis=True, out_channels=(9, 9, 9))


# ----------------------------------------------------------------------------- e3nn block


def test_e3nn_block_equivariance_and_cost():
    block = E3NNTensorBlock((4, 4, 4)).double()
    assert block.out_channels == (6, 6, 6)
    assert _count(block) == block.tp.weight_numel == 960
    _assert_so3(block, (4, 4, 4), axis=False, out_channels=(6, 6, 6))
    # 40 paths of F x F x 3F weights each: 120 F^3, i.e. 31,457,280 at the paper's width
    # (2F = 128) where the bilinear layer has none.
    assert E3NNTensorBlock((8, 8, 8)).tp.weight_numel == 120 * 4**3
    assert 120 * 64**3 == 31_457_280


def test_e3nn_block_reaches_every_output_and_matches_cartesian_products():
    """A weight on one path reproduces a Cartesian product: the 1o x 1o -> 0e path is v_a.v_b."""
    block = E3NNTensorBlock((0, 2, 0), (1, 0, 0)).double()
    with torch.no_grad():
        block.tp.weight.fill_(1.0)
    _, v, _ = _features((0, 2, 0))
    out = block(None, v, None)
    dot = (v[:, 0] * v[:, 1]).sum(-1)
    ratio = out.s[:, 0] / dot
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), atol=1e-12)  # normalisation only
    with pytest.raises(ValueError, match="no tensor-product path"):
        E3NNTensorBlock((2, 0, 0), (1, 1, 0))
