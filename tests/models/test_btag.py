"""b-tagging taggers (arXiv:2303.11288): inputs by field name, features, symmetries, counts."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from jettag import physics
from jettag.data import JetBatch
from jettag.models.btag import (
    BTAG_X_FIELDS,
    TensorPFN,
    TrackInputs,
    TrackPFN,
    VectorPFN,
    default_config,
    tensor_pfn,
    track_pfn,
    vector_pfn,
)
from jettag.testing import (
    assert_batch_independent,
    assert_padding_invariant,
    assert_permutation_invariant,
    assert_so2_invariant,
    random_jets,
)

F64 = torch.float64
COL = {name: i for i, name in enumerate(BTAG_X_FIELDS)}
PCA = [COL[f"part_pca_{c}"] for c in "xyz"]
COV = [COL[f"part_cov_{c}"] for c in ("xx", "xy", "xz", "yy", "yz", "zz")]
SMALL = {"hidden_channels": 6, "latent_channels": 4, "head_channels": (8,)}


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _dense(*sizes: int) -> int:
    return sum(a * b + b for a, b in itertools.pairwise(sizes))


def _jets(n_jets: int = 5, n_particles: int = 12, *, seed: int = 0) -> JetBatch:
    """Random jets whose x holds the generator's fields: 3 in 4 constituents are tracks,
    with charges, types, a displaced point of closest approach and an SPD covariance."""
    base = random_jets(n_jets, n_particles, generator=seed, layout="batch", min_particles=3)
    g = torch.Generator().manual_seed(seed)
    n = base.num_particles
    x = torch.zeros(n, len(BTAG_X_FIELDS), dtype=F64)
    track = torch.rand(n, generator=g) < 0.75
    x[:, COL["part_istrack"]] = track.to(F64)
    x[:, COL["part_charge"]] = torch.where(track, torch.randint(0, 2, (n,), generator=g) * 2.0
                                           - 1.0, 0.0)
    kind = torch.randint(0, 6, (n,), generator=g)
    x[:, COL["part_isElectron"]] = (track & (kind == 1)).to(F64)
    x[:, COL["part_isMuon"]] = (track & (kind == 2)).to(F64)
    x[:, COL["part_d0val"]] = 0.1 * torch.randn(n, generator=g, dtype=F64)
    x[:, COL["part_dzval"]] = 0.1 * torch.randn(n, generator=g, dtype=F64)
    x[:, PCA] = 0.2 * torch.randn(n, 3, generator=g, dtype=F64)
    m = 0.05 * torch.randn(n, 3, 3, generator=g, dtype=F64)
    cov = m @ m.transpose(-1, -2) + 1e-4 * torch.eye(3, dtype=F64)
    x[:, COV] = cov[:, [0, 0, 0, 1, 1, 2], [0, 1, 2, 1, 2, 2]]
    x = torch.where(track[:, None], x, 0.0)
    x[:, COL["part_isMuon"]] = torch.where(track, x[:, COL["part_isMuon"]], 0.0)
    return JetBatch(base.p4, base.ptr, x=x, label=torch.arange(n_jets) % 2)


def _rotate(batch: JetBatch, rot: torch.Tensor) -> JetBatch:
    """Rotate each jet's momenta, points of closest approach and covariances: rot (B, 3, 3)."""
    r = rot[batch.batch]
    p4 = batch.p4.clone()
    p4[:, 1:] = (r @ batch.p4[:, 1:, None])[..., 0]
    x = batch.x.clone()
    x[:, PCA] = (r @ batch.x[:, PCA, None])[..., 0]
    cov = torch.zeros(batch.num_particles, 3, 3, dtype=F64)
    index = ([0, 0, 0, 1, 1, 2], [0, 1, 2, 1, 2, 2])
    cov[:, index[0], index[1]] = batch.x[:, COV]
    cov[:, index[1], index[0]] = batch.x[:, COV]
    cov = r @ cov @ r.transpose(-1, -2)
    x[:, COV] = cov[:, index[0], index[1]]
    return JetBatch(p4, batch.ptr, x=x, label=batch.label)


def _models() -> list[tuple[str, torch.nn.Module]]:
    torch.manual_seed(0)
    return [
        ("vector-pfn", VectorPFN(**SMALL).double().eval()),
        ("tensor-pfn", TensorPFN(**SMALL).double().eval()),
        ("tensor-pfn-no-so2", TensorPFN(**SMALL, so2=False).double().eval()),
        ("tensor-pfn-no-bilinear", TensorPFN(**SMALL, product=None).double().eval()),
        ("tensor-pfn-literal", TensorPFN(**SMALL, norm=False).double().eval()),
    ]


# ----------------------------------------------------------------------------- inputs


def test_track_inputs_read_named_fields_and_select_tracks():
    batch = _jets()
    tracks = TrackInputs(impact_parameters=True, pca=True, covariance=True)(batch)
    x = batch.x
    is_track = x[:, COL["part_istrack"]] > 0.5
    assert tracks.p4.shape[0] == int(is_track.sum())
    assert torch.equal(tracks.p4, batch.p4[is_track])
    assert torch.equal(tracks.batch, batch.batch[is_track])
    assert torch.equal(tracks.ptr[1:] - tracks.ptr[:-1],
                       torch.bincount(batch.batch[is_track], minlength=batch.num_jets))
    assert torch.equal(tracks.charge, x[is_track, COL["part_charge"]])
    assert torch.equal(tracks.pca, x[is_track][:, PCA])
    assert torch.equal(tracks.d0, x[is_track, COL["part_d0val"]])
    cov = tracks.cov
    assert torch.equal(cov, cov.transpose(-1, -2))
    assert torch.equal(cov[:, 0, 1], x[is_track, COL["part_cov_xy"]])
    assert torch.equal(cov[:, 2, 1], x[is_track, COL["part_cov_yz"]])
    expected_kind = (x[is_track, COL["part_isElectron"]] + 2 * x[is_track, COL["part_isMuon"]])
    assert torch.equal(tracks.kind, expected_kind.long())
    # The jet momentum sums every constituent, tracks or not.
    assert torch.allclose(tracks.jet_p4, physics.jet_p4(batch.p4, batch=batch.batch,
                                                        num_jets=batch.num_jets))


def test_track_inputs_columns_in_any_order():
    batch = _jets()
    order = torch.randperm(len(BTAG_X_FIELDS), generator=torch.Generator().manual_seed(3))
    names = [BTAG_X_FIELDS[i] for i in order]
    shuffled = JetBatch(batch.p4, batch.ptr, x=batch.x[:, order])
    a = TrackInputs(pca=True, covariance=True)(batch)
    b = TrackInputs(x_names=names, pca=True, covariance=True)(shuffled)
    for u, v in zip(a, b, strict=True):
        assert (u is None and v is None) or torch.equal(u, v)


def test_track_inputs_max_tracks_keeps_the_hardest():
    batch = _jets(4, 20)
    tracks = TrackInputs(max_tracks=3)(batch)
    is_track = batch.x[:, COL["part_istrack"]] > 0.5
    pt = physics.pt(batch.p4)
    for j in range(batch.num_jets):
        lo, hi = int(batch.ptr[j]), int(batch.ptr[j + 1])
        jet_pt = pt[lo:hi][is_track[lo:hi]]
        kept = physics.pt(tracks.p4[tracks.ptr[j]:tracks.ptr[j + 1]])
        assert kept.numel() == min(3, jet_pt.numel())
        assert torch.equal(kept.sort().values, jet_pt.sort(descending=True).values[:3].sort()
                           .values)


def test_track_inputs_errors_name_the_fix():
    with pytest.raises(ValueError, match=r"part_pca_x.*x_fields=jettag.models.btag.BTAG_X"):
        TrackInputs(x_names=["part_charge", "part_isElectron", "part_isMuon", "part_istrack"],
                    pca=True)
    batch = _jets()
    with pytest.raises(ValueError, match="15 columns named by x_names"):
        TrackInputs()(JetBatch(batch.p4, batch.ptr, x=batch.x[:, :4]))
    with pytest.raises(ValueError, match="found no x"):
        TrackInputs()(JetBatch(batch.p4, batch.ptr))
    with pytest.raises(ValueError, match="max_tracks"):
        TrackInputs(max_tracks=0)
    with pytest.raises(ValueError, match="b-taggers"):
        TensorPFN.default_config("top")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="covariance"):
        VectorPFN(covariance=True)


def test_track_pfn_features_closed_form():
    # One jet: a track along (1, 0, 1) with pT 10 GeV and a neutral along the y axis.
    p4 = torch.tensor([[10 * math.sqrt(2.0), 10.0, 0.0, 10.0], [5.0, 0.0, 5.0, 0.0]], dtype=F64)
    x = torch.zeros(2, len(BTAG_X_FIELDS), dtype=F64)
    x[0, [COL["part_istrack"], COL["part_charge"], COL["part_isMuon"]]] = torch.tensor(
        [1.0, -1.0, 1.0], dtype=F64)
    x[0, [COL["part_d0val"], COL["part_dzval"]]] = torch.tensor([0.09, -0.01], dtype=F64)
    model = TrackPFN(ip_scale=0.01).double()
    batch = JetBatch.from_counts(p4, [2], x=x)
    feats = model.features(model.inputs(batch))
    jet = p4.sum(0)
    expected = torch.tensor([
        math.log(math.hypot(10.0, 5.0)), physics.eta(jet).item(), math.atan2(5.0, 10.0),
        math.log(10.0), math.asinh(1.0) - physics.eta(jet).item(), -math.atan2(5.0, 10.0),
        math.log(10.0), -math.log(2.0), -1.0,
    ], dtype=F64)
    assert feats.shape == (1, 12)
    assert torch.allclose(feats[0, :9], expected, atol=1e-12)
    assert torch.equal(feats[0, 9:], model.type_embedding.weight[2])  # muon


def test_tensor_pfn_features_closed_form():
    model = TensorPFN(momentum_scale=30.0, ip_scale=0.3).double()
    batch = _jets(2, 5, seed=4)
    tracks = model.inputs(batch)
    s, v, t = model.features(tracks)
    assert s.shape[1:] == (4,) and v.shape[1:] == (3, 3) and t.shape[1:] == (10, 3, 3)
    assert torch.equal(s[:, 0], tracks.charge)
    # Vectors keep their direction; their norm is log(1 + |x| / s).
    raw = [tracks.jet_p4[tracks.batch, 1:], tracks.p4[:, 1:], tracks.pca]
    for k, (r, scale) in enumerate(zip(raw, (30.0, 30.0, 0.3), strict=True)):
        assert torch.allclose(v[:, k].norm(dim=-1), torch.log1p(r.norm(dim=-1) / scale))
        assert torch.allclose(torch.linalg.cross(v[:, k], r), torch.zeros_like(r), atol=1e-12)
    for m, n in itertools.product(range(3), range(3)):
        assert torch.allclose(t[:, 3 * m + n], v[:, m, :, None] * v[:, n, None, :])
    cov = tracks.cov
    frob = torch.linalg.matrix_norm(cov)
    assert torch.allclose(torch.linalg.matrix_norm(t[:, 9]), torch.log1p(frob / 0.09))
    assert torch.allclose(t[:, 9] * frob[:, None, None], cov * torch.linalg.matrix_norm(t[:, 9])
                          [:, None, None])
    assert VectorPFN().double().features(model.inputs(batch)).t is None


# ----------------------------------------------------------------------------- symmetries


@pytest.mark.parametrize("name, model", _models(), ids=lambda v: v if isinstance(v, str) else "")
def test_equivariant_taggers_are_rotation_invariant(name, model):
    """Any rotation of a jet's momenta, PCAs and covariances (its own per jet) changes nothing."""
    batch = _jets()
    rot = physics.random_rotation(batch.num_jets, generator=torch.Generator().manual_seed(5))
    ref = model(batch)
    got = model(_rotate(batch, rot))
    assert torch.allclose(got, ref, rtol=1e-10, atol=1e-10), name
    assert ref.abs().max() > 1e-6  # not trivially constant


def test_rotation_about_the_jet_axis_with_jettag_testing():
    """jettag.testing, typed mode: rotate p4 (as 'p4'), PCA ('vector'), covariance ('tensor')
    about the jet momentum, one jet at a time."""
    model = _models()[1][1]
    batch = _jets(3)
    index = ([0, 0, 0, 1, 1, 2], [0, 1, 2, 1, 2, 2])
    for j in range(batch.num_jets):
        jet = batch[j]
        cov = torch.zeros(jet.num_particles, 3, 3, dtype=F64)
        cov[:, index[0], index[1]] = jet.x[:, COV]
        cov[:, index[1], index[0]] = jet.x[:, COV]

        def run(p4, pca, cov, jet=jet):
            x = jet.x.clone().to(p4.dtype)
            x[:, PCA] = pca
            x[:, COV] = cov[:, index[0], index[1]]
            return model(JetBatch(p4, jet.ptr, x=x))

        axis = physics.jet_p4(jet.p4)[1:]
        report = assert_so2_invariant(run, (jet.p4, jet.x[:, PCA], cov),
                                      in_types=("p4", "vector", "tensor"), axis=axis,
                                      rtol=1e-10, atol=1e-10)
        assert report.passed


def test_baseline_is_not_rotation_invariant():
    """Negative control: the PFN baseline sees phi_J, d0 and z0, so rotations change it."""
    torch.manual_seed(0)
    model = TrackPFN(phi_channels=(8,), latent_channels=4, f_channels=(8,)).double().eval()
    batch = _jets()
    rot = physics.random_rotation(batch.num_jets, generator=torch.Generator().manual_seed(5))
    assert (model(_rotate(batch, rot)) - model(batch)).abs().max() > 1e-4


@pytest.mark.parametrize("name, model", [
    *_models()[:2],
    ("track-pfn", TrackPFN(phi_channels=(8,), latent_channels=4, f_channels=(8,)).double()
     .eval()),
], ids=lambda v: v if isinstance(v, str) else "")
def test_permutation_padding_batch_independence(name, model):
    batch = _jets(6, 10, seed=1)
    assert_permutation_invariant(model, batch, n_trials=3)
    assert_padding_invariant(model, batch, n_trials=2)
    assert_batch_independent(model, batch, n_trials=2, max_single=3)


def test_neutral_constituents_only_enter_through_the_jet_momentum():
    model = _models()[1][1]
    batch = _jets()
    neutral = batch.x[:, COL["part_istrack"]] < 0.5
    x = batch.x.clone()
    x[neutral] = torch.randn(int(neutral.sum()), x.shape[1], dtype=F64) * 0.4  # flag < 0.5
    x[neutral, COL["part_istrack"]] = 0.0
    assert torch.allclose(model(JetBatch(batch.p4, batch.ptr, x=x)), model(batch), rtol=1e-12,
                          atol=1e-12)


def test_jets_without_tracks_and_empty_jets_are_finite():
    model = _models()[1][1]
    batch = _jets(3)
    x = batch.x.clone()
    x[batch.ptr[1]:batch.ptr[2], COL["part_istrack"]] = 0.0  # jet 1: no tracks
    empty = JetBatch.collate([JetBatch(batch.p4, batch.ptr, x=x), JetBatch.from_counts(
        batch.p4[:0], [0], x=x[:0])])
    out = model(empty)
    assert out.shape == (4, 2) and torch.isfinite(out).all()


def test_e3nn_product_variant_is_invariant():
    old = torch.get_default_dtype()
    torch.set_default_dtype(F64)  # e3nn builds its coefficients in the default dtype
    try:
        torch.manual_seed(0)
        model = TensorPFN(**{**SMALL, "hidden_channels": 2}, phi_layers=1, f_layers=1,
                          product="e3nn").eval()
        batch = _jets(3)
        rot = physics.random_rotation(3, generator=torch.Generator().manual_seed(6))
        assert torch.allclose(model(_rotate(batch, rot)), model(batch), rtol=1e-10, atol=1e-10)
    finally:
        torch.set_default_dtype(old)


# ----------------------------------------------------------------------------- configs


def test_default_configs_factories_and_parameter_counts():
    base = track_pfn(**TrackPFN.default_config())
    # Embedding 3x3, Phi 12-128-128-128, F 128-128-128-128-2 (the paper's baseline, L = 128).
    assert _count(base) == 9 + _dense(12, 128, 128, 128) + _dense(128, 128, 128, 128, 2)
    assert _count(base) == 84_491
    vec = vector_pfn(**VectorPFN.default_config())
    ten = tensor_pfn(**TensorPFN.default_config())
    assert (vec.in_channels, ten.in_channels) == ((4, 3, 0), (4, 3, 10))
    assert [layer.out_channels for layer in ten.phi] == [(192,) * 3, (192,) * 3, (128,) * 3]
    assert [layer.out_channels for layer in ten.f] == [(192,) * 3] * 3
    assert [layer.out_channels for layer in vec.phi] == [(128, 128, 0)] * 3

    def affine(cs, cv, ct, out):  # scalar W + b, vector W (no bias), tensor W + b I
        return out * cs + out + out * cv + ((out * ct + out) if ct else 0)

    def so2(c, tensors=True):  # (a, b, phi) per vector connection, 2 x 3 + bias for tensors
        return 3 * c * c + ((6 * c * c + c) if tensors else 0)

    expected = (
        9  # type embedding
        + affine(4, 3, 10, 128) + so2(128)  # Phi hidden 1
        + affine(192, 192, 192, 128) + so2(128)  # Phi hidden 2
        + affine(192, 192, 192, 128) + so2(128)  # Phi output (L = 128)
        + affine(128, 128, 128, 128) + so2(128)  # F 1
        + 2 * (affine(192, 192, 192, 128) + so2(128))  # F 2, 3
        + _dense(3 * 192, 128, 128, 2)  # norms -> head
    )
    expected_vec = (
        9 + affine(4, 3, 0, 128) + so2(128, False) + 2 * (affine(128, 128, 0, 128)
        + so2(128, False)) + 3 * (affine(128, 128, 0, 128) + so2(128, False))
        + _dense(2 * 128, 128, 128, 2)
    )
    assert _count(vec) == expected_vec
    assert _count(ten) == expected == 1_323_915
    assert _count(vec) == 510_091
    paper = TensorPFN(**{**TensorPFN.default_config(), "covariance": False})
    assert _count(paper) == 1_323_915 - 128  # one fewer tensor input channel
    assert default_config("btag", "vector-pfn") == VectorPFN.default_config("btag")
    with pytest.raises(ValueError, match="model"):
        default_config("btag", "pfn")  # type: ignore[arg-type]
    assert vec.num_classes == ten.num_classes == base.num_classes == 2
