"""Plain-PyTorch reference implementations of jettag's graph and reduction primitives.

Particles are packed jet after jet; ``ptr (B+1,)`` holds the CSR offsets of the jets
(``ptr[b]:ptr[b+1]`` are the particles of jet ``b``) and ``batch (P,)`` the jet of each
particle. Every primitive works within jets only: nothing is ever computed across jets, and
empty jets are allowed everywhere (their reductions are 0).

These are the references that faster paths (fused CPU code, Triton kernels) are tested
against; they are always available and always correct.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "batch_from_ptr",
    "counts_from_ptr",
    "fully_connected_edges",
    "knn",
    "ptr_from_batch",
    "scatter_mean",
    "scatter_sum",
    "segment_max",
    "segment_mean",
    "segment_softmax",
    "segment_sum",
]


def _check_ptr(ptr: Tensor, num_rows: int | None = None, name: str = "src") -> None:
    if ptr.dim() != 1 or ptr.dtype != torch.int64 or ptr.numel() < 1:
        raise ValueError(
            f"ptr: expected 1-D int64 CSR offsets (B+1,), found {ptr.dtype} {tuple(ptr.shape)}"
        )
    if num_rows is not None and int(ptr[-1]) != num_rows:
        raise ValueError(
            f"ptr: the last offset must equal the number of rows of {name} ({num_rows}), "
            f"found {int(ptr[-1])}"
        )


def counts_from_ptr(ptr: Tensor) -> Tensor:
    """Particles per jet ``(B,)`` from CSR offsets."""
    return ptr[1:] - ptr[:-1]


def batch_from_ptr(ptr: Tensor) -> Tensor:
    """Jet index of every particle ``(P,)`` from CSR offsets ``(B+1,)``."""
    _check_ptr(ptr)
    counts = counts_from_ptr(ptr)
    return torch.repeat_interleave(torch.arange(counts.numel(), device=ptr.device), counts)


def ptr_from_batch(batch: Tensor, num_jets: int | None = None) -> Tensor:
    """CSR offsets ``(B+1,)`` from a sorted jet index ``batch (P,)``."""
    if num_jets is None:
        num_jets = int(batch.max()) + 1 if batch.numel() else 0
    if batch.numel() and bool((batch[1:] < batch[:-1]).any()):
        raise ValueError("batch: expected jet indices sorted in ascending order (packed jets)")
    counts = torch.bincount(batch, minlength=num_jets)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def scatter_sum(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """``out[i] = sum_{e: index[e] = i} src[e]``; shape ``(dim_size, ...)``."""
    if index.shape != src.shape[:1]:
        raise ValueError(
            f"index: expected shape ({src.shape[0]},) matching src's first dimension, "
            f"found {tuple(index.shape)}"
        )
    out = src.new_zeros((dim_size, *src.shape[1:]))
    return out.index_add_(0, index, src)


def scatter_mean(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """Mean of ``src`` rows sharing an index; 0 where no row has that index."""
    total = scatter_sum(src, index, dim_size)
    count = torch.bincount(index, minlength=dim_size).clamp_min(1).to(src.dtype)
    return total / count.view(-1, *([1] * (src.dim() - 1)))


def segment_sum(src: Tensor, ptr: Tensor) -> Tensor:
    """Sum over each jet's particles: ``(P, ...) -> (B, ...)``."""
    _check_ptr(ptr, src.shape[0])
    return scatter_sum(src, batch_from_ptr(ptr), ptr.numel() - 1)


def segment_mean(src: Tensor, ptr: Tensor) -> Tensor:
    """Mean over each jet's real particles (divides by the true count; empty jet -> 0)."""
    total = segment_sum(src, ptr)
    count = counts_from_ptr(ptr).clamp_min(1).to(src.dtype)
    return total / count.view(-1, *([1] * (src.dim() - 1)))


def segment_max(src: Tensor, ptr: Tensor) -> Tensor:
    """Maximum over each jet's particles (empty jet -> 0)."""
    _check_ptr(ptr, src.shape[0])
    num_jets = ptr.numel() - 1
    batch = batch_from_ptr(ptr)
    index = batch.view(-1, *([1] * (src.dim() - 1))).expand_as(src)
    out = src.new_full((num_jets, *src.shape[1:]), float("-inf"))
    out = out.scatter_reduce(0, index, src, "amax", include_self=True)
    empty = (counts_from_ptr(ptr) == 0).view(-1, *([1] * (src.dim() - 1)))
    return torch.where(empty, torch.zeros_like(out), out)


def segment_softmax(src: Tensor, ptr: Tensor) -> Tensor:
    """Softmax over the particles of each jet, per channel: ``(P, ...) -> (P, ...)``."""
    batch = batch_from_ptr(ptr)
    shifted = src - segment_max(src, ptr)[batch]
    expo = shifted.exp()
    return expo / segment_sum(expo, ptr)[batch]


def _padded_positions(x: Tensor, ptr: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Scatter packed rows into ``(B, N, D)`` with positions; returns padded, mask, position."""
    counts = counts_from_ptr(ptr)
    num_jets = counts.numel()
    n_max = int(counts.max()) if num_jets else 0
    batch = batch_from_ptr(ptr)
    pos = torch.arange(x.shape[0], device=x.device) - ptr[batch]
    padded = x.new_zeros(num_jets, n_max, x.shape[1])
    padded[batch, pos] = x
    mask = torch.zeros(num_jets, n_max, dtype=torch.bool, device=x.device)
    mask[batch, pos] = True
    return padded, mask, pos


def knn(x: Tensor, ptr: Tensor, k: int, *, include_self: bool = False) -> tuple[Tensor, Tensor]:
    """k nearest neighbours of every particle among the particles of its own jet.

    Distances are squared Euclidean in ``x``. Neighbours come nearest first; ties go to
    the lower particle index. A jet with fewer than ``k + 1`` particles (``k`` with
    ``include_self``) fills the missing slots with ``valid = False`` and the particle's own
    index, so the index is always safe to gather with.

    Args:
        x: coordinates ``(P, D)`` of packed particles.
        ptr: CSR offsets ``(B+1,)``.
        k: neighbours per particle.
        include_self: count the particle itself among its neighbours (distance 0).

    Returns:
        ``index (P, k)`` int64 global particle indices and ``valid (P, k)`` bool.
    """
    if x.dim() != 2:
        raise ValueError(f"x: expected coordinates (P, D), found shape {tuple(x.shape)}")
    _check_ptr(ptr, x.shape[0], "x")
    if k < 1:
        raise ValueError(f"k: expected a positive number of neighbours, found {k}")
    num = x.shape[0]
    self_index = torch.arange(num, device=x.device)
    if num == 0:
        empty = torch.zeros(0, k, dtype=torch.int64, device=x.device)
        return empty, empty.bool()
    padded, mask, pos = _padded_positions(x, ptr)
    batch = batch_from_ptr(ptr)
    n_max = padded.shape[1]
    # Distances only within each jet: (B, N, N).
    sq = (padded * padded).sum(-1)
    dist = sq[:, :, None] + sq[:, None, :] - 2 * padded @ padded.transpose(1, 2)
    dist = dist.clamp_min(0)
    blocked = ~mask[:, None, :]
    if not include_self:
        blocked = blocked | torch.eye(n_max, dtype=torch.bool, device=x.device)[None]
    dist = dist.masked_fill(blocked, float("inf"))
    # Stable sort keeps the lower index first among equal distances.
    kk = min(k, n_max)
    order = torch.sort(dist, dim=-1, stable=True).indices[..., :kk]
    chosen = torch.gather(dist, -1, order)
    rows_order = order[batch, pos]
    rows_valid = torch.isfinite(chosen[batch, pos])
    index = self_index[:, None].expand(num, k).clone()
    valid = torch.zeros(num, k, dtype=torch.bool, device=x.device)
    global_index = rows_order + ptr[batch][:, None]
    index[:, :kk] = torch.where(rows_valid, global_index, self_index[:, None])
    valid[:, :kk] = rows_valid
    return index, valid


def fully_connected_edges(ptr: Tensor, *, self_loops: bool = False) -> Tensor:
    """All ordered pairs ``(i, j)`` of particles within each jet, ``edge_index (2, E)``.

    Row 0 is the receiver ``i``, row 1 the sender ``j``; edges are grouped by receiver in
    ascending order, senders ascending within a receiver.
    """
    _check_ptr(ptr)
    counts = counts_from_ptr(ptr)
    batch = batch_from_ptr(ptr)
    # Each receiver i has counts[batch[i]] candidate senders: its jet's particles.
    per_receiver = counts[batch]
    receivers = torch.repeat_interleave(torch.arange(batch.numel(), device=ptr.device),
                                        per_receiver)
    starts = torch.repeat_interleave(ptr[:-1][batch], per_receiver)
    offsets = torch.arange(receivers.numel(), device=ptr.device) - torch.repeat_interleave(
        per_receiver.cumsum(0) - per_receiver, per_receiver
    )
    senders = starts + offsets
    if not self_loops:
        keep = senders != receivers
        receivers, senders = receivers[keep], senders[keep]
    return torch.stack([receivers, senders])
