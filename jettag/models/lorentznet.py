"""LorentzNet: a Lorentz group equivariant graph network for jet tagging (arXiv:2201.08187)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from jettag import physics
from jettag.data.batch import JetBatch
from jettag.data.features import LORENTZNET_PIDS, add_beams, lorentznet_inputs
from jettag.nn.lorentz import LGEB
from jettag.ops import counts_from_ptr, fully_connected_edges, segment_sum
from jettag.ops.fused import use_fused

__all__ = [
    "PID_MASSES",
    "LorentzNet",
    "LorentzNetInputs",
    "default_config",
    "lorentznet",
]

#: Masses (GeV) used to rebuild four-momenta from (pT, y, phi) and the PDG id: the values of
#: ``energyflow``'s particle table, with which the published quark/gluon dataset is read.
PID_MASSES: dict[int, float] = {
    11: 5.11e-4, 13: 0.10566, 22: 0.0, 130: 0.49761,
    211: 0.13957, 321: 0.49368, 2112: 0.93957, 2212: 0.93827,
}

ScalarKind = Literal["mass", "pid", "x"]
Readout = Literal["mean", "padded_mean"]
Inputs = Callable[["JetBatch"], tuple[Tensor, Tensor, Tensor]]

_TASKS: dict[str, dict[str, Any]] = {
    # Beams follow from the scalars (LorentzNetInputs): with "mass", not with "pid".
    "top": {"num_classes": 2, "scalars": "mass", "pdg_masses": False, "c_weight": 5e-3,
            "dropout": 0.2},
    "qg": {"num_classes": 2, "scalars": "pid", "pdg_masses": True, "c_weight": 1e-3,
           "dropout": 0.2},
}


def default_config(task: str) -> dict[str, Any]:
    """Keyword arguments of :class:`LorentzNet` for a task, as its authors trained it.

    ``"top"``: two beam reference particles, scalars :math:`\\psi` (one-hot(particle, beam)
    times mass), ``c_weight=5e-3``. ``"qg"``: no beams, one-hot |PDG id| scalars over
    :data:`~jettag.data.features.LORENTZNET_PIDS` with four-momenta rebuilt from PDG
    masses, ``c_weight=1e-3``. Both: 2 classes, dropout 0.2, 72 hidden channels, 6 blocks.

    Args:
        task: ``"top"`` or ``"qg"``.
    """
    try:
        return dict(_TASKS[task])
    except KeyError:
        raise ValueError(f"task: expected one of {sorted(_TASKS)}, found {task!r}") from None


class LorentzNetInputs(nn.Module):
    r"""Build LorentzNet's node scalars and four-vectors from a ``JetBatch``.

    Returns ``(scalars (P', S), x (P', 4), ptr' (B + 1,))``: the nodes are the constituents,
    preceded in each jet by two beam reference particles when ``beams``,

    .. math::
        b_\pm = \left(\sqrt{2},\, 0,\, 0,\, \pm 1\right)\quad(\text{mass } 1),

    which break the Lorentz group down to rotations about and boosts along the z axis
    (:func:`jettag.data.features.add_beams`). Scalars by ``scalars``
    (:func:`jettag.data.features.lorentznet_inputs`):

    - ``"mass"`` (S = 2): :math:`\psi\big(\mathrm{onehot}(\text{particle},
      \text{beam})\cdot m\big)` with :math:`m = \sqrt{|p^2|}` and
      :math:`\psi(a) = \mathrm{sgn}(a)\log(1 + |a|)`;
    - ``"pid"`` (S = 8, no beams): one-hot of :math:`|\mathrm{PDG\ id}|` over
      :data:`~jettag.data.features.LORENTZNET_PIDS` (an unknown id gives zeros), the id
      read from ``jets.x[:, pid_column]``;
    - ``"x"`` (S = C): ``jets.x`` as given (zeros for beams).

    With ``pdg_masses`` each four-momentum is first rebuilt from its (pT, y, phi) and the
    mass :data:`PID_MASSES` of its |PDG id| (an unknown id keeps its own mass), as the
    published quark/gluon dataset, stored as (pT, y, phi, id), is read.

    Args:
        scalars: kind of node scalars, see above.
        beams: prepend the two beam particles to every jet (default: only for ``"mass"``).
        pdg_masses: rebuild four-momenta with PDG masses (needs the PDG id).
        pid_column: column of ``jets.x`` holding the PDG id.

    Shapes:
        - **input:** a ``JetBatch`` of ``B`` jets and ``P`` particles
        - **output:** :math:`(P', S)`, :math:`(P', 4)`, :math:`(B + 1,)` with
          :math:`P' = P + 2B` with beams, else :math:`P`

    Example:
        >>> import torch
        >>> from jettag.data import JetBatch
        >>> jets = JetBatch.from_counts(torch.tensor([[5.0, 3, 0, 4], [13, 5, 12, 0]]), [2])
        >>> scalars, x, ptr = LorentzNetInputs("mass")(jets)
        >>> scalars
        tensor([[0.0000, 0.6931],
                [0.0000, 0.6931],
                [0.0000, 0.0000],
                [0.0000, 0.0000]])
        >>> ptr
        tensor([0, 4])
    """

    def __init__(
        self,
        scalars: ScalarKind = "mass",
        *,
        beams: bool | None = None,
        pdg_masses: bool = False,
        pid_column: int = 0,
    ) -> None:
        super().__init__()
        if scalars not in ("mass", "pid", "x"):
            raise ValueError(f"LorentzNetInputs: scalars must be 'mass', 'pid' or 'x', "
                             f"found {scalars!r}")
        beams = scalars == "mass" if beams is None else beams
        if scalars == "pid" and beams:
            raise ValueError("LorentzNetInputs: scalars='pid' has no scalars for beam "
                             "particles; use beams=False (as the quark/gluon model)")
        self.scalars = scalars
        self.beams = beams
        self.pdg_masses = pdg_masses
        self.pid_column = pid_column

    def num_scalars(self) -> int | None:
        """Number S of node scalars (``None`` for ``"x"``: the width of ``JetBatch.x``)."""
        return {"mass": 2, "pid": len(LORENTZNET_PIDS)}.get(self.scalars)

    def forward(self, jets: JetBatch) -> tuple[Tensor, Tensor, Tensor]:
        needs_pid = self.scalars == "pid" or self.pdg_masses
        pid = self._pid(jets) if needs_pid else None
        p4 = _with_pdg_masses(jets.p4, pid) if self.pdg_masses else jets.p4
        if self.scalars == "x":
            if jets.x is None:
                raise ValueError("LorentzNetInputs: scalars='x' needs per-particle features, "
                                 "but JetBatch.x is None")
            out = JetBatch(p4, jets.ptr, x=jets.x)
            if self.beams:
                out, _ = add_beams(out)
        else:
            out = lorentznet_inputs(JetBatch(p4, jets.ptr), scalars=self.scalars, pid=pid,
                                    beams=self.beams, unknown_pid="zero")
        return out.x, out.p4, out.ptr

    def _pid(self, jets: JetBatch) -> Tensor:
        if jets.x is None or not -jets.x.shape[1] <= self.pid_column < jets.x.shape[1]:
            found = "JetBatch.x is None" if jets.x is None else f"x has shape {tuple(jets.x.shape)}"
            raise ValueError(
                f"LorentzNetInputs: scalars={self.scalars!r}, pdg_masses={self.pdg_masses} "
                f"needs the PDG id of each particle in JetBatch.x[:, {self.pid_column}], but "
                f"{found}; build the batch with e.g. "
                f"JetBatch.from_awkward(jets, x_fields=['part_pid'])"
            )
        return jets.x[:, self.pid_column].round().to(torch.int64)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(scalars={self.scalars!r}, beams={self.beams}, "
                f"pdg_masses={self.pdg_masses})")


def _with_pdg_masses(p4: Tensor, pid: Tensor) -> Tensor:
    classes = torch.tensor(list(PID_MASSES), device=pid.device)
    masses = torch.tensor(list(PID_MASSES.values()), dtype=p4.dtype, device=p4.device)
    match = pid.abs().unsqueeze(1) == classes
    pt, y, phi, m = physics.to_ptyphim(p4).unbind(-1)
    m = torch.where(match.any(1), (match.to(p4.dtype) * masses).sum(1), m)
    return physics.from_ptyphim(pt, y, phi, m)


class LorentzNet(nn.Module):
    r"""LorentzNet: Lorentz group equivariant blocks on each jet's fully connected graph.

    From "An efficient Lorentz equivariant graph neural network for jet tagging" (S. Gong,
    Q. Meng, J. Zhang, H. Qu, C. Li, S. Qian, W. Du, Z.-M. Ma, T.-Y. Liu; arXiv:2201.08187),
    numerically equal to the authors' released code in evaluation mode (with
    ``readout="padded_mean"``). With node scalars :math:`s_i` and four-vectors
    :math:`x_i^{(0)}` from :class:`LorentzNetInputs`,

    .. math::
        h_i^{(0)} = W s_i + b,\qquad
        (h^{(l)}, x^{(l)}) = \mathrm{LGEB}_l\big(h^{(l-1)}, x^{(l-1)}; s\big),\qquad
        \mathrm{logits} = \mathrm{MLP}\Big(\frac{1}{D}\sum_{i \in \mathrm{jet}} h_i^{(L)}\Big)

    with :class:`~jettag.nn.lorentz.LGEB` blocks (no coordinate update in the last one) and
    MLP = Linear-ReLU-Dropout-Linear. The readout divisor :math:`D` is the number of nodes of
    the jet for ``readout="mean"`` (default: a jet's logits do not depend on the batch), or,
    for ``readout="padded_mean"``, the padded length of the released code plus the beam
    nodes: the number of constituents of the longest jet of the batch (``pad_to=None``,
    exactly the authors' top-tagging pipeline, but then a jet's logits depend on the rest
    of the batch), or ``pad_to`` (a longer jet keeps its own length). The released models
    were trained with the padded mean (batch-wise padding for top tagging, the dataset's
    fixed padding for quark/gluon).

    Without beams the logits are invariant under Lorentz transformations of all
    constituents. The beams are fixed only by rotations about the z axis (their sum is at
    rest), so with beams the logits are invariant under those rotations but change under
    any boost, including boosts along z.

    Args:
        num_classes: number of output logits.
        scalars, beams, pdg_masses, pid_column: how inputs are built from a ``JetBatch``
            (:class:`LorentzNetInputs`); ignored when ``inputs`` is given.
        num_scalars: number of node scalars; needed only for ``scalars="x"`` or a custom
            ``inputs``.
        hidden_channels: width of the node scalars and messages (72).
        num_layers: number of LGEB blocks (6).
        c_weight: weight of the coordinate updates.
        dropout: dropout rate before the last linear layer.
        readout: ``"mean"`` or ``"padded_mean"`` (see above).
        pad_to: constituents per jet of the padded length for ``"padded_mean"`` (``None``:
            those of the longest jet of the batch).
        inputs: custom callable mapping a ``JetBatch`` to ``(scalars, x, ptr)`` like
            :class:`LorentzNetInputs`.

    Shapes:
        - **input:** a ``JetBatch`` of ``B`` jets
        - **output:** :math:`(B, \text{num\_classes})` logits

    Example:
        >>> import torch
        >>> from jettag.data import JetBatch
        >>> model = lorentznet(**default_config("top")).eval()
        >>> sum(p.numel() for p in model.parameters())
        224072
        >>> p4 = torch.tensor([[50.0, 30, 0, 40], [130, 50, 120, 0], [25, 0, 7, 24]])
        >>> model(JetBatch.from_counts(p4, [2, 1])).shape
        torch.Size([2, 2])
    """

    def __init__(
        self,
        num_classes: int = 2,
        *,
        scalars: ScalarKind = "mass",
        beams: bool | None = None,
        pdg_masses: bool = False,
        pid_column: int = 0,
        num_scalars: int | None = None,
        hidden_channels: int = 72,
        num_layers: int = 6,
        c_weight: float = 5e-3,
        dropout: float = 0.2,
        readout: Readout = "mean",
        pad_to: int | None = None,
        inputs: Inputs | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1 or hidden_channels < 1 or num_layers < 1:
            raise ValueError(
                f"LorentzNet: num_classes, hidden_channels and num_layers must be positive, "
                f"found {num_classes}, {hidden_channels}, {num_layers}"
            )
        if readout not in ("mean", "padded_mean"):
            raise ValueError(f"LorentzNet: readout must be 'mean' or 'padded_mean', "
                             f"found {readout!r}")
        if pad_to is not None and pad_to < 0:
            raise ValueError(f"LorentzNet: pad_to must be None or >= 0, found {pad_to}")
        if inputs is None:
            inputs = LorentzNetInputs(scalars, beams=beams, pdg_masses=pdg_masses,
                                      pid_column=pid_column)
            implied = inputs.num_scalars()
            if implied is not None and num_scalars not in (None, implied):
                raise ValueError(f"LorentzNet: scalars={scalars!r} gives {implied} node "
                                 f"scalars, found num_scalars={num_scalars}")
            num_scalars = implied if implied is not None else num_scalars
        if num_scalars is None or num_scalars < 1:
            raise ValueError(f"LorentzNet: scalars='x' or a custom `inputs` needs "
                             f"num_scalars >= 1, found {num_scalars}")
        self.inputs = inputs
        self.num_classes = num_classes
        self.num_scalars = num_scalars
        self.hidden_channels = hidden_channels
        self.num_layers = num_layers
        self.c_weight = float(c_weight)
        self.readout = readout
        self.pad_to = pad_to

        self.embedding = nn.Linear(num_scalars, hidden_channels)
        self.blocks = nn.ModuleList(
            LGEB(hidden_channels, attr_channels=num_scalars, c_weight=c_weight,
                 update_x=i < num_layers - 1)
            for i in range(num_layers)
        )
        self.decoder = nn.Sequential(
            nn.Linear(hidden_channels, hidden_channels),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_channels, num_classes),
        )

    @classmethod
    def default_config(cls, task: str) -> dict[str, Any]:
        """Task-dependent keyword arguments; see :func:`default_config`."""
        return default_config(task)

    def reset_parameters(self) -> None:
        """Re-initialise all weights and BatchNorm statistics."""
        self.embedding.reset_parameters()
        for block in self.blocks:
            block.reset_parameters()
        for module in self.decoder:
            if isinstance(module, nn.Linear):
                module.reset_parameters()

    def forward(self, jets: JetBatch) -> Tensor:
        """Logits ``(B, num_classes)`` of a ``JetBatch``, inputs built by ``self.inputs``."""
        scalars, x, ptr = self.inputs(jets)
        divisor = None
        if self.readout == "padded_mean":
            divisor = self._padded_length(counts_from_ptr(jets.ptr), counts_from_ptr(ptr))
        return self.forward_tensors(scalars, x, ptr, divisor=divisor)

    def forward_tensors(
        self, scalars: Tensor, x: Tensor, ptr: Tensor, *, divisor: float | Tensor | None = None
    ) -> Tensor:
        """Logits ``(B, num_classes)`` from node ``scalars (P, S)``, four-vectors ``x (P, 4)``
        and offsets ``ptr (B + 1,)`` (beam nodes included); the readout divides each jet's
        sum by ``divisor``, a number or ``(B, 1)`` (default: its number of nodes)."""
        if scalars.dim() != 2 or scalars.shape[1] != self.num_scalars:
            raise ValueError(f"LorentzNet: scalars must be (P, {self.num_scalars}), found "
                             f"{tuple(scalars.shape)}")
        # The blocks take the full graph of every jet themselves (fused: no pair-sized
        # activations at all); unfused training shares one edge list among the blocks.
        fuse = all(block.fused for block in self.blocks) and use_fused(scalars)
        edge_index = fully_connected_edges(ptr) if self.training and not fuse else None
        h = self.embedding(scalars)
        for block in self.blocks:
            h, x = block(h, x, ptr, scalars, edge_index=edge_index)
        pooled = segment_sum(h, ptr)
        if divisor is None:
            divisor = counts_from_ptr(ptr).clamp_min(1).unsqueeze(1)
        if isinstance(divisor, Tensor):
            divisor = divisor.to(h.dtype)
        return self.decoder(pooled / divisor)

    def _padded_length(self, particle_counts: Tensor, node_counts: Tensor) -> Tensor:
        """Divisor (B, 1) of the padded mean: constituents padded to the longest jet of the
        batch (pad_to=None) or to pad_to, a longer jet keeping its own length; plus the
        nodes the inputs add (beams)."""
        if self.pad_to is None:
            length = particle_counts.max() if particle_counts.numel() else particle_counts.sum()
            length = length.expand_as(particle_counts)
        else:
            length = particle_counts.clamp_min(self.pad_to)
        divisor = (length + node_counts - particle_counts).clamp_min(1)
        return divisor.unsqueeze(1)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.num_scalars} -> {self.num_classes}, "
            f"hidden={self.hidden_channels}, layers={self.num_layers}, "
            f"c_weight={self.c_weight:g}, inputs={self.inputs!r}, readout={self.readout!r}"
            + (f", pad_to={self.pad_to}" if self.pad_to is not None else "")
            + f", params={sum(p.numel() for p in self.parameters()):,})"
        )


def lorentznet(**config: Any) -> LorentzNet:
    """LorentzNet (224,072 parameters for the top-tagging task: 2 scalars, 2 classes).

    Keyword arguments are those of :class:`LorentzNet`, defaulting to the top-tagging task
    (:func:`default_config`); e.g. ``lorentznet(**default_config("qg"))``.
    """
    return LorentzNet(**{**default_config("top"), **config})
