r"""Rotational Particle Convolution Network taggers: rPCN and IRC-safe rPCN.

C. Shimmin, "Particle Convolution for High Energy Physics", arXiv:2107.02908. No code was
released; the layers are reconstructed in :mod:`jettag.nn.particle_conv` and the choices the
paper does not fix (group discretisation, widths, pooling, inputs) are listed in
``jettag/nn/particle_conv_design.md``.

Both taggers share one trunk,

.. math::
    \mathrm{logits}_J = W\, F\Big(\mathrm{pool}_k\, h^{(L)}(\theta_k)\Big) + b, \qquad
    h^{(l)} = \mathrm{ReLU}\big(\psi^{(l)} \star h^{(l-1)}\big), \qquad h^{(0)} = f,

where :math:`f` is the jet lifted to a function on the rotations :math:`\theta_k = 2\pi k/n`
about the jet axis, :math:`\psi^{(l)} \star` are circular group convolutions, the pooling is
a mean (or max) over the group and :math:`F` an MLP. They differ in the lift:

* :class:`RPCN` (PFN-like, not IRC safe): :math:`f(\theta_k) = \sum_i
  \Phi(R_{-\theta_k}\hat{\mathbf{x}}_i, z_i\,[, \mathrm{pid}_i])`;
* :class:`IRCSafeRPCN` (EFN-like): :math:`f(\theta_k) = \sum_i z_i\,
  \Phi(R_{-\theta_k}\hat{\mathbf{x}}_i)`.

Inputs: :math:`\hat{\mathbf{x}}_i = (\Delta\eta_i, \Delta\phi_i)` from the pT-weighted
centroid (azimuths unwrapped around the leading particle, every :math:`\Delta\phi` wrapped),
:math:`z_i = p_{T,i} / \sum_j p_{T,j}`; pseudorapidity rather than rapidity because
:func:`jettag.physics.rotate_about_jet_axis` rotates in :math:`(\eta, \phi)` keeping pT and
mass. The centroid is left fixed by those rotations, so both taggers are invariant under
rotations by multiples of :math:`2\pi/n` about it to rounding (float64: about 1e-14).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

from jettag.models.deep_sets import (
    EnergyFlowInputs,
    ParticleFlowInputs,
    PIDEncoding,
    _check_task,
    _head,
)
from jettag.nn.deep_sets import _dense_relu, _sizes
from jettag.nn.particle_conv import (
    CyclicGroupConv,
    GroupPooling,
    IRCSafeRotationalParticleConv,
    RotationalParticleConv,
    group_pool,
)

if TYPE_CHECKING:
    from jettag.data.batch import JetBatch

__all__ = ["RPCN", "IRCSafeRPCN", "default_config", "rpcn", "rpcn_irc"]

Task = Literal["top", "qg"]


class _RotationalPCN(nn.Module):
    """Shared trunk: group convolutions + ReLU, pooling over the group, F, linear head."""

    lift: nn.Module

    def _build_trunk(
        self,
        num_classes: int,
        lift_channels: int,
        conv_channels: Sequence[int],
        kernel_size: int,
        f_channels: Sequence[int],
        pool: GroupPooling,
        f_dropout: float,
    ) -> None:
        self.num_classes = num_classes
        self.conv_channels = _sizes(conv_channels, "conv_channels", allow_empty=True)
        self.f_channels = _sizes(f_channels, "f_channels", allow_empty=True)
        if pool not in ("mean", "max"):
            raise ValueError(f"pool: expected 'mean' or 'max', found {pool!r}")
        if not 0.0 <= f_dropout < 1.0:
            raise ValueError(f"f_dropout: expected a dropout rate in [0, 1), found {f_dropout}")
        if kernel_size > self.lift.num_rotations:
            raise ValueError(
                f"kernel_size: a filter of {kernel_size} angular steps does not fit on "
                f"num_rotations={self.lift.num_rotations}; use kernel_size <= num_rotations"
            )
        self.pool = pool
        widths = (lift_channels, *self.conv_channels)
        self.convs = nn.ModuleList(
            CyclicGroupConv(a, b, kernel_size=kernel_size) for a, b in itertools.pairwise(widths)
        )
        self.f = _dense_relu(widths[-1], self.f_channels, f_dropout)
        for module in self.f.modules():
            if isinstance(module, nn.Linear):
                nn.init.kaiming_uniform_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)
        self.head = _head((self.f_channels or widths)[-1], num_classes)

    def lift_batch(self, batch: JetBatch) -> Tensor:
        """The jets lifted to functions on the group, ``(B, n, C)``."""
        raise NotImplementedError

    def feature_maps(self, batch: JetBatch) -> list[Tensor]:
        """Every feature map on the group, ``(B, n, C_l)``: the lift, then each convolution
        (after its ReLU). A rotation by ``2 pi m / n`` rolls each of them by ``m`` on dim 1."""
        maps = [self.lift_batch(batch)]
        for conv in self.convs:
            maps.append(torch.relu(conv(maps[-1])))
        return maps

    def forward(self, batch: JetBatch) -> Tensor:
        pooled = group_pool(self.feature_maps(batch)[-1], self.pool)
        return self.head(self.f(pooled))


class RPCN(_RotationalPCN):
    r"""Rotational Particle Convolution Network (arXiv:2107.02908), PFN-like lift.

    .. math::
        f(\theta_k) = \sum_{i \in J} \Phi\big(R_{-\theta_k}\hat{\mathbf{x}}_i,\ z_i\,
        [, \mathrm{pid}_i]\big), \qquad \theta_k = 2\pi k / n,

    then group convolutions, pooling over the group, :math:`F` and a linear head (see
    :mod:`jettag.models.rpcn`). The per-particle scalars are those of
    :class:`~jettag.models.deep_sets.ParticleFlowInputs` (``z`` and the optional PDG-id
    code); the angles :math:`(\Delta\eta, \Delta\phi)` from the pT-weighted centroid.
    Exactly invariant under rotations about the centroid by multiples of :math:`2\pi/n`,
    approximately under other angles; permutation invariant, exact per jet. Not infrared or
    collinear safe: :math:`\Phi` sees :math:`z_i` and a zero-energy particle still adds
    :math:`\Phi(\ldots, 0) \ne 0`.

    Args:
        num_classes: number of output logits.
        num_rotations: order :math:`n` of the rotation group :math:`C_n`.
        phi_channels: widths of :math:`\Phi`; the last is the number of lifted channels.
        conv_channels: widths of the group-convolution layers.
        kernel_size: group-convolution filter width in angular steps.
        f_channels: widths of :math:`F` after the pooling.
        pool: pooling over the group, ``"mean"`` or ``"max"``.
        pid: particle-id encoding, ``None``, ``"float"`` (energyflow) or ``"onehot"``.
        pid_column: column of ``JetBatch.x`` holding the PDG id.
        f_dropout: dropout after each :math:`F` layer.

    Shapes:
        - **input:** a :class:`~jettag.data.JetBatch` of ``B`` jets
        - **output:** logits :math:`(B, \mathrm{num\_classes})`

    Example:
        >>> import torch
        >>> from jettag.data import JetBatch
        >>> from jettag.models.rpcn import RPCN
        >>> model = RPCN(**RPCN.default_config("top"))
        >>> p4 = torch.tensor([[10.0, 6.0, 0.0, 8.0], [5.0, 3.0, 0.1, 4.0], [7.0, 0.0, 5.0, 4.0]])
        >>> model(JetBatch.from_counts(p4, [2, 1])).shape
        torch.Size([2, 2])
    """

    def __init__(
        self,
        num_classes: int = 2,
        *,
        num_rotations: int = 16,
        phi_channels: Sequence[int] = (64, 64, 64),
        conv_channels: Sequence[int] = (64, 64, 64),
        kernel_size: int = 3,
        f_channels: Sequence[int] = (64,),
        pool: GroupPooling = "mean",
        pid: PIDEncoding | None = None,
        pid_column: int = 0,
        f_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.inputs = ParticleFlowInputs(
            pid=pid, pid_column=pid_column, coords="etaphi", axis="centroid"
        )
        phi = _sizes(phi_channels, "phi_channels", allow_empty=False)
        self.lift = RotationalParticleConv(
            self.inputs.out_channels - 2, phi[-1], hidden_channels=phi[:-1],
            num_rotations=num_rotations,
        )
        self._build_trunk(
            num_classes, phi[-1], conv_channels, kernel_size, f_channels, pool, f_dropout
        )

    @classmethod
    def default_config(cls, task: Task) -> dict[str, Any]:
        """Keyword arguments for ``task`` (``"top"`` or ``"qg"``): ~50k parameters.

        ``C16``, ``Phi (64, 64, 64)``, three group convolutions of 64 channels with
        3-step filters, mean pooling, ``F (64,)``; quark/gluon jets add the PDG id as
        energyflow's float code from column 0 of ``JetBatch.x`` (as
        :meth:`jettag.models.deep_sets.PFN.default_config`). Sizes are ours (see the design
        note): the paper's are not available.
        """
        _check_task(task)
        return {
            "num_classes": 2,
            "num_rotations": 16,
            "phi_channels": (64, 64, 64),
            "conv_channels": (64, 64, 64),
            "kernel_size": 3,
            "f_channels": (64,),
            "pool": "mean",
            "pid": "float" if task == "qg" else None,
            "pid_column": 0,
        }

    def lift_batch(self, batch: JetBatch) -> Tensor:
        features = self.inputs(batch)  # (z, d_eta, d_phi[, pid...])
        angles = features[:, 1:3]
        scalars = torch.cat([features[:, :1], features[:, 3:]], dim=1)
        return self.lift(angles, batch.ptr, scalars)


class IRCSafeRPCN(_RotationalPCN):
    r"""Infrared and collinear safe rPCN (arXiv:2107.02908), EFN-like lift.

    .. math::
        f(\theta_k) = \sum_{i \in J} z_i\, \Phi\big(R_{-\theta_k}\hat{\mathbf{x}}_i\big),
        \qquad z_i = p_{T,i} / \textstyle\sum_{j \in J} p_{T,j},

    then the trunk of :class:`RPCN`. Infrared and collinear safe by construction (see
    :class:`~jettag.nn.IRCSafeRotationalParticleConv`): the inputs of
    :class:`~jettag.models.deep_sets.EnergyFlowInputs` (pT fractions, angles from the
    pT-weighted centroid) are IRC safe and everything after the lift is a function of the
    lifted map only. Exactly invariant under rotations about the centroid by multiples of
    :math:`2\pi/n`.

    Args:
        num_classes: number of output logits.
        num_rotations: order :math:`n` of the rotation group :math:`C_n`.
        phi_channels: widths of :math:`\Phi`; the last is the number of lifted channels.
        conv_channels: widths of the group-convolution layers.
        kernel_size: group-convolution filter width in angular steps.
        f_channels: widths of :math:`F` after the pooling.
        pool: pooling over the group, ``"mean"`` or ``"max"``.
        f_dropout: dropout after each :math:`F` layer.

    Shapes:
        - **input:** a :class:`~jettag.data.JetBatch` of ``B`` jets
        - **output:** logits :math:`(B, \mathrm{num\_classes})`

    Example:
        >>> import torch
        >>> from jettag.data import JetBatch
        >>> from jettag.models.rpcn import IRCSafeRPCN
        >>> model = IRCSafeRPCN(**IRCSafeRPCN.default_config("qg"))
        >>> p4 = torch.tensor([[10.0, 6.0, 0.0, 8.0], [5.0, 3.0, 0.1, 4.0], [7.0, 0.0, 5.0, 4.0]])
        >>> model(JetBatch.from_counts(p4, [2, 1])).shape
        torch.Size([2, 2])
    """

    def __init__(
        self,
        num_classes: int = 2,
        *,
        num_rotations: int = 16,
        phi_channels: Sequence[int] = (64, 64, 64),
        conv_channels: Sequence[int] = (64, 64, 64),
        kernel_size: int = 3,
        f_channels: Sequence[int] = (64,),
        pool: GroupPooling = "mean",
        f_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.inputs = EnergyFlowInputs(coords="etaphi", axis="centroid")
        phi = _sizes(phi_channels, "phi_channels", allow_empty=False)
        self.lift = IRCSafeRotationalParticleConv(
            phi[-1], hidden_channels=phi[:-1], num_rotations=num_rotations
        )
        self._build_trunk(
            num_classes, phi[-1], conv_channels, kernel_size, f_channels, pool, f_dropout
        )

    @classmethod
    def default_config(cls, task: Task) -> dict[str, Any]:
        """Keyword arguments for ``task`` (``"top"`` or ``"qg"``): ~50k parameters.

        The sizes of :meth:`RPCN.default_config`, for both tasks (no particle ids: they are
        not IRC-safe inputs).
        """
        _check_task(task)
        config = RPCN.default_config(task)
        del config["pid"], config["pid_column"]
        return config

    def lift_batch(self, batch: JetBatch) -> Tensor:
        z, angles = self.inputs(batch)
        return self.lift(z, angles, batch.ptr)


def rpcn(**config: Any) -> RPCN:
    """Build an :class:`RPCN` (registry name ``"rpcn"``); see :meth:`RPCN.default_config`."""
    return RPCN(**config)


def rpcn_irc(**config: Any) -> IRCSafeRPCN:
    """Build an :class:`IRCSafeRPCN` (registry name ``"rpcn-irc"``); see
    :meth:`IRCSafeRPCN.default_config`."""
    return IRCSafeRPCN(**config)


def default_config(task: Task, model: Literal["rpcn", "rpcn-irc"] = "rpcn") -> dict[str, Any]:
    """Default keyword arguments of ``model`` (``"rpcn"`` or ``"rpcn-irc"``) for ``task``."""
    classes = {"rpcn": RPCN, "rpcn-irc": IRCSafeRPCN}
    if model not in classes:
        raise ValueError(f"model: expected 'rpcn' or 'rpcn-irc', found {model!r}")
    return classes[model].default_config(task)
