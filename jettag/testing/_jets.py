"""Random but plausible jets for tests: constituents spread around an axis with pT fractions."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal, NamedTuple, overload

import torch
from torch import Tensor

from jettag import physics
from jettag.testing._common import make_generator

if TYPE_CHECKING:
    from jettag.data.batch import JetBatch

__all__ = ["PaddedJets", "random_jets"]

# Masses of massive constituents: photon/massless, charged pion, charged kaon, proton (GeV).
_MASSES = (0.0, 0.13957, 0.49368, 0.93827)


class PaddedJets(NamedTuple):
    """Padded jets from :func:`random_jets`: ``p4 (B, N, 4)``, ``x (B, N, C)`` or None,
    ``mask (B, N)`` bool (True = real particle; real particles first, padding is zero)."""

    p4: Tensor
    x: Tensor | None
    mask: Tensor


@overload
def random_jets(
    n_jets: int,
    n_particles: int,
    *,
    generator: torch.Generator | int | None = ...,
    min_particles: int | None = ...,
    n_features: int = ...,
    massive: bool = ...,
    pt_range: tuple[float, float] = ...,
    eta_range: tuple[float, float] = ...,
    radius: float = ...,
    layout: Literal["padded"] = ...,
    dtype: torch.dtype = ...,
    device: torch.device | str | None = ...,
) -> PaddedJets: ...


@overload
def random_jets(
    n_jets: int,
    n_particles: int,
    *,
    generator: torch.Generator | int | None = ...,
    min_particles: int | None = ...,
    n_features: int = ...,
    massive: bool = ...,
    pt_range: tuple[float, float] = ...,
    eta_range: tuple[float, float] = ...,
    radius: float = ...,
    layout: Literal["batch"],
    dtype: torch.dtype = ...,
    device: torch.device | str | None = ...,
) -> JetBatch: ...


def random_jets(
    n_jets: int,
    n_particles: int,
    *,
    generator: torch.Generator | int | None = None,
    min_particles: int | None = None,
    n_features: int = 0,
    massive: bool = False,
    pt_range: tuple[float, float] = (500.0, 1000.0),
    eta_range: tuple[float, float] = (-2.0, 2.0),
    radius: float = 0.8,
    layout: Literal["padded", "batch"] = "padded",
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> PaddedJets | JetBatch:
    """Random jets that look like jets: for tests of layers, models and the assertion helpers.

    Each jet gets an axis with pT uniform in ``pt_range``, eta uniform in ``eta_range`` and a
    uniform phi, and a multiplicity uniform in ``[min_particles, n_particles]``. Its
    constituents carry pT fractions ``z`` from a falling spectrum (a few hard, many soft;
    they sum to one, so the scalar pT sum is the jet pT) and sit at Gaussian displacements
    ``(d_eta, d_phi)`` of width ``radius / 2.5`` from the axis, cut at ``radius``. They are
    massless, or with ``massive=True`` a random mix of photons, pions, kaons and protons.
    Constituents are sorted by decreasing pT. Features ``x`` are standard normal (zero at
    padding). Everything is drawn in float64 on the CPU from ``generator``, so a seed gives
    the same jets on every machine.

    Args:
        n_jets: number of jets ``B``.
        n_particles: largest multiplicity (row length ``N`` of the padded layout).
        generator: a ``torch.Generator``, an int seed, or None (seed 0).
        min_particles: smallest multiplicity; default ``max(1, n_particles // 2)``. Use
            ``n_particles`` for no padding, 0 to allow empty jets.
        n_features: number ``C`` of per-particle features ``x``; 0 for none.
        massive: give constituents hadron masses instead of zero.
        pt_range, eta_range: ranges of the jet axis pT (GeV) and pseudorapidity.
        radius: largest distance of a constituent from the axis in (eta, phi).
        layout: ``"padded"`` returns :class:`PaddedJets` ``(p4, x, mask)``; ``"batch"`` a
            :class:`~jettag.data.JetBatch`.
        dtype, device: of the returned tensors.

    Shapes:
        - **p4:** :math:`(B, N, 4)` padded, :math:`(P, 4)` in a JetBatch
        - **x:** :math:`(B, N, C)` / :math:`(P, C)`, or None when ``n_features == 0``
        - **mask:** :math:`(B, N)`

    Example:
        >>> from jettag.testing import random_jets
        >>> p4, x, mask = random_jets(3, 8, generator=0, n_features=2)
        >>> p4.shape, x.shape, mask.shape
        (torch.Size([3, 8, 4]), torch.Size([3, 8, 2]), torch.Size([3, 8]))
        >>> random_jets(3, 8, generator=0, layout="batch").num_jets
        3
    """
    if n_jets < 0 or n_particles < 0:
        raise ValueError(
            f"random_jets: expected n_jets >= 0 and n_particles >= 0, found {n_jets}, "
            f"{n_particles}"
        )
    low = max(1, n_particles // 2) if min_particles is None else min_particles
    if not 0 <= low <= n_particles:
        raise ValueError(
            f"random_jets: min_particles must be in [0, n_particles={n_particles}], found {low}"
        )
    if n_features < 0:
        raise ValueError(f"random_jets: n_features must be >= 0, found {n_features}")
    if layout not in ("padded", "batch"):
        raise ValueError(f"random_jets: layout must be 'padded' or 'batch', found {layout!r}")
    if not radius > 0 or pt_range[0] <= 0 or pt_range[1] < pt_range[0]:
        raise ValueError(
            f"random_jets: expected radius > 0 and 0 < pt_range[0] <= pt_range[1], found "
            f"radius={radius}, pt_range={pt_range}"
        )
    gen = make_generator(generator)
    f64 = torch.float64

    def uniform(lo: float, hi: float, *shape: int) -> Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=gen, dtype=f64)

    b, n = n_jets, n_particles
    counts = torch.randint(low, n + 1, (b,), generator=gen)
    mask = torch.arange(n) < counts[:, None]
    jet_pt = uniform(*pt_range, b)
    jet_eta = uniform(*eta_range, b)
    jet_phi = uniform(-math.pi, math.pi, b)

    # A falling fragmentation-like spectrum: squared exponentials, normalised per jet.
    weight = torch.empty(b, n, dtype=f64).exponential_(generator=gen) ** 2 * mask
    total = weight.sum(-1, keepdim=True)
    z = weight / torch.where(total > 0, total, torch.ones_like(total))
    z = z.sort(dim=-1, descending=True).values  # real particles have z > 0, so stay first

    shift = torch.randn(b, n, 2, generator=gen, dtype=f64) * (radius / 2.5)
    dist = torch.linalg.vector_norm(shift, dim=-1, keepdim=True)
    shift = shift * torch.clamp(radius / dist.clamp_min(1e-300), max=1.0)
    eta = jet_eta[:, None] + shift[..., 0]
    phi = physics.wrap_phi(jet_phi[:, None] + shift[..., 1])
    if massive:
        masses = torch.tensor(_MASSES, dtype=f64)
        m = masses[torch.randint(len(_MASSES), (b, n), generator=gen)]
    else:
        m = torch.zeros(b, n, dtype=f64)
    p4 = physics.from_ptetaphim(z * jet_pt[:, None], eta, phi, m) * mask[..., None]
    x = None
    if n_features > 0:
        x = torch.randn(b, n, n_features, generator=gen, dtype=f64) * mask[..., None]
        x = x.to(device=device, dtype=dtype)
    p4 = p4.to(device=device, dtype=dtype)
    mask = mask.to(device=device)
    if layout == "batch":
        from jettag.data.batch import JetBatch

        return JetBatch.from_padded(p4, mask, x=x)
    return PaddedJets(p4, x, mask)
