"""Deep Sets over the particles of each jet: Particle Flow and Energy Flow Networks.

Komiske, Metodiev, Thaler, "Energy Flow Networks: Deep Sets for Particle Jets",
JHEP 01 (2019) 121, arXiv:1810.05165; Deep Sets: Zaheer et al., arXiv:1703.06114.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from jettag.ops import segment_max, segment_mean, segment_sum

__all__ = ["DeepSetsEncoder", "EnergyFlowLayer"]

Aggregation = Literal["sum", "mean", "max"]

_POOL = {"sum": segment_sum, "mean": segment_mean, "max": segment_max}


def _sizes(sizes: Sequence[int], name: str, *, allow_empty: bool) -> tuple[int, ...]:
    sizes = tuple(sizes)
    if (not sizes and not allow_empty) or any(
        isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes
    ):
        need = "a sequence" if allow_empty else "a non-empty sequence"
        raise ValueError(f"{name}: expected {need} of positive layer widths, found {sizes!r}")
    return sizes


def _dense_relu(in_channels: int, sizes: tuple[int, ...], dropout: float) -> nn.Sequential:
    """Linear + ReLU (+ dropout) per width, as energyflow's ``construct_dense``."""
    layers: list[nn.Module] = []
    for size in sizes:
        layers += [nn.Linear(in_channels, size), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_channels = size
    return nn.Sequential(*layers)


class DeepSetsEncoder(nn.Module):
    r"""Deep Sets encoder of each jet: a per-particle network, a pooling, a jet network.

    The Particle Flow Network (PFN) form of Deep Sets (Komiske, Metodiev, Thaler,
    arXiv:1810.05165, eq. 1.2; Zaheer et al., arXiv:1703.06114):

    .. math::
        \mathbf{h}_J = F\Big(\bigoplus_{i \in J} w_i\,\Phi(\mathbf{x}_i)\Big),

    where :math:`\Phi` and :math:`F` are stacks of ``Linear`` + ``ReLU`` layers (the last
    :math:`\Phi` layer, the latent space, also has a ReLU, as in energyflow), :math:`\oplus`
    is the sum (PFN), mean or maximum over the real particles of jet :math:`J`, and the
    optional weights :math:`w_i` default to 1. The output is permutation invariant and
    each jet's row depends on that jet's particles only (no padding exists to leak).
    Weights are initialised as energyflow's defaults: He-uniform kernels, zero biases.

    Args:
        in_channels: features per particle :math:`C`.
        phi_channels: widths of the :math:`\Phi` layers; the last is the latent dimension
            :math:`L` (energyflow examples: ``(100, 100, 128)``; the paper: ``(100, 100, 256)``).
        f_channels: widths of the :math:`F` layers (energyflow: ``(100, 100, 100)``); empty
            to return the pooled latent vector itself.
        aggr: pooling over the particles, ``"sum"`` (Deep Sets / PFN), ``"mean"`` or
            ``"max"``. Empty jets give a zero latent vector.
        latent_dropout: dropout on the pooled latent vector (energyflow ``latent_dropout``).
        f_dropout: dropout after each :math:`F` layer (energyflow ``F_dropouts``).

    Shapes:
        - **input:** ``x`` :math:`(P, C)`, ``ptr`` :math:`(B + 1,)` int64 CSR offsets,
          optional ``weight`` :math:`(P,)`
        - **output:** :math:`(B, F_{\mathrm{out}})` with :math:`F_{\mathrm{out}}` the last
          of ``f_channels`` (or :math:`L` when ``f_channels`` is empty)

    Example:
        >>> import torch
        >>> from jettag.nn.deep_sets import DeepSetsEncoder
        >>> enc = DeepSetsEncoder(3, (16, 8), (4,))
        >>> enc
        DeepSetsEncoder(3 -> 4, phi=(16, 8), f=(4,), aggr=sum)
        >>> x, ptr = torch.randn(5, 3), torch.tensor([0, 2, 2, 5])
        >>> enc(x, ptr).shape
        torch.Size([3, 4])
    """

    def __init__(
        self,
        in_channels: int,
        phi_channels: Sequence[int],
        f_channels: Sequence[int] = (),
        *,
        aggr: Aggregation = "sum",
        latent_dropout: float = 0.0,
        f_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(
                f"in_channels: expected a positive number of features, found {in_channels!r}"
            )
        self.in_channels = in_channels
        self.phi_channels = _sizes(phi_channels, "phi_channels", allow_empty=False)
        self.f_channels = _sizes(f_channels, "f_channels", allow_empty=True)
        if aggr not in _POOL:
            raise ValueError(f"aggr: expected one of {sorted(_POOL)}, found {aggr!r}")
        for name, rate in (("latent_dropout", latent_dropout), ("f_dropout", f_dropout)):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{name}: expected a dropout rate in [0, 1), found {rate}")
        self.aggr = aggr
        self.latent_channels = self.phi_channels[-1]
        self.out_channels = (self.f_channels or self.phi_channels)[-1]
        self.phi = _dense_relu(in_channels, self.phi_channels, 0.0)
        self.latent_dropout = nn.Dropout(latent_dropout) if latent_dropout > 0 else nn.Identity()
        self.f = _dense_relu(self.latent_channels, self.f_channels, f_dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-uniform kernels and zero biases (energyflow's ``he_uniform`` default)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.kaiming_uniform_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def latent(self, x: Tensor, ptr: Tensor, weight: Tensor | None = None) -> Tensor:
        r"""The pooled latent vector :math:`\bigoplus_i w_i \Phi(\mathbf{x}_i)`, ``(B, L)``."""
        return self._pool(x, ptr, weight)

    def _pool(self, x: Tensor, ptr: Tensor, weight: Tensor | None) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"x: expected per-particle features (P, {self.in_channels}), "
                f"found shape {tuple(x.shape)}"
            )
        per_particle = self.phi(x)
        if weight is not None:
            if weight.shape != x.shape[:1]:
                raise ValueError(
                    f"weight: expected one weight per particle ({x.shape[0]},), "
                    f"found shape {tuple(weight.shape)}"
                )
            per_particle = per_particle * weight.unsqueeze(-1)
        return _POOL[self.aggr](per_particle, ptr)

    def forward(self, x: Tensor, ptr: Tensor, weight: Tensor | None = None) -> Tensor:
        """Encode each jet: ``x (P, C)``, ``ptr (B+1,)``, ``weight (P,)`` -> ``(B, out)``."""
        return self.f(self.latent_dropout(self._pool(x, ptr, weight)))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.in_channels} -> {self.out_channels}, "
            f"phi={self.phi_channels}, f={self.f_channels}, aggr={self.aggr})"
        )


class EnergyFlowLayer(DeepSetsEncoder):
    r"""Energy Flow Network encoder: an energy-weighted sum of a function of angles only.

    Komiske, Metodiev, Thaler, arXiv:1810.05165, eq. 1.3:

    .. math::
        \mathbf{h}_J = F\Big(\sum_{i \in J} z_i\,\Phi(\hat{\mathbf{p}}_i)\Big),
        \qquad z_i = \frac{p_{T,i}}{\sum_{j \in J} p_{T,j}},

    where :math:`\hat{\mathbf{p}}_i` are angular coordinates only, e.g.
    :math:`(\Delta y_i, \Delta\phi_i)` from the jet axis. Because each particle enters
    linearly in its energy fraction and :math:`\Phi` sees no energy, the latent sum (and so
    the output) is infrared and collinear (IRC) safe: a particle with :math:`z_i = 0`
    contributes exactly nothing, and splitting a particle into collinear fragments with
    fractions :math:`\lambda z_i, (1 - \lambda) z_i` at the same angles leaves the sum
    unchanged. It stays safe only if the caller's :math:`z_i` and angles are themselves IRC
    safe (pT fractions, angles from an IRC-safe axis). To rule out ``NaN * 0``, the angles
    of particles with :math:`z_i = 0` are replaced by 0 before :math:`\Phi`.

    Args:
        phi_channels: widths of the :math:`\Phi` layers (energyflow: ``(100, 100, 128)``).
        f_channels: widths of the :math:`F` layers (energyflow: ``(100, 100, 100)``).
        in_channels: angular coordinates per particle (default 2).
        latent_dropout: dropout on the latent sum.
        f_dropout: dropout after each :math:`F` layer.

    Shapes:
        - **input:** ``z`` :math:`(P,)` energy fractions, ``angles`` :math:`(P, 2)`,
          ``ptr`` :math:`(B + 1,)`
        - **output:** :math:`(B, F_{\mathrm{out}})`

    Example:
        >>> import torch
        >>> from jettag.nn.deep_sets import EnergyFlowLayer
        >>> efn = EnergyFlowLayer((16, 8), (4,))
        >>> efn
        EnergyFlowLayer(2 -> 4, phi=(16, 8), f=(4,), aggr=sum)
        >>> z, angles = torch.tensor([0.7, 0.3, 1.0]), torch.randn(3, 2) * 0.1
        >>> efn(z, angles, torch.tensor([0, 2, 3])).shape
        torch.Size([2, 4])
    """

    def __init__(
        self,
        phi_channels: Sequence[int],
        f_channels: Sequence[int] = (),
        *,
        in_channels: int = 2,
        latent_dropout: float = 0.0,
        f_dropout: float = 0.0,
    ) -> None:
        super().__init__(
            in_channels,
            phi_channels,
            f_channels,
            aggr="sum",
            latent_dropout=latent_dropout,
            f_dropout=f_dropout,
        )

    def latent(self, z: Tensor, angles: Tensor, ptr: Tensor) -> Tensor:  # type: ignore[override]
        r"""The latent sum :math:`\sum_i z_i \Phi(\hat{\mathbf{p}}_i)` of each jet, ``(B, L)``."""
        angles, z = self._weighted(z, angles)
        return self._pool(angles, ptr, z)

    def forward(self, z: Tensor, angles: Tensor, ptr: Tensor) -> Tensor:  # type: ignore[override]
        """Encode each jet: ``z (P,)``, ``angles (P, in_channels)``, ``ptr`` -> ``(B, out)``."""
        angles, z = self._weighted(z, angles)
        return super().forward(angles, ptr, z)

    @staticmethod
    def _weighted(z: Tensor, angles: Tensor) -> tuple[Tensor, Tensor]:
        if z.dim() != 1 or z.shape[0] != angles.shape[0]:
            raise ValueError(
                f"z: expected one energy fraction per particle ({angles.shape[0]},), "
                f"found shape {tuple(z.shape)}"
            )
        return torch.where((z != 0).unsqueeze(-1), angles, torch.zeros_like(angles)), z
