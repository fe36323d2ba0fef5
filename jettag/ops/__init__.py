"""Graph and reduction primitives over packed jets (CSR ``ptr``), within jets only.

Each op has a plain-PyTorch reference (:mod:`jettag.ops.reference`); accelerated paths are
chosen at call time where they apply.
"""

from jettag.ops.reference import (
    batch_from_ptr,
    counts_from_ptr,
    fully_connected_edges,
    knn,
    ptr_from_batch,
    scatter_mean,
    scatter_sum,
    segment_max,
    segment_mean,
    segment_softmax,
    segment_sum,
)

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
