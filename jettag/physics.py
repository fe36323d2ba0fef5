"""Four-vector algebra on torch tensors: the physics conventions of jettag, defined once.

Conventions
-----------
* A four-vector is the last dimension of a tensor, ``(..., 4) = (E, px, py, pz)`` in GeV.
* The metric is ``diag(+1, -1, -1, -1)``: ``<a, b> = a_E b_E - a_p . b_p``.
* ``eta`` is the pseudorapidity, ``y`` the rapidity, ``phi`` the azimuth in ``[-pi, pi)``;
  every difference of azimuths is wrapped back into ``[-pi, pi)``.
* Boosts are *active*: boosting a particle at rest with velocity ``beta`` gives it velocity
  ``beta``. Rotations are active too (a vector is turned by ``angle``, right-handed about
  ``axis``).
* Functions that act on whole jets take either a padded tensor ``p4 (..., N, 4)`` with an
  optional ``mask (..., N)`` (``True`` = real particle), or packed particles ``p4 (P, 4)``
  with ``batch (P,)`` (the jet of each particle, as in :class:`jettag.data.JetBatch`) and an
  optional ``num_jets``. Padded or absent particles never contribute.

Everything works in float32 and float64 and is differentiable. The formulas are chosen to
avoid cancellations: masses use ``(E - p)(E + p)``, boosts use ``cosh w - 1 = 2 sinh^2(w/2)``
and are parametrised by rapidity, so boosts up to rapidity 5 (gamma ~ 74) stay accurate.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "METRIC",
    "apply_lorentz",
    "boost",
    "boost_matrix",
    "boost_matrix_rapidity",
    "delta_phi",
    "delta_r",
    "delta_r_etaphi",
    "energy",
    "eta",
    "from_ptetaphim",
    "from_ptyphim",
    "jet_axis",
    "jet_direction",
    "jet_p4",
    "lorentz_from_rotation",
    "mass",
    "mass2",
    "minkowski_dot",
    "minkowski_norm",
    "minkowski_norm2",
    "p3_norm",
    "phi",
    "pt",
    "random_lorentz",
    "random_rotation",
    "rapidity",
    "relative_etaphi",
    "rotate",
    "rotate_about_jet_axis",
    "rotation_matrix",
    "to_ptetaphim",
    "to_ptyphim",
    "wrap_phi",
]

#: The Minkowski metric diag(+1, -1, -1, -1) (float64; ``.to(x)`` it as needed).
METRIC = torch.diag(torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=torch.float64))

AxisKind = Literal["centroid", "p4"]


def _check_p4(p4: Tensor, name: str = "p4") -> None:
    if not isinstance(p4, Tensor):
        raise TypeError(
            f"{name}: expected a torch.Tensor of four-vectors (..., 4), found {type(p4)}"
        )
    if p4.shape[-1:] != (4,):
        raise ValueError(
            f"{name}: expected four-vectors with last dimension 4 (E, px, py, pz), "
            f"found shape {tuple(p4.shape)}"
        )
    if not p4.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, found dtype {p4.dtype}")


def _tiny(x: Tensor) -> float:
    return torch.finfo(x.dtype).tiny


# --------------------------------------------------------------------------------------
# Single four-vectors
# --------------------------------------------------------------------------------------


def energy(p4: Tensor) -> Tensor:
    """Energy ``E``, shape ``(...)``."""
    _check_p4(p4)
    return p4[..., 0]


def pt(p4: Tensor) -> Tensor:
    """Transverse momentum ``sqrt(px^2 + py^2)``, shape ``(...)``."""
    _check_p4(p4)
    return torch.hypot(p4[..., 1], p4[..., 2])


def p3_norm(p4: Tensor) -> Tensor:
    """Magnitude of the three-momentum ``|p|``, shape ``(...)``."""
    _check_p4(p4)
    return torch.linalg.vector_norm(p4[..., 1:], dim=-1)


def eta(p4: Tensor) -> Tensor:
    """Pseudorapidity ``asinh(pz / pt)``; 0 for a zero vector, large and finite along the beam."""
    _check_p4(p4)
    return torch.asinh(p4[..., 3] / pt(p4).clamp_min(_tiny(p4)))


def wrap_phi(angle: Tensor) -> Tensor:
    """Wrap an angle into ``[-pi, pi)``."""
    w = torch.remainder(angle + math.pi, 2 * math.pi) - math.pi
    # remainder can round up to exactly 2 pi; keep the interval half-open.
    return torch.where(w >= math.pi, w - 2 * math.pi, w)


def phi(p4: Tensor) -> Tensor:
    """Azimuth ``atan2(py, px)`` in ``[-pi, pi)``."""
    _check_p4(p4)
    return wrap_phi(torch.atan2(p4[..., 2], p4[..., 1]))


def rapidity(p4: Tensor) -> Tensor:
    """Rapidity ``y = 1/2 log((E + pz) / (E - pz))``, computed without cancellation.

    Uses ``E - |pz| = mT^2 / (E + |pz|)`` with ``mT^2 = m^2 + pT^2``; for a zero vector y = 0.
    """
    _check_p4(p4)
    e, pz = p4[..., 0], p4[..., 3]
    apz = pz.abs()
    mt2 = (mass2(p4) + pt(p4) ** 2).clamp_min(0.0)
    plus = e + apz
    minus = mt2 / plus.clamp_min(_tiny(p4))
    y = 0.5 * (torch.log(plus.clamp_min(_tiny(p4))) - torch.log(minus.clamp_min(_tiny(p4))))
    return torch.where(plus > 0, torch.copysign(y, pz), torch.zeros_like(y))


def minkowski_dot(a: Tensor, b: Tensor) -> Tensor:
    """Minkowski product ``<a, b> = a_E b_E - a_x b_x - a_y b_y - a_z b_z`` (broadcasting)."""
    _check_p4(a, "a")
    _check_p4(b, "b")
    return a[..., 0] * b[..., 0] - (a[..., 1:] * b[..., 1:]).sum(-1)


def minkowski_norm2(a: Tensor) -> Tensor:
    """Squared Minkowski norm ``<a, a>``, computed as ``(E - |p|)(E + |p|)``."""
    _check_p4(a, "a")
    p = p3_norm(a)
    return (a[..., 0] - p) * (a[..., 0] + p)


def minkowski_norm(a: Tensor) -> Tensor:
    """Signed Minkowski norm ``sign(<a,a>) sqrt(|<a,a>|)`` (negative for space-like vectors)."""
    n2 = minkowski_norm2(a)
    return torch.sign(n2) * n2.abs().sqrt()


def mass2(p4: Tensor) -> Tensor:
    """Squared invariant mass ``E^2 - |p|^2`` (may be slightly negative from rounding)."""
    return minkowski_norm2(p4)


def mass(p4: Tensor) -> Tensor:
    """Invariant mass, signed: ``-sqrt(|m^2|)`` when rounding makes ``m^2`` negative."""
    return minkowski_norm(p4)


def delta_phi(phi_a: Tensor, phi_b: Tensor) -> Tensor:
    """Azimuthal difference ``phi_a - phi_b`` wrapped into ``[-pi, pi)``."""
    return wrap_phi(phi_a - phi_b)


def delta_r_etaphi(eta_a: Tensor, phi_a: Tensor, eta_b: Tensor, phi_b: Tensor) -> Tensor:
    """``sqrt(d_eta^2 + d_phi^2)`` with the azimuthal difference wrapped."""
    return torch.hypot(eta_a - eta_b, delta_phi(phi_a, phi_b))


def delta_r(a: Tensor, b: Tensor) -> Tensor:
    """Angular distance ``Delta R`` in (pseudorapidity, azimuth) between four-vectors."""
    return delta_r_etaphi(eta(a), phi(a), eta(b), phi(b))


def _signed_square(m: Tensor) -> Tensor:
    return m * m.abs()


def from_ptyphim(pt_: Tensor, y: Tensor, phi_: Tensor, m: Tensor) -> Tensor:
    """Four-vectors from transverse momentum, rapidity, azimuth and mass.

    ``E = mT cosh y``, ``pz = mT sinh y`` with ``mT = sqrt(pT^2 + m^2)``. All inputs broadcast.
    """
    pt_, y, phi_, m = torch.broadcast_tensors(*(torch.as_tensor(v) for v in (pt_, y, phi_, m)))
    mt = (pt_**2 + _signed_square(m)).clamp_min(0.0).sqrt()
    return torch.stack(
        [mt * torch.cosh(y), pt_ * torch.cos(phi_), pt_ * torch.sin(phi_), mt * torch.sinh(y)],
        dim=-1,
    )


def to_ptyphim(p4: Tensor) -> Tensor:
    """``(..., 4) -> (..., 4) = (pT, y, phi, m)``; inverse of :func:`from_ptyphim`."""
    return torch.stack([pt(p4), rapidity(p4), phi(p4), mass(p4)], dim=-1)


def from_ptetaphim(pt_: Tensor, eta_: Tensor, phi_: Tensor, m: Tensor) -> Tensor:
    """Four-vectors from transverse momentum, pseudorapidity, azimuth and mass.

    ``pz = pT sinh eta``, ``E = sqrt(|p|^2 + m^2)`` with ``|p| = pT cosh eta``.
    """
    pt_, eta_, phi_, m = torch.broadcast_tensors(
        *(torch.as_tensor(v) for v in (pt_, eta_, phi_, m))
    )
    p = pt_ * torch.cosh(eta_)
    e = (p**2 + _signed_square(m)).clamp_min(0.0).sqrt()
    return torch.stack(
        [e, pt_ * torch.cos(phi_), pt_ * torch.sin(phi_), pt_ * torch.sinh(eta_)], dim=-1
    )


def to_ptetaphim(p4: Tensor) -> Tensor:
    """``(..., 4) -> (..., 4) = (pT, eta, phi, m)``; inverse of :func:`from_ptetaphim`."""
    return torch.stack([pt(p4), eta(p4), phi(p4), mass(p4)], dim=-1)


# --------------------------------------------------------------------------------------
# Lorentz transformations
# --------------------------------------------------------------------------------------


def _unit(v: Tensor) -> tuple[Tensor, Tensor]:
    norm = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    safe = torch.where(norm > 0, norm, torch.ones_like(norm))
    return v / safe, norm.squeeze(-1)


def boost_matrix_rapidity(rapidity_: Tensor, axis: Tensor) -> Tensor:
    """Boost of rapidity ``w`` along ``axis`` (need not be normalised), shape ``(..., 4, 4)``.

    .. math::
        \\Lambda = \\begin{pmatrix} \\cosh w & \\sinh w\\, n^T \\\\
                   \\sinh w\\, n & I + (\\cosh w - 1)\\, n n^T \\end{pmatrix}

    with ``cosh w - 1`` written as ``2 sinh^2(w/2)``. A zero axis gives the identity.
    """
    axis = torch.as_tensor(axis)
    if axis.shape[-1:] != (3,):
        raise ValueError(f"axis: expected shape (..., 3), found {tuple(axis.shape)}")
    rapidity_ = torch.as_tensor(rapidity_, dtype=axis.dtype, device=axis.device)
    n, norm = _unit(axis)
    w = torch.where(norm > 0, rapidity_, torch.zeros_like(rapidity_))
    w, n = torch.broadcast_tensors(w[..., None], n)
    w = w[..., 0]
    ch1 = 2 * torch.sinh(w / 2) ** 2
    sh = torch.sinh(w)
    eye = torch.eye(3, dtype=n.dtype, device=n.device)
    spatial = eye + ch1[..., None, None] * n[..., :, None] * n[..., None, :]
    top = torch.cat([(ch1 + 1)[..., None], sh[..., None] * n], dim=-1)
    bottom = torch.cat([sh[..., None, None] * n[..., :, None], spatial], dim=-1)
    return torch.cat([top[..., None, :], bottom], dim=-2)


def boost_matrix(beta: Tensor) -> Tensor:
    """Boost with velocity ``beta (..., 3)`` (``|beta| < 1``), shape ``(..., 4, 4)``."""
    beta = torch.as_tensor(beta)
    if beta.shape[-1:] != (3,):
        raise ValueError(f"beta: expected shape (..., 3), found {tuple(beta.shape)}")
    speed = torch.linalg.vector_norm(beta, dim=-1)
    if bool((speed >= 1).any()):
        raise ValueError(
            f"beta: expected speeds |beta| < 1, found max {float(speed.max()):.6g}; "
            "for very fast boosts pass a rapidity to boost_matrix_rapidity instead"
        )
    return boost_matrix_rapidity(torch.atanh(speed), beta)


def rotation_matrix(axis: Tensor, angle: Tensor | float) -> Tensor:
    """Right-handed rotation by ``angle`` about ``axis`` (Rodrigues), shape ``(..., 3, 3)``."""
    axis = torch.as_tensor(axis)
    if axis.shape[-1:] != (3,):
        raise ValueError(f"axis: expected shape (..., 3), found {tuple(axis.shape)}")
    n, norm = _unit(axis)
    if bool((norm == 0).any()):
        raise ValueError("axis: a rotation axis must be a non-zero vector, found a zero vector")
    angle = torch.as_tensor(angle, dtype=axis.dtype, device=axis.device)
    angle, n = torch.broadcast_tensors(angle[..., None], n)
    angle = angle[..., 0]
    s, c1 = torch.sin(angle), 2 * torch.sin(angle / 2) ** 2
    x, y, z = n.unbind(-1)
    zero = torch.zeros_like(x)
    cross = torch.stack(
        [torch.stack([zero, -z, y], -1), torch.stack([z, zero, -x], -1),
         torch.stack([-y, x, zero], -1)], dim=-2,
    )
    eye = torch.eye(3, dtype=n.dtype, device=n.device)
    outer = n[..., :, None] * n[..., None, :]
    return eye + s[..., None, None] * cross + c1[..., None, None] * (outer - eye)


def lorentz_from_rotation(rot: Tensor) -> Tensor:
    """Embed rotations ``(..., 3, 3)`` as Lorentz transformations ``(..., 4, 4)``."""
    if rot.shape[-2:] != (3, 3):
        raise ValueError(f"rot: expected shape (..., 3, 3), found {tuple(rot.shape)}")
    out = torch.zeros(*rot.shape[:-2], 4, 4, dtype=rot.dtype, device=rot.device)
    out[..., 0, 0] = 1
    out[..., 1:, 1:] = rot
    return out


def apply_lorentz(lam: Tensor, p4: Tensor) -> Tensor:
    """Apply ``lam (*B, 4, 4)`` to four-vectors ``p4 (*B, *rest, 4)``: ``p' = lam p``.

    The leading dimensions of ``lam`` pair with the leading dimensions of ``p4``; the
    remaining dimensions of ``p4`` (e.g. particles) share that transformation.
    """
    _check_p4(p4)
    if lam.shape[-2:] != (4, 4):
        raise ValueError(f"lam: expected shape (..., 4, 4), found {tuple(lam.shape)}")
    lead = lam.shape[:-2]
    k = len(lead)
    if tuple(p4.shape[:k]) != tuple(lead) and lead:
        raise ValueError(
            f"lam {tuple(lam.shape)} and p4 {tuple(p4.shape)}: the leading dimensions of lam "
            "must equal the leading dimensions of p4"
        )
    flat = p4.reshape(*lead, -1, 4)
    out = torch.matmul(flat, lam.to(p4.dtype).transpose(-1, -2))
    return out.reshape(p4.shape)


def boost(
    p4: Tensor,
    *,
    beta: Tensor | None = None,
    rapidity: Tensor | float | None = None,
    axis: Tensor | None = None,
) -> Tensor:
    """Boost four-vectors by velocity ``beta (*B, 3)``, or by ``rapidity`` along ``axis``.

    Pairing of leading dimensions as in :func:`apply_lorentz`.
    """
    if (beta is None) == (rapidity is None):
        raise ValueError("boost: give exactly one of beta= or rapidity= (with axis=)")
    if beta is not None:
        lam = boost_matrix(torch.as_tensor(beta, dtype=p4.dtype, device=p4.device))
    else:
        if axis is None:
            raise ValueError("boost: rapidity= needs axis= (the boost direction, shape (..., 3))")
        axis = torch.as_tensor(axis, dtype=p4.dtype, device=p4.device)
        lam = boost_matrix_rapidity(rapidity, axis)
    return apply_lorentz(lam, p4)


def rotate(p4: Tensor, axis: Tensor, angle: Tensor | float) -> Tensor:
    """Rotate the three-momenta of ``p4`` by ``angle`` about ``axis`` (pairing as in
    :func:`apply_lorentz`)."""
    axis = torch.as_tensor(axis, dtype=p4.dtype, device=p4.device)
    return apply_lorentz(lorentz_from_rotation(rotation_matrix(axis, angle)), p4)


def random_rotation(
    n: int, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64
) -> Tensor:
    """``n`` Haar-random rotations ``(n, 3, 3)`` (from uniformly random unit quaternions)."""
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rot = torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        dim=-2,
    )
    return rot.to(dtype)


def random_lorentz(
    n: int,
    *,
    max_rapidity: float = 1.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """``n`` random proper orthochronous Lorentz transformations ``(n, 4, 4)``.

    Each is ``B(w, n) R``: a Haar-random rotation ``R`` followed by a boost of rapidity
    ``w ~ U[0, max_rapidity]`` along an isotropic direction ``n`` (every element of
    SO+(1,3) has this form, by the polar decomposition).
    """
    rot = lorentz_from_rotation(random_rotation(n, generator=generator))
    direction = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    w = torch.rand(n, generator=generator, dtype=torch.float64) * max_rapidity
    return (boost_matrix_rapidity(w, direction) @ rot).to(dtype)


# --------------------------------------------------------------------------------------
# Jets: padded (..., N, 4) + mask, or packed (P, 4) + batch
# --------------------------------------------------------------------------------------


def _jet_sum(values: Tensor, p4: Tensor, mask: Tensor | None, batch: Tensor | None,
             num_jets: int | None) -> Tensor:
    """Sum per-particle ``values (..., N, K)`` / ``(P, K)`` over each jet's real particles."""
    if batch is not None:
        n = _num_jets(batch, num_jets)
        out = values.new_zeros(n, values.shape[-1])
        return out.index_add_(0, batch, values)
    if mask is not None:
        values = values * mask[..., None].to(values.dtype)
    return values.sum(-2)


def _num_jets(batch: Tensor, num_jets: int | None) -> int:
    if num_jets is not None:
        return int(num_jets)
    return int(batch.max()) + 1 if batch.numel() else 0


def _check_grouping(p4: Tensor, mask: Tensor | None, batch: Tensor | None) -> None:
    _check_p4(p4)
    if mask is not None and batch is not None:
        raise ValueError("give either mask= (padded jets) or batch= (packed jets), not both")
    if batch is not None:
        if p4.dim() != 2 or batch.shape != p4.shape[:1]:
            raise ValueError(
                f"packed jets: expected p4 (P, 4) and batch (P,), found p4 {tuple(p4.shape)} "
                f"and batch {tuple(batch.shape)}"
            )
        if batch.dtype != torch.int64:
            raise ValueError(f"batch: expected dtype int64, found {batch.dtype}")
    elif p4.dim() < 2:
        raise ValueError(f"padded jets: expected p4 (..., N, 4), found {tuple(p4.shape)}")
    if mask is not None and (mask.dtype != torch.bool or mask.shape != p4.shape[:-1]):
        raise ValueError(
            f"mask: expected a bool tensor of shape {tuple(p4.shape[:-1])}, "
            f"found {mask.dtype} {tuple(mask.shape)}"
        )


def _to_particles(jet_values: Tensor, mask: Tensor | None, batch: Tensor | None) -> Tensor:
    """Broadcast per-jet values ``(..., K)`` / ``(B, K)`` back to particles."""
    if batch is not None:
        return jet_values[batch]
    return jet_values.unsqueeze(-2)


def jet_p4(
    p4: Tensor,
    *,
    mask: Tensor | None = None,
    batch: Tensor | None = None,
    num_jets: int | None = None,
) -> Tensor:
    """Jet four-momentum: the sum of its real constituents; ``(..., 4)`` or ``(B, 4)``."""
    _check_grouping(p4, mask, batch)
    return _jet_sum(p4, p4, mask, batch, num_jets)


def jet_direction(
    p4: Tensor,
    *,
    mask: Tensor | None = None,
    batch: Tensor | None = None,
    num_jets: int | None = None,
) -> Tensor:
    """Unit vector along the jet three-momentum ``(..., 3)`` / ``(B, 3)`` (zero for empty jets)."""
    return _unit(jet_p4(p4, mask=mask, batch=batch, num_jets=num_jets)[..., 1:])[0]


def _leading_phi(p4: Tensor, pt_: Tensor, phi_: Tensor, mask: Tensor | None,
                 batch: Tensor | None, num_jets: int | None) -> Tensor:
    if batch is not None:
        n = _num_jets(batch, num_jets)
        best = pt_.new_full((n,), -1.0).scatter_reduce(0, batch, pt_, "amax")
        is_lead = pt_ == best[batch]
        idx = torch.arange(pt_.shape[0], device=p4.device)
        big = torch.full((n,), pt_.shape[0], dtype=torch.int64, device=p4.device)
        first = big.scatter_reduce(0, batch[is_lead], idx[is_lead], "amin")
        lead_phi = torch.zeros(n, dtype=p4.dtype, device=p4.device)
        has = first < pt_.shape[0]
        lead_phi[has] = phi_[first[has]]
        return lead_phi
    masked_pt = pt_ if mask is None else torch.where(mask, pt_, torch.full_like(pt_, -1.0))
    lead = masked_pt.argmax(-1, keepdim=True)
    return phi_.gather(-1, lead).squeeze(-1)


def jet_axis(
    p4: Tensor,
    *,
    mask: Tensor | None = None,
    batch: Tensor | None = None,
    num_jets: int | None = None,
    kind: AxisKind = "centroid",
) -> Tensor:
    """The jet axis as ``(eta, phi)``: ``(..., 2)`` for padded, ``(B, 2)`` for packed jets.

    ``kind="centroid"``: pT-weighted mean of the constituents' ``(eta, phi)``, with each phi
    first unwrapped around the leading (highest-pT) constituent. Rotations in the
    (eta, phi) plane about this point leave it fixed exactly, so layers invariant about it
    can be tested to rounding precision. ``kind="p4"``: eta and phi of the summed
    four-momentum (moves by about 1% under such rotations; see DESIGN.md). Empty jets get
    the axis ``(0, 0)``.
    """
    _check_grouping(p4, mask, batch)
    if kind == "p4":
        j = jet_p4(p4, mask=mask, batch=batch, num_jets=num_jets)
        return torch.stack([eta(j), phi(j)], dim=-1)
    if kind != "centroid":
        raise ValueError(f"kind: expected 'centroid' or 'p4', found {kind!r}")
    pt_, eta_, phi_ = pt(p4), eta(p4), phi(p4)
    ref = _leading_phi(p4, pt_, phi_, mask, batch, num_jets)
    phi_unwrapped = _to_particles(ref[..., None], mask, batch)[..., 0] + delta_phi(
        phi_, _to_particles(ref[..., None], mask, batch)[..., 0]
    )
    sums = _jet_sum(
        torch.stack([pt_, pt_ * eta_, pt_ * phi_unwrapped], dim=-1), p4, mask, batch, num_jets
    )
    w = sums[..., 0]
    safe = torch.where(w > 0, w, torch.ones_like(w))
    eta_c = torch.where(w > 0, sums[..., 1] / safe, torch.zeros_like(w))
    phi_c = torch.where(w > 0, wrap_phi(sums[..., 2] / safe), torch.zeros_like(w))
    return torch.stack([eta_c, phi_c], dim=-1)


def relative_etaphi(
    p4: Tensor,
    *,
    mask: Tensor | None = None,
    batch: Tensor | None = None,
    num_jets: int | None = None,
    kind: AxisKind = "centroid",
) -> Tensor:
    """Each constituent's ``(d_eta, d_phi)`` from the jet axis (d_phi wrapped).

    Shape ``(..., N, 2)`` for padded jets (zero at padded slots) or ``(P, 2)`` for packed.
    """
    axis = jet_axis(p4, mask=mask, batch=batch, num_jets=num_jets, kind=kind)
    axis_p = _to_particles(axis, mask, batch)
    rel = torch.stack([eta(p4) - axis_p[..., 0], delta_phi(phi(p4), axis_p[..., 1])], dim=-1)
    if mask is not None:
        rel = rel * mask[..., None].to(rel.dtype)
    return rel


def rotate_about_jet_axis(
    p4: Tensor,
    angle: Tensor | float,
    *,
    mask: Tensor | None = None,
    batch: Tensor | None = None,
    num_jets: int | None = None,
    kind: AxisKind = "centroid",
) -> Tensor:
    """Rotate each constituent about the jet axis in the (eta, phi) plane, keeping pT and m.

    ``angle`` is a scalar or one angle per jet (``(...)`` padded, ``(B,)`` packed). The
    position ``(d_eta, d_phi)`` relative to :func:`jet_axis` is turned counter-clockwise
    by ``angle``. About the ``"centroid"`` axis the axis itself is left unchanged (up to
    rounding); padded particles are returned unchanged.
    """
    axis = jet_axis(p4, mask=mask, batch=batch, num_jets=num_jets, kind=kind)
    rel = relative_etaphi(p4, mask=mask, batch=batch, num_jets=num_jets, kind=kind)
    angle = torch.as_tensor(angle, dtype=p4.dtype, device=p4.device)
    if angle.dim() > 0:
        angle = _to_particles(angle[..., None], mask, batch)[..., 0]
    c, s = torch.cos(angle), torch.sin(angle)
    d_eta = c * rel[..., 0] - s * rel[..., 1]
    d_phi = s * rel[..., 0] + c * rel[..., 1]
    axis_p = _to_particles(axis, mask, batch)
    out = from_ptetaphim(pt(p4), axis_p[..., 0] + d_eta, wrap_phi(axis_p[..., 1] + d_phi),
                         mass(p4))
    if mask is not None:
        out = torch.where(mask[..., None], out, p4)
    return out
