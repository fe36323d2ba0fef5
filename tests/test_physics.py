"""Values, not shapes: jettag.physics against closed forms and invariances."""

from __future__ import annotations

import math

import pytest
import torch

from jettag import physics as ph

F64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _timelike(n: int, gen: torch.Generator, dtype=F64) -> torch.Tensor:
    """Random massive four-vectors with m between 1 and 100 GeV and |p| up to ~500 GeV."""
    p = torch.randn(n, 3, generator=gen, dtype=F64) * 200
    m = 1 + 99 * torch.rand(n, generator=gen, dtype=F64)
    e = torch.sqrt((p**2).sum(-1) + m**2)
    return torch.cat([e[:, None], p], -1).to(dtype)


def _packed_jets(gen: torch.Generator, sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Constituents spread around random jet axes, packed with a batch vector."""
    parts, batch = [], []
    for j, n in enumerate(sizes):
        eta0 = (torch.rand((), generator=gen, dtype=F64) - 0.5) * 4
        phi0 = (torch.rand((), generator=gen, dtype=F64) - 0.5) * 2 * math.pi
        pt_ = torch.rand(n, generator=gen, dtype=F64) * 100 + 1
        eta_ = eta0 + 0.3 * torch.randn(n, generator=gen, dtype=F64)
        phi_ = ph.wrap_phi(phi0 + 0.3 * torch.randn(n, generator=gen, dtype=F64))
        m = torch.rand(n, generator=gen, dtype=F64) * 0.5
        parts.append(ph.from_ptetaphim(pt_, eta_, phi_, m))
        batch.append(torch.full((n,), j, dtype=torch.int64))
    return torch.cat(parts), torch.cat(batch)


def _pad(p4: torch.Tensor, batch: torch.Tensor, num_jets: int, n_max: int):
    out = torch.zeros(num_jets, n_max, 4, dtype=p4.dtype)
    mask = torch.zeros(num_jets, n_max, dtype=torch.bool)
    for j in range(num_jets):
        sel = p4[batch == j]
        out[j, : len(sel)] = sel
        mask[j, : len(sel)] = True
    return out, mask


# ---------------------------------------------------------------- closed forms


def test_kinematics_closed_forms():
    p = torch.tensor([[10.0, 3.0, 4.0, 5.0]], dtype=F64)
    assert ph.pt(p).item() == pytest.approx(5.0, rel=1e-15)
    assert ph.p3_norm(p).item() == pytest.approx(math.sqrt(50), rel=1e-15)
    assert ph.eta(p).item() == pytest.approx(math.asinh(1.0), rel=1e-15)
    assert ph.phi(p).item() == pytest.approx(math.atan2(4, 3), rel=1e-15)
    assert ph.rapidity(p).item() == pytest.approx(0.5 * math.log(15 / 5), rel=1e-14)
    assert ph.mass2(p).item() == pytest.approx(50.0, rel=1e-14)
    assert ph.mass(p).item() == pytest.approx(math.sqrt(50), rel=1e-14)
    assert ph.energy(p).item() == 10.0


def test_eta_phi_against_closed_forms_many():
    gen = _gen(1)
    pt_ = torch.rand(1000, generator=gen, dtype=F64) * 500 + 0.1
    eta_ = (torch.rand(1000, generator=gen, dtype=F64) - 0.5) * 10
    phi_ = (torch.rand(1000, generator=gen, dtype=F64) - 0.5) * 2 * math.pi
    p4 = ph.from_ptetaphim(pt_, eta_, phi_, torch.zeros_like(pt_))
    # closed forms: px = pT cos phi, pz = pT sinh eta, E = pT cosh eta for massless
    torch.testing.assert_close(p4[:, 0], pt_ * torch.cosh(eta_), rtol=1e-14, atol=0)
    torch.testing.assert_close(ph.pt(p4), pt_, rtol=1e-14, atol=0)
    torch.testing.assert_close(ph.eta(p4), eta_, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(ph.phi(p4), phi_, rtol=0, atol=1e-14)
    # massless: eta == rapidity
    torch.testing.assert_close(ph.rapidity(p4), eta_, rtol=1e-9, atol=1e-9)


def test_phi_range_half_open():
    angles = torch.tensor([math.pi, -math.pi, 3 * math.pi, -3 * math.pi, 0.0, 7.0, -7.0], dtype=F64)
    w = ph.wrap_phi(angles)
    assert bool(((w >= -math.pi) & (w < math.pi)).all())
    assert w[0].item() == pytest.approx(-math.pi)
    torch.testing.assert_close(torch.cos(w), torch.cos(angles), atol=1e-13, rtol=0)
    # atan2 returns +pi for (-1, +0); the convention is [-pi, pi)
    p = torch.tensor([[1.0, -1.0, 0.0, 0.0]], dtype=F64)
    assert ph.phi(p).item() == pytest.approx(-math.pi)


def test_delta_phi_and_delta_r_wrap():
    a = torch.tensor([3.0], dtype=F64)
    b = torch.tensor([-3.0], dtype=F64)
    assert ph.delta_phi(a, b).item() == pytest.approx(6.0 - 2 * math.pi)
    dr = ph.delta_r_etaphi(torch.tensor([0.5]), a, torch.tensor([0.1]), b)
    assert dr.item() == pytest.approx(math.hypot(0.4, 2 * math.pi - 6.0), rel=1e-6)
    p1 = ph.from_ptetaphim(torch.tensor(10.0, dtype=F64), torch.tensor(0.5, dtype=F64),
                           torch.tensor(3.0, dtype=F64), torch.tensor(0.0, dtype=F64))
    p2 = ph.from_ptetaphim(torch.tensor(20.0, dtype=F64), torch.tensor(0.1, dtype=F64),
                           torch.tensor(-3.0, dtype=F64), torch.tensor(0.0, dtype=F64))
    assert ph.delta_r(p1, p2).item() == pytest.approx(math.hypot(0.4, 2 * math.pi - 6.0), rel=1e-12)


def test_zero_vector_is_finite():
    z = torch.zeros(2, 4, dtype=F64)
    for f in (ph.pt, ph.eta, ph.phi, ph.rapidity, ph.mass):
        v = f(z)
        assert bool(torch.isfinite(v).all()) and bool((v == 0).all()), f.__name__


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ptyphim_and_ptetaphim_round_trip(dtype):
    gen = _gen(2)
    p4 = _timelike(500, gen, dtype)
    tol = {"rtol": 1e-4, "atol": 1e-3} if dtype == torch.float32 else {"rtol": 1e-11, "atol": 1e-9}
    back = ph.from_ptyphim(*ph.to_ptyphim(p4).unbind(-1))
    torch.testing.assert_close(back, p4, **tol)
    back = ph.from_ptetaphim(*ph.to_ptetaphim(p4).unbind(-1))
    torch.testing.assert_close(back, p4, **tol)
    assert back.dtype == dtype


def test_from_ptyphim_closed_form():
    p4 = ph.from_ptyphim(torch.tensor(30.0, dtype=F64), torch.tensor(1.2, dtype=F64),
                         torch.tensor(-0.4, dtype=F64), torch.tensor(0.13957, dtype=F64))
    mt = math.sqrt(30.0**2 + 0.13957**2)
    expected = [mt * math.cosh(1.2), 30 * math.cos(-0.4), 30 * math.sin(-0.4), mt * math.sinh(1.2)]
    torch.testing.assert_close(p4, torch.tensor(expected, dtype=F64), rtol=1e-14, atol=0)
    assert ph.rapidity(p4).item() == pytest.approx(1.2, rel=1e-12)


def test_signed_mass_for_spacelike():
    p = torch.tensor([[1.0, 2.0, 0.0, 0.0]], dtype=F64)
    assert ph.mass2(p).item() == pytest.approx(-3.0)
    assert ph.mass(p).item() == pytest.approx(-math.sqrt(3.0))
    assert ph.minkowski_norm(p).item() == pytest.approx(-math.sqrt(3.0))


def test_minkowski_dot_closed_form_and_metric():
    gen = _gen(3)
    a, b = _timelike(100, gen), _timelike(100, gen)
    expected = torch.einsum("ni,ij,nj->n", a, ph.METRIC, b)
    torch.testing.assert_close(ph.minkowski_dot(a, b), expected, rtol=1e-13, atol=1e-9)
    torch.testing.assert_close(ph.minkowski_norm2(a), ph.minkowski_dot(a, a), rtol=1e-9, atol=1e-6)


# ---------------------------------------------------------------- group elements


def test_random_lorentz_is_proper_orthochronous():
    lam = ph.random_lorentz(1000, max_rapidity=5.0, generator=_gen(4))
    g = ph.METRIC
    scale = lam.abs().amax(dim=(-1, -2))[:, None, None] ** 2
    err = ((lam.transpose(-1, -2) @ g @ lam - g) / scale).abs().max()
    assert err < 1e-14
    assert bool((lam[:, 0, 0] >= 1).all())
    ones = torch.ones(1000, dtype=F64)
    torch.testing.assert_close(torch.linalg.det(lam), ones, rtol=1e-8, atol=0)


def test_random_rotation_haar_and_orthogonal():
    rot = ph.random_rotation(20000, generator=_gen(5))
    eye = torch.eye(3, dtype=F64).expand_as(rot)
    torch.testing.assert_close(rot @ rot.transpose(-1, -2), eye, atol=1e-14, rtol=0)
    ones = torch.ones(20000, dtype=F64)
    torch.testing.assert_close(torch.linalg.det(rot), ones, atol=1e-13, rtol=0)
    # Haar: the image of a fixed vector is uniform on the sphere -> mean 0, <z^2> = 1/3
    v = rot[:, :, 2]
    assert v.mean(0).abs().max() < 0.03
    assert abs((v[:, 2] ** 2).mean().item() - 1 / 3) < 0.01


def test_rotation_matrix_closed_form():
    rot = ph.rotation_matrix(torch.tensor([0.0, 0.0, 2.0], dtype=F64), math.pi / 2)
    torch.testing.assert_close(rot @ torch.tensor([1.0, 0, 0], dtype=F64),
                               torch.tensor([0.0, 1.0, 0.0], dtype=F64), atol=1e-15, rtol=0)
    p = torch.tensor([5.0, 1.0, 0.0, 3.0], dtype=F64)
    r = ph.rotate(p, torch.tensor([0.0, 0.0, 1.0], dtype=F64), torch.tensor(math.pi / 2, dtype=F64))
    torch.testing.assert_close(r, torch.tensor([5.0, 0.0, 1.0, 3.0], dtype=F64), atol=1e-15, rtol=0)
    with pytest.raises(ValueError, match="non-zero"):
        ph.rotation_matrix(torch.zeros(3), 1.0)


def test_boost_closed_forms_and_stability_at_rapidity_5():
    rest = torch.tensor([[2.0, 0.0, 0.0, 0.0]], dtype=F64)
    for w in (0.1, 1.0, 5.0):
        out = ph.boost(rest[None], rapidity=torch.tensor([w], dtype=F64),
                       axis=torch.tensor([[0.0, 0.0, 3.0]], dtype=F64))[0, 0]
        torch.testing.assert_close(out, torch.tensor([2 * math.cosh(w), 0, 0, 2 * math.sinh(w)],
                                                     dtype=F64), rtol=1e-15, atol=1e-15)
        assert ph.rapidity(out).item() == pytest.approx(w, rel=1e-12)
    # velocity parametrisation: a particle at rest acquires velocity beta
    beta = torch.tensor([0.3, -0.2, 0.5], dtype=F64)
    out = ph.boost(rest, beta=beta)
    torch.testing.assert_close(out[0, 1:] / out[0, 0], beta, rtol=1e-14, atol=0)
    with pytest.raises(ValueError, match="beta"):
        ph.boost_matrix(torch.tensor([1.0, 0.0, 0.0]))
    # boost then inverse boost at rapidity 5 returns the input (float64)
    p = _timelike(200, _gen(6))
    axis = torch.randn(200, 3, generator=_gen(7), dtype=F64)
    w = torch.full((200,), 5.0, dtype=F64)
    back = ph.boost(ph.boost(p, rapidity=w, axis=axis), rapidity=-w, axis=axis)
    assert ((back - p).abs().amax(-1) / p[:, 0]).max().item() < 1e-10
    # float32 forward accuracy at rapidity 5 against the float64 result: within a few ulp
    # of the backward-stable bound |Lambda| |p| (cancellations are the input's conditioning)
    lam64 = ph.boost_matrix_rapidity(w, axis)
    out32 = ph.boost(p.float(), rapidity=w.float(), axis=axis.float()).double()
    out64 = ph.apply_lorentz(lam64, p.float().double())
    bound = (lam64.abs() @ p.abs()[..., None])[..., 0] * torch.finfo(torch.float32).eps
    assert ((out32 - out64).abs() / bound).max().item() < 4.0


def test_mass_and_products_invariant_under_1000_transformations():
    """Acceptance: masses and Minkowski products invariant to 1e-10 relative (float64).

    Boosts up to rapidity 5. The vectors have masses comparable to their momenta (a mass
    computed from E' and p' after a boost loses about eps (E'/m)^2 of relative precision,
    which is the input's conditioning, not the algorithm's).
    """
    gen = _gen(8)
    lam = ph.random_lorentz(1000, max_rapidity=5.0, generator=gen)

    def vectors(n):
        p = torch.randn(n, 3, generator=gen, dtype=F64) * 100
        m = 20 + 180 * torch.rand(n, generator=gen, dtype=F64)
        return torch.cat([torch.sqrt((p**2).sum(-1) + m**2)[:, None], p], -1)

    a, b = vectors(1000), vectors(1000)
    a2, b2 = ph.apply_lorentz(lam, a), ph.apply_lorentz(lam, b)
    rel_m = ((ph.mass(a2) - ph.mass(a)) / ph.mass(a)).abs().max().item()
    rel_dot = ((ph.minkowski_dot(a2, b2) - ph.minkowski_dot(a, b)) / ph.minkowski_dot(a, b))
    assert rel_m < 1e-10
    assert rel_dot.abs().max().item() < 1e-10
    # lighter vectors: the error stays within the conditioning bound eps gamma^2 (E/m)^2
    # (gamma^2 from rounding the matrix entries, (E/m)^2 from the cancellation in m^2)
    c = _timelike(1000, gen)
    c2 = ph.apply_lorentz(lam, c)
    err = ((ph.mass2(c2) - ph.mass2(c)) / ph.mass2(c)).abs()
    bound = torch.finfo(F64).eps * lam[:, 0, 0] ** 2 * (c[:, 0] / ph.mass(c)) ** 2
    assert (err / bound).max().item() < 32.0
    # pure rotations keep |p| and E
    rot = ph.lorentz_from_rotation(ph.random_rotation(1000, generator=gen))
    ar = ph.apply_lorentz(rot, a)
    torch.testing.assert_close(ph.p3_norm(ar), ph.p3_norm(a), rtol=1e-14, atol=0)
    torch.testing.assert_close(ar[:, 0], a[:, 0], rtol=0, atol=0)


def test_jet_mass_invariant_under_boosts_of_whole_jets():
    gen = _gen(9)
    p4, batch = _packed_jets(gen, [30, 2, 50, 12])
    padded, mask = _pad(p4, batch, 4, 50)
    lam = ph.random_lorentz(4, max_rapidity=5.0, generator=gen)
    m0 = ph.mass(ph.jet_p4(padded, mask=mask))
    m1 = ph.mass(ph.jet_p4(ph.apply_lorentz(lam, padded), mask=mask))
    assert ((m1 - m0) / m0).abs().max().item() < 1e-10


def test_apply_lorentz_pairs_leading_dims():
    lam = ph.random_lorentz(3, generator=_gen(10))
    p = torch.randn(3, 7, 4, dtype=F64)
    out = ph.apply_lorentz(lam, p)
    for i in range(3):
        torch.testing.assert_close(out[i], p[i] @ lam[i].T, rtol=1e-14, atol=1e-14)
    with pytest.raises(ValueError, match="leading dimensions"):
        ph.apply_lorentz(lam, torch.randn(2, 7, 4, dtype=F64))


# ---------------------------------------------------------------- jets


def test_jet_axis_packed_equals_padded_and_closed_form():
    gen = _gen(11)
    p4, batch = _packed_jets(gen, [5, 0, 17, 1])
    padded, mask = _pad(p4, batch, 4, 17)
    for kind in ("centroid", "p4"):
        packed = ph.jet_axis(p4, batch=batch, num_jets=4, kind=kind)
        pad = ph.jet_axis(padded, mask=mask, kind=kind)
        torch.testing.assert_close(packed, pad, rtol=1e-13, atol=1e-13)
        assert packed[1].abs().max() == 0  # empty jet -> (0, 0)
    # closed form for the centroid: pT-weighted mean of eta and (unwrapped) phi
    sel = p4[batch == 0]
    w, e, f = ph.pt(sel), ph.eta(sel), ph.phi(sel)
    lead = f[w.argmax()]
    f_unw = lead + ph.delta_phi(f, lead)
    expected = torch.stack([(w * e).sum() / w.sum(), ph.wrap_phi((w * f_unw).sum() / w.sum())])
    torch.testing.assert_close(ph.jet_axis(sel[None], kind="centroid")[0], expected)
    # the single-particle jet's axis is the particle itself
    one = p4[batch == 3][0]
    torch.testing.assert_close(ph.jet_axis(p4, batch=batch, num_jets=4)[3],
                               torch.stack([ph.eta(one), ph.phi(one)]))


def test_jet_axis_across_phi_boundary():
    """A jet straddling phi = +-pi must have its centroid near +-pi, not near 0."""
    pt_ = torch.tensor([50.0, 40.0, 30.0], dtype=F64)
    phi_ = torch.tensor([3.1, -3.1, 3.12], dtype=F64)
    p4 = ph.from_ptetaphim(pt_, torch.zeros(3, dtype=F64), phi_, torch.zeros(3, dtype=F64))
    axis = ph.jet_axis(p4[None])[0]
    assert abs(abs(axis[1].item()) - math.pi) < 0.1
    rel = ph.relative_etaphi(p4[None])[0]
    assert rel[:, 1].abs().max().item() < 0.2


@pytest.mark.parametrize("angle", [0.3, math.pi / 2, 2.5, -1.0])
def test_rotation_about_centroid_keeps_axis_pt_mass_and_radii(angle):
    gen = _gen(12)
    p4, batch = _packed_jets(gen, [20, 3, 1, 40])
    rotated = ph.rotate_about_jet_axis(p4, angle, batch=batch, num_jets=4)
    torch.testing.assert_close(ph.jet_axis(rotated, batch=batch, num_jets=4),
                               ph.jet_axis(p4, batch=batch, num_jets=4), rtol=0, atol=1e-13)
    torch.testing.assert_close(ph.pt(rotated), ph.pt(p4), rtol=1e-13, atol=0)
    torch.testing.assert_close(ph.mass(rotated), ph.mass(p4), rtol=1e-6, atol=1e-6)
    r0 = ph.relative_etaphi(p4, batch=batch, num_jets=4).norm(dim=-1)
    r1 = ph.relative_etaphi(rotated, batch=batch, num_jets=4).norm(dim=-1)
    torch.testing.assert_close(r1, r0, rtol=0, atol=1e-12)
    # the angle of each particle about the axis advanced by `angle`
    rel0 = ph.relative_etaphi(p4, batch=batch, num_jets=4)
    rel1 = ph.relative_etaphi(rotated, batch=batch, num_jets=4)
    turned = ph.wrap_phi(torch.atan2(rel1[:, 1], rel1[:, 0]) - torch.atan2(rel0[:, 1], rel0[:, 0]))
    big = r0 > 1e-6
    torch.testing.assert_close(turned[big], ph.wrap_phi(torch.full_like(turned[big], angle)),
                               rtol=0, atol=1e-9)


def test_rotation_about_axis_padded_matches_packed_and_per_jet_angles():
    gen = _gen(13)
    p4, batch = _packed_jets(gen, [8, 0, 5])
    padded, mask = _pad(p4, batch, 3, 8)
    angles = torch.tensor([0.1, 0.2, -2.0], dtype=F64)
    packed = ph.rotate_about_jet_axis(p4, angles, batch=batch, num_jets=3)
    pad = ph.rotate_about_jet_axis(padded, angles, mask=mask)
    repacked = pad[mask]
    torch.testing.assert_close(repacked, packed, rtol=1e-12, atol=1e-10)
    assert torch.equal(pad[~mask], padded[~mask])  # padding untouched


def test_rotation_about_p4_axis_moves_the_axis_slightly():
    """DESIGN.md: the four-momentum axis moves under rotations about it (by ~1%)."""
    gen = _gen(14)
    p4, batch = _packed_jets(gen, [40])
    rotated = ph.rotate_about_jet_axis(p4, 1.0, batch=batch, kind="p4")
    moved = (ph.jet_axis(rotated, batch=batch, kind="p4") - ph.jet_axis(p4, batch=batch, kind="p4"))
    assert moved.abs().max().item() > 1e-6


def test_jet_direction_unit_and_empty():
    p4 = torch.tensor([[5.0, 0.0, 3.0, 4.0], [1.0, 0.0, 0.0, 0.0]], dtype=F64)
    d = ph.jet_direction(p4, batch=torch.tensor([0, 0]), num_jets=2)
    torch.testing.assert_close(d[0], torch.tensor([0.0, 0.6, 0.8], dtype=F64))
    assert d[1].abs().max() == 0


def test_gradients_are_finite():
    p4 = _timelike(10, _gen(15)).requires_grad_(True)
    out = ph.mass(p4).sum() + ph.eta(p4).sum() + ph.phi(p4).sum() + ph.rapidity(p4).sum()
    out.backward()
    assert bool(torch.isfinite(p4.grad).all())
    torch.autograd.gradcheck(lambda x: ph.mass(x), (p4.detach()[:3].requires_grad_(True),))


def test_bad_input_messages():
    with pytest.raises(ValueError, match=r"last dimension 4"):
        ph.pt(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="floating-point"):
        ph.mass(torch.zeros(3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="either mask"):
        ph.jet_p4(torch.zeros(3, 4), mask=torch.ones(3, dtype=torch.bool),
                  batch=torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="mask"):
        ph.jet_p4(torch.zeros(2, 3, 4), mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="kind"):
        ph.jet_axis(torch.zeros(2, 3, 4), kind="centre")
