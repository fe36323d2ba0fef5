r"""Rotational particle convolution: Deep Sets promoted to a group convolution over rotations.

C. Shimmin, "Particle Convolution for High Energy Physics", arXiv:2107.02908 (rPCN). The
paper describes the particle convolution layer as "an extension of Deep Sets and Energy Flow
network architectures, in which the permutation-invariant operator is promoted to a group
convolution", here for rotations about the jet axis in the :math:`(\eta, \phi)` plane, and an
IRC-safe form. No code was released; this is a reconstruction, and
``jettag/nn/particle_conv_design.md`` lists which choices the paper fixes and which are ours.

The three stages, with :math:`\hat{\mathbf{x}}_i = (\Delta\eta_i, \Delta\phi_i)` the position
of particle :math:`i` relative to the jet axis and the rotation group discretised to the
cyclic group :math:`C_n`, :math:`\theta_k = 2\pi k / n`:

1. lift (:class:`RotationalParticleConv`, :class:`IRCSafeRotationalParticleConv`): each jet
   becomes a function on :math:`C_n` with :math:`C` channels,

   .. math::
       f_c(\theta_k) = \sum_{i \in J} w_i\, \Phi_c\big(R_{-\theta_k} \hat{\mathbf{x}}_i
       \,[, \mathbf{s}_i]\big),

   the Deep Sets / EFN sum evaluated for every rotated copy of the jet;
2. group convolutions (:class:`CyclicGroupConv`): circular convolutions over the angle axis,
   followed by a pointwise nonlinearity;
3. pooling over the group (:func:`group_pool`), then an MLP.

Rotating every particle by :math:`\beta = 2\pi m / n` about the axis maps
:math:`f(\theta_k) \to f(\theta_{k-m})`, a cyclic shift of the angle axis by ``m``
(``torch.roll(f, m, dims=1)``); group convolutions and pointwise maps commute with that shift
and pooling removes it, so the stack is exactly invariant under :math:`C_n` (to rounding,
about 1e-14 in float64). Under other angles it is only approximately invariant (the deviation is
measured in ``tests/models/test_rpcn.py`` and reported in the design note).

Feature maps on the group are channels-last, ``(B, n, C)``: jets, rotations, channels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jettag.nn.deep_sets import _dense_relu, _sizes
from jettag.ops import segment_sum

__all__ = [
    "CyclicGroupConv",
    "IRCSafeRotationalParticleConv",
    "RotationalParticleConv",
    "cyclic_angles",
    "group_pool",
]

GroupPooling = Literal["mean", "max"]


def _positive_int(value: int, name: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive number of {what}, found {value!r}")
    return value


def cyclic_angles(
    num_rotations: int, *, dtype: torch.dtype | None = None, device: torch.device | None = None
) -> Tensor:
    r"""The angles :math:`\theta_k = 2\pi k / n`, :math:`k = 0, \ldots, n - 1`, of :math:`C_n`.

    Example:
        >>> cyclic_angles(4)
        tensor([0.0000, 1.5708, 3.1416, 4.7124])
    """
    _positive_int(num_rotations, "num_rotations", "rotations")
    k = torch.arange(num_rotations, dtype=dtype or torch.get_default_dtype(), device=device)
    return k * (2 * math.pi / num_rotations)


def _rotated_copies(angles: Tensor, num_rotations: int) -> Tensor:
    r""":math:`R_{-\theta_k} \hat{\mathbf{x}}_i` for all particles and rotations, ``(P, n, 2)``.

    :math:`R_\beta` turns ``(d_eta, d_phi)`` counter-clockwise, as
    :func:`jettag.physics.rotate_about_jet_axis` does, so :math:`R_{-\theta}` turns clockwise.
    """
    theta = cyclic_angles(num_rotations, dtype=angles.dtype, device=angles.device)
    c, s = torch.cos(theta), torch.sin(theta)
    x, y = angles[:, 0:1], angles[:, 1:2]
    return torch.stack([c * x + s * y, c * y - s * x], dim=-1)


def group_pool(h: Tensor, aggr: GroupPooling = "mean") -> Tensor:
    """Pool a function on :math:`C_n` over the group: ``(B, n, C) -> (B, C)``, mean or max.

    Both are invariant under cyclic shifts of the angle axis (rotations by multiples of
    :math:`2\\pi/n`).

    Example:
        >>> h = torch.tensor([[[1.0], [3.0]]])
        >>> group_pool(h, "mean"), group_pool(h, "max")
        (tensor([[2.]]), tensor([[3.]]))
    """
    if h.dim() != 3:
        raise ValueError(
            f"h: expected feature maps on the group (B, n, C), found shape {tuple(h.shape)}"
        )
    if aggr == "mean":
        return h.mean(dim=1)
    if aggr == "max":
        return h.amax(dim=1)
    raise ValueError(f"aggr: expected 'mean' or 'max', found {aggr!r}")


class RotationalParticleConv(nn.Module):
    r"""Lift the particles of each jet to a function on the rotation group :math:`C_n`.

    Particle convolution (C. Shimmin, arXiv:2107.02908): the Deep Sets / Particle Flow
    sum :math:`\sum_i \Phi(p_i)` (Komiske, Metodiev, Thaler, arXiv:1810.05165) promoted to a
    group convolution over rotations about the jet axis, discretised to
    :math:`\theta_k = 2\pi k/n`:

    .. math::
        f_c(\theta_k) = \sum_{i \in J} w_i\,
        \Phi_c\big(R_{-\theta_k} \hat{\mathbf{x}}_i,\ \mathbf{s}_i\big),
        \qquad R_{-\theta} = \begin{pmatrix} \cos\theta & \sin\theta \\
        -\sin\theta & \cos\theta \end{pmatrix},

    with :math:`\hat{\mathbf{x}}_i = (\Delta\eta_i, \Delta\phi_i)` relative to the jet axis,
    :math:`\mathbf{s}_i` optional rotation-invariant per-particle features (for example the
    pT fraction and particle id: the PFN-like, *not* IRC-safe form), optional weights
    :math:`w_i` (default 1) and :math:`\Phi` a stack of ``Linear`` + ``ReLU`` layers (ReLU
    after the last one too, as the EFN latent layer). :math:`\Phi_c(R_{-\theta} \cdot)` is a
    filter rotated by :math:`\theta`: :math:`f_c(\theta)` is the response of the jet to that
    rotated filter, a continuous-space analogue of a convolution on a jet image.

    Equivariance: rotating every :math:`\hat{\mathbf{x}}_i` by :math:`2\pi m/n` (with
    :math:`\mathbf{s}_i, w_i` unchanged) gives :math:`f(\theta_{k - m})`, i.e.
    ``torch.roll(out, m, dims=1)``, exactly up to rounding. Permutation invariant, and each
    jet's output depends on its own particles only.

    Args:
        in_channels: rotation-invariant features per particle :math:`\mathbf{s}_i`
            (``0``: angles only).
        out_channels: channels :math:`C` of the lifted function (the last :math:`\Phi` width).
        hidden_channels: widths of the hidden :math:`\Phi` layers.
        num_rotations: order :math:`n` of the cyclic group (number of angles).

    Shapes:
        - **input:** ``angles`` :math:`(P, 2)`, ``ptr`` :math:`(B + 1,)` int64 CSR offsets,
          optional ``x`` :math:`(P, \mathrm{in\_channels})`, optional ``weight`` :math:`(P,)`
        - **output:** :math:`(B, n, C)`: jets, rotations :math:`\theta_k`, channels

    Example:
        >>> import torch
        >>> from jettag.nn.particle_conv import RotationalParticleConv
        >>> lift = RotationalParticleConv(1, 8, hidden_channels=(16,), num_rotations=4)
        >>> lift
        RotationalParticleConv(2 + 1 -> C4 x 8, hidden=(16,))
        >>> angles, z = torch.randn(5, 2) * 0.2, torch.rand(5, 1)
        >>> lift(angles, torch.tensor([0, 2, 5]), z).shape
        torch.Size([2, 4, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        hidden_channels: Sequence[int] = (64, 64),
        num_rotations: int = 16,
    ) -> None:
        super().__init__()
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 0:
            raise ValueError(
                f"in_channels: expected a number of per-particle features >= 0, found "
                f"{in_channels!r}"
            )
        self.in_channels = in_channels
        self.out_channels = _positive_int(out_channels, "out_channels", "channels")
        self.hidden_channels = _sizes(hidden_channels, "hidden_channels", allow_empty=True)
        self.num_rotations = _positive_int(num_rotations, "num_rotations", "rotations")
        self.phi = _dense_relu(2 + in_channels, (*self.hidden_channels, out_channels), 0.0)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-uniform kernels and zero biases (as :class:`~jettag.nn.DeepSetsEncoder`)."""
        for module in self.phi.modules():
            if isinstance(module, nn.Linear):
                nn.init.kaiming_uniform_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(
        self,
        angles: Tensor,
        ptr: Tensor,
        x: Tensor | None = None,
        weight: Tensor | None = None,
    ) -> Tensor:
        """Lift each jet: ``angles (P, 2)``, ``ptr (B+1,)``, ``x (P, in)``, ``weight (P,)``
        -> ``(B, n, C)``."""
        if angles.dim() != 2 or angles.shape[1] != 2:
            raise ValueError(
                f"angles: expected (d_eta, d_phi) per particle (P, 2), found shape "
                f"{tuple(angles.shape)}"
            )
        n_particles = angles.shape[0]
        inputs = _rotated_copies(angles, self.num_rotations)
        if self.in_channels > 0:
            if x is None or x.shape != (n_particles, self.in_channels):
                found = "none" if x is None else f"shape {tuple(x.shape)}"
                raise ValueError(
                    f"x: expected {self.in_channels} rotation-invariant features per particle "
                    f"({n_particles}, {self.in_channels}), found {found}"
                )
            scalars = x.unsqueeze(1).expand(-1, self.num_rotations, -1)
            inputs = torch.cat([inputs, scalars.to(inputs.dtype)], dim=-1)
        elif x is not None and x.numel() > 0:
            raise ValueError(
                f"x: this layer has in_channels=0 and takes no per-particle features, found "
                f"shape {tuple(x.shape)}"
            )
        per_particle = self.phi(inputs)
        if weight is not None:
            if weight.shape != (n_particles,):
                raise ValueError(
                    f"weight: expected one weight per particle ({n_particles},), found shape "
                    f"{tuple(weight.shape)}"
                )
            per_particle = per_particle * weight[:, None, None]
        return segment_sum(per_particle, ptr)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(2 + {self.in_channels} -> C{self.num_rotations} x "
            f"{self.out_channels}, hidden={self.hidden_channels})"
        )


class IRCSafeRotationalParticleConv(RotationalParticleConv):
    r"""Infrared and collinear safe lift: a pT-fraction-weighted sum over angular positions.

    The IRC-safe rPCN lift (arXiv:2107.02908), the Energy Flow Network form
    (arXiv:1810.05165, eq. 1.3) of :class:`RotationalParticleConv`:

    .. math::
        f_c(\theta_k) = \sum_{i \in J} z_i\, \Phi_c\big(R_{-\theta_k} \hat{\mathbf{x}}_i\big),
        \qquad z_i = \frac{p_{T,i}}{\sum_{j \in J} p_{T,j}}.

    For every group element :math:`\theta_k` this is an EFN latent sum with the filter
    :math:`\Phi(R_{-\theta_k}\,\cdot)`: each particle enters linearly in :math:`z_i` and
    :math:`\Phi` sees its angles only, so a particle with :math:`z_i = 0` adds exactly
    nothing and a collinear split :math:`z_i \to \lambda z_i + (1 - \lambda) z_i` at the
    same angles leaves :math:`f` unchanged. Any function of :math:`f` (group convolutions,
    pooling, MLP) is then IRC safe, provided the caller's :math:`z_i` and angles are (pT
    fractions and angles from an IRC-safe axis such as the pT-weighted centroid). Angles of
    particles with :math:`z_i = 0` are replaced by 0 before :math:`\Phi` so that
    non-finite angles of zero-momentum particles cannot produce ``NaN * 0``.

    Args:
        out_channels: channels :math:`C` of the lifted function.
        hidden_channels: widths of the hidden :math:`\Phi` layers.
        num_rotations: order :math:`n` of the cyclic group.

    Shapes:
        - **input:** ``z`` :math:`(P,)`, ``angles`` :math:`(P, 2)`, ``ptr`` :math:`(B + 1,)`
        - **output:** :math:`(B, n, C)`

    Example:
        >>> import torch
        >>> from jettag.nn.particle_conv import IRCSafeRotationalParticleConv
        >>> lift = IRCSafeRotationalParticleConv(8, hidden_channels=(16,), num_rotations=6)
        >>> z, angles = torch.tensor([0.7, 0.3, 1.0]), torch.randn(3, 2) * 0.2
        >>> lift(z, angles, torch.tensor([0, 2, 3])).shape
        torch.Size([2, 6, 8])
    """

    def __init__(
        self,
        out_channels: int,
        *,
        hidden_channels: Sequence[int] = (64, 64),
        num_rotations: int = 16,
    ) -> None:
        super().__init__(
            0, out_channels, hidden_channels=hidden_channels, num_rotations=num_rotations
        )

    def forward(self, z: Tensor, angles: Tensor, ptr: Tensor) -> Tensor:  # type: ignore[override]
        """Lift each jet: ``z (P,)``, ``angles (P, 2)``, ``ptr (B+1,)`` -> ``(B, n, C)``."""
        if z.dim() != 1 or angles.dim() != 2 or z.shape[0] != angles.shape[0]:
            raise ValueError(
                f"z: expected one pT fraction per particle ({angles.shape[0]},), found shape "
                f"{tuple(z.shape)}"
            )
        angles = torch.where((z != 0).unsqueeze(-1), angles, torch.zeros_like(angles))
        return super().forward(angles, ptr, weight=z)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(2 -> C{self.num_rotations} x {self.out_channels}, "
            f"hidden={self.hidden_channels}, weight=z)"
        )


class CyclicGroupConv(nn.Module):
    r"""Group convolution on the cyclic group :math:`C_n`: a circular convolution over angles.

    The SO(2) group-convolution layer of the rPCN (arXiv:2107.02908), discretised to
    :math:`C_n`; a learned filter :math:`\psi` of ``kernel_size`` angular steps is slid
    around the circle (cross-correlation, as ``torch.nn.Conv1d`` with circular padding):

    .. math::
        h'_d(\theta_k) = b_d + \sum_{c} \sum_{j=-\lfloor K/2 \rfloor}^{K - 1 -
        \lfloor K/2 \rfloor} \psi_{dc}(j)\, h_c(\theta_{k + j}),

    indices modulo :math:`n`. It commutes with cyclic shifts of the angle axis, so it is
    exactly equivariant under rotations by multiples of :math:`2\pi/n`. The layer is linear;
    apply the nonlinearity outside (pointwise maps keep the equivariance).
    ``kernel_size = n`` gives the full group convolution (every filter tap of the group).
    Weights are He-uniform with fan-in ``in_channels * kernel_size``, biases zero.

    Args:
        in_channels: channels of the input maps.
        out_channels: channels of the output maps.
        kernel_size: filter width :math:`K` in angular steps (at most :math:`n` at call time).
        bias: add a learned bias per output channel (constant on the group: equivariant).

    Shapes:
        - **input:** :math:`(B, n, C_{\mathrm{in}})`
        - **output:** :math:`(B, n, C_{\mathrm{out}})`

    Example:
        >>> import torch
        >>> from jettag.nn.particle_conv import CyclicGroupConv
        >>> conv = CyclicGroupConv(8, 4, kernel_size=3)
        >>> conv
        CyclicGroupConv(8 -> 4, kernel_size=3)
        >>> h = torch.randn(2, 6, 8)
        >>> torch.allclose(conv(h.roll(1, dims=1)), conv(h).roll(1, dims=1), atol=1e-6)
        True
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, kernel_size: int = 3, bias: bool = True
    ) -> None:
        super().__init__()
        self.in_channels = _positive_int(in_channels, "in_channels", "channels")
        self.out_channels = _positive_int(out_channels, "out_channels", "channels")
        self.kernel_size = _positive_int(kernel_size, "kernel_size", "angular steps")
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-uniform kernel (fan-in ``in_channels * kernel_size``), zero bias."""
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, h: Tensor) -> Tensor:
        """Convolve over the angle axis: ``(B, n, C_in) -> (B, n, C_out)``."""
        if h.dim() != 3 or h.shape[2] != self.in_channels:
            raise ValueError(
                f"h: expected feature maps on the group (B, n, {self.in_channels}), found shape "
                f"{tuple(h.shape)}"
            )
        n = h.shape[1]
        if self.kernel_size > n:
            raise ValueError(
                f"kernel_size: a filter of {self.kernel_size} angular steps does not fit on a "
                f"group of {n} rotations; use kernel_size <= {n}"
            )
        left = self.kernel_size // 2
        wrapped = F.pad(h.transpose(1, 2), (left, self.kernel_size - 1 - left), mode="circular")
        return F.conv1d(wrapped, self.weight, self.bias).transpose(1, 2)

    def __repr__(self) -> str:
        extra = "" if self.bias is not None else ", bias=False"
        return (
            f"{type(self).__name__}({self.in_channels} -> {self.out_channels}, "
            f"kernel_size={self.kernel_size}{extra})"
        )
