"""Lorentz group equivariant block (LGEB) of LorentzNet and its Minkowski edge features.

S. Gong, Q. Meng, J. Zhang, H. Qu, C. Li, S. Qian, W. Du, Z.-M. Ma, T.-Y. Liu, "An efficient
Lorentz equivariant graph neural network for jet tagging", JHEP 07 (2022) 030,
arXiv:2201.08187. The block follows the authors' released code (sdogsq/LorentzNet-release)
where it differs from the paper: the coordinate update uses ``x_i - x_j`` (EGNN style), is
clamped and averaged over neighbours.

Metric (+, -, -, -), four-vectors ``(E, px, py, pz)`` in the last dimension.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from jettag import physics
from jettag.ops import fully_connected_edges, fused, scatter_mean, scatter_sum
from jettag.ops.fused import use_fused

__all__ = ["LGEB", "lorentz_edge_features", "pairwise_minkowski", "psi"]


def psi(a: Tensor) -> Tensor:
    r"""Signed logarithm that tames Minkowski products spanning many orders of magnitude.

    .. math::
        \psi(a) = \operatorname{sgn}(a)\,\log(1 + |a|)

    Odd, monotonic, ``psi(0) = 0``, ``psi'(0) = 1``; applied elementwise.

    Example:
        >>> import torch
        >>> psi(torch.tensor([-1.0, 0.0, 1.0]))
        tensor([-0.6931,  0.0000,  0.6931])
    """
    return torch.sign(a) * torch.log1p(a.abs())


def pairwise_minkowski(x: Tensor, edge_index: Tensor) -> Tensor:
    r"""Squared Minkowski norm of the difference and Minkowski product of each edge's ends.

    .. math::
        \left(\lVert x_i - x_j \rVert^2,\ \langle x_i, x_j \rangle\right),\qquad
        \langle a, b \rangle = a^0 b^0 - \vec a\cdot\vec b

    for each edge ``(i, j) = (edge_index[0, e], edge_index[1, e])``. Both columns are
    Lorentz invariant.

    Args:
        x: four-vectors ``(E, px, py, pz)``.
        edge_index: ``(2, E)`` int64, row 0 the receiver ``i``, row 1 the sender ``j``.

    Shapes:
        - **x:** :math:`(P, 4)`; **edge_index:** :math:`(2, E)`
        - **output:** :math:`(E, 2)`

    Example:
        >>> import torch
        >>> x = torch.tensor([[2.0, 0.0, 0.0, 1.0], [2.0, 0.0, 0.0, -1.0]])
        >>> pairwise_minkowski(x, torch.tensor([[0], [1]]))
        tensor([[-4.,  5.]])
    """
    _check_edges(x, edge_index)
    xi, xj = x[edge_index[0]], x[edge_index[1]]
    diff = xi - xj
    # E^2 - |p|^2 directly rather than physics.minkowski_norm2's (E - |p|)(E + |p|): the
    # latter's square root has no derivative at |p| = 0 (identical three-momenta).
    norm2 = diff[:, 0] ** 2 - (diff[:, 1:] ** 2).sum(-1)
    return torch.stack([norm2, physics.minkowski_dot(xi, xj)], dim=-1)


def lorentz_edge_features(x: Tensor, edge_index: Tensor) -> Tensor:
    r"""The LGEB edge invariants: :math:`\psi` of :func:`pairwise_minkowski`.

    .. math::
        \left(\psi(\lVert x_i - x_j \rVert^2),\ \psi(\langle x_i, x_j \rangle)\right)

    Args:
        x: four-vectors ``(E, px, py, pz)``.
        edge_index: ``(2, E)`` int64, row 0 the receiver ``i``, row 1 the sender ``j``.

    Shapes:
        - **x:** :math:`(P, 4)`; **edge_index:** :math:`(2, E)`
        - **output:** :math:`(E, 2)`

    Example:
        >>> import torch
        >>> x = torch.tensor([[2.0, 0.0, 0.0, 1.0], [2.0, 0.0, 0.0, -1.0]])
        >>> lorentz_edge_features(x, torch.tensor([[0], [1]]))
        tensor([[-1.6094,  1.7918]])
    """
    return psi(pairwise_minkowski(x, edge_index))


class LGEB(nn.Module):
    r"""Lorentz group equivariant block of LorentzNet (arXiv:2201.08187), on packed jets.

    Every particle ``i`` carries scalars :math:`h_i` and a four-vector :math:`x_i`; each jet
    is a fully connected graph without self edges. With
    :math:`\phi_e` = Linear(no bias)-BatchNorm-ReLU-Linear-ReLU,
    :math:`\phi_m` = Linear-sigmoid, :math:`\phi_h` = Linear-BatchNorm-ReLU-Linear and
    :math:`\phi_x` = Linear-ReLU-Linear(to 1, no bias):

    .. math::
        m_{ij} &= \phi_e\!\left(h_i, h_j, \psi(\lVert x_i - x_j\rVert^2),
                  \psi(\langle x_i, x_j\rangle)\right),\qquad
        m_{ij} \leftarrow \phi_m(m_{ij})\, m_{ij}

        h_i &\leftarrow h_i + \phi_h\!\left(h_i,\ \textstyle\sum_{j \ne i} m_{ij},\ s_i\right)

        x_i &\leftarrow x_i + c\,\frac{1}{n_i - 1}\sum_{j \ne i}
              \operatorname{clamp}\!\left((x_i - x_j)\,\phi_x(m_{ij}),\ \pm 100\right)

    where :math:`\psi(a) = \operatorname{sgn}(a)\log(1 + |a|)`, :math:`s_i` are node
    attributes (the model's input scalars, re-injected in every block), :math:`n_i` the
    number of particles of ``i``'s jet and :math:`c` = ``c_weight``. The last block of a
    network has no coordinate update (``update_x=False``; :math:`\phi_x` then does not
    exist). The clamp (elementwise, as in the released code) never binds for sensible inputs;
    where it does, equivariance is lost. ``h`` is Lorentz invariant and ``x`` equivariant.

    Args:
        channels: size of ``h`` (input and output, the update is residual).
        hidden_channels: size of the messages :math:`m_{ij}` (default ``channels``).
        attr_channels: size of the node attributes ``attr`` (0 = none).
        c_weight: weight :math:`c` of the coordinate update.
        update_x: whether to update ``x`` (``False`` for the last block).
        clamp: bound of the elementwise clamp in the coordinate update.

    Shapes:
        - **h:** :math:`(P, C)`; **x:** :math:`(P, 4)`; **ptr:** :math:`(B + 1,)` int64;
          **attr:** :math:`(P, A)` or ``None``; **edge_index:** :math:`(2, E)` or ``None``
          (default: :func:`jettag.ops.fully_connected_edges` of ``ptr``)
        - **output:** ``(h, x)`` of shapes :math:`(P, C)`, :math:`(P, 4)`

    Example:
        >>> import torch
        >>> block = LGEB(8, attr_channels=2, c_weight=5e-3)
        >>> block
        LGEB(8 -> 8, hidden=8, attr=2, c_weight=0.005, update_x=True)
        >>> ptr = torch.tensor([0, 3, 5])
        >>> x = torch.tensor([[10.0, 1, 2, 9], [5, 1, 1, 4], [7, 0, 2, 6], [3, 1, 1, 2],
        ...                   [4, 2, 1, 3]])
        >>> h, x = block.eval()(torch.randn(5, 8), x, ptr, torch.randn(5, 2))
        >>> h.shape, x.shape
        (torch.Size([5, 8]), torch.Size([5, 4]))
    """

    def __init__(
        self,
        channels: int,
        *,
        hidden_channels: int | None = None,
        attr_channels: int = 0,
        c_weight: float = 1e-3,
        update_x: bool = True,
        clamp: float = 100.0,
    ) -> None:
        super().__init__()
        hidden = channels if hidden_channels is None else hidden_channels
        for name, value in (("channels", channels), ("hidden_channels", hidden)):
            if value < 1:
                raise ValueError(f"LGEB: {name} must be a positive integer, found {value}")
        if attr_channels < 0:
            raise ValueError(f"LGEB: attr_channels must be >= 0, found {attr_channels}")
        self.channels = channels
        self.hidden_channels = hidden
        self.attr_channels = attr_channels
        self.c_weight = float(c_weight)
        #: The fully connected graph (no ``edge_index`` given) runs through
        #: :func:`jettag.ops.fused.lgeb_eval` / :func:`~jettag.ops.fused.lgeb_train` on a
        #: fast backend; ``False`` for the plain block.
        self.fused = True
        self.update_x = update_x
        self.clamp = float(clamp)

        self.phi_e = nn.Sequential(
            nn.Linear(2 * channels + 2, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )
        self.phi_m = nn.Sequential(nn.Linear(hidden, 1), nn.Sigmoid())
        self.phi_h = nn.Sequential(
            nn.Linear(channels + hidden + attr_channels, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, channels),
        )
        self.phi_x: nn.Sequential | None = None
        if update_x:
            self.phi_x = nn.Sequential(
                nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1, bias=False)
            )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default initialisation, except the last layer of :math:`\\phi_x`:
        Xavier-uniform with gain 1e-3, so that coordinates start almost unchanged."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.BatchNorm1d)):
                module.reset_parameters()
        if self.phi_x is not None:
            nn.init.xavier_uniform_(self.phi_x[-1].weight, gain=1e-3)

    def forward(
        self,
        h: Tensor,
        x: Tensor,
        ptr: Tensor,
        attr: Tensor | None = None,
        *,
        edge_index: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Update the scalars ``h`` and four-vectors ``x`` of every particle (see the class)."""
        self._check_inputs(h, x, attr)
        if edge_index is None:
            if self.fused and use_fused(h):
                if not self.training:
                    return fused.lgeb_eval(self, h, x, ptr, attr)
                return fused.lgeb_train(self, h, x, ptr, attr)
            edge_index = fully_connected_edges(ptr)
        receiver, sender = edge_index[0], edge_index[1]
        num_nodes = h.shape[0]

        edge_in = torch.cat([h[receiver], h[sender], lorentz_edge_features(x, edge_index)], 1)
        m = self.phi_e(edge_in)
        m = m * self.phi_m(m)

        if self.phi_x is not None:
            shift = (x[receiver] - x[sender]) * self.phi_x(m)
            shift = shift.clamp(-self.clamp, self.clamp)
            x = x + self.c_weight * scatter_mean(shift, receiver, num_nodes)

        parts = [h, scatter_sum(m, receiver, num_nodes)]
        if attr is not None:
            parts.append(attr)
        h = h + self.phi_h(torch.cat(parts, 1))
        return h, x

    def _check_inputs(self, h: Tensor, x: Tensor, attr: Tensor | None) -> None:
        if h.dim() != 2 or h.shape[1] != self.channels:
            raise ValueError(f"LGEB: h must have shape (P, {self.channels}), found "
                             f"{tuple(h.shape)}")
        if x.shape != (h.shape[0], 4):
            raise ValueError(f"LGEB: x must have shape (P, 4) = ({h.shape[0]}, 4) like h, "
                             f"found {tuple(x.shape)}")
        if self.attr_channels == 0:
            if attr is not None:
                raise ValueError("LGEB: attr given but the block was built with "
                                 "attr_channels=0")
        elif attr is None or attr.shape != (h.shape[0], self.attr_channels):
            found = None if attr is None else tuple(attr.shape)
            raise ValueError(f"LGEB: attr must have shape (P, {self.attr_channels}) = "
                             f"({h.shape[0]}, {self.attr_channels}), found {found}")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.channels} -> {self.channels}, "
                f"hidden={self.hidden_channels}, attr={self.attr_channels}, "
                f"c_weight={self.c_weight:g}, update_x={self.update_x})")


def _check_edges(x: Tensor, edge_index: Tensor) -> None:
    if x.dim() != 2 or x.shape[1] != 4:
        raise ValueError(f"x: expected four-vectors of shape (P, 4), found {tuple(x.shape)}")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index: expected shape (2, E), found {tuple(edge_index.shape)}")
