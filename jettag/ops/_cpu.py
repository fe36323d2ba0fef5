"""Fast CPU implementations of the :mod:`jettag.ops` primitives and fused operators.

Same signatures and results as :mod:`jettag.ops.reference` (up to float rounding), written
with vectorised PyTorch for CPUs:

- CSR segment reductions are deterministic (no atomics): rows are added in order as whole
  vectorised rows (``index_add_``; ``scatter_reduce_`` for maxima), summed as a dense
  view when every jet has the same length, or, for narrow rows, reduced by
  ``torch.segment_reduce``;
- kNN groups jets of similar size into buckets and computes each bucket's distances as one
  batched matrix product, so no distance between particles of different jets is ever formed
  and the padding waste is bounded by the bucket's size ratio; the k smallest distances are
  found with one ``topk`` over an integer key (distance bits, particle index) that breaks
  ties by the lower index exactly as the reference's stable sort;
- the fused EdgeConv and Lorentz operators run tile by tile (a few particles, or a few
  jets of one size bucket, at a time), so their per-edge activations stay in cache and are
  never all in memory; their backward passes recompute each tile. A tile's tensors are
  written into per-thread scratch memory that is reused from tile to tile and call to call
  (:func:`scratch_bytes`, :func:`release_scratch`): fresh tile-sized allocations fault on
  every page whenever glibc has returned freed memory to the system. The Lorentz operator's
  tile functions exist twice: written for eager PyTorch (in-place updates, the default)
  and written for Inductor (out of place, the gate and biases folded into the fused
  loops), which :func:`jettag.ops.dispatch.set_compiled_tiles` runs through
  ``torch.compile``; each form is the fastest of the two under its executor (measured: the
  Inductor form runs 2x slower eagerly, the eager form gains 1.1x compiled).

Where it applies (contiguous float32/float64 CPU tensors, a C compiler on the machine),
the Lorentz operator's forward and backward run on the native kernel of
:mod:`jettag.ops._native` instead of the tiles: one particle's pair rows at a time through
the whole pipeline, in C.

These functions are called by the custom ops of :mod:`jettag.ops._library`; they do not
record autograd history themselves.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from jettag.ops import _native
from jettag.ops._plans import PlanCache
from jettag.ops.dispatch import compiled_tiles

__all__ = [
    "edge_conv_messages",
    "edge_conv_messages_backward",
    "jet_buckets",
    "knn",
    "lorentz_messages",
    "lorentz_messages_backward",
    "release_scratch",
    "scatter_sum",
    "scratch_bytes",
    "segment_max",
    "segment_softmax",
    "segment_sum",
]

#: Target size in bytes of the per-edge activations of one tile of a fused operator: small
#: enough that a tile's activations stay in the caches between the layers (and below
#: glibc's largest mmap threshold, 32 MiB, above which every allocation is fresh pages that
#: fault and are zeroed), large enough that a call runs few tiles. Measured on 2 EPYC
#: cores, ParticleNet inference at batch 64/512: 311/257 jets/s with 32 MiB, 350/414 with
#: 8 MiB, 443/453 with 2 MiB, 403/420 with 512 KiB.
TILE_BYTES = 1 << 21
#: The same for one pair-sized tensor of the fused Lorentz operator (a tile holds several).
#: Measured on 2 EPYC cores, LorentzNet inference at batch 64/512 (generated jets, the two
#: sizes interleaved in one process): eager 148/143 jets/s with 2 MiB, 165/154 with 4 MiB;
#: compiled tiles 168/165 with 2 MiB, 196/204 with 4 MiB, 159 (batch 64) with 8 MiB.
LORENTZ_TILE_BYTES = 1 << 22


def _relu_grad_(grad: Tensor, out: Tensor) -> Tensor:
    """``grad`` zeroed in place where the ReLU output (or input) ``out`` is not positive:
    ReLU's backward through ATen's vectorised kernel (a multiplication by a boolean mask
    costs two passes and a temporary)."""
    return torch.ops.aten.threshold_backward.grad_input(grad, out, 0, grad_input=grad)


def _counts(ptr: Tensor) -> Tensor:
    return ptr[1:] - ptr[:-1]


def _expand(values: Tensor, ptr: Tensor, num_rows: int) -> Tensor:
    """Broadcast per-jet rows ``(B, ...)`` to the jets' particles ``(P, ...)``."""
    return torch.repeat_interleave(values, _counts(ptr), dim=0, output_size=num_rows)


# --------------------------------------------------------------------------- reductions


#: Row width (elements per row) from which the segment reductions run as vectorised row
#: operations over a jet index (``index_add_`` for sums, ``scatter_reduce_`` for maxima)
#: instead of ``torch.segment_reduce``, whose scalar loop over elements is faster only for
#: narrow rows. Measured on 2 EPYC cores (float32, 512 jets of 25-75 rows, microseconds):
#: sum at width 4 / 16 / 64 / 256: 101 / 341 / 1359 / 9074 with segment_reduce, 221 / 229 /
#: 317 / 744 with index_add_; max at width 4 / 16 / 256: 214 / 787 / 13412 with
#: segment_reduce, 228 / 239 / 656 with scatter_reduce_.
_ROW_WIDTH = 16


def _jet_index(counts: Tensor, num_rows: int) -> Tensor:
    """Jet of each row, ``(P,)`` (rows in CSR order)."""
    return torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts,
                                   output_size=num_rows)


def _uniform(counts: Tensor, num_rows: int) -> int:
    """The common length of the jets when all have the same (non-zero) one, else 0."""
    num = counts.numel()
    if num == 0 or num_rows % num:
        return 0
    length = num_rows // num
    return length if length > 0 and bool((counts == length).all()) else 0


def segment_sum(src: Tensor, ptr: Tensor) -> Tensor:
    """Sum over each jet's rows, ``(P, ...) -> (B, ...)``; empty jets give 0.

    Deterministic: rows are added in order (``index_add_`` on the CPU is a sequential loop
    over the index, each row added as a vectorised operation) or, when every jet has the
    same length, summed as a dense ``(B, L, ...)`` view."""
    counts = _counts(ptr)
    num = src.shape[0]
    if num == 0:
        return src.new_zeros((counts.numel(), *src.shape[1:]))
    width = src[0].numel()
    if width < _ROW_WIDTH:
        return torch.segment_reduce(src, "sum", lengths=counts, axis=0)
    length = _uniform(counts, num)
    if length:
        return src.reshape(counts.numel(), length, *src.shape[1:]).sum(1)
    out = src.new_zeros((counts.numel(), *src.shape[1:]))
    return out.index_add_(0, _jet_index(counts, num), src)


def _segment_max(src: Tensor, counts: Tensor) -> Tensor:
    """Maximum over each jet's rows (``src`` non-empty); empty jets give 0."""
    width = src[0].numel()
    if width < _ROW_WIDTH // 2:
        out = torch.segment_reduce(src, "max", lengths=counts, axis=0)
        empty = (counts == 0).view(-1, *([1] * (src.dim() - 1)))
        return out.masked_fill(empty, 0)
    index = _jet_index(counts, src.shape[0]).view(-1, *([1] * (src.dim() - 1))).expand_as(src)
    out = src.new_zeros((counts.numel(), *src.shape[1:]))
    return out.scatter_reduce_(0, index, src, "amax", include_self=False)


def segment_max(src: Tensor, ptr: Tensor) -> Tensor:
    """Maximum over each jet's rows; empty jets give 0."""
    counts = _counts(ptr)
    if src.shape[0] == 0:
        return src.new_zeros((counts.numel(), *src.shape[1:]))
    return _segment_max(src, counts)


def segment_softmax(src: Tensor, ptr: Tensor) -> Tensor:
    """Softmax over each jet's rows, per channel: ``(P, ...) -> (P, ...)``."""
    num = src.shape[0]
    if num == 0:
        return src.clone()
    top = _segment_max(src, _counts(ptr))
    expo = (src - _expand(top, ptr, num)).exp_()
    total = segment_sum(expo, ptr)
    return expo.div_(_expand(total, ptr, num))


def scatter_sum(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """``out[i] = sum of src[e] with index[e] = i`` (index unsorted)."""
    return src.new_zeros((dim_size, *src.shape[1:])).index_add_(0, index, src)


# --------------------------------------------------------------------------- buckets


def jet_buckets(
    counts: Tensor, *, ratio: float = 1.125, slack: int = 4
) -> list[tuple[Tensor, int]]:
    """Group the non-empty jets into buckets of similar size.

    Jets are sorted by size and a bucket grows while its largest jet has at most
    ``max(ratio * smallest, smallest + slack)`` particles, so padding every jet of a bucket
    to its largest wastes a bounded fraction of the work.

    Returns:
        ``(jets, length)`` per bucket: the jet indices (int64, ascending size) and the
        padded length.
    """
    sizes = counts.tolist()
    order = sorted((n, j) for j, n in enumerate(sizes) if n > 0)
    buckets: list[tuple[Tensor, int]] = []
    start = 0
    while start < len(order):
        smallest = order[start][0]
        limit = max(math.floor(smallest * ratio), smallest + slack)
        stop = start
        while stop < len(order) and order[stop][0] <= limit:
            stop += 1
        jets = torch.tensor([j for _, j in order[start:stop]], dtype=torch.int64,
                            device=counts.device)
        buckets.append((jets, order[stop - 1][0]))
        start = stop
    return buckets


def _bucket_rows(ptr: Tensor, jets: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """Row indices ``(nb, L)`` of the bucket's padded particles (padding points at the
    jet's first particle, so it is safe to gather) and the mask of real ones."""
    start = ptr[jets].unsqueeze(1)
    offset = torch.arange(length, device=ptr.device)
    mask = offset < (ptr[jets + 1].unsqueeze(1) - start)
    rows = torch.where(mask, start + offset, start)
    return rows, mask


# --------------------------------------------------------------------------- kNN


def _smallest(dist: Tensor, kk: int) -> tuple[Tensor, Tensor]:
    """The ``kk`` smallest entries of the last dim, ties to the lower position."""
    if dist.dtype == torch.float32:
        # Non-negative float32 bit patterns order like the values; the position fills the
        # low 32 bits, so one integer topk sorts by (distance, position) exactly.
        key = dist.view(torch.int32).to(torch.int64).bitwise_left_shift_(32)
        key |= torch.arange(dist.shape[-1], device=dist.device)
        order = torch.topk(key, kk, dim=-1, largest=False, sorted=True).indices
    else:
        order = torch.sort(dist, dim=-1, stable=True).indices[..., :kk]
    return order, torch.gather(dist, -1, order)


#: Padded distance entries (jets x longest^2) up to which kNN runs as one bucket.
_KNN_ONE_BUCKET = 1 << 18


def knn(x: Tensor, ptr: Tensor, k: int, include_self: bool) -> tuple[Tensor, Tensor]:
    """k nearest neighbours within jets (see :func:`jettag.ops.reference.knn`): the native
    kernel (:func:`jettag.ops._native.knn`) where it applies, else size buckets of padded
    jets in PyTorch."""
    if _native.usable(x):
        return _native.knn(x, ptr, k, include_self)
    num = x.shape[0]
    index = torch.arange(num, device=x.device).unsqueeze(1).repeat(1, k)
    valid = torch.zeros(num, k, dtype=torch.bool, device=x.device)
    if num == 0:
        return index, valid
    # Coarse buckets: distances are a small part of the work, every bucket costs a dozen
    # ops (parallel regions) whatever its size; one bucket when padding every jet to the
    # longest costs few distances anyway (small batches).
    counts = _counts(ptr)
    longest = int(counts.max())
    if counts.numel() * longest * longest <= _KNN_ONE_BUCKET:
        buckets = [(torch.nonzero(counts).view(-1), longest)]
    else:
        buckets = jet_buckets(counts, ratio=1.5, slack=8)
    for jets, length in buckets:
        rows, mask = _bucket_rows(ptr, jets, length)
        pts = x[rows]
        sq = (pts * pts).sum(-1)
        dist = sq.unsqueeze(2) + sq.unsqueeze(1) - 2 * pts @ pts.transpose(1, 2)
        dist = dist.clamp_min_(0).add_(0.0)  # + 0.0 turns -0.0 into 0.0 for the bit key
        # NaN (sign bit set or not) after inf for the bit key; neither is a neighbour.
        dist.nan_to_num_(nan=math.inf, posinf=math.inf)
        blocked = ~mask.unsqueeze(1)
        if not include_self:
            blocked = blocked | torch.eye(length, dtype=torch.bool, device=x.device)
        dist.masked_fill_(blocked, float("inf"))
        kk = min(k, length)
        order, chosen = _smallest(dist, kk)
        ok = torch.isfinite(chosen) & mask.unsqueeze(2)
        real = rows[mask]
        neighbours = torch.gather(rows, 1, order.flatten(1)).view_as(order)
        index[real, :kk] = torch.where(ok, neighbours, rows.unsqueeze(2))[mask]
        valid[real, :kk] = ok[mask]
    return index, valid


# --------------------------------------------------------------------------- tiles


class _Tile:
    """A function of one tile of a fused operator, run as it is (``fn``, written for eager
    PyTorch: in-place updates) or, with :func:`jettag.ops.dispatch.set_compiled_tiles` on,
    ``source`` (the same function written for Inductor) through ``torch.compile``, which
    fuses the elementwise passes over the tile around the matrix products.

    The tile's jets dimension (dim 0 of the arguments at positions ``jets``) is compiled
    as an unbacked size and the weights (positions ``weights``) as static, so one graph
    serves every tile of a given dtype (no recompilation for 1-jet tiles or when a size
    equals a weight's). Calls with ``compilable=False`` (degenerate tiles) run eagerly. If
    compiling fails (no C++ compiler, unsupported platform), the function warns once and
    runs eagerly from then on.
    """

    def __init__(self, fn: Callable[..., Any], source: Callable[..., Any] | None = None, *,
                 jets: Iterable[int], weights: Iterable[int]) -> None:
        self.fn = fn
        self.source = fn if source is None else source
        self.jets = tuple(jets)
        self.weights = tuple(weights)
        self.compiled: Callable[..., Any] | None = None
        self.failed = False

    def __call__(self, compilable: bool, *args: Any) -> Any:
        if not (compilable and compiled_tiles() and not self.failed):
            return self.fn(*args)
        if self.compiled is None:
            self.compiled = torch.compile(self.source, dynamic=True, fullgraph=True)
        for i in self.jets:
            if args[i] is not None:
                torch._dynamo.decorators.mark_unbacked(args[i], 0)
        for i in self.weights:
            if args[i] is not None:
                torch._dynamo.mark_static(args[i])
        try:
            with torch.no_grad():
                return self.compiled(*args)
        except Exception as err:  # any failure of the compiler stack
            self.failed = True
            warnings.warn(
                f"jettag.ops: compiling {self.source.__name__} with torch.compile failed "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                "running it eagerly from now on", RuntimeWarning, stacklevel=2)
            return self.fn(*args)


_WORKSPACE = threading.local()


def _scratch(slot: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """An uninitialised scratch tensor of ``shape`` for the eager tile functions, the same
    memory for every tile and call (per thread, slot, device and dtype; it grows to the
    largest tile seen). Fresh tile-sized allocations cost a page fault per 4 KiB page
    whenever glibc has returned the freed memory to the system, which it does between
    tiles (measured: a 3 MiB bias copy took 0.86 ms into fresh pages, 0.14 ms into reused
    ones)."""
    store = _WORKSPACE.__dict__.setdefault("buffers", {})
    key = (slot, like.device, like.dtype)
    numel = math.prod(shape)
    buf = store.get(key)
    if buf is None or buf.numel() < numel:
        with torch.inference_mode(False):  # usable in and out of inference mode
            buf = torch.empty(numel, dtype=like.dtype, device=like.device)
        store[key] = buf
    return buf[:numel].view(shape)


def scratch_bytes() -> int:
    """Bytes of scratch memory the CPU paths of this thread keep between calls (and the
    native kernel's buffers kept for the next training step)."""
    buffers = _WORKSPACE.__dict__.get("buffers", {})
    return sum(b.numel() * b.element_size() for b in buffers.values()) + _native.pool_bytes()


def release_scratch() -> None:
    """Free this thread's scratch memory and the native kernel's kept buffers (the next
    call allocates them again)."""
    _WORKSPACE.__dict__.pop("buffers", None)
    _native.release_pool()


# --------------------------------------------------------------------------- EdgeConv


def _tile_rows(k: int, widths: list[int], itemsize: int) -> int:
    return max(1, TILE_BYTES // (k * max(widths) * itemsize))


def _edge_tile(
    own: Tensor, other: Tensor, index: Tensor, weights: list[Tensor], biases: list[Tensor]
) -> list[Tensor]:
    """Per-edge activations of a tile: ``[h0, h1, ...]`` each ``(r * k, C_l)`` (scratch
    memory, see :func:`_scratch`)."""
    rows, k = index.shape
    h = _scratch("edge0", (rows * k, other.shape[1]), own)
    torch.index_select(other, 0, index.reshape(-1), out=h)
    h.view(rows, k, -1).add_(own.unsqueeze(1))
    acts = [h.relu_()]
    for layer, (weight, bias) in enumerate(zip(weights, biases, strict=True), 1):
        out = _scratch(f"edge{layer}", (rows * k, weight.shape[0]), own)
        h = torch.addmm(bias, h, weight.t(), out=out).relu_()
        acts.append(h)
    return acts


def _aggregate_weights(
    last: Tensor, valid: Tensor, aggr: str, out: Tensor | None
) -> Tensor:
    """Per-edge weights ``(r, k, C)`` or ``(r, k, 1)`` whose sum over k is the aggregate's
    derivative: 1/count for the mean, the tied maxima shared evenly for the max."""
    if aggr == "mean":
        count = valid.sum(1, keepdim=True).clamp_min(1)
        return (valid / count).to(last.dtype).unsqueeze(-1)
    assert out is not None
    hit = (last == out.unsqueeze(1)) & valid.unsqueeze(-1)
    return hit / hit.sum(1, keepdim=True).clamp_min(1)


def edge_conv_messages(
    own: Tensor,
    other: Tensor,
    index: Tensor,
    valid: Tensor,
    weights: list[Tensor],
    biases: list[Tensor],
    aggr: str,
) -> Tensor:
    """Fused EdgeConv messages (see :func:`jettag.ops.fused.edge_conv_messages`)."""
    num, k = index.shape
    widths = [own.shape[1], *(w.shape[0] for w in weights)]
    out = own.new_zeros(num, widths[-1])
    step = _tile_rows(k, widths, own.element_size())
    for start in range(0, num, step):
        tile = slice(start, start + step)
        last = _edge_tile(own[tile], other, index[tile], weights, biases)[-1]
        last = last.view(-1, k, widths[-1])
        ok = valid[tile]
        if aggr == "mean":
            scale = (ok / ok.sum(1, keepdim=True).clamp_min(1)).to(last.dtype)
            out[tile] = torch.bmm(scale.unsqueeze(1), last).squeeze(1)
        else:
            top = last.masked_fill(~ok.unsqueeze(-1), float("-inf")).amax(1)
            out[tile] = top.masked_fill_(~ok.any(1, keepdim=True), 0)
    return out


def edge_conv_messages_backward(
    grad: Tensor,
    out: Tensor,
    own: Tensor,
    other: Tensor,
    index: Tensor,
    valid: Tensor,
    weights: list[Tensor],
    biases: list[Tensor],
    aggr: str,
) -> list[Tensor]:
    """Gradients ``[d_own, d_other, *d_weights, *d_biases]``, recomputing tile by tile."""
    num, k = index.shape
    widths = [own.shape[1], *(w.shape[0] for w in weights)]
    d_own = torch.zeros_like(own)
    d_other = torch.zeros_like(other)
    d_weights = [torch.zeros_like(w) for w in weights]
    d_biases = [torch.zeros_like(b) for b in biases]
    step = _tile_rows(k, widths, own.element_size())
    for start in range(0, num, step):
        tile = slice(start, start + step)
        idx = index[tile]
        rows = idx.shape[0]
        acts = _edge_tile(own[tile], other, idx, weights, biases)
        last = acts[-1].view(rows, k, -1)
        share = _aggregate_weights(last, valid[tile], aggr, out[tile])
        # The layers' input gradients alternate between two scratch slots.
        d_h = _scratch(f"edge_grad{len(weights) % 2}", acts[-1].shape, own)
        torch.mul(grad[tile].unsqueeze(1), share, out=d_h.view(rows, k, -1))
        for layer in range(len(weights) - 1, -1, -1):
            d_z = _relu_grad_(d_h, acts[layer + 1])
            d_weights[layer] += d_z.t() @ acts[layer]
            d_biases[layer] += d_z.sum(0)
            d_h = torch.mm(d_z, weights[layer], out=_scratch(f"edge_grad{layer % 2}",
                                                             acts[layer].shape, own))
        d_z0 = _relu_grad_(d_h, acts[0]).view(rows, k, -1)
        d_own[tile] = d_z0.sum(1)
        d_other.index_add_(0, idx.reshape(-1), d_z0.view(rows * k, -1))
    return [d_own, d_other, *d_weights, *d_biases]


# --------------------------------------------------------------------------- Lorentz


def _psi(a: Tensor) -> Tensor:
    return torch.sign(a) * torch.log1p(a.abs())


def _pair_invariants(xt: Tensor, mask: Tensor, dtype: torch.dtype):
    """Pair mask (real ``i != j``), ``x_i - x_j``, ``|x_i - x_j|^2``, ``<x_i, x_j>`` and
    psi of the two invariants ``(nb * L * L, 2)`` of a tile."""
    length = xt.shape[1]
    eye = torch.eye(length, dtype=torch.bool, device=xt.device)
    pair = (mask.unsqueeze(2) & mask.unsqueeze(1) & ~eye).to(dtype)
    diff = xt.unsqueeze(2) - xt.unsqueeze(1)
    metric = xt.new_tensor([1.0, -1.0, -1.0, -1.0])
    norm = (diff * diff * metric).sum(-1)
    dot = (xt * metric) @ xt.transpose(1, 2)
    return pair, diff, norm, dot, _psi(torch.stack([norm, dot], -1)).view(-1, 2)


def _x_grad(d_diff: Tensor, d_psi_norm: Tensor, d_psi_dot: Tensor, diff: Tensor,
            norm: Tensor, dot: Tensor, xt: Tensor) -> Tensor:
    """Gradient w.r.t. the tile's four-vectors ``(nb, L, 4)`` from those w.r.t. ``x_i - x_j``
    and w.r.t. psi of the two invariants (see :func:`_pair_invariants`)."""
    # psi'(a) = sgn(a)^2 / (1 + |a|), 0 at a = 0 as autograd of sgn(a) log(1 + |a|).
    d_norm = d_psi_norm * norm.sign().square() / (1 + norm.abs())
    d_dot = d_psi_dot * dot.sign().square() / (1 + dot.abs())
    metric = xt.new_tensor([1.0, -1.0, -1.0, -1.0])
    d_diff = d_diff + 2 * d_norm.unsqueeze(-1) * diff * metric
    d_x = d_diff.sum(2) - d_diff.sum(1)
    return d_x + (d_dot @ xt) * metric + (d_dot.transpose(1, 2) @ xt) * metric


def _coordinate_mean(diff: Tensor, t: Tensor, pair: Tensor, clamp: float) -> Tensor:
    """``xs_i``: the mean over the real ``j != i`` of ``clamp((x_i - x_j) t_ij, +-clamp)``
    (``t``: phi_x's output per pair, ``(nb * L * L,)``)."""
    nb, length = pair.shape[:2]
    shift = (diff * t.view(nb, length, length, 1)).clamp(-clamp, clamp)
    count = pair.sum(2, keepdim=True).clamp_min(1)
    return (shift * pair.unsqueeze(-1)).sum(2) / count


def _pair_mlp(hu: Tensor, hv: Tensor, psi: Tensor, w_psi: Tensor, w_e: Tensor, b_e: Tensor,
              w_m: Tensor, b_m: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Eager form: the first layer's output ``r0``, the message ``m`` before the gate (both
    ``(nb * L * L, C)`` scratch tensors, see :func:`_scratch`) and the gate
    ``(nb * L * L,)``."""
    nb, length, hidden = hu.shape
    rows = nb * length * length
    r0 = _scratch("r0", (rows, hidden), hu)
    torch.add(hu.unsqueeze(2), hv.unsqueeze(1), out=r0.view(nb, length, length, hidden))
    r0.addmm_(psi, w_psi).relu_()
    m = torch.addmm(b_e, r0, w_e.t(), out=_scratch("m", (rows, hidden), hu)).relu_()
    return r0, m, torch.addmv(b_m, m, w_m).sigmoid_()


def _lorentz_forward_tile(
    hu: Tensor, hv: Tensor, xt: Tensor, mask: Tensor, w_psi: Tensor, w_e: Tensor,
    b_e: Tensor, w_m: Tensor, b_m: Tensor, w_x1: Tensor | None, b_x1: Tensor | None,
    w_x2: Tensor | None, clamp: float,
) -> tuple[Tensor, Tensor | None]:
    """``msum`` ``(nb, L, C)`` and ``xs`` ``(nb, L, 4)`` (None without phi_x) of one tile
    of ``nb`` jets padded to ``L`` (``hu``, ``hv``: ``(nb, L, C)``, ``xt``: ``(nb, L, 4)``,
    ``mask``: the real particles), with in-place updates so that each pair-sized tensor
    is written as few times as possible."""
    nb, length, hidden = hu.shape
    torch._check(nb > 0)  # for torch.compile: the unbacked tile size is not 0
    pair, diff, _, _, psi = _pair_invariants(xt, mask, hu.dtype)
    _, m, gate = _pair_mlp(hu, hv, psi, w_psi, w_e, b_e, w_m, b_m)
    m.mul_(gate.unsqueeze(1))
    msum = torch.bmm(pair.view(nb * length, 1, length),
                     m.view(nb * length, length, hidden)).view(nb, length, hidden)
    if w_x1 is None:
        return msum, None
    q = _scratch("q", (m.shape[0], hidden), hu)
    t = torch.addmm(b_x1, m, w_x1.t(), out=q).relu_() @ w_x2
    return msum, _coordinate_mean(diff, t, pair, clamp)


def _lorentz_backward_tile(
    g_m: Tensor, g_x: Tensor | None, hu: Tensor, hv: Tensor, xt: Tensor, mask: Tensor,
    w_psi: Tensor, w_e: Tensor, b_e: Tensor, w_m: Tensor, b_m: Tensor, w_x1: Tensor | None,
    b_x1: Tensor | None, w_x2: Tensor | None, clamp: float,
) -> list[Tensor | None]:
    """Gradients of one tile (forward recomputed): ``[d_hu, d_hv, d_x]`` per padded row
    ``(nb, L, .)`` and the tile's parts of ``[d_w_psi, d_w_e, d_b_e, d_w_m, d_b_m, d_w_x1,
    d_b_x1, d_w_x2]`` (None without phi_x), given the output gradients ``g_m``, ``g_x`` of
    the padded rows (whatever their values at padding: those rows meet only masked pairs,
    and every gradient of a padding row is 0)."""
    nb, length, hidden = hu.shape
    torch._check(nb > 0)
    pair, diff, norm, dot, psi = _pair_invariants(xt, mask, hu.dtype)
    r0, m, gate = _pair_mlp(hu, hv, psi, w_psi, w_e, b_e, w_m, b_m)
    shape = m.shape
    mm = torch.mul(m, gate.unsqueeze(1), out=_scratch("mm", shape, hu))
    pair4 = pair.unsqueeze(-1)
    d_mm = _scratch("d_mm", shape, hu)
    torch.mul(g_m.unsqueeze(2), pair4, out=d_mm.view(nb, length, length, hidden))
    d_w_x1 = d_b_x1 = d_w_x2 = None
    d_diff = torch.zeros_like(diff)
    # "tmp" holds phi_x's gradient d_q, then the product d_mm * m.
    tmp = _scratch("tmp", shape, hu)
    if w_x1 is not None:
        assert g_x is not None and b_x1 is not None and w_x2 is not None
        q = torch.addmm(b_x1, mm, w_x1.t(), out=_scratch("q", shape, hu)).relu_()
        t = (q @ w_x2).view(nb, length, length, 1)
        raw = diff * t
        count = pair.sum(2, keepdim=True).clamp_min(1)
        d_shift = (g_x / count).unsqueeze(2) * pair4 * (raw.abs() <= clamp)
        d_t = (d_shift * diff).sum(-1).view(-1)
        d_diff += d_shift * t
        d_w_x2 = q.t() @ d_t
        d_q = _relu_grad_(torch.outer(d_t, w_x2, out=tmp), q)
        d_b_x1 = d_q.sum(0)
        d_w_x1 = d_q.t() @ mm
        d_mm.addmm_(d_q, w_x1)
    d_s = torch.mul(d_mm, m, out=tmp).sum(1).mul_(gate * (1 - gate))
    d_w_m = m.t() @ d_s
    d_b_m = d_s.sum().view(1)
    # d_z1 in place of d_mm: d_mm * gate + d_s w_m where m > 0
    d_z1 = _relu_grad_(d_mm.mul_(gate.unsqueeze(1)).addr_(d_s, w_m), m)
    d_b_e = d_z1.sum(0)
    d_w_e = d_z1.t() @ r0
    # d_z0 in the scratch of mm, which is not needed any more.
    d_z0 = _relu_grad_(torch.mm(d_z1, w_e, out=_scratch("mm", shape, hu)), r0)
    d_w_psi = psi.t() @ d_z0
    d_psi = (d_z0 @ w_psi.t()).view(nb, length, length, 2)
    d_z0 = d_z0.view(nb, length, length, hidden)
    d_hu, d_hv = d_z0.sum(2), d_z0.sum(1)
    del d_z0
    d_x = _x_grad(d_diff, d_psi[..., 0], d_psi[..., 1], diff, norm, dot, xt)
    return [d_hu, d_hv, d_x, d_w_psi, d_w_e, d_b_e, d_w_m, d_b_m, d_w_x1, d_b_x1, d_w_x2]


def _relu_bias(product: Tensor, bias: Tensor) -> Tensor:
    """``relu(product + bias)`` as ``max(product, -bias) + bias`` (the same floats): Inductor
    turns a matrix product followed by a bias addition into ``addmm``, whose bias copy is a
    pass over the tile; written this way the bias goes into the fused elementwise loop."""
    return torch.maximum(product, -bias) + bias


def _pair_mlp_c(hu: Tensor, hv: Tensor, xt: Tensor, mask: Tensor, w_psi: Tensor,
                w_e: Tensor, b_e: Tensor, w_m: Tensor, b_m: Tensor):
    """Pair quantities of a tile, Inductor form: those of :func:`_pair_invariants` (psi as
    ``(nb, L, L, 2)``), the first layer's output ``r0``, the message ``m`` before the gate
    and the gate ``(nb * L * L, 1)``."""
    nb, length, hidden = hu.shape
    pair, diff, norm, dot, psi = _pair_invariants(xt, mask, hu.dtype)
    psi = psi.view(nb, length, length, 2)
    z = (hu.unsqueeze(2) + hv.unsqueeze(1) + psi[..., 0:1] * w_psi[0]
         + psi[..., 1:2] * w_psi[1])
    r0 = z.relu().view(-1, hidden)
    m = _relu_bias(r0 @ w_e.t(), b_e)
    gate = torch.sigmoid((m * w_m).sum(1, keepdim=True) + b_m)
    return pair, diff, norm, dot, psi, r0, m, gate


def _lorentz_forward_tile_c(
    hu: Tensor, hv: Tensor, xt: Tensor, mask: Tensor, w_psi: Tensor, w_e: Tensor,
    b_e: Tensor, w_m: Tensor, b_m: Tensor, w_x1: Tensor | None, b_x1: Tensor | None,
    w_x2: Tensor | None, clamp: float,
) -> tuple[Tensor, Tensor | None]:
    """:func:`_lorentz_forward_tile` written for Inductor: out of place, the two-column
    product with psi as broadcasts, the gate folded into the sums and (``g (m W) = (g m)
    W``) into phi_x's first layer, so the elementwise work fuses into the matrix products'
    neighbours and the gated messages are never stored."""
    nb, length, hidden = hu.shape
    torch._check(nb > 0)
    pair, diff, _, _, _, _, m, gate = _pair_mlp_c(hu, hv, xt, mask, w_psi, w_e, b_e, w_m,
                                                  b_m)
    weight = (gate.view(nb, length, length) * pair).unsqueeze(-1)
    msum = (m.view(nb, length, length, hidden) * weight).sum(2)
    if w_x1 is None:
        return msum, None
    t = ((m @ w_x1.t()) * gate + b_x1).relu() @ w_x2
    return msum, _coordinate_mean(diff, t, pair, clamp)


def _lorentz_backward_tile_c(
    g_m: Tensor, g_x: Tensor | None, hu: Tensor, hv: Tensor, xt: Tensor, mask: Tensor,
    w_psi: Tensor, w_e: Tensor, b_e: Tensor, w_m: Tensor, b_m: Tensor, w_x1: Tensor | None,
    b_x1: Tensor | None, w_x2: Tensor | None, clamp: float,
) -> list[Tensor | None]:
    """:func:`_lorentz_backward_tile` written for Inductor (see
    :func:`_lorentz_forward_tile_c`)."""
    nb, length, hidden = hu.shape
    torch._check(nb > 0)
    pair, diff, norm, dot, psi4, r0, m, gate = _pair_mlp_c(hu, hv, xt, mask, w_psi, w_e,
                                                           b_e, w_m, b_m)
    pair4 = pair.unsqueeze(-1)
    # gated messages mg = gate * m summed over j: d mg_ij = pair_ij g_m_i
    d_mg = (g_m.unsqueeze(2) * pair4).view(-1, hidden)
    d_gate = (d_mg * m).sum(1, keepdim=True)
    d_m = d_mg * gate
    d_w_x1 = d_b_x1 = d_w_x2 = None
    d_diff = torch.zeros_like(diff)
    if w_x1 is not None:
        assert g_x is not None and b_x1 is not None and w_x2 is not None
        p = m @ w_x1.t()
        q = (p * gate + b_x1).relu()
        t = (q @ w_x2).view(nb, length, length, 1)
        raw = diff * t
        count = pair.sum(2, keepdim=True).clamp_min(1)
        d_raw = (g_x / count).unsqueeze(2) * pair4 * (raw.abs() <= clamp)
        d_t = (d_raw * diff).sum(-1).view(-1, 1)
        d_diff = d_raw * t
        d_w_x2 = (q * d_t).sum(0)
        d_q = torch.where(q > 0, d_t * w_x2, 0)
        d_b_x1 = d_q.sum(0)
        d_gate = d_gate + (d_q * p).sum(1, keepdim=True)
        d_p = d_q * gate
        d_w_x1 = d_p.t() @ m
        d_m = d_m + d_p @ w_x1
    d_s = d_gate * gate * (1 - gate)
    d_w_m = (m * d_s).sum(0)
    d_b_m = d_s.sum().view(1)
    d_a = torch.where(m > 0, d_m + d_s * w_m, 0)
    d_b_e = d_a.sum(0)
    d_w_e = d_a.t() @ r0
    d_z = torch.where(r0 > 0, d_a @ w_e, 0).view(nb, length, length, hidden)
    d_w_psi = torch.stack([(d_z * psi4[..., 0:1]).sum((0, 1, 2)),
                           (d_z * psi4[..., 1:2]).sum((0, 1, 2))])
    d_hu, d_hv = d_z.sum(2), d_z.sum(1)
    d_x = _x_grad(d_diff, (d_z * w_psi[0]).sum(-1), (d_z * w_psi[1]).sum(-1), diff, norm,
                  dot, xt)
    return [d_hu, d_hv, d_x, d_w_psi, d_w_e, d_b_e, d_w_m, d_b_m, d_w_x1, d_b_x1, d_w_x2]


_LORENTZ_FORWARD = _Tile(_lorentz_forward_tile, _lorentz_forward_tile_c,
                         jets=(0, 1, 2, 3), weights=range(4, 12))
_LORENTZ_BACKWARD = _Tile(_lorentz_backward_tile, _lorentz_backward_tile_c,
                          jets=(0, 1, 2, 3, 4, 5), weights=range(6, 14))


_PLANS: PlanCache[list[tuple[Tensor, Tensor]]] = PlanCache()


def _lorentz_tiles(ptr: Tensor, hidden: int, itemsize: int) -> list[tuple[Tensor, Tensor]]:
    """``(rows, mask)`` of tiles of jets of one size bucket each (padding rows point at the
    jet's first particle); kept for the next calls with the same batch (:class:`PlanCache`)."""

    def build() -> list[tuple[Tensor, Tensor]]:
        plan = []
        for jets, length in jet_buckets(_counts(ptr), ratio=1.25, slack=4):
            per_jet = length * length * hidden * itemsize
            step = max(1, LORENTZ_TILE_BYTES // per_jet)
            for start in range(0, jets.numel(), step):
                plan.append(_bucket_rows(ptr, jets[start:start + step], length))
        return plan

    key = (ptr.device, hidden, itemsize, LORENTZ_TILE_BYTES, tuple(ptr.tolist()))
    return _PLANS.get(key, build)


def lorentz_messages(
    hu: Tensor,
    hv: Tensor,
    x: Tensor,
    ptr: Tensor,
    w_psi: Tensor,
    w_e: Tensor,
    b_e: Tensor,
    w_m: Tensor,
    b_m: Tensor,
    w_x1: Tensor | None,
    b_x1: Tensor | None,
    w_x2: Tensor | None,
    clamp: float,
) -> tuple[Tensor, Tensor]:
    """Fused LGEB pair messages (see :func:`jettag.ops.fused.lorentz_messages`): by the
    native kernel where it applies (:mod:`jettag.ops._native`), else tile by tile."""
    if _native.usable(hu):
        return _native.lorentz_messages(hu, hv, x, ptr, w_psi, w_e, b_e, w_m, b_m, w_x1,
                                        b_x1, w_x2, clamp)
    num, hidden = hu.shape
    msum_out = hu.new_zeros(num, hidden)
    xs_out = x.new_zeros(num, 4)
    # Every pair term of a padding row is 0, so whole tiles are added (a jet's padding
    # rows add zeros to its first particle); each real row is in exactly one tile.
    for rows, mask in _lorentz_tiles(ptr, hidden, hu.element_size()):
        msum, xs = _LORENTZ_FORWARD(rows.shape[1] > 1, hu[rows], hv[rows], x[rows], mask,
                                    w_psi, w_e, b_e, w_m, b_m, w_x1, b_x1, w_x2, clamp)
        flat = rows.view(-1)
        msum_out.index_add_(0, flat, msum.view(-1, hidden))
        if xs is not None:
            xs_out.index_add_(0, flat, xs.view(-1, 4))
    return msum_out, xs_out


def lorentz_messages_backward(
    g_msum: Tensor,
    g_xs: Tensor,
    hu: Tensor,
    hv: Tensor,
    x: Tensor,
    ptr: Tensor,
    w_psi: Tensor,
    w_e: Tensor,
    b_e: Tensor,
    w_m: Tensor,
    b_m: Tensor,
    w_x1: Tensor | None,
    b_x1: Tensor | None,
    w_x2: Tensor | None,
    clamp: float,
) -> list[Tensor]:
    """Gradients of :func:`lorentz_messages` w.r.t. every tensor input, in order (zeros for
    the absent phi_x weights), recomputing: by the native kernel where it applies
    (:mod:`jettag.ops._native`), else tile by tile."""
    if _native.usable(hu):
        return _native.lorentz_messages_backward(g_msum, g_xs, hu, hv, x, ptr, w_psi, w_e,
                                                 b_e, w_m, b_m, w_x1, b_x1, w_x2, clamp)
    hidden = hu.shape[1]
    inputs = [hu, hv, x, w_psi, w_e, b_e, w_m, b_m, w_x1, b_x1, w_x2]
    grads = [None if t is None else torch.zeros_like(t) for t in inputs]
    for rows, mask in _lorentz_tiles(ptr, hidden, hu.element_size()):
        # Output gradients of padding rows meet only pairs that are masked out; every
        # gradient of a padding row is 0 (see lorentz_messages).
        g_x = None if w_x1 is None else g_xs[rows]
        parts = _LORENTZ_BACKWARD(rows.shape[1] > 1, g_msum[rows], g_x, hu[rows], hv[rows],
                                  x[rows], mask, w_psi, w_e, b_e, w_m, b_m, w_x1, b_x1,
                                  w_x2, clamp)
        flat = rows.view(-1)
        for grad, part in zip(grads[:3], parts[:3], strict=True):
            grad.index_add_(0, flat, part.view(flat.numel(), -1))
        for grad, part in zip(grads[3:], parts[3:], strict=True):
            if part is not None:
                grad += part
    return [hu.new_zeros(0) if g is None else g for g in grads]
