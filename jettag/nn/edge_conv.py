"""EdgeConv over the k nearest neighbours inside each jet (ParticleNet's block)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from jettag.ops import fused, knn, segment_max, segment_mean
from jettag.ops.fused import use_fused

__all__ = ["EdgeConv"]

_AGGREGATIONS = ("mean", "max")


class EdgeConv(nn.Module):
    r"""Edge convolution on the k-nearest-neighbour graph of each jet, as in ParticleNet.

    From "ParticleNet: Jet Tagging via Particle Clouds" (H. Qu, L. Gouskos,
    arXiv:1902.08570), after the dynamic graph CNN (arXiv:1801.07829). Every particle
    :math:`i` looks at its :math:`k` nearest particles :math:`\mathcal{N}(i)` of the same jet
    (squared Euclidean distance in ``pos``: :math:`(\Delta\eta, \Delta\phi)` for a first block,
    the previous block's features after) and updates its features :math:`x_i` as

    .. math::
        x_i' = \mathrm{ReLU}\Big(s(x_i) + \frac{1}{|\mathcal{N}(i)|}
               \sum_{j \in \mathcal{N}(i)} h_\Theta\big([x_i,\; x_j - x_i]\big)\Big),

    where :math:`h_\Theta` is three times (linear map without bias, BatchNorm, ReLU) and the
    shortcut :math:`s` is a linear map without bias followed by BatchNorm when the channel
    counts differ, the identity otherwise (as weaver-core's ``EdgeConvBlock``). With
    ``aggr="max"`` the mean over neighbours becomes a maximum.

    The first linear map is evaluated per particle, not per edge, through
    :math:`W [x_i, x_j - x_i] = (W_a - W_b)\, x_i + W_b\, x_j` with :math:`W = [W_a, W_b]`;
    the result is the same as the per-edge form up to rounding.

    Only real particles of the same jet are neighbours. A jet with fewer than ``k + 1``
    particles uses the ones it has: the mean runs over the valid neighbours, and a particle
    alone in its jet gets ``ReLU(s(x_i))``.

    BatchNorm statistics: in training mode the edge BatchNorms normalise over the real
    edges of the batch (``P * k`` rows when every jet has more than ``k`` particles) and the
    shortcut BatchNorm over the real particles. weaver-core's ``BatchNorm2d`` over
    ``(B, C, N, k)`` also counts the padded slots (which hold zeros) and, in jets with at most
    ``k`` particles, the edges to padded particles, so its batch statistics, and thus training
    steps and running averages, differ from these and depend on the padded length. In
    evaluation mode both use the running statistics and agree exactly on jets with more
    than ``k`` particles.

    Args:
        in_channels: features per particle, C.
        out_channels: widths of the three linear maps of :math:`h_\Theta`, or one int used
            for all three; the last is the output width.
        k: neighbours per particle.
        aggr: ``"mean"`` (ParticleNet) or ``"max"`` (the original EdgeConv) over neighbours.

    Shapes:
        - **x:** :math:`(P, C)` features of the packed particles
        - **pos:** :math:`(P, D)` coordinates for the neighbour search
        - **ptr:** :math:`(B + 1,)` int64 CSR offsets of the jets
        - **output:** :math:`(P, C_{out})`

    Example:
        >>> import torch
        >>> from jettag.nn.edge_conv import EdgeConv
        >>> conv = EdgeConv(7, (32, 32, 32), k=3)
        >>> conv
        EdgeConv(7 -> 32, k=3, aggr=mean)
        >>> x, pos = torch.randn(10, 7), torch.randn(10, 2)
        >>> ptr = torch.tensor([0, 6, 10])  # two jets: 6 and 4 particles
        >>> conv(x, pos, ptr).shape
        torch.Size([10, 32])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: Sequence[int] | int,
        *,
        k: int = 16,
        aggr: str = "mean",
    ) -> None:
        super().__init__()
        widths = (out_channels,) * 3 if isinstance(out_channels, int) else tuple(out_channels)
        if in_channels < 1 or not widths or any(int(w) < 1 for w in widths):
            raise ValueError(
                f"EdgeConv: expected positive in_channels and out_channels (an int or a "
                f"non-empty sequence of ints), found in_channels={in_channels}, "
                f"out_channels={out_channels!r}"
            )
        if k < 1:
            raise ValueError(f"EdgeConv: k must be a positive number of neighbours, found {k}")
        if aggr not in _AGGREGATIONS:
            raise ValueError(f"EdgeConv: aggr must be one of {_AGGREGATIONS}, found {aggr!r}")
        self.in_channels = in_channels
        self.channels = tuple(int(w) for w in widths)
        self.out_channels = self.channels[-1]
        self.k = k
        self.aggr = aggr
        #: Run through the fused operators of :mod:`jettag.ops.fused` where they apply
        #: (evaluation, and training with ``aggr="mean"``) on a fast backend; set ``False``
        #: for the plain layer. Outputs are the same up to float rounding.
        self.fused = True
        sizes = (2 * in_channels, *self.channels)
        self.linears = nn.ModuleList(
            nn.Linear(c_in, c_out, bias=False) for c_in, c_out in itertools.pairwise(sizes)
        )
        self.norms = nn.ModuleList(nn.BatchNorm1d(c) for c in self.channels)
        if in_channels == self.out_channels:
            self.shortcut: nn.Linear | None = None
            self.shortcut_norm: nn.BatchNorm1d | None = None
        else:
            self.shortcut = nn.Linear(in_channels, self.out_channels, bias=False)
            self.shortcut_norm = nn.BatchNorm1d(self.out_channels)

    def reset_parameters(self) -> None:
        """Re-initialise weights (PyTorch defaults) and BatchNorm statistics."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.BatchNorm1d)):
                module.reset_parameters()

    def forward(self, x: Tensor, pos: Tensor, ptr: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"EdgeConv: x must be (P, {self.in_channels}), found {tuple(x.shape)}")
        if pos.dim() != 2 or pos.shape[0] != x.shape[0]:
            raise ValueError(
                f"EdgeConv: pos must be (P, D) with P = {x.shape[0]} rows like x, "
                f"found {tuple(pos.shape)}"
            )
        if self.fused and use_fused(x):
            if not self.training:
                return fused.edge_conv_eval(self, x, pos, ptr)
            if self.aggr == "mean":
                return fused.edge_conv_train(self, x, pos, ptr)
        with torch.no_grad():
            index, valid = knn(pos.detach(), ptr, self.k)
        # Edges of real neighbours, grouped by receiver in ascending order.
        receivers, slots = valid.nonzero(as_tuple=True)
        senders = index[receivers, slots]
        edge_ptr = torch.zeros(x.shape[0] + 1, dtype=torch.int64, device=x.device)
        torch.cumsum(valid.sum(1), 0, out=edge_ptr[1:])

        first = self.linears[0].weight
        w_i, w_j = first[:, : self.in_channels], first[:, self.in_channels :]
        own, other = (x @ torch.cat([w_i - w_j, w_j]).T).split(self.channels[0], dim=1)
        h = own.index_select(0, receivers) + other.index_select(0, senders)
        for i, norm in enumerate(self.norms):
            if i > 0:
                h = self.linears[i](h)
            h = torch.relu(norm(h))
        reduce = segment_mean if self.aggr == "mean" else segment_max
        messages = reduce(h, edge_ptr)

        if self.shortcut is None:
            skip = x
        else:
            skip = self.shortcut_norm(self.shortcut(x))
        return torch.relu(skip + messages)

    def __repr__(self) -> str:
        if len(set(self.channels)) == 1:
            widths = str(self.out_channels)
        else:
            widths = str(self.channels)
        return (
            f"{type(self).__name__}({self.in_channels} -> {widths}, k={self.k}, aggr={self.aggr})"
        )
