"""Choice of the implementation of each :mod:`jettag.ops` call: reference, CPU or Triton.

Every op has three implementations with the same signature and results:

- ``"reference"``: plain PyTorch (:mod:`jettag.ops.reference`), always available, and what
  ONNX export and ``torch.export`` trace;
- ``"cpu"``: vectorised PyTorch tuned for CPUs (:mod:`jettag.ops._cpu`): jets bucketed by
  size, deterministic CSR reductions, fused edge operators that keep per-edge activations
  in cache-sized tiles;
- ``"triton"``: Triton kernels for CUDA GPUs (:mod:`jettag.ops._triton`), needing the
  ``kernels`` extra. On CPU tensors they run only in Triton's interpreter
  (``TRITON_INTERPRET=1``), which is how they are tested without a GPU.

With the default backend ``"auto"`` a call on CUDA tensors uses Triton when it is installed
(else the reference), a call on CPU tensors the CPU path, and any other device the
reference. ``set_backend`` / ``use_backend`` force one (``JETTAG_OPS_BACKEND`` sets the
default of a process). During ONNX export or ``torch.export`` every op takes the reference
path whatever the setting, so exported graphs contain only standard operators. Under
``torch.compile`` the accelerated paths stay in use: they are registered ``torch.library``
custom ops with fake (meta) implementations, which the compiler treats as opaque nodes.

**Native Lorentz kernel.** On the CPU the fused Lorentz operator (forward, backward and
its training-mode BatchNorm statistics) runs on a C kernel compiled on first use
(:mod:`jettag.ops._native`; ``JETTAG_NATIVE=0`` or ``_native.set_enabled(False)`` turns it
off, and without a C compiler jettag warns once and keeps the tiles below). It takes
precedence over the compiled tiles.

**Compiled CPU tiles.** The CPU path's fused operators work tile by tile; with
``set_compiled_tiles(True)`` (or ``JETTAG_COMPILE_TILES=1``, or ``--compile-tiles`` on
``jettag train`` / ``evaluate`` / ``predict``) the fused Lorentz operator's tile functions
run through ``torch.compile`` (Inductor, which needs a C++ compiler), so the elementwise
passes over a tile fuse into a few loops around the matrix products. Same results up to
float rounding; see ``benchmarks/README.md`` for the speed measured. The first calls wait
while the forward and backward tiles compile (tens of seconds per dtype; Inductor caches
them on disk for later processes), which is why it is off by default. If compiling fails
the tiles warn once and run eagerly.

Example:
    >>> import torch
    >>> from jettag.ops import dispatch
    >>> dispatch.select(torch.zeros(1))
    'cpu'
    >>> with dispatch.use_backend("reference"):
    ...     dispatch.select(torch.zeros(1))
    'reference'
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

__all__ = [
    "BACKENDS",
    "compiled_tiles",
    "get_backend",
    "is_exporting",
    "select",
    "set_backend",
    "set_compiled_tiles",
    "triton_available",
    "triton_interpreting",
    "use_backend",
    "use_compiled_tiles",
]

#: Accepted backend names.
BACKENDS = ("auto", "reference", "cpu", "triton")


def _validated(name: str, source: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"{source}: expected one of {', '.join(BACKENDS)}, found {name!r}")
    return name


_backend = _validated(os.environ.get("JETTAG_OPS_BACKEND", "auto"), "JETTAG_OPS_BACKEND")


def get_backend() -> str:
    """The backend currently requested (``"auto"`` unless set)."""
    return _backend


def set_backend(name: str) -> None:
    """Request a backend for all later calls: one of :data:`BACKENDS`."""
    global _backend
    _backend = _validated(name, "backend")


@contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Context manager that requests a backend for the calls inside it."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def _flag(value: str, source: str) -> bool:
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if value.strip().lower() in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(f"{source}: expected 0 or 1, found {value!r}")


_compiled_tiles = _flag(os.environ.get("JETTAG_COMPILE_TILES", "0"), "JETTAG_COMPILE_TILES")


def compiled_tiles() -> bool:
    """Whether the CPU fused operators run their tiles through ``torch.compile``."""
    return _compiled_tiles


def set_compiled_tiles(enabled: bool) -> None:
    """Run the CPU fused operators' tiles through ``torch.compile`` (or not) from now on."""
    global _compiled_tiles
    if not isinstance(enabled, bool):
        raise TypeError(f"set_compiled_tiles: expected True or False, found {enabled!r}")
    _compiled_tiles = enabled


@contextmanager
def use_compiled_tiles(enabled: bool = True) -> Iterator[None]:
    """Context manager for :func:`set_compiled_tiles` inside a block."""
    previous = compiled_tiles()
    set_compiled_tiles(enabled)
    try:
        yield
    finally:
        set_compiled_tiles(previous)


def triton_available() -> bool:
    """Whether the ``triton`` package can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        return False


def triton_interpreting() -> bool:
    """Whether Triton kernels run in the interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def is_exporting() -> bool:
    """True while ONNX export or ``torch.export`` traces the model."""
    if torch.onnx.is_in_onnx_export():
        return True
    is_exp = getattr(torch.compiler, "is_exporting", None)
    return bool(is_exp is not None and is_exp())


def select(tensor: Tensor) -> str:
    """The implementation a call on ``tensor`` takes now: reference, cpu or triton.

    Raises:
        ValueError: the backend ``"triton"`` was forced but cannot run on this tensor
            (Triton missing, or a CPU tensor outside the interpreter).
    """
    if is_exporting():
        return "reference"
    backend = _backend
    device = tensor.device.type
    if backend == "reference":
        return "reference"
    if backend == "auto":
        if device == "cuda":
            return "triton" if triton_available() else "reference"
        return "cpu" if device == "cpu" else "reference"
    if backend == "cpu":
        return "cpu" if device == "cpu" else "reference"
    if not triton_available():
        raise ValueError(
            "backend 'triton' was requested but the `triton` package is not installed; "
            "install it with: pip install 'jettag[kernels]'"
        )
    if device == "cuda" or (device == "cpu" and triton_interpreting()):
        return "triton"
    raise ValueError(
        f"backend 'triton' runs on CUDA tensors (or on CPU tensors with TRITON_INTERPRET=1 "
        f"set before the first kernel call), found a tensor on {tensor.device}"
    )
