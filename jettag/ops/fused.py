r"""Fused operators for the two hot layers: EdgeConv messages and Lorentz (LGEB) pair sums.

Both operators take per-particle tensors and return per-particle tensors; the per-edge
activations in between are computed tile by tile and never stored whole (the CPU path
keeps a tile in cache, the Triton kernels keep it in registers). Each has a plain-PyTorch
reference over explicit edge lists (``*_reference``), a fast CPU path and Triton kernels,
chosen by :mod:`jettag.ops.dispatch`; each is a ``torch.library`` custom op with a fake
implementation and a registered backward (first derivatives).

**EdgeConv** (:func:`edge_conv_messages`). With :math:`W [x_i, x_j - x_i] = (W_a - W_b)
x_i + W_b x_j` the first linear map of the edge MLP is applied per particle (``own`` and
``other``, computed by the caller with one matrix product); the operator adds them per edge,
applies ReLU, the remaining (linear + bias, ReLU) layers and aggregates over the valid
neighbours:

.. math::
    m_i = \operatorname{aggr}_{s:\ \mathrm{valid}_{is}}\ h_L\big(\mathrm{own}_i
          + \mathrm{other}_{\mathrm{index}_{is}}\big),\qquad
    h_0 = \mathrm{ReLU},\quad h_l = \mathrm{ReLU}(W_l h_{l-1} + b_l).

In evaluation mode the BatchNorms between the linear maps fold into them
(:func:`fold_batchnorm`), which is how :func:`edge_conv_eval` runs a whole
:class:`~jettag.nn.edge_conv.EdgeConv`. In training mode the edge BatchNorms need batch
statistics over all edges, so the layer's unfused path applies.

**Lorentz** (:func:`lorentz_messages`). For all ordered pairs :math:`i \ne j` of each jet
(fully connected, no edge list):

.. math::
    z_{ij} &= \mathrm{hu}_i + \mathrm{hv}_j + \psi(\lVert x_i - x_j\rVert^2)\, w_n
              + \psi(\langle x_i, x_j\rangle)\, w_d,\qquad
    m_{ij} = \mathrm{ReLU}(W_e\, \mathrm{ReLU}(z_{ij}) + b_e)\;
             \sigma(w_m \cdot m^{\mathrm{pre}}_{ij} + b_m)

    \mathrm{msum}_i &= \sum_{j \ne i} m_{ij},\qquad
    \mathrm{xs}_i = \frac{1}{n_i - 1}\sum_{j \ne i}
        \operatorname{clamp}\!\big((x_i - x_j)\, w_{x2} \cdot
        \mathrm{ReLU}(W_{x1} m_{ij} + b_{x1}),\ \pm c\big)

which is the pairwise part of :class:`~jettag.nn.lorentz.LGEB` with its first
:math:`\phi_e` layer decomposed per particle and its BatchNorm folded: with the running
statistics in evaluation (:func:`lgeb_eval` runs a whole block this way), with the batch
statistics over all pairs in training, which :func:`lgeb_train` gets from per-particle and
per-jet sums without forming :math:`z` (gradients flow through them by autograd).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from jettag.ops import _cpu, _library, _native, dispatch, reference
from jettag.ops._cpu import _jet_index, _relu_grad_, _scratch

__all__ = [
    "batchnorm_relu_linear",
    "batchnorm_relu_mean",
    "edge_conv_eval",
    "edge_conv_messages",
    "edge_conv_messages_reference",
    "edge_conv_train",
    "fold_batchnorm",
    "lgeb_eval",
    "lgeb_train",
    "lorentz_messages",
    "lorentz_messages_reference",
    "use_fused",
]

_AGGREGATIONS = ("mean", "max")


def use_fused(tensor: Tensor) -> bool:
    """Whether the layers take their fused path for ``tensor`` now: a fast backend applies
    (:func:`jettag.ops.dispatch.select` is not ``"reference"``: not while exporting, not
    with the reference backend forced) and TorchScript is not scripting or tracing."""
    from jettag.ops.dispatch import select

    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return False
    return select(tensor) != "reference"


def fold_batchnorm(
    weight: Tensor, bias: Tensor | None, norm: nn.BatchNorm1d
) -> tuple[Tensor, Tensor]:
    """Fold an evaluation-mode BatchNorm that follows a linear map into the map.

    ``norm(x @ weight.T + bias) == x @ W.T + b`` for the returned ``(W, b)``, using the
    running statistics (or the batch-free affine map when the BatchNorm tracks none).

    Example:
        >>> import torch
        >>> lin, bn = torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2).eval()
        >>> w, b = fold_batchnorm(lin.weight, lin.bias, bn)
        >>> x = torch.randn(4, 3)
        >>> torch.allclose(bn(lin(x)), x @ w.T + b, atol=1e-6)
        True
    """
    if norm.running_mean is None or norm.running_var is None:
        mean = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
        var = torch.ones_like(mean)
    else:
        mean, var = norm.running_mean, norm.running_var
    scale = torch.rsqrt(var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    if bias is not None:
        shift = shift + bias * scale
    return weight * scale.unsqueeze(1), shift


# --------------------------------------------------------------------------- EdgeConv


def edge_conv_messages_reference(
    own: Tensor,
    other: Tensor,
    index: Tensor,
    valid: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    *,
    aggr: str = "mean",
) -> Tensor:
    """Plain-PyTorch :func:`edge_conv_messages` over the explicit list of valid edges."""
    receivers, slots = valid.nonzero(as_tuple=True)
    senders = index[receivers, slots]
    edge_ptr = torch.zeros(own.shape[0] + 1, dtype=torch.int64, device=own.device)
    torch.cumsum(valid.sum(1), 0, out=edge_ptr[1:])
    h = torch.relu(_gather_sum(own, other, receivers, senders))
    for weight, bias in zip(weights, biases, strict=True):
        h = torch.relu(h @ weight.T + bias)
    reduce = reference.segment_mean if aggr == "mean" else reference.segment_max
    return reduce(h, edge_ptr)


def _first_derivative_only(ctx, *grads):
    raise RuntimeError("the fused operators of jettag.ops.fused have first derivatives only; "
                       "for higher ones use the references (*_reference) or "
                       "jettag.ops.dispatch.use_backend('reference')")


def _edge_conv_messages_kernel(
    own: Tensor, other: Tensor, index: Tensor, valid: Tensor, weights: list[Tensor],
    biases: list[Tensor], aggr: str,
) -> Tensor:
    impl = _library.implementation(own)
    return impl.edge_conv_messages(own, other, index, valid, weights, biases, aggr)


def _edge_conv_messages_fake(own, other, index, valid, weights, biases, aggr):
    width = weights[-1].shape[0] if weights else own.shape[1]
    return own.new_empty((own.shape[0], width))


def _edge_conv_messages_backward_kernel(
    grad: Tensor, out: Tensor, own: Tensor, other: Tensor, index: Tensor, valid: Tensor,
    weights: list[Tensor], biases: list[Tensor], aggr: str,
) -> list[Tensor]:
    impl = _library.implementation(own)
    return impl.edge_conv_messages_backward(grad.contiguous(), out, own, other, index, valid,
                                            weights, biases, aggr)


def _edge_conv_messages_backward_fake(grad, out, own, other, index, valid, weights, biases,
                                      aggr):
    tensors = [own, other, *weights, *biases]
    return [torch.empty_like(t) for t in tensors]


_edge_conv_messages_backward = _library.define(
    "edge_conv_messages_backward", _edge_conv_messages_backward_kernel,
    _edge_conv_messages_backward_fake, backward=_first_derivative_only)


def _edge_setup(ctx, inputs, output) -> None:
    own, other, index, valid, weights, biases, aggr = inputs
    ctx.save_for_backward(output, own, other, index, valid, *weights, *biases)
    ctx.num_layers = len(weights)
    ctx.aggr = aggr


def _edge_backward(ctx, grad: Tensor):
    out, own, other, index, valid, *params = ctx.saved_tensors
    n = ctx.num_layers
    grads = _edge_conv_messages_backward(grad, out, own, other, index, valid, params[:n],
                                         params[n:], ctx.aggr)
    return grads[0], grads[1], None, None, grads[2:2 + n], grads[2 + n:], None


_edge_conv_messages = _library.define(
    "edge_conv_messages", _edge_conv_messages_kernel, _edge_conv_messages_fake,
    backward=_edge_backward, setup_context=_edge_setup)


def edge_conv_messages(
    own: Tensor,
    other: Tensor,
    index: Tensor,
    valid: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    *,
    aggr: str = "mean",
) -> Tensor:
    r"""Fused EdgeConv messages: gather, edge MLP and aggregation over the neighbours.

    Per edge ``(i, s)`` with ``j = index[i, s]`` and ``valid[i, s]``: ``h = ReLU(own[i] +
    other[j])``, then ``h = ReLU(h @ W.T + b)`` for each ``(W, b)`` of ``weights`` and
    ``biases``; the result is the mean (or max) of ``h`` over the valid edges of ``i``,
    0 for a particle without any. See the module docstring for the algebra.

    Args:
        own: ``(P, C_1)``, the first layer's receiver part plus its bias.
        other: ``(P, C_1)``, the first layer's sender part.
        index: ``(P, k)`` int64 neighbours (as :func:`jettag.ops.knn` returns).
        valid: ``(P, k)`` bool, which slots of ``index`` are real neighbours.
        weights: further linear maps, ``(C_{l+1}, C_l)`` each (may be empty).
        biases: their biases, ``(C_{l+1},)`` each.
        aggr: ``"mean"`` or ``"max"``.

    Shapes:
        - **output:** :math:`(P, C_L)`

    Example:
        >>> import torch
        >>> own, other = torch.randn(5, 8), torch.randn(5, 8)
        >>> index = torch.tensor([[1, 2], [0, 2], [0, 1], [4, 3], [3, 4]])
        >>> valid = torch.tensor([[True, True]] * 3 + [[True, False]] * 2)
        >>> w, b = [torch.randn(4, 8)], [torch.zeros(4)]
        >>> edge_conv_messages(own, other, index, valid, w, b).shape
        torch.Size([5, 4])
    """
    if aggr not in _AGGREGATIONS:
        raise ValueError(f"aggr: expected one of {_AGGREGATIONS}, found {aggr!r}")
    if own.shape != other.shape or own.dim() != 2:
        raise ValueError(f"own, other: expected two (P, C) tensors of one shape, found "
                         f"{tuple(own.shape)} and {tuple(other.shape)}")
    if index.shape != valid.shape or index.dim() != 2 or index.shape[0] != own.shape[0]:
        raise ValueError(f"index, valid: expected (P, k) with P = {own.shape[0]}, found "
                         f"{tuple(index.shape)} and {tuple(valid.shape)}")
    if len(weights) != len(biases):
        raise ValueError(f"weights, biases: expected as many biases as weights, found "
                         f"{len(weights)} and {len(biases)}")
    width = own.shape[1]
    for layer, (weight, bias) in enumerate(zip(weights, biases, strict=True)):
        if weight.dim() != 2 or weight.shape[1] != width or bias.shape != weight.shape[:1]:
            raise ValueError(f"weights[{layer}], biases[{layer}]: expected (C, {width}) and "
                             f"(C,), found {tuple(weight.shape)} and {tuple(bias.shape)}")
        width = weight.shape[0]
    if dispatch.select(own) == "reference":
        return edge_conv_messages_reference(own, other, index, valid, weights, biases,
                                            aggr=aggr)
    args = (own.contiguous(), other.contiguous(), index.contiguous(), valid.contiguous(),
            [w.contiguous() for w in weights], [b.contiguous() for b in biases], aggr)
    if _library.direct(own, other, *weights, *biases):
        return _cpu.edge_conv_messages(*args)
    return _edge_conv_messages(*args)


def _bn_affine(norm: nn.BatchNorm1d, like: Tensor) -> tuple[Tensor, Tensor]:
    eye = torch.eye(norm.num_features, dtype=like.dtype, device=like.device)
    weight, shift = fold_batchnorm(eye, None, norm)
    return weight.diagonal(), shift


def edge_conv_eval(conv: Any, x: Tensor, pos: Tensor, ptr: Tensor) -> Tensor:
    """Evaluation-mode forward of a :class:`jettag.nn.edge_conv.EdgeConv`, fused.

    BatchNorms folded into the linear maps, the first map applied per particle, and
    :func:`edge_conv_messages` for the rest; equal to ``conv.eval()(x, pos, ptr)`` up to
    float rounding. A drop-in for the layer's ``forward`` when ``not conv.training``.
    Without autograd (inference) the folded weights are kept between calls
    (:func:`_cached_weights`).

    Args:
        conv: an ``EdgeConv`` (attributes ``linears``, ``norms``, ``shortcut``,
            ``shortcut_norm``, ``k``, ``aggr``, ``in_channels``, ``channels``).
        x: ``(P, C)`` features; pos: ``(P, D)`` neighbour-search coordinates;
            ptr: ``(B + 1,)`` offsets.
    """
    from jettag.ops import knn

    with torch.no_grad():
        index, valid = knn(pos.detach(), ptr, conv.k)
    if not torch.is_grad_enabled() and not torch.compiler.is_compiling():
        w = _cached_weights(conv, _edge_conv_weights)  # (inference: kept between calls)
    else:
        w = _edge_conv_weights(conv)
    own, other = torch.mm(x, w["both_t"]).split(conv.channels[0], dim=1)
    messages = edge_conv_messages(own + w["shift"], other, index, valid, w["weights"],
                                  w["biases"], aggr=conv.aggr)
    skip = x if w["skip"] is None else torch.addmm(w["skip"][1], x, w["skip"][0])
    return torch.relu(skip + messages)


def _edge_conv_weights(conv: Any) -> dict[str, Any]:
    """An evaluation-mode EdgeConv's weights with its BatchNorms folded: the first linear
    map split into receiver and sender parts (``both_t``, transposed, and the receiver
    part's ``shift``), the further maps' ``weights`` and ``biases``, and the shortcut's
    transposed weight and bias (``skip``, None without a shortcut)."""
    first = conv.linears[0].weight
    w_i, w_j = first[:, : conv.in_channels], first[:, conv.in_channels:]
    scale, shift = _bn_affine(conv.norms[0], first)
    both = torch.cat([w_i - w_j, w_j]) * torch.cat([scale, scale]).unsqueeze(1)
    weights, biases = [], []
    for linear, norm in zip(list(conv.linears)[1:], list(conv.norms)[1:], strict=True):
        weight, bias = fold_batchnorm(linear.weight, linear.bias, norm)
        weights.append(weight.contiguous())
        biases.append(bias.contiguous())
    skip = None
    if conv.shortcut is not None:
        weight, bias = fold_batchnorm(conv.shortcut.weight, conv.shortcut.bias,
                                      conv.shortcut_norm)
        skip = (weight.t().contiguous(), bias.contiguous())
    return {"both_t": both.t().contiguous(), "shift": shift.contiguous(), "weights": weights,
            "biases": biases, "skip": skip}


# --------------------------------------------------------------------------- training


def _count_batch(norm: nn.BatchNorm1d) -> float | None:
    """Count one more training batch in ``norm`` as the module does; return the momentum of
    this batch's running-statistics update (the cumulative average's when ``momentum`` is
    ``None``; ``None`` when no statistics are tracked)."""
    momentum = norm.momentum
    if norm.track_running_stats and norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)
        if momentum is None:
            momentum = 1.0 / float(norm.num_batches_tracked)
    return momentum


def _temporary(slot: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """Memory for a temporary that is neither saved nor returned: the CPU path's reused
    scratch memory (:func:`jettag.ops._cpu._scratch`) on the CPU, a new tensor elsewhere
    (CUDA's caching allocator reuses memory already)."""
    if like.device.type == "cpu":
        return _scratch(slot, shape, like)
    return like.new_empty(shape)


#: Elements of a chunk of edge rows in the training path (BatchNorm statistics, BatchNorm +
#: ReLU + linear, and their backward passes): 2 MiB in float32, cache-sized, so no
#: temporary is as large as ``z``. Measured on 2 EPYC cores, ParticleNet training step at
#: batch 8 / 64 (interleaved in one process): 74 / 81 jets/s with 128 Ki elements, 80 / 87
#: with 256 Ki, 85 / 93 with 512 Ki, 84 / 92 with 1 Mi; peak memory at batch 8 34.2 / 35.2 /
#: 37.0 MiB for the first three (two chunk-sized scratch tensors).
_CHUNK_ELEMENTS = 1 << 19


def _row_chunks(rows: int, width: int) -> list[slice]:
    step = max(1, _CHUNK_ELEMENTS // max(1, width))
    return [slice(start, start + step) for start in range(0, rows, step)]


def _bn_affine_batch(weight: Tensor | None, bias: Tensor | None, mean: Tensor,
                     invstd: Tensor) -> tuple[Tensor, Tensor]:
    """``(scale, shift)`` with ``bn(z) = z * scale + shift`` for the batch statistics."""
    scale = invstd if weight is None else invstd * weight
    shift = -mean * scale
    return scale, shift if bias is None else shift + bias


def _bn_batch_stats(z_rows: Callable[[slice], Tensor], num: int, width: int,
                    norm: nn.BatchNorm1d, like: Tensor) -> tuple[Tensor, Tensor]:
    """Training-mode BatchNorm statistics of ``z`` ``(num, width)``, read chunk by chunk
    (``z_rows(rows)``): returns the batch mean and inverse std and updates ``norm``'s running
    statistics and batch count as the module does. The chunks' means and centred sums of
    squares are combined in float64 (Chan et al.), so ``z`` need never exist whole."""
    momentum = _count_batch(norm)
    sums, m2s, sizes = [], [], []
    for rows in _row_chunks(num, width):
        # Two passes over the cached chunk (torch.var_mean over rows is 7x slower).
        z_c = z_rows(rows)
        sums.append(z_c.sum(0))
        centred = torch.sub(z_c, sums[-1] / z_c.shape[0],
                            out=_temporary("chunk", z_c.shape, z_c))
        m2s.append(centred.square_().sum(0))
        sizes.append(z_c.shape[0])
    # Chan et al.'s combination of the chunks' means and centred sums of squares.
    count = num
    if sizes:
        n_c = torch.tensor(sizes, dtype=torch.float64, device=like.device).unsqueeze(1)
        means_c = torch.stack(sums).double() / n_c
        mean = means_c.mul(n_c).sum(0) / count
        m2 = torch.stack(m2s).double().sum(0) + (means_c - mean).square_().mul_(n_c).sum(0)
    else:  # no rows: NaN statistics, as BatchNorm's
        mean = torch.zeros(width, dtype=torch.float64, device=like.device)
        m2 = torch.zeros_like(mean)
    var = m2 / count
    if norm.track_running_stats and norm.running_mean is not None:
        m = 0.0 if momentum is None else momentum
        with torch.no_grad():
            norm.running_mean.mul_(1 - m).add_(mean.to(like.dtype), alpha=m)
            unbiased = m2 / (count - 1) if count > 1 else var * float("inf")
            norm.running_var.mul_(1 - m).add_(unbiased.to(like.dtype), alpha=m)
    return mean.to(like.dtype), (var + norm.eps).rsqrt().to(like.dtype)


def _bn_relu_backward_(
    d_a: Tensor, z_rows: Callable[[slice], Tensor], weight: Tensor | None,
    bias: Tensor | None, mean: Tensor, invstd: Tensor, d_out: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """Gradients of ``relu(bn(z))`` (training-mode BatchNorm) from the gradient ``d_a`` of
    its output, computed in place in ``d_a`` chunk by chunk of rows (cache-sized chunks of
    ``z``, read as ``z_rows(rows)``; no temporary as large as ``z``). The BatchNorm+ReLU
    output is recomputed chunk by chunk from ``z`` and the batch statistics (for the ReLU
    mask and, when ``relu(bn(z))`` feeds a linear map whose output gradient ``d_out`` is
    given, that map's weight gradient ``d_out.T @ relu(bn(z))``). Returns ``(d_z, d_weight,
    d_bias, d_lin_weight)``, ``d_z`` being ``d_a``.
    """
    num, width = d_a.shape
    scale, shift = _bn_affine_batch(weight, bias, mean, invstd)
    sum_dy = d_a.new_zeros(width)
    sum_dy_centred = d_a.new_zeros(width)
    d_lin_weight = None if d_out is None else d_a.new_zeros(d_out.shape[1], width)
    chunks = _row_chunks(num, width)
    for rows in chunks:
        z_c, d_y = z_rows(rows), d_a[rows]
        a = torch.addcmul(shift, z_c, scale, out=_temporary("chunk", z_c.shape, z_c))
        a.relu_()
        if d_out is not None:
            d_lin_weight.addmm_(d_out[rows].T, a)
        _relu_grad_(d_y, a)
        sum_dy += d_y.sum(0)
        sum_dy_centred += a.copy_(z_c).sub_(mean).mul_(d_y).sum(0)
    sum_dy_xhat = sum_dy_centred * invstd
    # d_z = scale * (d_y - mean(d_y) - xhat * mean(d_y * xhat)), xhat = (z - mean) * invstd
    slope = scale * invstd * sum_dy_xhat / num
    offset = scale * sum_dy / num - mean * slope
    for rows in chunks:
        d_a[rows].mul_(scale).sub_(offset).addcmul_(z_rows(rows), slope, value=-1)
    return (d_a, None if weight is None else sum_dy_xhat, None if bias is None else sum_dy,
            d_lin_weight)


def _gather_sum(own: Tensor, other: Tensor, receivers: Tensor, senders: Tensor) -> Tensor:
    """``own[receivers] + other[senders]`` through ``index_select`` (4x faster than
    advanced indexing on the CPU for row gathers)."""
    return other.index_select(0, senders).add_(own.index_select(0, receivers))


def _edge_rows(z: Tensor | None, own: Tensor | None, other: Tensor | None,
               receivers: Tensor | None, senders: Tensor | None) -> Callable[[slice], Tensor]:
    """``rows -> z[rows]``, or with ``own`` given the same rows of
    ``own[receivers] + other[senders]`` gathered into temporary memory (no autograd).

    Chunk-sized temporary memory: ``"gather"`` holds the rows returned here, ``"chunk"`` is
    used while gathering them and afterwards by the caller (statistics, BatchNorm + ReLU
    output), so a chunk's rows must be gathered before its ``"chunk"`` is written."""
    if own is None:
        assert z is not None
        return z.__getitem__
    assert other is not None and receivers is not None and senders is not None

    def rows_of(rows: slice) -> Tensor:
        recv, send = receivers[rows], senders[rows]
        shape = (recv.shape[0], own.shape[1])
        out = torch.index_select(other, 0, send, out=_temporary("gather", shape, own))
        return out.add_(torch.index_select(own, 0, recv,
                                           out=_temporary("chunk", shape, own)))

    return rows_of


class _BatchNormReLULinear(torch.autograd.Function):
    """``linear(relu(bn(z)))``, ``z = own[receivers] + other[senders]`` when ``own`` is given
    (then only the per-particle ``own``, ``other`` and the indices are saved, not ``z``)."""

    @staticmethod
    def forward(ctx, z, own, other, receivers, senders, bn_weight, bn_bias, lin_weight,
                lin_bias, norm):
        z_rows = _edge_rows(z, own, other, receivers, senders)
        num, width = receivers.shape[0] if z is None else z.shape[0], lin_weight.shape[1]
        like = own if z is None else z
        mean, invstd = _bn_batch_stats(z_rows, num, width, norm, like)
        scale, shift = _bn_affine_batch(bn_weight, bn_bias, mean, invstd)
        # BatchNorm + ReLU chunk by chunk into cache-sized temporaries, each multiplied
        # into its rows of the output.
        out = like.new_empty(num, lin_weight.shape[0])
        for rows in _row_chunks(num, width):
            z_c = z_rows(rows)
            a = torch.addcmul(shift, z_c, scale, out=_temporary("chunk", z_c.shape, z_c))
            if lin_bias is None:
                torch.mm(a.relu_(), lin_weight.T, out=out[rows])
            else:
                torch.addmm(lin_bias, a.relu_(), lin_weight.T, out=out[rows])
        ctx.save_for_backward(z, own, other, receivers, senders, bn_weight, bn_bias,
                              lin_weight, mean, invstd)
        ctx.has_lin_bias = lin_bias is not None
        return out

    @staticmethod
    def backward(ctx, d_out):
        (z, own, other, receivers, senders, bn_weight, bn_bias, lin_weight, mean,
         invstd) = ctx.saved_tensors
        z_rows = _edge_rows(z, own, other, receivers, senders)
        d_out = d_out.contiguous()
        d_lin_bias = d_out.sum(0) if ctx.has_lin_bias else None
        d_z, d_bn_weight, d_bn_bias, d_lin_weight = _bn_relu_backward_(
            d_out @ lin_weight, z_rows, bn_weight, bn_bias, mean, invstd, d_out=d_out)
        d_own = d_other = None
        if own is not None:
            d_own = torch.zeros_like(own).index_add_(0, receivers, d_z)
            d_other = torch.zeros_like(other).index_add_(0, senders, d_z)
            d_z = None
        return (d_z, d_own, d_other, None, None, d_bn_weight, d_bn_bias, d_lin_weight,
                d_lin_bias, None)


class _BatchNormReLUMean(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, bn_weight, bn_bias, ptr, norm):
        num, width = z.shape
        mean, invstd = _bn_batch_stats(z.__getitem__, num, width, norm, z)
        scale, shift = _bn_affine_batch(bn_weight, bn_bias, mean, invstd)
        counts = ptr[1:] - ptr[:-1]
        segment = _jet_index(counts, num)
        # Rows added in order: deterministic.
        out = z.new_zeros(counts.numel(), width)
        for rows in _row_chunks(num, width):
            z_c = z[rows]
            a = torch.addcmul(shift, z_c, scale, out=_temporary("chunk", z_c.shape, z_c))
            out.index_add_(0, segment[rows], a.relu_())
        out /= counts.clamp_min(1).to(out.dtype).unsqueeze(1)
        ctx.save_for_backward(z, bn_weight, bn_bias, mean, invstd, ptr)
        return out

    @staticmethod
    def backward(ctx, d_out):
        z, bn_weight, bn_bias, mean, invstd, ptr = ctx.saved_tensors
        count = (ptr[1:] - ptr[:-1]).clamp_min(1).to(d_out.dtype).unsqueeze(1)
        d_a = _library.expand(d_out / count, ptr, z.shape[0])
        d_z, d_bn_weight, d_bn_bias, _ = _bn_relu_backward_(d_a, z.__getitem__, bn_weight,
                                                            bn_bias, mean, invstd)
        return d_z, d_bn_weight, d_bn_bias, None, None


def batchnorm_relu_linear(z: Tensor, norm: nn.BatchNorm1d, linear: nn.Linear) -> Tensor:
    """``linear(relu(norm(z)))`` in training mode, saving only ``z`` for backward.

    The BatchNorm output and the ReLU output (what ``linear`` would save) are recomputed
    from ``z`` and the batch statistics in the backward pass, halving the activation memory
    of a (BatchNorm, ReLU, Linear) chain. Running statistics are updated as by the module.
    In evaluation mode use :func:`fold_batchnorm` instead.
    """
    return _BatchNormReLULinear.apply(z, None, None, None, None, norm.weight, norm.bias,
                                      linear.weight, linear.bias, norm)


def batchnorm_relu_mean(z: Tensor, norm: nn.BatchNorm1d, ptr: Tensor) -> Tensor:
    """``segment_mean(relu(norm(z)), ptr)`` in training mode, saving only ``z`` (and
    ``ptr``) for backward; see :func:`batchnorm_relu_linear`."""
    return _BatchNormReLUMean.apply(z, norm.weight, norm.bias, ptr, norm)


def edge_conv_train(conv: Any, x: Tensor, pos: Tensor, ptr: Tensor) -> Tensor:
    """Training-mode forward of a :class:`jettag.nn.edge_conv.EdgeConv` with half the
    activation memory; same outputs, gradients and running-statistics updates as
    ``conv.train()(x, pos, ptr)`` (BatchNorm over the real edges).

    Each edge layer saves only its BatchNorm input (:func:`batchnorm_relu_linear`,
    :func:`batchnorm_relu_mean`), the first not even that: it is re-gathered from the
    per-particle parts of the first linear map, which is applied per particle. A drop-in
    for the layer's ``forward`` when ``conv.training`` (``aggr="mean"``; with ``"max"`` the
    last layer is not recomputed).
    """
    from jettag.ops import knn, segment_max

    with torch.no_grad():
        index, valid = knn(pos.detach(), ptr, conv.k)
    receivers, slots = valid.nonzero(as_tuple=True)
    senders = index[receivers, slots]
    edge_ptr = torch.zeros(x.shape[0] + 1, dtype=torch.int64, device=x.device)
    torch.cumsum(valid.sum(1), 0, out=edge_ptr[1:])
    first = conv.linears[0].weight
    w_i, w_j = first[:, : conv.in_channels], first[:, conv.in_channels:]
    own, other = (x @ torch.cat([w_i - w_j, w_j]).T).split(conv.channels[0], dim=1)
    layers = len(conv.norms)
    if layers > 1:
        # The first layer's input is re-gathered from the per-particle parts in backward.
        norm, linear = conv.norms[0], conv.linears[1]
        h = _BatchNormReLULinear.apply(None, own, other, receivers, senders, norm.weight,
                                       norm.bias, linear.weight, linear.bias, norm)
    else:
        h = _gather_sum(own, other, receivers, senders)
    for i in range(1, layers - 1):
        h = batchnorm_relu_linear(h, conv.norms[i], conv.linears[i + 1])
    if conv.aggr == "mean":
        messages = batchnorm_relu_mean(h, conv.norms[-1], edge_ptr)
    else:
        messages = segment_max(torch.relu(conv.norms[-1](h)), edge_ptr)
    if conv.shortcut is None:
        skip = x
    else:
        skip = conv.shortcut_norm(conv.shortcut(x))
    return torch.relu(skip + messages)


# --------------------------------------------------------------------------- Lorentz


def lorentz_messages_reference(
    hu: Tensor,
    hv: Tensor,
    x: Tensor,
    ptr: Tensor,
    w_psi: Tensor,
    w_e: Tensor,
    b_e: Tensor,
    w_m: Tensor,
    b_m: Tensor,
    w_x1: Tensor | None = None,
    b_x1: Tensor | None = None,
    w_x2: Tensor | None = None,
    *,
    clamp: float = 100.0,
) -> tuple[Tensor, Tensor]:
    """Plain-PyTorch :func:`lorentz_messages` over the explicit fully connected edge list."""
    num = hu.shape[0]
    receiver, sender = reference.fully_connected_edges(ptr)
    diff = x[receiver] - x[sender]
    metric = x.new_tensor([1.0, -1.0, -1.0, -1.0])
    norm = (diff * diff * metric).sum(-1)
    dot = (x[receiver] * x[sender] * metric).sum(-1)

    def psi(a: Tensor) -> Tensor:
        return torch.sign(a) * torch.log1p(a.abs())

    z = hu[receiver] + hv[sender] + psi(norm)[:, None] * w_psi[0] + psi(dot)[:, None] * w_psi[1]
    m = torch.relu(torch.relu(z) @ w_e.T + b_e)
    m = m * torch.sigmoid(m @ w_m + b_m)[:, None]
    msum = reference.scatter_sum(m, receiver, num)
    if w_x1 is None:
        return msum, x.new_zeros(num, 4)
    t = torch.relu(m @ w_x1.T + b_x1) @ w_x2
    shift = (diff * t[:, None]).clamp(-clamp, clamp)
    return msum, reference.scatter_mean(shift, receiver, num)


def _lorentz_messages_kernel(
    hu: Tensor, hv: Tensor, x: Tensor, ptr: Tensor, w_psi: Tensor, w_e: Tensor, b_e: Tensor,
    w_m: Tensor, b_m: Tensor, w_x1: Tensor | None, b_x1: Tensor | None, w_x2: Tensor | None,
    clamp: float,
) -> tuple[Tensor, Tensor]:
    impl = _library.implementation(hu)
    return impl.lorentz_messages(hu, hv, x, ptr, w_psi, w_e, b_e, w_m, b_m, w_x1, b_x1, w_x2,
                                 clamp)


def _lorentz_messages_fake(hu, hv, x, ptr, w_psi, w_e, b_e, w_m, b_m, w_x1, b_x1, w_x2, clamp):
    return torch.empty_like(hu), torch.empty_like(x)


def _lorentz_messages_backward_kernel(
    g_msum: Tensor, g_xs: Tensor, hu: Tensor, hv: Tensor, x: Tensor, ptr: Tensor,
    w_psi: Tensor, w_e: Tensor, b_e: Tensor, w_m: Tensor, b_m: Tensor, w_x1: Tensor | None,
    b_x1: Tensor | None, w_x2: Tensor | None, clamp: float,
) -> list[Tensor]:
    impl = _library.implementation(hu)
    return impl.lorentz_messages_backward(g_msum.contiguous(), g_xs.contiguous(), hu, hv, x,
                                          ptr, w_psi, w_e, b_e, w_m, b_m, w_x1, b_x1, w_x2,
                                          clamp)


def _lorentz_messages_backward_fake(g_msum, g_xs, hu, hv, x, ptr, w_psi, w_e, b_e, w_m, b_m,
                                   w_x1, b_x1, w_x2, clamp):
    tensors = [hu, hv, x, w_psi, w_e, b_e, w_m, b_m, w_x1, b_x1, w_x2]
    return [hu.new_empty(0) if t is None else torch.empty_like(t) for t in tensors]


_lorentz_messages_backward = _library.define(
    "lorentz_messages_backward", _lorentz_messages_backward_kernel,
    _lorentz_messages_backward_fake, backward=_first_derivative_only)


def _lorentz_setup(ctx, inputs, output) -> None:
    *tensors, clamp = inputs
    ctx.save_for_backward(*tensors)
    ctx.clamp = clamp


def _lorentz_backward(ctx, g_msum: Tensor, g_xs: Tensor):
    hu, hv, x, ptr, *weights = ctx.saved_tensors
    grads = _lorentz_messages_backward(g_msum, g_xs, hu, hv, x, ptr, *weights, ctx.clamp)
    phi_x = weights[-3] is not None
    return (grads[0], grads[1], grads[2], None, *grads[3:8],
            *(grads[8:11] if phi_x else (None, None, None)), None)


_lorentz_messages = _library.define(
    "lorentz_messages", _lorentz_messages_kernel, _lorentz_messages_fake,
    backward=_lorentz_backward, setup_context=_lorentz_setup)


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
    w_x1: Tensor | None = None,
    b_x1: Tensor | None = None,
    w_x2: Tensor | None = None,
    *,
    clamp: float = 100.0,
) -> tuple[Tensor, Tensor]:
    r"""Fused LGEB pair messages over every jet's fully connected graph (no edge list).

    See the module docstring for the formula. Without ``w_x1`` (a last block) the second
    output is zeros.

    Args:
        hu: ``(P, H)`` receiver part of the first :math:`\phi_e` layer (plus its bias).
        hv: ``(P, H)`` sender part.
        x: ``(P, 4)`` four-vectors; ptr: ``(B + 1,)`` int64 offsets.
        w_psi: ``(2, H)`` weights of :math:`\psi(\lVert x_i - x_j\rVert^2)` and
            :math:`\psi(\langle x_i, x_j\rangle)` in the first layer.
        w_e, b_e: second :math:`\phi_e` layer ``(H, H)``, ``(H,)``.
        w_m, b_m: gate ``(H,)``, ``(1,)``.
        w_x1, b_x1, w_x2: :math:`\phi_x` ``(H, H)``, ``(H,)``, ``(H,)`` or all None.
        clamp: bound of the elementwise clamp of the coordinate shifts.

    Shapes:
        - **output:** ``msum`` :math:`(P, H)`, ``xs`` :math:`(P, 4)`

    Example:
        >>> import torch
        >>> H = 4
        >>> hu, hv, x = torch.randn(5, H), torch.randn(5, H), torch.randn(5, 4)
        >>> ptr = torch.tensor([0, 3, 5])
        >>> msum, xs = lorentz_messages(hu, hv, x, ptr, torch.randn(2, H), torch.randn(H, H),
        ...                             torch.zeros(H), torch.randn(H), torch.zeros(1))
        >>> msum.shape, xs.shape
        (torch.Size([5, 4]), torch.Size([5, 4]))
    """
    hidden = hu.shape[-1]
    if hu.dim() != 2 or hv.shape != hu.shape or x.shape != (hu.shape[0], 4):
        raise ValueError(f"hu, hv, x: expected (P, H), (P, H), (P, 4), found "
                         f"{tuple(hu.shape)}, {tuple(hv.shape)}, {tuple(x.shape)}")
    expected = {"w_psi": (2, hidden), "w_e": (hidden, hidden), "b_e": (hidden,),
                "w_m": (hidden,), "b_m": (1,)}
    given = {"w_psi": w_psi, "w_e": w_e, "b_e": b_e, "w_m": w_m, "b_m": b_m}
    if w_x1 is not None or b_x1 is not None or w_x2 is not None:
        expected.update(w_x1=(hidden, hidden), b_x1=(hidden,), w_x2=(hidden,))
        given.update(w_x1=w_x1, b_x1=b_x1, w_x2=w_x2)
    for name, shape in expected.items():
        tensor = given[name]
        if tensor is None or tuple(tensor.shape) != shape:
            found = None if tensor is None else tuple(tensor.shape)
            raise ValueError(f"{name}: expected shape {shape}, found {found}")
    if dispatch.select(hu) == "reference":
        return lorentz_messages_reference(hu, hv, x, ptr, w_psi, w_e, b_e, w_m, b_m, w_x1,
                                          b_x1, w_x2, clamp=clamp)

    def c(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.contiguous()

    args = (c(hu), c(hv), c(x), ptr, c(w_psi), c(w_e), c(b_e), c(w_m), c(b_m), c(w_x1),
            c(b_x1), c(w_x2), float(clamp))
    tensors = [t for t in args[:12] if isinstance(t, Tensor)]
    if _library.direct(*tensors):
        return _cpu.lorentz_messages(*args)
    if _library.eager_cpu(*tensors) and _native.usable(hu):
        return _NativeLorentzMessages.apply(*args)
    return _lorentz_messages(*args)


class _NativeLorentzMessages(torch.autograd.Function):
    """:func:`lorentz_messages` on the native CPU kernel with autograd, outside the custom
    op: the forward pass keeps every pair row's message and phi_x product for the backward
    pass when they fit in :data:`jettag.ops._native.SAVE_BYTES` (32 MiB a call; the
    backward then skips two of its six matrix products per pair row), which the op's fixed
    outputs cannot."""

    @staticmethod
    def forward(ctx, hu, hv, x, ptr, w_psi, w_e, b_e, w_m, b_m, w_x1, b_x1, w_x2, clamp):
        saved = _native.saved_buffers(hu, ptr, w_x1 is not None)
        msum, xs = _native.lorentz_messages(hu, hv, x, ptr, w_psi, w_e, b_e, w_m, b_m, w_x1,
                                            b_x1, w_x2, clamp, saved=saved)
        ctx.save_for_backward(hu, hv, x, ptr, w_psi, w_e, b_e, w_m, b_m, w_x1, b_x1, w_x2)
        ctx.pair_rows = saved  # intermediates, neither inputs nor outputs
        ctx.clamp = clamp
        return msum, xs

    @staticmethod
    def backward(ctx, g_msum, g_xs):
        hu, hv, x, ptr, *weights = ctx.saved_tensors
        grads = _native.lorentz_messages_backward(g_msum, g_xs, hu, hv, x, ptr, *weights,
                                                  ctx.clamp, saved=ctx.pair_rows)
        _native.release_buffers(ctx.pair_rows)  # (a second backward pass recomputes)
        ctx.pair_rows = None
        phi_x = weights[-3] is not None
        return (grads[0], grads[1], grads[2], None, *grads[3:8],
                *(grads[8:11] if phi_x else (None, None, None)), None)


def lgeb_eval(
    block: Any, h: Tensor, x: Tensor, ptr: Tensor, attr: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Evaluation-mode forward of a :class:`jettag.nn.lorentz.LGEB` on the fully connected
    graph of every jet, fused; equal to ``block.eval()(h, x, ptr, attr)`` up to rounding.

    A drop-in for the block's ``forward`` when ``not block.training`` and no custom
    ``edge_index`` is given. Without autograd on the CPU backend with the native kernel
    (inference), the folded weights are kept between calls (:func:`_eval_weights`) and the
    native kernel is called directly: at small batches the per-call PyTorch work, not the
    pair messages, is most of the time.
    """
    if (not torch.is_grad_enabled() and _native.usable(h) and dispatch.select(h) == "cpu"
            and not torch.compiler.is_compiling()):
        return _lgeb_eval_native(block, h, x, ptr, attr)
    channels = block.channels
    first = block.phi_e[0].weight
    scale, shift = _bn_affine(block.phi_e[1], h)
    folded = first * scale.unsqueeze(1)
    u, v = folded[:, :channels], folded[:, channels:2 * channels]
    hu, hv = (h @ torch.cat([u, v]).T).split(block.hidden_channels, dim=1)
    hu = hu + shift
    w_psi = folded[:, 2 * channels:].T
    return _lgeb_rest(block, h, x, ptr, attr, hu, hv, w_psi)


_EVAL_WEIGHTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _cached_weights(module: nn.Module, build: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """``build(module)`` (the module's weights as a fused inference needs them: BatchNorms
    folded, matrices transposed and contiguous), kept per module while its submodules and
    tensors stay the same objects with the same storage, dtype, device and version counter
    (optimiser steps, ``load_state_dict`` and ``.to()`` all change one of them)."""
    key: list[Any] = []
    stack = [module]
    while stack:  # (Module.parameters() walks the tree several times slower)
        sub = stack.pop()
        for group in (sub._parameters, sub._buffers):
            key.extend((id(t), t.data_ptr(), t._version, t.dtype, t.device)
                       for t in group.values() if t is not None)
        key.append(id(sub))
        stack.extend(sub._modules.values())
    cached = _EVAL_WEIGHTS.get(module)
    if cached is not None and cached[0] == key:
        return cached[1]
    with torch.no_grad():
        weights = build(module)
    _EVAL_WEIGHTS[module] = (key, weights)
    return weights


def _eval_weights(block: Any) -> dict[str, Any]:
    """An evaluation-mode LGEB's folded weights (:func:`_cached_weights`)."""
    return _cached_weights(block, _lgeb_weights)


def _lgeb_weights(block: Any) -> dict[str, Any]:
    """The folded weights of an evaluation-mode LGEB (see :func:`_eval_weights`)."""
    channels, hidden = block.channels, block.hidden_channels
    scale, shift = _bn_affine(block.phi_e[1], block.phi_e[0].weight)
    folded = block.phi_e[0].weight * scale.unsqueeze(1)
    weights: dict[str, Any] = {
        "u_t": folded[:, :channels].t().contiguous(),
        "v_t": folded[:, channels:2 * channels].t().contiguous(),
        "shift": shift.contiguous(),
        "w_psi": folded[:, 2 * channels:].t().contiguous(),
        "w_e": block.phi_e[3].weight.contiguous(),
        "we_t": block.phi_e[3].weight.t().contiguous(),
        "b_e": block.phi_e[3].bias.contiguous(),
        "w_m": block.phi_m[0].weight[0].contiguous(),
        "b_m": float(block.phi_m[0].bias),
        "w_x1": None, "b_x1": None, "w_x2": None, "wx1_t": None, "phi_h": None,
    }
    if block.phi_x is not None:
        weights.update(w_x1=block.phi_x[0].weight.contiguous(),
                       wx1_t=block.phi_x[0].weight.t().contiguous(),
                       b_x1=block.phi_x[0].bias.contiguous(),
                       w_x2=block.phi_x[2].weight[0].contiguous())
    phi_h = block.phi_h
    if (isinstance(phi_h, nn.Sequential) and len(phi_h) == 4
            and isinstance(phi_h[0], nn.Linear)
            and isinstance(phi_h[1], nn.BatchNorm1d) and phi_h[1].track_running_stats
            and isinstance(phi_h[2], nn.ReLU) and isinstance(phi_h[3], nn.Linear)):
        w1, b1 = fold_batchnorm(phi_h[0].weight, phi_h[0].bias, phi_h[1])
        b2 = phi_h[3].bias
        weights["phi_h"] = (w1.t().contiguous(), b1.contiguous(),
                            phi_h[3].weight.t().contiguous(),
                            None if b2 is None else b2.contiguous())
    assert weights["w_e"].shape == (hidden, hidden)
    return weights


def _lgeb_eval_native(
    block: Any, h: Tensor, x: Tensor, ptr: Tensor, attr: Tensor | None
) -> tuple[Tensor, Tensor]:
    """:func:`lgeb_eval` without autograd: cached folded weights, the native kernel called
    directly, phi_h with its BatchNorm folded (a handful of PyTorch calls per block)."""
    w = _eval_weights(block)
    hu = torch.addmm(w["shift"], h, w["u_t"])
    hv = torch.mm(h, w["v_t"])
    msum, xs = _native.lorentz_messages(hu, hv, x, ptr, w["w_psi"], w["w_e"], w["b_e"],
                                        w["w_m"], w["b_m"], w["w_x1"], w["b_x1"], w["w_x2"],
                                        block.clamp, we_t=w["we_t"], wx1_t=w["wx1_t"])
    return _lgeb_update(block, h, x, attr, msum, xs, w["phi_h"])


def _lgeb_update(
    block: Any, h: Tensor, x: Tensor, attr: Tensor | None, msum: Tensor, xs: Tensor,
    phi_h: tuple[Tensor, Tensor, Tensor, Tensor | None] | None = None,
) -> tuple[Tensor, Tensor]:
    r"""The end of an LGEB block from its pair messages: the coordinate update and the
    residual :math:`\phi_h`, run as the module or, given ``phi_h`` (its BatchNorm folded:
    ``W_1^T``, ``b_1``, ``W_2^T``, ``b_2``), as two matrix products."""
    if block.phi_x is not None:
        x = x + block.c_weight * xs
    parts = torch.cat([h, msum] if attr is None else [h, msum, attr], 1)
    if phi_h is None:
        return h + block.phi_h(parts), x
    w1_t, b1, w2_t, b2 = phi_h
    update = torch.addmm(b1, parts, w1_t).relu_()
    out = torch.addmm(h, update, w2_t)
    return (out if b2 is None else out.add_(b2)), x


def _lgeb_rest(
    block: Any, h: Tensor, x: Tensor, ptr: Tensor, attr: Tensor | None, hu: Tensor,
    hv: Tensor, w_psi: Tensor,
) -> tuple[Tensor, Tensor]:
    r"""An LGEB block from its folded first layer on: the fused pair messages, the
    coordinate update and :math:`\phi_h` (shared by :func:`lgeb_eval`, :func:`lgeb_train`)."""
    phi_x: tuple[Tensor | None, ...] = (None, None, None)
    if block.phi_x is not None:
        phi_x = (block.phi_x[0].weight, block.phi_x[0].bias, block.phi_x[2].weight[0])
    msum, xs = lorentz_messages(hu, hv, x, ptr, w_psi, block.phi_e[3].weight,
                                block.phi_e[3].bias, block.phi_m[0].weight[0],
                                block.phi_m[0].bias, *phi_x, clamp=block.clamp)
    return _lgeb_update(block, h, x, attr, msum, xs)


def _pair_batchnorm_stats(
    a: Tensor, b: Tensor, x: Tensor, ptr: Tensor, w_psi: Tensor
) -> tuple[Tensor, Tensor, int]:
    r"""Batch mean and (biased) variance of :math:`z_{ij} = a_i + b_j + \psi_{ij} W` over
    the fully connected pairs ``i != j`` of every jet, without forming :math:`z`.

    ``a``, ``b`` are ``(P, H)``, ``w_psi`` ``(2, H)``, :math:`\psi_{ij}` the two Lorentz
    invariants of the pair (:func:`jettag.nn.lorentz.lorentz_edge_features`). Each part is
    centred on its own pair mean, so that the variance is a sum of covariances (no
    difference of large squares); sums over pairs reduce to per-particle and per-jet sums:
    :math:`\sum_{i \ne j} a_i b_j = \sum_{jets} (\sum_i a_i)(\sum_j b_j) - \sum_i a_i b_i`,
    :math:`\sum_{ij} a_i \psi_{ij} = \sum_i a_i \sum_j \psi_{ij}`. Computed in float64 and
    differentiable (the training-mode BatchNorm's gradients flow through the statistics).
    Costs O(P H + pairs) instead of the O(pairs H) of the pair activations.
    Returns ``(mean, var, pairs)``, mean and var in float64.
    """
    from jettag.nn.lorentz import lorentz_edge_features

    num = a.shape[0]
    counts = ptr[1:] - ptr[:-1]
    pairs = int((counts * (counts - 1)).sum())
    degree = torch.repeat_interleave(counts - 1, counts, output_size=num).to(torch.float64)
    if _native.usable(x):
        # psi is symmetric: the sums over j of psi_ij and of psi_ji are the same.
        psi_rows, psi_total, psi_gram = _native.psi_moments(x, ptr)
        psi_mean = psi_total / pairs
        psi_rows = psi_cols = psi_rows - degree.unsqueeze(1) * psi_mean
        psi_gram = psi_gram - pairs * torch.outer(psi_mean, psi_mean)
    else:
        receiver, sender = reference.fully_connected_edges(ptr)
        psi = lorentz_edge_features(x, torch.stack([receiver, sender])).to(torch.float64)
        psi_mean = psi.sum(0) / pairs
        psi = psi - psi_mean
        psi_rows = reference.scatter_sum(psi, receiver, num)  # (P, 2): sum over j of psi_ij
        psi_cols = reference.scatter_sum(psi, sender, num)  # (P, 2): sum over i of psi_ij
        psi_gram = psi.T @ psi
    a, b, w = a.to(torch.float64), b.to(torch.float64), w_psi.to(torch.float64)
    a_mean = degree @ a / pairs
    b_mean = degree @ b / pairs
    a, b = a - a_mean, b - b_mean
    a_jets, b_jets = reference.segment_sum(a, ptr), reference.segment_sum(b, ptr)
    cross_ab = (a_jets * b_jets).sum(0) - (a * b).sum(0)
    second = (
        degree @ (a * a)
        + degree @ (b * b)
        + (w * (psi_gram @ w)).sum(0)
        + 2 * cross_ab
        + 2 * (a * (psi_rows @ w)).sum(0)
        + 2 * (b * (psi_cols @ w)).sum(0)
    )
    return a_mean + b_mean + psi_mean @ w, second / pairs, pairs


def lgeb_train(
    block: Any, h: Tensor, x: Tensor, ptr: Tensor, attr: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Training-mode forward of a :class:`jettag.nn.lorentz.LGEB` on the fully connected
    graph of every jet through the fused pair operator; same outputs, gradients and
    running-statistics updates as ``block.train()(h, x, ptr, attr)`` up to rounding.

    The first :math:`\\phi_e` layer's BatchNorm needs the batch statistics of its input over
    all pairs: they come from per-particle and per-jet sums
    (:func:`_pair_batchnorm_stats`), after which the BatchNorm is an affine map folded into
    the per-particle parts, as in evaluation, and :func:`lorentz_messages` (whose backward
    recomputes each tile) does the rest. No pair-sized activation is stored: the memory of a
    training step grows with the pairs only through their 2 invariants and the edge list
    (except on the native CPU kernel, which keeps up to 32 MiB of pair rows per block for
    its backward pass, :data:`jettag.ops._native.SAVE_BYTES`).
    Falls back to the block's own forward with fewer than 2 pairs (where BatchNorm's
    training mode raises its usual error).
    """
    channels = block.channels
    pairs = int(((ptr[1:] - ptr[:-1]) * (ptr[1:] - ptr[:-1] - 1)).sum())
    norm: nn.BatchNorm1d = block.phi_e[1]
    if pairs < 2 or not norm.training:
        return type(block).forward(block, h, x, ptr, attr,
                                   edge_index=reference.fully_connected_edges(ptr))
    first = block.phi_e[0].weight
    u, v = first[:, :channels], first[:, channels:2 * channels]
    w_psi = first[:, 2 * channels:].T
    a, b = (h @ torch.cat([u, v]).T).split(block.hidden_channels, dim=1)
    mean, var, pairs = _pair_batchnorm_stats(a, b, x, ptr, w_psi)
    if norm.track_running_stats and norm.running_mean is not None:
        momentum = _count_batch(norm)
        with torch.no_grad():
            norm.running_mean.mul_(1 - momentum).add_(momentum * mean.to(h.dtype))
            unbiased = var * (pairs / (pairs - 1))
            norm.running_var.mul_(1 - momentum).add_(momentum * unbiased.to(h.dtype))
    scale = torch.rsqrt(var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight.to(torch.float64)
    shift = -mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias.to(torch.float64)
    scale, shift = scale.to(h.dtype), shift.to(h.dtype)
    return _lgeb_rest(block, h, x, ptr, attr, a * scale + shift, b * scale, w_psi * scale)
