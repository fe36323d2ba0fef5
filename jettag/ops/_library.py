"""``torch.library`` registration of the accelerated ops, and the dispatching public API.

Each accelerated op is a custom op in the ``jettag`` namespace (``torch.ops.jettag.*``)
with a fake (meta) implementation, so ``torch.compile`` traces it as one opaque node, and
a registered autograd formula, so models train through it. The op's body calls the Triton
kernels (:mod:`jettag.ops._triton`) or the fast CPU code (:mod:`jettag.ops._cpu`) as
:func:`jettag.ops.dispatch.select` decides. The public functions defined here keep the
signatures of :mod:`jettag.ops.reference` and call the reference directly where it is
selected (ONNX export, ``torch.export``, backend ``"reference"``, other devices).

Backward formulas are written with differentiable ops (the custom ops themselves), so
second derivatives work for the reductions; the fused operators of :mod:`jettag.ops.fused`
have a first derivative only.

The ops are registered with the low-level ``torch.library`` API (:func:`define`) rather
than ``torch.library.custom_op``: the latter wraps every kernel in ``torch._dynamo``'s
``disable``, whose first call imports ``torch._dynamo`` (7-10 s on a 2-core machine) even
in plain eager code.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from jettag.ops import _cpu, dispatch, reference

__all__ = [
    "knn",
    "scatter_mean",
    "scatter_sum",
    "segment_max",
    "segment_mean",
    "segment_softmax",
    "segment_sum",
]


#: The ``jettag`` namespace of ``torch.ops``; kept alive as long as the module.
LIBRARY = torch.library.Library("jettag", "FRAGMENT")


def define(
    name: str,
    kernel: Callable[..., Any],
    fake: Callable[..., Any],
    *,
    backward: Callable[..., Any] | None = None,
    setup_context: Callable[..., None] | None = None,
) -> Any:
    """Register ``kernel`` as the operator ``jettag::name`` and return its overload.

    The schema is inferred from ``kernel``'s type hints (no argument is mutated), the same
    kernel serves every device (it dispatches itself), ``fake`` computes output shapes for
    tracing, and ``backward``/``setup_context`` are its autograd formula as for
    ``torch.library.register_autograd``.
    """
    LIBRARY.define(name + torch.library.infer_schema(kernel, mutates_args=()))
    LIBRARY.impl(name, kernel, "CompositeExplicitAutograd")
    qualname = f"jettag::{name}"
    torch.library.register_fake(qualname, fake, lib=LIBRARY)
    if backward is not None:
        torch.library.register_autograd(qualname, backward, setup_context=setup_context,
                                        lib=LIBRARY)
    return getattr(torch.ops.jettag, name).default


def implementation(tensor: Tensor) -> ModuleType:
    """Module whose functions compute an op on ``tensor``: ``_triton`` or ``_cpu``.

    The CPU module is plain PyTorch and also serves any device Triton does not.
    """
    if dispatch.select(tensor) == "triton":
        from jettag.ops import _triton

        return _triton
    return _cpu


def expand(values: Tensor, ptr: Tensor, num_rows: int) -> Tensor:
    """Broadcast per-jet rows ``(B, ...)`` to the particles ``(P, ...)`` of the jets."""
    return torch.repeat_interleave(values, ptr[1:] - ptr[:-1], dim=0, output_size=num_rows)


def _view_counts(counts: Tensor, like: Tensor) -> Tensor:
    return counts.view(-1, *([1] * (like.dim() - 1)))


# --------------------------------------------------------------------------- segment_sum


def _segment_sum_kernel(src: Tensor, ptr: Tensor) -> Tensor:
    return implementation(src).segment_sum(src, ptr)


def _per_jet_fake(src: Tensor, ptr: Tensor) -> Tensor:
    return src.new_empty((ptr.shape[0] - 1, *src.shape[1:]))


def _segment_sum_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[1])
    ctx.num_rows = inputs[0].shape[0]


def _segment_sum_backward(ctx, grad: Tensor):
    (ptr,) = ctx.saved_tensors
    return expand(grad, ptr, ctx.num_rows), None


_segment_sum = define("segment_sum", _segment_sum_kernel, _per_jet_fake,
                      backward=_segment_sum_backward, setup_context=_segment_sum_setup)


# --------------------------------------------------------------------------- segment_max


def _segment_max_kernel(src: Tensor, ptr: Tensor) -> Tensor:
    return implementation(src).segment_max(src, ptr)


def _segment_max_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[0], inputs[1], output)


def _segment_max_backward(ctx, grad: Tensor):
    src, ptr, out = ctx.saved_tensors
    num = src.shape[0]
    # Tied maxima share the gradient evenly, as scatter_reduce("amax") in the reference.
    hit = (src == expand(out, ptr, num)).to(src.dtype)
    ties = _segment_sum(hit, ptr).clamp_min(1)
    return expand(grad / ties, ptr, num) * hit, None


_segment_max = define("segment_max", _segment_max_kernel, _per_jet_fake,
                      backward=_segment_max_backward, setup_context=_segment_max_setup)


# --------------------------------------------------------------------------- segment_softmax


def _segment_softmax_kernel(src: Tensor, ptr: Tensor) -> Tensor:
    return implementation(src).segment_softmax(src, ptr)


def _segment_softmax_fake(src: Tensor, ptr: Tensor) -> Tensor:
    return torch.empty_like(src)


def _segment_softmax_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(output, inputs[1])


def _segment_softmax_backward(ctx, grad: Tensor):
    out, ptr = ctx.saved_tensors
    weighted = grad * out
    return weighted - out * expand(_segment_sum(weighted, ptr), ptr, out.shape[0]), None


_segment_softmax = define("segment_softmax", _segment_softmax_kernel, _segment_softmax_fake,
                          backward=_segment_softmax_backward,
                          setup_context=_segment_softmax_setup)


# --------------------------------------------------------------------------- scatter_sum


def _scatter_sum_kernel(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    return implementation(src).scatter_sum(src, index, dim_size)


def _scatter_sum_fake(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    return src.new_empty((dim_size, *src.shape[1:]))


def _scatter_sum_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[1])


def _scatter_sum_backward(ctx, grad: Tensor):
    (index,) = ctx.saved_tensors
    return grad.index_select(0, index), None, None


_scatter_sum = define("scatter_sum", _scatter_sum_kernel, _scatter_sum_fake,
                      backward=_scatter_sum_backward, setup_context=_scatter_sum_setup)


# --------------------------------------------------------------------------- knn


def _knn_kernel(x: Tensor, ptr: Tensor, k: int, include_self: bool) -> tuple[Tensor, Tensor]:
    return implementation(x).knn(x, ptr, k, include_self)


def _knn_fake(x: Tensor, ptr: Tensor, k: int, include_self: bool) -> tuple[Tensor, Tensor]:
    shape = (x.shape[0], k)
    return (x.new_empty(shape, dtype=torch.int64), x.new_empty(shape, dtype=torch.bool))


_knn = define("knn", _knn_kernel, _knn_fake)


# --------------------------------------------------------------------------- public API


def _checks_enabled(tensor: Tensor) -> bool:
    # Value checks read a tensor on the host: skipped when tracing and on accelerators.
    return tensor.device.type == "cpu" and not torch.compiler.is_compiling()


def eager_cpu(*tensors: Tensor) -> bool:
    """Whether a call on these inputs may bypass its custom op: CPU tensors of the plain
    type selected for the ``cpu`` backend, and no ``torch.compile``, ``torch.jit`` tracing
    or functorch transform that would need to see the op."""
    return (dispatch.select(tensors[0]) == "cpu"
            and not torch.compiler.is_compiling() and not torch.jit.is_tracing()
            and not torch._C._are_functorch_transforms_active()
            and all(type(t) in _PLAIN for t in tensors))


#: Tensor types that carry no tracing or transform (parameters are plain tensors).
_PLAIN = (Tensor, torch.nn.Parameter)


def needs_grad(*tensors: Tensor) -> bool:
    """Whether autograd will differentiate a call on these inputs."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def direct(*tensors: Tensor) -> bool:
    """Whether a call on these (differentiable) inputs may run the CPU code directly instead
    of through its custom op (:func:`eager_cpu`, and nothing to differentiate). The custom
    op's dispatch costs some 50-150 us a call: at small batches as much as the work."""
    return eager_cpu(*tensors) and not needs_grad(*tensors)


def _check_ptr(ptr: Tensor, src: Tensor, name: str) -> None:
    if ptr.dim() != 1 or ptr.dtype != torch.int64 or ptr.numel() < 1:
        raise ValueError(
            f"ptr: expected 1-D int64 CSR offsets (B+1,), found {ptr.dtype} {tuple(ptr.shape)}"
        )
    if _checks_enabled(ptr) and int(ptr[-1]) != src.shape[0]:
        raise ValueError(
            f"ptr: the last offset must equal the number of rows of {name} ({src.shape[0]}), "
            f"found {int(ptr[-1])}"
        )


def segment_sum(src: Tensor, ptr: Tensor) -> Tensor:
    """Sum over each jet's particles: ``(P, ...) -> (B, ...)`` (see the reference)."""
    if dispatch.select(src) == "reference":
        return reference.segment_sum(src, ptr)
    _check_ptr(ptr, src, "src")
    if direct(src):
        return _cpu.segment_sum(src, ptr)
    return _segment_sum(src, ptr)


def segment_mean(src: Tensor, ptr: Tensor) -> Tensor:
    """Mean over each jet's real particles (empty jet -> 0)."""
    if dispatch.select(src) == "reference":
        return reference.segment_mean(src, ptr)
    total = segment_sum(src, ptr)
    count = (ptr[1:] - ptr[:-1]).clamp_min(1).to(src.dtype)
    return total / _view_counts(count, total)


def segment_max(src: Tensor, ptr: Tensor) -> Tensor:
    """Maximum over each jet's particles (empty jet -> 0)."""
    if dispatch.select(src) == "reference":
        return reference.segment_max(src, ptr)
    _check_ptr(ptr, src, "src")
    if direct(src):
        return _cpu.segment_max(src, ptr)
    return _segment_max(src, ptr)


def segment_softmax(src: Tensor, ptr: Tensor) -> Tensor:
    """Softmax over the particles of each jet, per channel: ``(P, ...) -> (P, ...)``."""
    if dispatch.select(src) == "reference":
        return reference.segment_softmax(src, ptr)
    _check_ptr(ptr, src, "src")
    if direct(src):
        return _cpu.segment_softmax(src, ptr)
    return _segment_softmax(src, ptr)


def scatter_sum(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """``out[i] = sum_{e: index[e] = i} src[e]``; shape ``(dim_size, ...)``."""
    if dispatch.select(src) == "reference":
        return reference.scatter_sum(src, index, dim_size)
    if index.shape != src.shape[:1]:
        raise ValueError(
            f"index: expected shape ({src.shape[0]},) matching src's first dimension, "
            f"found {tuple(index.shape)}"
        )
    if direct(src):
        return _cpu.scatter_sum(src, index, dim_size)
    return _scatter_sum(src, index, dim_size)


def scatter_mean(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """Mean of ``src`` rows sharing an index; 0 where no row has that index."""
    if dispatch.select(src) == "reference":
        return reference.scatter_mean(src, index, dim_size)
    total = scatter_sum(src, index, dim_size)
    count = torch.bincount(index, minlength=dim_size).clamp_min(1).to(src.dtype)
    return total / _view_counts(count, total)


def knn(x: Tensor, ptr: Tensor, k: int, *, include_self: bool = False) -> tuple[Tensor, Tensor]:
    """k nearest neighbours of every particle within its jet (see the reference)."""
    if dispatch.select(x) == "reference":
        return reference.knn(x, ptr, k, include_self=include_self)
    if x.dim() != 2:
        raise ValueError(f"x: expected coordinates (P, D), found shape {tuple(x.shape)}")
    _check_ptr(ptr, x, "x")
    if k < 1:
        raise ValueError(f"k: expected a positive number of neighbours, found {k}")
    x = x.detach()
    if direct(x):
        return _cpu.knn(x, ptr, k, include_self)
    return _knn(x, ptr, k, include_self)


for _public, _ref in (
    (segment_sum, reference.segment_sum),
    (segment_mean, reference.segment_mean),
    (segment_max, reference.segment_max),
    (segment_softmax, reference.segment_softmax),
    (scatter_sum, reference.scatter_sum),
    (scatter_mean, reference.scatter_mean),
    (knn, reference.knn),
):
    _public.__doc__ = _ref.__doc__
