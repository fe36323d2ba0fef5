"""Graph and reduction primitives over packed jets (CSR ``ptr``), within jets only.

Each op has a plain-PyTorch reference (:mod:`jettag.ops.reference`), a fast CPU path and
Triton kernels for CUDA GPUs; :mod:`jettag.ops.dispatch` picks one at call time (the
reference during ONNX export). The accelerated paths are ``torch.library`` custom ops
(``torch.ops.jettag.*``) with autograd and fake implementations. Fused operators for the
EdgeConv and Lorentz layers live in :mod:`jettag.ops.fused`.

The CPU paths keep tile-sized scratch memory between calls (per thread; reusing memory
avoids the page faults of fresh allocations): :func:`scratch_bytes` says how much,
:func:`release_scratch` frees it.
"""

from jettag.ops import dispatch, fused
from jettag.ops._cpu import release_scratch, scratch_bytes
from jettag.ops._library import (
    knn,
    scatter_mean,
    scatter_sum,
    segment_max,
    segment_mean,
    segment_softmax,
    segment_sum,
)
from jettag.ops.reference import (
    batch_from_ptr,
    counts_from_ptr,
    fully_connected_edges,
    ptr_from_batch,
)

__all__ = [
    "batch_from_ptr",
    "counts_from_ptr",
    "dispatch",
    "fully_connected_edges",
    "fused",
    "knn",
    "ptr_from_batch",
    "release_scratch",
    "scatter_mean",
    "scatter_sum",
    "scratch_bytes",
    "segment_max",
    "segment_mean",
    "segment_softmax",
    "segment_sum",
]
