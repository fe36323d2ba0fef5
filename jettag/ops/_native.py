"""Native (C) CPU kernels of the fused Lorentz operator and of kNN, built on first use.

The PyTorch tile path of :mod:`jettag.ops._cpu` writes each pair-sized intermediate to
memory and pays PyTorch's dispatch for some 25 small operations per tile; at small batches
that, not the matrix products, is most of a LorentzNet forward. ``_native.c`` runs the
whole pair pipeline of one particle (its first layer, the message matrix product, gate and
sum, phi_x's product and the coordinate shift; in the backward pass the same recomputed and
then differentiated) while the particle's pair rows are in cache, on the packed jets (no
padding, no scatter), with its own register-blocked matrix products and one thread per range
of particles (PyTorch's OpenMP threads). :func:`psi_moments` gives the training-mode pair
BatchNorm the sums of the pair invariants it needs, in float64, without a pair list.
In training, the forward pass keeps each pair row's message and phi_x product for the
backward pass when they take at most :data:`SAVE_BYTES` (32 MiB) per call, which then skips
two of its six matrix products per pair row; larger batches recompute them.
:func:`knn` searches neighbours jet by jet in one call (PyTorch needs a dozen calls of
padded distance matrices, masks and a sort per size bucket: most of a kNN at small batches).

It is plain C: compiled here with the system's C compiler (``$CC``, ``cc``, ``gcc`` or
``clang``) in about a second, cached on disk (``$JETTAG_NATIVE_DIR``, default
``~/.cache/jettag/native``, one file per source, flags and compiler), loaded with
:mod:`ctypes`. Used by :mod:`jettag.ops._cpu` and :mod:`jettag.ops.fused` for
float32/float64 CPU tensors; ``JETTAG_NATIVE=0`` or :func:`set_enabled` turns it off. If
no compiler is found or compiling fails, jettag warns once and keeps the PyTorch tiles.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from torch import Tensor

from jettag.ops._plans import PlanCache
from jettag.ops.dispatch import _flag

__all__ = ["SAVE_BYTES", "available", "enabled", "knn", "library_path", "lorentz_messages",
           "lorentz_messages_backward", "pool_bytes", "psi_moments", "release_buffers",
           "release_pool", "saved_buffers", "set_enabled", "usable"]

_SOURCE = Path(__file__).with_name("_native.c")
_SOURCES = (_SOURCE, Path(__file__).with_name("_native_body.h"))
_ABI_VERSION = 4
_LOCK = threading.Lock()
_STATE: dict[str, object] = {"lib": None, "tried": False, "path": None}


def _env_enabled() -> bool:
    """``JETTAG_NATIVE`` (default 1)."""
    return _flag(os.environ.get("JETTAG_NATIVE", "1"), "JETTAG_NATIVE")


_enabled = _env_enabled()


def enabled() -> bool:
    """Whether the CPU path may use the native kernel (it is used only if it builds)."""
    return _enabled


def set_enabled(value: bool) -> None:
    """Allow (True, the default) or forbid the native kernel from now on."""
    global _enabled
    if not isinstance(value, bool):
        raise TypeError(f"set_enabled: expected True or False, found {value!r}")
    _enabled = value


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _flags(openmp: bool) -> list[str]:
    flags = ["-O3", "-std=c99", "-fPIC", "-shared", "-pthread", "-fno-trapping-math",
             "-fno-math-errno",
             "-fopenmp" if openmp else "-fopenmp-simd"]
    capability = torch.backends.cpu.get_cpu_capability()
    if platform.machine().lower() in ("x86_64", "amd64") and capability in ("AVX2", "AVX512"):
        flags += ["-mavx2", "-mfma"]
    return flags


def _cache_dir() -> Path:
    env = os.environ.get("JETTAG_NATIVE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jettag" / "native"


def _build(compiler: str) -> Path:
    """Compile with OpenMP (whose runtime, in a PyTorch process, is PyTorch's own), or
    with POSIX threads if the compiler has no OpenMP."""
    try:
        return _build_with(compiler, _flags(openmp=True))
    except RuntimeError:
        return _build_with(compiler, _flags(openmp=False))


def _build_with(compiler: str, flags: list[str]) -> Path:
    source = b"".join(path.read_bytes() for path in _SOURCES)
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                             check=False).stdout.splitlines()[:1]
    key = hashlib.sha256(b"\0".join([source, " ".join(flags).encode(),
                                     "".join(version).encode(),
                                     platform.machine().encode()])).hexdigest()[:16]
    directory = _cache_dir()
    target = directory / f"jettag_native_{key}.so"
    if target.exists():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    # Build under a temporary name and rename: concurrent processes never load a partial file.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=directory)
    os.close(fd)
    try:
        result = subprocess.run([compiler, *flags, str(_SOURCE), "-o", tmp, "-lm"],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} exited with {result.returncode}: "
                               f"{result.stderr.strip()[:500]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _declare(lib: ctypes.CDLL) -> None:
    p, n = ctypes.c_void_p, ctypes.c_long
    for suffix, real in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
        inv = getattr(lib, f"jt_pair_invariants_{suffix}")
        inv.argtypes, inv.restype = [n, p, p, p, p], None
        fwd = getattr(lib, f"jt_lorentz_forward_{suffix}")
        fwd.argtypes = [n, p, p, n, n, p, p, p, p, p, p, p, p, real, p, p, p, real, p, p, p,
                        p, p, ctypes.c_int]
        fwd.restype = ctypes.c_int
        bwd = getattr(lib, f"jt_lorentz_backward_{suffix}")
        bwd.argtypes = [n, p, p, n, n, n, p, p, p, p, p, p, p, p, p, p, real, p, p, p, p,
                        real, p, p, p, p, p, p, p, p, p, p, p, p, p, p, p, p, ctypes.c_int]
        bwd.restype = ctypes.c_int
        mom = getattr(lib, f"jt_psi_moments_{suffix}")
        mom.argtypes, mom.restype = [n, p, p, p, p, p], None
        mom_b = getattr(lib, f"jt_psi_moments_backward_{suffix}")
        mom_b.argtypes, mom_b.restype = [n, p, p, p, p, p, p], None
        knn = getattr(lib, f"jt_knn_{suffix}")
        knn.argtypes = [n, p, n, p, n, ctypes.c_int, p, p, ctypes.c_int, n]
        knn.restype = ctypes.c_int
    lib.jt_abi_version.restype = ctypes.c_int


def _load() -> ctypes.CDLL | None:
    with _LOCK:
        if _STATE["tried"]:
            return _STATE["lib"]  # type: ignore[return-value]
        _STATE["tried"] = True
        compiler = _compiler()
        try:
            if compiler is None:
                raise RuntimeError("no C compiler found (tried $CC, cc, gcc, clang)")
            path = _build(compiler)
            lib = ctypes.CDLL(str(path))
            _declare(lib)
            if lib.jt_abi_version() != _ABI_VERSION:
                raise RuntimeError(f"{path}: ABI version {lib.jt_abi_version()}, "
                                   f"expected {_ABI_VERSION}")
        except (OSError, RuntimeError, AttributeError) as err:
            warnings.warn(f"jettag.ops: the native CPU kernel is not available ({err}); "
                          "using the PyTorch tile path", RuntimeWarning, stacklevel=3)
            return None
        _STATE["lib"], _STATE["path"] = lib, path
        return lib


def available() -> bool:
    """Whether the native kernel is enabled and built (builds it on the first call)."""
    return _enabled and _load() is not None


def library_path() -> Path | None:
    """The loaded shared library's path (None if not built)."""
    return _STATE["path"] if available() else None  # type: ignore[return-value]


_PLANS: PlanCache[tuple[Tensor, Tensor, int, int]] = PlanCache()


def _plan(ptr: Tensor, threads: int) -> tuple[Tensor, Tensor, int, int]:
    """Per-jet offsets of the pair invariants, particle ranges of about equal pair counts
    per thread, the longest jet and the number of pairs; kept for the next calls with the
    same batch (:class:`~jettag.ops._plans.PlanCache`)."""

    def build() -> tuple[Tensor, Tensor, int, int]:
        counts = ptr[1:] - ptr[:-1]
        base = torch.zeros(counts.numel() + 1, dtype=torch.int64)
        torch.cumsum(counts * counts, 0, out=base[1:])
        num = int(ptr[-1])
        # Each particle of a jet of n costs about n - 1 pair rows (+1: per-particle work).
        work = torch.repeat_interleave(counts, counts, output_size=num).cumsum(0)
        total = int(work[-1]) if num else 0
        parts = max(1, min(threads, 64, total // 256 + 1))  # ~256 pair rows: ~50 us
        targets = torch.tensor([total * t / parts for t in range(1, parts)],
                               dtype=torch.float64)
        cuts = torch.searchsorted(work.to(torch.float64), targets).tolist() if num else []
        bounds = torch.tensor([0, *cuts, num], dtype=torch.int64)
        longest = int(counts.max()) if counts.numel() else 0
        return base, bounds, longest, int(base[-1])

    return _PLANS.get((threads, tuple(ptr.tolist())), build)


def usable(hu: Tensor) -> bool:
    """Whether :func:`lorentz_messages` applies to these inputs (CPU, float32/float64)."""
    return (hu.device.type == "cpu" and hu.dtype in (torch.float32, torch.float64)
            and available())


def _p(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _scalar(value: Tensor | float) -> float:
    return float(value.detach()) if isinstance(value, Tensor) else float(value)


def _contiguous(*tensors: Tensor | None) -> list:
    return [None if t is None else t.contiguous() for t in tensors]


def _prepare(hu: Tensor, x: Tensor, ptr: Tensor):
    """The library, the dtype's function suffix, int64 ptr, the plan (:func:`_plan`) and
    the raw pair invariants with their psi."""
    lib = _load()
    assert lib is not None
    suffix = "f32" if hu.dtype == torch.float32 else "f64"
    ptr = ptr.to(torch.int64).contiguous()
    base, bounds, longest, pairs = _plan(ptr, torch.get_num_threads())
    inv = torch.empty(pairs, 2, dtype=hu.dtype)
    getattr(lib, f"jt_pair_invariants_{suffix}")(ptr.numel() - 1, ptr.data_ptr(),
                                                 base.data_ptr(), x.data_ptr(),
                                                 inv.data_ptr())
    psi = torch.log1p(inv.abs()).copysign_(inv)
    return lib, suffix, ptr, base, bounds, longest, inv, psi


def lorentz_messages(
    hu: Tensor, hv: Tensor, x: Tensor, ptr: Tensor, w_psi: Tensor, w_e: Tensor, b_e: Tensor,
    w_m: Tensor, b_m: Tensor | float, w_x1: Tensor | None, b_x1: Tensor | None,
    w_x2: Tensor | None, clamp: float, *, we_t: Tensor | None = None,
    wx1_t: Tensor | None = None, saved: tuple[Tensor, Tensor | None] | None = None,
) -> tuple[Tensor, Tensor]:
    """Forward of :func:`jettag.ops.fused.lorentz_messages` by the native kernel (same
    arguments; call :func:`usable` first). ``we_t``, ``wx1_t``: the transposed weights,
    contiguous, if the caller keeps them (else they are made here). ``saved``: buffers
    (:func:`saved_buffers`) the kernel fills with every pair row's message ``m`` and
    phi_x product, for :func:`lorentz_messages_backward` to use instead of recomputing."""
    hu, hv, x, w_psi, w_e, b_e, w_m, w_x1, b_x1, w_x2 = _contiguous(
        hu, hv, x, w_psi, w_e, b_e, w_m, w_x1, b_x1, w_x2)
    lib, suffix, ptr, base, bounds, longest, _, psi = _prepare(hu, x, ptr)
    num, hidden = hu.shape
    phi_x = w_x1 is not None
    if we_t is None:
        we_t = w_e.t().contiguous()  # (kept referenced while the kernel reads it)
    if wx1_t is None and phi_x:
        wx1_t = w_x1.t().contiguous()  # type: ignore[union-attr]
    msum = hu.new_empty(num, hidden)
    xs = x.new_empty(num, 4) if phi_x else x.new_zeros(num, 4)
    status = getattr(lib, f"jt_lorentz_forward_{suffix}")(
        ptr.numel() - 1, ptr.data_ptr(), base.data_ptr(), hidden, longest, hu.data_ptr(),
        hv.data_ptr(), x.data_ptr(), psi.data_ptr(), w_psi.data_ptr(), we_t.data_ptr(),
        b_e.data_ptr(), w_m.data_ptr(), _scalar(b_m), _p(wx1_t), _p(b_x1), _p(w_x2),
        float(clamp), msum.data_ptr(), xs.data_ptr(), *_saved_pointers(saved),
        bounds.data_ptr(), bounds.numel() - 1)
    _check(status, longest, hidden)
    return msum, xs


#: Bytes of saved pair rows (both buffers) up to which a training forward pass keeps the
#: messages for the backward pass (which then skips two of its six matrix products per
#: pair row) instead of recomputing them.
SAVE_BYTES = 32 << 20


#: Buffers of finished backward passes, reused by the next forward passes (fresh memory
#: of this size costs a page fault per 4 KiB page: as long as the kernel's forward pass).
_POOL: list[Tensor] = []
_POOL_LOCK = threading.Lock()


def saved_buffers(hu: Tensor, ptr: Tensor, phi_x: bool) -> tuple[Tensor, Tensor | None] | None:
    """Buffers for the pair rows' messages and phi_x products of a training forward pass
    (one row per ordered pair, diagonal included, as the pair invariants), or None when
    they would take more than :data:`SAVE_BYTES` (the backward pass recomputes them).
    Hand them back with :func:`release_buffers` after the backward pass."""
    counts = ptr[1:] - ptr[:-1]
    rows = int((counts * counts).sum())
    hidden = hu.shape[1]
    numel = rows * hidden * (2 if phi_x else 1)
    if numel * hu.element_size() > SAVE_BYTES:
        return None
    with _POOL_LOCK:
        fits = [i for i, b in enumerate(_POOL) if b.dtype == hu.dtype and b.numel() >= numel]
        flat = _POOL.pop(min(fits, key=lambda i: _POOL[i].numel())) if fits else None
    if flat is None:
        flat = hu.new_empty(numel)
    m = flat[: rows * hidden].view(rows, hidden)
    return m, flat[rows * hidden: numel].view(rows, hidden) if phi_x else None


def release_buffers(saved: tuple[Tensor, Tensor | None] | None) -> None:
    """Return :func:`saved_buffers`' memory for reuse (kept up to 8 x SAVE_BYTES)."""
    if saved is None:
        return
    flat = saved[0]._base if saved[0]._base is not None else saved[0]
    with _POOL_LOCK:
        _POOL.append(flat)
        while sum(b.numel() * b.element_size() for b in _POOL) > 8 * SAVE_BYTES:
            _POOL.pop(min(range(len(_POOL)), key=lambda i: _POOL[i].numel()))


def pool_bytes() -> int:
    """Bytes kept for reuse by :func:`release_buffers`."""
    with _POOL_LOCK:
        return sum(b.numel() * b.element_size() for b in _POOL)


def release_pool() -> None:
    """Free the memory kept by :func:`release_buffers`."""
    with _POOL_LOCK:
        _POOL.clear()


def _saved_pointers(saved: tuple[Tensor, Tensor | None] | None) -> tuple[int | None, ...]:
    if saved is None:
        return None, None
    return saved[0].data_ptr(), _p(saved[1])


def lorentz_messages_backward(
    g_msum: Tensor, g_xs: Tensor, hu: Tensor, hv: Tensor, x: Tensor, ptr: Tensor,
    w_psi: Tensor, w_e: Tensor, b_e: Tensor, w_m: Tensor, b_m: Tensor, w_x1: Tensor | None,
    b_x1: Tensor | None, w_x2: Tensor | None, clamp: float, *,
    saved: tuple[Tensor, Tensor | None] | None = None,
) -> list[Tensor]:
    """Backward of :func:`lorentz_messages` by the native kernel: gradients w.r.t. every
    tensor input in order, empty for absent phi_x weights (as
    :func:`jettag.ops._cpu.lorentz_messages_backward`); ``saved``: the forward pass's
    buffers, if it filled them (see :func:`saved_buffers`)."""
    g_msum, g_xs, hu, hv, x, w_psi, w_e, b_e, w_m, w_x1, b_x1, w_x2 = _contiguous(
        g_msum, g_xs, hu, hv, x, w_psi, w_e, b_e, w_m, w_x1, b_x1, w_x2)
    lib, suffix, ptr, base, bounds, longest, inv, psi = _prepare(hu, x, ptr)
    num, hidden = hu.shape
    phi_x = w_x1 is not None
    grads = [torch.zeros_like(t) for t in (hu, hv, x, w_psi, w_e, b_e, w_m, b_m)]
    # The kernel fills phi_x's gradients in any case: buffers even without phi_x.
    extra = [hu.new_zeros(hidden, hidden), hu.new_zeros(hidden), hu.new_zeros(hidden)]
    we_t = w_e.t().contiguous()
    wx1_t = w_x1.t().contiguous() if phi_x else None  # type: ignore[union-attr]
    status = getattr(lib, f"jt_lorentz_backward_{suffix}")(
        ptr.numel() - 1, ptr.data_ptr(), base.data_ptr(), num, hidden, longest,
        hu.data_ptr(), hv.data_ptr(), x.data_ptr(), inv.data_ptr(), psi.data_ptr(),
        w_psi.data_ptr(), w_e.data_ptr(), we_t.data_ptr(), b_e.data_ptr(), w_m.data_ptr(),
        _scalar(b_m), _p(w_x1), _p(wx1_t), _p(b_x1), _p(w_x2), float(clamp),
        g_msum.data_ptr(), g_xs.data_ptr(), *(g.data_ptr() for g in grads),
        *(g.data_ptr() for g in extra), *_saved_pointers(saved), bounds.data_ptr(),
        bounds.numel() - 1)
    _check(status, longest, hidden)
    if not phi_x:
        extra = [hu.new_zeros(0)] * 3
    return [*grads, *extra]


#: Distance terms (sum over jets of n^2 D) from which kNN takes a second thread.
_KNN_THREAD_WORK = 1 << 17


def knn(x: Tensor, ptr: Tensor, k: int, include_self: bool) -> tuple[Tensor, Tensor]:
    """:func:`jettag.ops.knn` by the native kernel (checked arguments; call :func:`usable`
    first): per jet, no padding, no distance matrix, no sort; the same neighbours as the
    reference (ties to the lower index) up to the rounding of the distances."""
    lib = _load()
    assert lib is not None
    x = x.contiguous()
    if ptr.dtype != torch.int64 or not ptr.is_contiguous():
        ptr = ptr.to(torch.int64).contiguous()
    num, dims = x.shape
    index = torch.empty(num, k, dtype=torch.int64)
    valid = torch.empty(num, k, dtype=torch.bool)
    suffix = "f32" if x.dtype == torch.float32 else "f64"
    status = getattr(lib, f"jt_knn_{suffix}")(
        ptr.numel() - 1, ptr.data_ptr(), dims, x.data_ptr(), k, int(include_self),
        index.data_ptr(), valid.data_ptr(), torch.get_num_threads(), _KNN_THREAD_WORK)
    if status != 0:
        raise MemoryError(f"jettag.ops native kNN: out of memory for its per-thread buffers "
                          f"({num} particles, {dims} coordinates)")
    return index, valid


def _check(status: int, longest: int, hidden: int) -> None:
    if status != 0:
        raise MemoryError("jettag.ops native Lorentz kernel: out of memory for its "
                          f"per-thread buffers (longest jet {longest}, hidden {hidden})")


class _PsiMoments(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, ptr: Tensor):  # type: ignore[override]
        lib = _load()
        assert lib is not None
        x = x.contiguous()
        ptr = ptr.to(torch.int64).contiguous()
        suffix = "f32" if x.dtype == torch.float32 else "f64"
        f64 = torch.float64
        rows = torch.zeros(x.shape[0], 2, dtype=f64)
        total, gram = torch.empty(2, dtype=f64), torch.empty(2, 2, dtype=f64)
        getattr(lib, f"jt_psi_moments_{suffix}")(ptr.numel() - 1, ptr.data_ptr(), x.data_ptr(),
                                                 rows.data_ptr(), total.data_ptr(),
                                                 gram.data_ptr())
        ctx.save_for_backward(x, ptr)
        ctx.mark_non_differentiable(ptr)
        return rows, total, gram

    @staticmethod
    def backward(ctx, g_rows: Tensor, g_total: Tensor, g_gram: Tensor):  # type: ignore[override]
        x, ptr = ctx.saved_tensors
        lib = _load()
        assert lib is not None
        suffix = "f32" if x.dtype == torch.float32 else "f64"
        f64 = torch.float64
        g_rows, g_total, g_gram = (g.to(f64).contiguous() for g in (g_rows, g_total, g_gram))
        d_x = torch.zeros(x.shape[0], 4, dtype=f64)
        getattr(lib, f"jt_psi_moments_backward_{suffix}")(
            ptr.numel() - 1, ptr.data_ptr(), x.data_ptr(), g_rows.data_ptr(),
            g_total.data_ptr(), g_gram.data_ptr(), d_x.data_ptr())
        return d_x.to(x.dtype), None


def psi_moments(x: Tensor, ptr: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""Float64 moments of :math:`\psi_{ij}`, the two Lorentz invariants of each ordered pair
    ``i != j`` of a jet through :math:`\psi(v) = \mathrm{sgn}(v) \log(1 + |v|)`
    (:func:`jettag.nn.lorentz.lorentz_edge_features`): per particle the sum over its
    partners ``(P, 2)``, the sum over all pairs ``(2,)`` and of :math:`\psi \psi^T`
    ``(2, 2)``. Differentiable w.r.t. ``x`` (CPU, float32/float64; call :func:`usable`
    first). No pair list or pair-sized tensor is formed."""
    return _PsiMoments.apply(x, ptr)
