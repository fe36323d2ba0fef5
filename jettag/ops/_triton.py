"""Launchers of the Triton kernels (:mod:`jettag.ops._triton_kernels`), CUDA GPUs.

Same functions and signatures as :mod:`jettag.ops._cpu`. Triton is imported on the first
call, never by ``import jettag``. Float16/bfloat16 inputs are computed in float32 (Triton's
interpreter and atomics do not support them) and cast back. Where no kernel applies (a
fused EdgeConv with ``aggr="max"`` or other than 1-2 layers after the first) the device-
agnostic PyTorch code of :mod:`jettag.ops._cpu` runs instead.
"""

from __future__ import annotations

import importlib
import math
import sys
from types import ModuleType

import torch
from torch import Tensor

from jettag.ops import _cpu, dispatch

__all__ = [
    "edge_conv_messages",
    "edge_conv_messages_backward",
    "kernels",
    "knn",
    "lorentz_messages",
    "lorentz_messages_backward",
    "scatter_sum",
    "segment_max",
    "segment_softmax",
    "segment_sum",
]

_NATIVE = (torch.float32, torch.float64)


def kernels() -> ModuleType:
    """The kernel module, (re)defined for the interpreter when ``TRITON_INTERPRET=1``."""
    from jettag._optional import require

    require("triton", "kernels", feature="jettag's Triton kernels")
    if dispatch.triton_interpreting() and not interpreter_ready():
        raise RuntimeError(
            "TRITON_INTERPRET=1 was set after `triton` was imported; set it before the first "
            "import of triton (e.g. in the environment of the process)"
        )
    name = "jettag.ops._triton_kernels"
    module = sys.modules.get(name)
    if module is None:
        return importlib.import_module(name)
    if module.INTERPRETED != dispatch.triton_interpreting():
        module = importlib.reload(module)
    return module


def interpreter_ready() -> bool:
    """Whether Triton's own library functions were defined for the interpreter, as kernels
    on CPU tensors need (``TRITON_INTERPRET=1`` set before ``triton`` was first imported)."""
    import triton.language.standard as standard
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(standard.zeros, InterpretedFunction)


def _next_pow2(n: int, minimum: int = 1) -> int:
    return max(minimum, 1 << max(0, int(n) - 1).bit_length())


def _work(t: Tensor) -> Tensor:
    t = t if t.dtype in _NATIVE else t.float()
    return t.contiguous()


def _flat(src: Tensor) -> Tensor:
    return _work(src).reshape(src.shape[0], math.prod(src.shape[1:]))


def _batch(ptr: Tensor, num: int) -> Tensor:
    counts = ptr[1:] - ptr[:-1]
    return torch.repeat_interleave(torch.arange(counts.numel(), device=ptr.device), counts,
                                   output_size=num)


# --------------------------------------------------------------------------- reductions


def _segment(src: Tensor, ptr: Tensor, is_max: bool) -> Tensor:
    k = kernels()
    flat = _flat(src)
    num_jets, channels = ptr.numel() - 1, flat.shape[1]
    out = flat.new_empty(num_jets, channels)
    if num_jets and channels:
        grid = lambda meta: (num_jets, (channels + meta["BLOCK_C"] - 1) // meta["BLOCK_C"])  # noqa: E731
        k.segment_reduce_kernel[grid](flat, ptr.contiguous(), out, channels, IS_MAX=is_max)
    return out.view(num_jets, *src.shape[1:]).to(src.dtype)


def segment_sum(src: Tensor, ptr: Tensor) -> Tensor:
    """Deterministic CSR sum (one program per jet and channel block, no atomics)."""
    return _segment(src, ptr, False)


def segment_max(src: Tensor, ptr: Tensor) -> Tensor:
    """Deterministic CSR maximum; empty jets give 0."""
    return _segment(src, ptr, True)


def segment_softmax(src: Tensor, ptr: Tensor) -> Tensor:
    """Softmax within jets, three passes over each jet's rows."""
    k = kernels()
    flat = _flat(src)
    num_jets, channels = ptr.numel() - 1, flat.shape[1]
    out = torch.empty_like(flat)
    if num_jets and channels and flat.shape[0]:
        grid = lambda meta: (num_jets, (channels + meta["BLOCK_C"] - 1) // meta["BLOCK_C"])  # noqa: E731
        k.segment_softmax_kernel[grid](flat, ptr.contiguous(), out, channels)
    return out.view(src.shape).to(src.dtype)


def scatter_sum(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """Scatter-add over an unsorted index with atomics (float32/float64)."""
    k = kernels()
    flat = _flat(src)
    rows, channels = flat.shape
    out = flat.new_zeros(dim_size, channels)
    if rows and channels:
        grid = lambda meta: ((rows + meta["BLOCK_E"] - 1) // meta["BLOCK_E"],  # noqa: E731
                             (channels + meta["BLOCK_C"] - 1) // meta["BLOCK_C"])
        k.scatter_add_kernel[grid](flat, index.contiguous(), out, rows, channels)
    return out.view(dim_size, *src.shape[1:]).to(src.dtype)


# --------------------------------------------------------------------------- kNN


def knn(x: Tensor, ptr: Tensor, k: int, include_self: bool) -> tuple[Tensor, Tensor]:
    """Per-jet kNN: each program takes a block of queries and scans only their jets."""
    kern = kernels()
    pts = _work(x)
    num, dims = pts.shape
    index = torch.empty(num, k, dtype=torch.int64, device=x.device)
    valid = torch.empty(num, k, dtype=torch.bool, device=x.device)
    if num:
        grid = lambda meta: ((num + meta["BLOCK_Q"] - 1) // meta["BLOCK_Q"],)  # noqa: E731
        kern.knn_kernel[grid](pts, ptr.contiguous(), _batch(ptr, num), index,
                              valid.view(torch.uint8), num, dims, k, INCLUDE_SELF=include_self)
    return index, valid


# --------------------------------------------------------------------------- EdgeConv


def _edge_applies(weights: list[Tensor], aggr: str) -> bool:
    return aggr == "mean" and len(weights) in (1, 2)


def _edge_meta(own: Tensor, index: Tensor, weights: list[Tensor]) -> dict:
    c2 = weights[0].shape[0]
    c3 = weights[1].shape[0] if len(weights) == 2 else c2
    return {"C1": own.shape[1], "C2": c2, "C3": c3, "KP": _next_pow2(index.shape[1]),
            "C2P": _next_pow2(c2, 16), "TWO": len(weights) == 2}


def _edge_params(weights: list[Tensor], biases: list[Tensor], like: Tensor) -> list[Tensor]:
    params = [_work(weights[0]), _work(biases[0])]
    if len(weights) == 2:
        params += [_work(weights[1]), _work(biases[1])]
    else:
        params += [like.new_zeros(1), like.new_zeros(1)]
    return params


def edge_conv_messages(own: Tensor, other: Tensor, index: Tensor, valid: Tensor,
                       weights: list[Tensor], biases: list[Tensor], aggr: str) -> Tensor:
    """Fused gather + edge MLP + mean over neighbours, one tile of particles per program."""
    if not _edge_applies(weights, aggr):
        return _cpu.edge_conv_messages(own, other, index, valid, weights, biases, aggr)
    kern = kernels()
    meta = _edge_meta(own, index, weights)
    own_w, other_w = _work(own), _work(other)
    num = own.shape[0]
    out = own_w.new_empty(num, meta["C3"])
    if num:
        grid = lambda m: ((num + m["BLOCK_P"] - 1) // m["BLOCK_P"],)  # noqa: E731
        kern.edge_conv_fwd_kernel[grid](own_w, other_w, index.contiguous(),
                                        valid.contiguous().view(torch.uint8),
                                        *_edge_params(weights, biases, own_w), out, num,
                                        index.shape[1], **meta)
    return out.to(own.dtype)


def edge_conv_messages_backward(grad: Tensor, out: Tensor, own: Tensor, other: Tensor,
                                index: Tensor, valid: Tensor, weights: list[Tensor],
                                biases: list[Tensor], aggr: str) -> list[Tensor]:
    """Backward of :func:`edge_conv_messages`: recompute per tile, atomics for the
    neighbours' and the weights' gradients."""
    if not _edge_applies(weights, aggr):
        return _cpu.edge_conv_messages_backward(grad, out, own, other, index, valid, weights,
                                                biases, aggr)
    kern = kernels()
    meta = _edge_meta(own, index, weights)
    own_w, other_w = _work(own), _work(other)
    params = _edge_params(weights, biases, own_w)
    num = own.shape[0]
    d_own = torch.zeros_like(own_w)
    d_other = torch.zeros_like(other_w)
    d_params = [torch.zeros_like(p) for p in params]
    if num:
        grid = lambda m: ((num + m["BLOCK_P"] - 1) // m["BLOCK_P"],)  # noqa: E731
        kern.edge_conv_bwd_kernel[grid](_work(grad), own_w, other_w, index.contiguous(),
                                        valid.contiguous().view(torch.uint8), *params, d_own,
                                        d_other, *d_params, num, index.shape[1], **meta)
    d_weights = [d_params[0].to(weights[0].dtype)]
    d_biases = [d_params[1].to(biases[0].dtype)]
    if len(weights) == 2:
        d_weights.append(d_params[2].to(weights[1].dtype))
        d_biases.append(d_params[3].to(biases[1].dtype))
    return [d_own.to(own.dtype), d_other.to(other.dtype), *d_weights, *d_biases]


# --------------------------------------------------------------------------- Lorentz


def _lorentz_params(w_psi, w_e, b_e, w_m, b_m, w_x1, b_x1, w_x2, like: Tensor) -> list[Tensor]:
    tensors = [w_psi, w_e, b_e, w_m, b_m]
    if w_x1 is None:
        tensors += [like.new_zeros(1)] * 3
    else:
        tensors += [w_x1, b_x1, w_x2]
    return [_work(t) for t in tensors]


def lorentz_messages(hu: Tensor, hv: Tensor, x: Tensor, ptr: Tensor, w_psi: Tensor,
                     w_e: Tensor, b_e: Tensor, w_m: Tensor, b_m: Tensor, w_x1: Tensor | None,
                     b_x1: Tensor | None, w_x2: Tensor | None,
                     clamp: float) -> tuple[Tensor, Tensor]:
    """Pair messages over per-jet tiles (rows i x columns j of the same jets)."""
    kern = kernels()
    hu_w, hv_w, x_w = _work(hu), _work(hv), _work(x)
    num, hidden = hu.shape
    msum = hu_w.new_empty(num, hidden)
    xs = x_w.new_zeros(num, 4)
    if num:
        params = _lorentz_params(w_psi, w_e, b_e, w_m, b_m, w_x1, b_x1, w_x2, hu_w)
        grid = lambda m: ((num + m["BLOCK_I"] - 1) // m["BLOCK_I"],)  # noqa: E731
        kern.lorentz_fwd_kernel[grid](hu_w, hv_w, x_w, ptr.contiguous(), _batch(ptr, num),
                                      *params, msum, xs, num, hidden, float(clamp),
                                      HP=_next_pow2(hidden, 16), UPDATE_X=w_x1 is not None)
    return msum.to(hu.dtype), xs.to(x.dtype)


def lorentz_messages_backward(g_msum: Tensor, g_xs: Tensor, hu: Tensor, hv: Tensor, x: Tensor,
                              ptr: Tensor, w_psi: Tensor, w_e: Tensor, b_e: Tensor,
                              w_m: Tensor, b_m: Tensor, w_x1: Tensor | None,
                              b_x1: Tensor | None, w_x2: Tensor | None,
                              clamp: float) -> list[Tensor]:
    """Backward of :func:`lorentz_messages`: recompute per tile, atomics for the senders'
    and the weights' gradients."""
    kern = kernels()
    hu_w, hv_w, x_w = _work(hu), _work(hv), _work(x)
    num, hidden = hu.shape
    params = _lorentz_params(w_psi, w_e, b_e, w_m, b_m, w_x1, b_x1, w_x2, hu_w)
    d_in = [torch.zeros_like(hu_w), torch.zeros_like(hv_w), torch.zeros_like(x_w)]
    d_params = [torch.zeros_like(p) for p in params]
    if num:
        grid = lambda m: ((num + m["BLOCK_I"] - 1) // m["BLOCK_I"],)  # noqa: E731
        kern.lorentz_bwd_kernel[grid](_work(g_msum), _work(g_xs), hu_w, hv_w, x_w,
                                      ptr.contiguous(), _batch(ptr, num), *params, *d_in,
                                      *d_params, num, hidden, float(clamp),
                                      HP=_next_pow2(hidden, 16), UPDATE_X=w_x1 is not None)
    originals = [hu, hv, x, w_psi, w_e, b_e, w_m, b_m, w_x1, b_x1, w_x2]
    grads = d_in + d_params
    return [hu.new_zeros(0) if o is None else g.to(o.dtype)
            for o, g in zip(originals, grads, strict=True)]
