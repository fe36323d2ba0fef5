"""Particle Flow Network (PFN) and Energy Flow Network (EFN) taggers.

Komiske, Metodiev, Thaler, "Energy Flow Networks: Deep Sets for Particle Jets",
JHEP 01 (2019) 121, arXiv:1810.05165. Defaults follow the energyflow package
(thaler-lab/EnergyFlow): ``examples/pfn_example.py`` and ``examples/efn_example.py`` use
``Phi_sizes=(100, 100, 128)``, ``F_sizes=(100, 100, 100)`` (the paper's runs, noted in the
same files, used a latent dimension of 256); ``energyflow/archs/efn.py`` gives ReLU on every
layer including the latent one, He-uniform kernels, zero biases, no dropout, and an output
``Dense(num_classes)`` (here returning logits; energyflow applies a softmax).

Inputs, as the examples prepare them: each jet is centred on its pT-weighted centroid in
``(y, phi)`` and its pT are divided by their sum, ``z_i = pT_i / sum_j pT_j``; there is no
rotation or reflection. The PFN sees ``(z_i, y_i - y_J, phi_i - phi_J)`` (plus the PDG id
mapped by energyflow's ``remap_pids`` for quark/gluon jets), the EFN weights
``Phi(y_i - y_J, phi_i - phi_J)`` by ``z_i``. jettag differs only in that each azimuth is
unwrapped around the leading particle before averaging and every ``d_phi`` is wrapped (see
:func:`jettag.physics.jet_axis`), so jets near ``phi = +-pi`` are centred correctly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

from jettag import physics
from jettag.nn.deep_sets import DeepSetsEncoder, EnergyFlowLayer
from jettag.ops import segment_sum

if TYPE_CHECKING:
    from jettag.data.batch import JetBatch

__all__ = [
    "EFN",
    "PFN",
    "PID2FLOAT",
    "EnergyFlowInputs",
    "ParticleFlowInputs",
    "default_config",
    "efn",
    "pfn",
]

Coordinates = Literal["yphi", "etaphi"]
Axis = Literal["centroid", "p4"]
PIDEncoding = Literal["float", "onehot"]
Task = Literal["top", "qg"]

#: energyflow's ``PID2FLOAT_MAP`` (``energyflow/utils/data_utils.py``): PDG id -> small float,
#: the PFN-ID input of arXiv:1810.05165. Unknown ids map to 0 (``error_on_unknown=False``,
#: as in ``examples/pfn_example.py``), the same value as photons.
PID2FLOAT: dict[int, float] = {
    22: 0.0,
    211: 0.1, -211: 0.2,
    321: 0.3, -321: 0.4,
    130: 0.5,
    2112: 0.6, -2112: 0.7,
    2212: 0.8, -2212: 0.9,
    11: 1.0, -11: 1.1,
    13: 1.2, -13: 1.3,
}

_TASKS = ("top", "qg")


class EnergyFlowInputs(nn.Module):
    r"""Energy fractions and angles of each particle relative to its jet axis.

    .. math::
        z_i = \frac{p_{T,i}}{\sum_{j \in J} p_{T,j}}, \qquad
        \hat{\mathbf{p}}_i = (y_i - y_J,\ \phi_i - \phi_J)

    with :math:`(y_J, \phi_J)` the pT-weighted centroid (``axis="centroid"``, energyflow's
    preprocessing; azimuths unwrapped around the leading particle) or the direction of the
    summed four-momentum (``axis="p4"``); :math:`\Delta\phi` is wrapped into
    :math:`[-\pi, \pi)`. ``coords="etaphi"`` uses the pseudorapidity instead of the
    rapidity (identical for massless constituents). Both axes, the fractions and the angles
    are infrared and collinear safe: a zero-pT particle changes none of them, and splitting
    a particle into collinear fragments changes only its own fraction. Jets whose pT sum
    is 0 get :math:`z_i = 0`.

    Args:
        coords: ``"yphi"`` (rapidity, energyflow) or ``"etaphi"`` (pseudorapidity).
        axis: ``"centroid"`` (energyflow) or ``"p4"``.

    Shapes:
        - **input:** a :class:`~jettag.data.JetBatch` of ``B`` jets, ``P`` particles
        - **output:** ``z`` :math:`(P,)`, ``angles`` :math:`(P, 2)`

    Example:
        >>> import torch
        >>> from jettag.data import JetBatch
        >>> from jettag.models.deep_sets import EnergyFlowInputs
        >>> p4 = torch.tensor([[10.0, 6.0, 0.0, 8.0], [5.0, 3.0, 0.0, 4.0]])
        >>> z, angles = EnergyFlowInputs()(JetBatch.from_counts(p4, [2]))
        >>> z
        tensor([0.6667, 0.3333])
        >>> angles.abs().max() < 1e-6
        tensor(True)
    """

    def __init__(self, *, coords: Coordinates = "yphi", axis: Axis = "centroid") -> None:
        super().__init__()
        if coords not in ("yphi", "etaphi"):
            raise ValueError(f"coords: expected 'yphi' or 'etaphi', found {coords!r}")
        if axis not in ("centroid", "p4"):
            raise ValueError(f"axis: expected 'centroid' or 'p4', found {axis!r}")
        self.coords = coords
        self.axis = axis

    def forward(self, batch: JetBatch) -> tuple[Tensor, Tensor]:
        p4, ptr, index = batch.p4, batch.ptr, batch.batch
        num_jets = batch.num_jets
        pt = physics.pt(p4)
        pt_sum = segment_sum(pt, ptr)
        has_pt = pt_sum > 0
        safe = torch.where(has_pt, pt_sum, torch.ones_like(pt_sum))
        z = torch.where(has_pt[index], pt / safe[index], torch.zeros_like(pt))
        rel = physics.relative_etaphi(p4, batch=index, num_jets=num_jets, kind=self.axis)
        if self.coords == "etaphi":
            return z, rel
        y = physics.rapidity(p4)
        if self.axis == "p4":
            y_axis = physics.rapidity(segment_sum(p4, ptr))
        else:
            y_axis = torch.where(has_pt, segment_sum(pt * y, ptr) / safe, torch.zeros_like(safe))
        return z, torch.stack([y - y_axis[index], rel[:, 1]], dim=-1)

    def extra_repr(self) -> str:
        return f"coords={self.coords}, axis={self.axis}"


class ParticleFlowInputs(nn.Module):
    r"""Per-particle PFN features: energy fraction, angles from the jet axis, optional PID.

    .. math::
        \mathbf{x}_i = \big(z_i,\ y_i - y_J,\ \phi_i - \phi_J\ [,\ \mathrm{pid}(i)]\big)

    with :math:`z_i` and the angles of :class:`EnergyFlowInputs`. The PDG id is read from
    column ``pid_column`` of ``JetBatch.x`` and encoded as energyflow's ``remap_pids``
    (``pid="float"``: one channel, :data:`PID2FLOAT`) or one-hot over the 14 ids of that map
    plus one "other" channel (``pid="onehot"``, 15 channels).

    Args:
        pid: ``None`` (kinematics only), ``"float"`` or ``"onehot"``.
        pid_column: column of ``JetBatch.x`` holding the PDG id (as a float).
        coords: ``"yphi"`` or ``"etaphi"``, as :class:`EnergyFlowInputs`.
        axis: ``"centroid"`` or ``"p4"``, as :class:`EnergyFlowInputs`.

    Shapes:
        - **input:** a :class:`~jettag.data.JetBatch` of ``P`` particles
        - **output:** :math:`(P, C)` with ``C = out_channels`` (3, 4 or 18)

    Example:
        >>> import torch
        >>> from jettag.data import JetBatch
        >>> from jettag.models.deep_sets import ParticleFlowInputs
        >>> p4 = torch.tensor([[10.0, 6.0, 0.0, 8.0], [5.0, 3.0, 0.0, 4.0]])
        >>> jets = JetBatch.from_counts(p4, [2], x=torch.tensor([[211.0], [22.0]]))
        >>> ParticleFlowInputs(pid="float")(jets)[:, [0, 3]]
        tensor([[0.6667, 0.1000],
                [0.3333, 0.0000]])
    """

    def __init__(
        self,
        *,
        pid: PIDEncoding | None = None,
        pid_column: int = 0,
        coords: Coordinates = "yphi",
        axis: Axis = "centroid",
    ) -> None:
        super().__init__()
        if pid not in (None, "float", "onehot"):
            raise ValueError(f"pid: expected None, 'float' or 'onehot', found {pid!r}")
        if isinstance(pid_column, bool) or not isinstance(pid_column, int) or pid_column < 0:
            raise ValueError(f"pid_column: expected a column index >= 0, found {pid_column!r}")
        self.angular = EnergyFlowInputs(coords=coords, axis=axis)
        self.pid = pid
        self.pid_column = pid_column
        self.register_buffer(
            "pid_ids", torch.tensor(list(PID2FLOAT), dtype=torch.int64), persistent=False
        )
        self.register_buffer(
            "pid_values", torch.tensor(list(PID2FLOAT.values())), persistent=False
        )
        self.out_channels = 3 + {None: 0, "float": 1, "onehot": len(PID2FLOAT) + 1}[pid]

    def forward(self, batch: JetBatch) -> Tensor:
        z, angles = self.angular(batch)
        columns = [z.unsqueeze(-1), angles]
        if self.pid is not None:
            columns.append(self._encode_pid(batch))
        return torch.cat(columns, dim=-1)

    def _encode_pid(self, batch: JetBatch) -> Tensor:
        x = batch.x
        if x is None or x.shape[1] <= self.pid_column:
            found = "no x" if x is None else f"x with {x.shape[1]} column(s)"
            raise ValueError(
                f"batch: pid={self.pid!r} reads the PDG id from column {self.pid_column} of "
                f"JetBatch.x, found {found}; pass pid=None for kinematics only or set "
                "pid_column"
            )
        match = x[:, self.pid_column].round().to(torch.int64).unsqueeze(-1) == self.pid_ids
        values = self.pid_values.to(batch.dtype)
        if self.pid == "float":
            return (match.to(batch.dtype) * values).sum(-1, keepdim=True)
        other = ~match.any(-1, keepdim=True)
        return torch.cat([match, other], dim=-1).to(batch.dtype)

    def extra_repr(self) -> str:
        pid = "" if self.pid is None else f"pid={self.pid}, pid_column={self.pid_column}, "
        return f"{pid}coords={self.angular.coords}, axis={self.angular.axis}"


def _check_task(task: str) -> None:
    if task not in _TASKS:
        raise ValueError(f"task: expected one of {list(_TASKS)}, found {task!r}")


def _head(in_channels: int, num_classes: int) -> nn.Linear:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes: expected a positive int, found {num_classes!r}")
    head = nn.Linear(in_channels, num_classes)
    # energyflow's output Dense keeps the Keras default: Glorot-uniform kernel, zero bias.
    nn.init.xavier_uniform_(head.weight)
    nn.init.zeros_(head.bias)
    return head


class PFN(nn.Module):
    r"""Particle Flow Network tagger (arXiv:1810.05165): Deep Sets on per-particle features.

    .. math::
        \mathrm{logits}_J = W\,F\Big(\sum_{i \in J} \Phi(z_i, \Delta y_i, \Delta\phi_i
        [, \mathrm{pid}_i])\Big) + b

    with the inputs of :class:`ParticleFlowInputs` and the encoder of
    :class:`~jettag.nn.DeepSetsEncoder`. Permutation invariant and exact per jet (no
    padding). Not infrared or collinear safe: :math:`\Phi` sees the energy fraction and a
    zero-energy particle still adds :math:`\Phi(0, \ldots) \ne 0`.

    Args:
        num_classes: number of output logits.
        phi_channels: :math:`\Phi` widths (default ``(100, 100, 128)``, energyflow examples).
        f_channels: :math:`F` widths (default ``(100, 100, 100)``).
        pid: particle-id encoding, ``None``, ``"float"`` (energyflow) or ``"onehot"``.
        pid_column: column of ``JetBatch.x`` holding the PDG id.
        coords: ``"yphi"`` (energyflow) or ``"etaphi"``.
        axis: ``"centroid"`` (energyflow) or ``"p4"``.
        latent_dropout: dropout on the latent sum.
        f_dropout: dropout after each :math:`F` layer.

    Shapes:
        - **input:** a :class:`~jettag.data.JetBatch` of ``B`` jets
        - **output:** logits :math:`(B, \mathrm{num\_classes})`

    Example:
        >>> import torch
        >>> from jettag.data import JetBatch
        >>> from jettag.models.deep_sets import PFN
        >>> model = PFN(**PFN.default_config("top"))
        >>> p4 = torch.tensor([[10.0, 6.0, 0.0, 8.0], [5.0, 3.0, 0.1, 4.0], [7.0, 0.0, 5.0, 4.0]])
        >>> model(JetBatch.from_counts(p4, [2, 1])).shape
        torch.Size([2, 2])
    """

    def __init__(
        self,
        num_classes: int = 2,
        *,
        phi_channels: Sequence[int] = (100, 100, 128),
        f_channels: Sequence[int] = (100, 100, 100),
        pid: PIDEncoding | None = None,
        pid_column: int = 0,
        coords: Coordinates = "yphi",
        axis: Axis = "centroid",
        latent_dropout: float = 0.0,
        f_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.inputs = ParticleFlowInputs(pid=pid, pid_column=pid_column, coords=coords, axis=axis)
        self.encoder = DeepSetsEncoder(
            self.inputs.out_channels,
            phi_channels,
            f_channels,
            latent_dropout=latent_dropout,
            f_dropout=f_dropout,
        )
        self.head = _head(self.encoder.out_channels, num_classes)

    @classmethod
    def default_config(cls, task: Task) -> dict[str, Any]:
        """Keyword arguments of the energyflow defaults for ``task`` (``"top"`` or ``"qg"``).

        Both tasks use ``Phi (100, 100, 128)``, ``F (100, 100, 100)``, centroid axis and
        ``(y, phi)``; quark/gluon jets add the PDG id as energyflow's float code
        (``pfn_example.py``: ``use_pids = True``) from column 0 of ``JetBatch.x``, where
        the quark/gluon reader's ``part_pid`` lands when read with ``x_fields=["part_pid"]``.
        """
        _check_task(task)
        return {
            "num_classes": 2,
            "phi_channels": (100, 100, 128),
            "f_channels": (100, 100, 100),
            "pid": "float" if task == "qg" else None,
            "pid_column": 0,
            "coords": "yphi",
            "axis": "centroid",
        }

    def forward(self, batch: JetBatch) -> Tensor:
        return self.head(self.encoder(self.inputs(batch), batch.ptr))


class EFN(nn.Module):
    r"""Energy Flow Network tagger (arXiv:1810.05165): infrared and collinear safe Deep Sets.

    .. math::
        \mathrm{logits}_J = W\,F\Big(\sum_{i \in J} z_i\,\Phi(\Delta y_i, \Delta\phi_i)\Big)
        + b, \qquad z_i = p_{T,i} / \textstyle\sum_{j \in J} p_{T,j}

    with the inputs of :class:`EnergyFlowInputs` and the layer of
    :class:`~jettag.nn.EnergyFlowLayer`. Infrared and collinear safe by construction:
    adding a particle of vanishing pT changes the output by an amount that vanishes with
    it (exactly nothing at pT = 0), and a collinear split leaves it unchanged.

    Args:
        num_classes: number of output logits.
        phi_channels: :math:`\Phi` widths (default ``(100, 100, 128)``, energyflow examples).
        f_channels: :math:`F` widths (default ``(100, 100, 100)``).
        coords: ``"yphi"`` (energyflow) or ``"etaphi"``.
        axis: ``"centroid"`` (energyflow) or ``"p4"``.
        latent_dropout: dropout on the latent sum.
        f_dropout: dropout after each :math:`F` layer.

    Shapes:
        - **input:** a :class:`~jettag.data.JetBatch` of ``B`` jets
        - **output:** logits :math:`(B, \mathrm{num\_classes})`

    Example:
        >>> import torch
        >>> from jettag.data import JetBatch
        >>> from jettag.models.deep_sets import EFN
        >>> model = EFN(**EFN.default_config("qg"))
        >>> p4 = torch.tensor([[10.0, 6.0, 0.0, 8.0], [5.0, 3.0, 0.1, 4.0], [7.0, 0.0, 5.0, 4.0]])
        >>> model(JetBatch.from_counts(p4, [2, 1])).shape
        torch.Size([2, 2])
    """

    def __init__(
        self,
        num_classes: int = 2,
        *,
        phi_channels: Sequence[int] = (100, 100, 128),
        f_channels: Sequence[int] = (100, 100, 100),
        coords: Coordinates = "yphi",
        axis: Axis = "centroid",
        latent_dropout: float = 0.0,
        f_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.inputs = EnergyFlowInputs(coords=coords, axis=axis)
        self.encoder = EnergyFlowLayer(
            phi_channels, f_channels, latent_dropout=latent_dropout, f_dropout=f_dropout
        )
        self.head = _head(self.encoder.out_channels, num_classes)

    @classmethod
    def default_config(cls, task: Task) -> dict[str, Any]:
        """Keyword arguments of the energyflow defaults for ``task`` (``"top"`` or ``"qg"``).

        Both tasks use ``Phi (100, 100, 128)``, ``F (100, 100, 100)`` on ``(y, phi)`` from
        the pT-weighted centroid (``efn_example.py``; the EFN never sees particle ids).
        """
        _check_task(task)
        return {
            "num_classes": 2,
            "phi_channels": (100, 100, 128),
            "f_channels": (100, 100, 100),
            "coords": "yphi",
            "axis": "centroid",
        }

    def forward(self, batch: JetBatch) -> Tensor:
        z, angles = self.inputs(batch)
        return self.head(self.encoder(z, angles, batch.ptr))


def pfn(**config: Any) -> PFN:
    """Build a :class:`PFN` (registry name ``"pfn"``); see :meth:`PFN.default_config`."""
    return PFN(**config)


def efn(**config: Any) -> EFN:
    """Build an :class:`EFN` (registry name ``"efn"``); see :meth:`EFN.default_config`."""
    return EFN(**config)


def default_config(task: Task, model: Literal["pfn", "efn"] = "pfn") -> dict[str, Any]:
    """Default keyword arguments of ``model`` (``"pfn"`` or ``"efn"``) for ``task``."""
    classes = {"pfn": PFN, "efn": EFN}
    if model not in classes:
        raise ValueError(f"model: expected 'pfn' or 'efn', found {model!r}")
    return classes[model].default_config(task)
