"""Accelerated primitives against the reference: the fast CPU paths, the Triton kernels (run
in Triton's interpreter on CPU tensors), the dispatch rules, and a run without Triton."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from jettag import ops
from jettag.ops import _cpu, _native, _triton, dispatch, reference

F32, F64 = torch.float32, torch.float64
# Empty jets, single-particle jets, jets smaller and larger than k.
SIZES = [4, 0, 1, 3, 9, 0, 2, 13]


def _ptr(sizes):
    return torch.tensor([0, *torch.tensor(sizes).cumsum(0).tolist()], dtype=torch.int64)


def _data(sizes, channels, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ptr = _ptr(sizes)
    return torch.randn(int(ptr[-1]), channels, dtype=dtype, generator=gen), ptr


def _tol(dtype):
    return {"atol": 1e-5, "rtol": 1e-5} if dtype == F32 else {"atol": 1e-12, "rtol": 1e-12}


@pytest.fixture
def triton_interpreter(monkeypatch):
    """Triton kernels in the interpreter, on CPU tensors, through the public ops."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    pytest.importorskip("triton")
    if not _triton.interpreter_ready():
        pytest.skip("triton was imported before TRITON_INTERPRET=1 was set")
    with dispatch.use_backend("triton"):
        yield


REDUCTIONS = ["segment_sum", "segment_mean", "segment_max", "segment_softmax"]


# --------------------------------------------------------------------------- CPU paths


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("name", REDUCTIONS)
@pytest.mark.parametrize("sizes", [SIZES, [0, 0], [1], [70, 5, 0, 33], [6, 6, 6]])
# Narrow rows take torch.segment_reduce, wide ones (>= 8 for max, >= 16 for sums) the
# row-wise paths, and jets of equal length the dense view.
@pytest.mark.parametrize("channels", [5, 8, 48])
def test_cpu_reductions_match_reference(name, dtype, sizes, channels):
    x, ptr = _data(sizes, channels, dtype)
    with dispatch.use_backend("cpu"):
        got = getattr(ops, name)(x, ptr)
        again = getattr(ops, name)(x, ptr)
    torch.testing.assert_close(got, getattr(reference, name)(x, ptr), **_tol(dtype))
    assert torch.equal(got, again), "not deterministic"


@pytest.mark.parametrize("sizes", [[6, 6, 6], [5, 0, 13]])
def test_cpu_reductions_of_strided_inputs(sizes):
    wide, ptr = _data(sizes, 96, F32)
    strided = wide[:, ::2]  # not contiguous
    with dispatch.use_backend("cpu"):
        for name in REDUCTIONS:
            torch.testing.assert_close(getattr(ops, name)(strided, ptr),
                                       getattr(reference, name)(strided, ptr), **_tol(F32))


@pytest.mark.parametrize("channels", [3, 40])
@pytest.mark.parametrize("sizes", [[3, 0, 2], [4, 4]])
def test_cpu_reductions_propagate_nan_and_inf(channels, sizes):
    x, ptr = _data(sizes, channels, F32)
    x[1, 0], x[0, 1], x[-1, 2] = float("nan"), float("inf"), float("-inf")
    with dispatch.use_backend("cpu"):
        for name in ("segment_sum", "segment_max"):
            torch.testing.assert_close(getattr(ops, name)(x, ptr),
                                       getattr(reference, name)(x, ptr), equal_nan=True)


@pytest.mark.parametrize("dtype", [F32, F64])
def test_cpu_reductions_keep_trailing_dims_and_scatter(dtype):
    x, ptr = _data(SIZES, 6, dtype)
    x3 = x.view(-1, 2, 3)
    wide, _ = _data(SIZES, 48, dtype)
    with dispatch.use_backend("cpu"):
        for name in ("segment_sum", "segment_max"):
            for src in (x3, wide.view(-1, 4, 12)):
                torch.testing.assert_close(getattr(ops, name)(src, ptr),
                                           getattr(reference, name)(src, ptr), **_tol(dtype))
        index = torch.randint(0, 11, (x.shape[0],), generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(ops.scatter_mean(x, index, 11),
                                   reference.scatter_mean(x, index, 11), **_tol(dtype))


@pytest.fixture(params=["native", "one_bucket", "buckets"])
def cpu_knn_path(request, monkeypatch):
    """The CPU kNN every way: the native kernel (skipped without a C compiler; the PyTorch
    path made to fail), or, with the native kernel off, PyTorch on one padded bucket (small
    batches) or on size buckets (larger ones; forced here)."""
    if request.param == "native":
        if not _native.available():
            pytest.skip("no C compiler: the native kernel is not built")
        monkeypatch.setattr(_cpu, "_bucket_rows", None)  # the PyTorch path would fail
    else:
        monkeypatch.setattr(_native, "_enabled", False)
        if request.param == "buckets":
            monkeypatch.setattr(_cpu, "_KNN_ONE_BUCKET", 0)
    return request.param


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize(("k", "include_self"), [(1, False), (3, True), (16, False), (40, True)])
@pytest.mark.parametrize("dims", [2, 4, 19])
def test_cpu_knn_equals_reference_exactly(cpu_knn_path, dtype, k, include_self, dims):
    x, ptr = _data([*SIZES, 41, 37, 12], dims, dtype, seed=3)
    with dispatch.use_backend("cpu"):
        index, valid = ops.knn(x, ptr, k, include_self=include_self)
    ref_index, ref_valid = reference.knn(x, ptr, k, include_self=include_self)
    assert torch.equal(index, ref_index) and torch.equal(valid, ref_valid)


def test_cpu_knn_ties_and_non_finite(cpu_knn_path):
    with dispatch.use_backend("cpu"):
        # Identical points: ties go to the lower index, as the reference's stable sort.
        x = torch.zeros(4, 2)
        assert ops.knn(x, _ptr([4]), 2)[0].tolist() == [[1, 2], [0, 2], [0, 1], [0, 1]]
        # Repeated points among others, and coordinates whose distances are inf or NaN
        # (never neighbours: index = self, valid = False, as the reference).
        x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [1.0, 0.0], [2.0, 0.0],
                          [float("nan"), 0.0], [3e38, 0.0], [0.5, 0.0], [0.0, 1.0]])
        ptr = _ptr([9])
        for k, include_self in ((3, False), (8, True), (9, False)):
            got = ops.knn(x, ptr, k, include_self=include_self)
            want = reference.knn(x, ptr, k, include_self=include_self)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        assert not got[1][5].any() and (got[0][5] == 5).all()


def test_cpu_knn_buckets():
    buckets = _cpu.jet_buckets(torch.tensor([5, 0, 40, 6, 44, 100]))
    sizes = [torch.tensor([5, 0, 40, 6, 44, 100])[jets].tolist() for jets, _ in buckets]
    assert sizes == [[5, 6], [40, 44], [100]]
    assert [length for _, length in buckets] == [6, 44, 100]


@pytest.mark.parametrize("name", ["segment_sum", "segment_max", "segment_softmax"])
def test_cpu_reduction_gradcheck(name):
    x, ptr = _data(SIZES, 3, F64)
    x.requires_grad_(True)
    with dispatch.use_backend("cpu"):
        assert torch.autograd.gradcheck(lambda t: getattr(ops, name)(t, ptr), (x,))
        assert torch.autograd.gradgradcheck(lambda t: getattr(ops, name)(t, ptr), (x,))


def test_cpu_scatter_gradcheck():
    x, _ = _data(SIZES, 3, F64)
    x.requires_grad_(True)
    index = torch.randint(0, 5, (x.shape[0],), generator=torch.Generator().manual_seed(2))
    with dispatch.use_backend("cpu"):
        assert torch.autograd.gradcheck(lambda t: ops.scatter_mean(t, index, 6), (x,))


def test_segment_max_gradient_shared_between_ties_as_reference():
    x = torch.tensor([[1.0], [3.0], [3.0], [2.0]], requires_grad=True)
    ptr = _ptr([3, 1])
    with dispatch.use_backend("cpu"):
        (grad,) = torch.autograd.grad(ops.segment_max(x, ptr).sum(), x)
    (ref,) = torch.autograd.grad(reference.segment_max(x, ptr).sum(), x)
    torch.testing.assert_close(grad, ref)
    assert grad.flatten().tolist() == [0.0, 0.5, 0.5, 1.0]


def test_errors_name_the_argument():
    with dispatch.use_backend("cpu"):
        with pytest.raises(ValueError, match="last offset"):
            ops.segment_sum(torch.zeros(3, 2), _ptr([2]))
        with pytest.raises(ValueError, match="ptr: expected 1-D int64"):
            ops.segment_max(torch.zeros(3, 2), torch.tensor([0.0, 3.0]))
        with pytest.raises(ValueError, match="positive"):
            ops.knn(torch.zeros(2, 2), _ptr([2]), 0)
        with pytest.raises(ValueError, match="index: expected shape"):
            ops.scatter_sum(torch.zeros(3, 2), torch.zeros(2, dtype=torch.int64), 4)


# --------------------------------------------------------------------------- dispatch


def test_dispatch_rules(monkeypatch):
    cpu = torch.zeros(1)
    assert dispatch.get_backend() == "auto"
    assert dispatch.select(cpu) == "cpu"
    with dispatch.use_backend("reference"):
        assert dispatch.select(cpu) == "reference"
    assert dispatch.select(torch.zeros(1, device="meta")) == "reference"
    with pytest.raises(ValueError, match="expected one of auto, reference, cpu, triton"):
        dispatch.set_backend("cuda")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    if dispatch.triton_available():
        with dispatch.use_backend("triton"), pytest.raises(ValueError, match="TRITON_INTERPRET"):
            dispatch.select(cpu)
    # Export traces the reference whatever the backend.
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    with dispatch.use_backend("cpu"):
        assert dispatch.select(cpu) == "reference"


# Hides an installed triton as if it were absent: `import triton` and find_spec raise
# ModuleNotFoundError (a None in sys.modules would make find_spec raise ValueError instead).
_BLOCK_TRITON = """
import importlib.abc, sys

class _NoTriton(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "triton" or name.startswith("triton."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoTriton())
"""

_NO_TRITON = _BLOCK_TRITON + """
import torch
import jettag, jettag.ops as ops
from jettag.ops import dispatch, fused, _triton, _triton_kernels, reference
assert not dispatch.triton_available() and not _triton_kernels.HAVE_TRITON
ptr = torch.tensor([0, 3, 3, 7])
x = torch.randn(7, 4, requires_grad=True)
assert dispatch.select(x) == "cpu"
out = ops.segment_softmax(x, ptr)
assert torch.allclose(out, reference.segment_softmax(x, ptr))
out.square().sum().backward()
index, valid = ops.knn(x.detach(), ptr, 2)
assert torch.equal(index, reference.knn(x.detach(), ptr, 2)[0])
own, other = torch.randn(7, 3), torch.randn(7, 3)
got = fused.edge_conv_messages(own, other, index, valid, [torch.randn(2, 3)], [torch.zeros(2)])
assert got.shape == (7, 2)
dispatch.set_backend("triton")
for call in (lambda: dispatch.select(x), _triton.kernels):
    try:
        call()
    except (ImportError, ValueError) as err:  # MissingExtraError is an ImportError
        assert "jettag[kernels]" in str(err), err
    else:
        raise AssertionError("no error without triton")
assert "triton" not in sys.modules, "something imported triton"
print("ok")
"""


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=600, cwd=Path(__file__).resolve().parents[2])


def test_everything_works_without_triton():
    res = _python(_NO_TRITON)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_ops_tests_run_without_triton():
    # Every ops test module imports without triton, the Triton tests skip (not fail), and the
    # torch.library checks pass.
    code = _BLOCK_TRITON + "import pytest\nsys.exit(pytest.main(sys.argv[1:]))"
    res = _python(code, "-q", "-rs", "-p", "no:cacheprovider", str(Path(__file__).parent),
                  "-k", "(triton or opcheck or dispatch) and not without_triton")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    summary = res.stdout.strip().splitlines()[-1]
    assert " passed" in summary and " skipped" in summary, summary
    assert "could not import 'triton'" in res.stdout, res.stdout[-3000:]


def test_first_call_does_not_import_dynamo():
    # torch.library.custom_op would import torch._dynamo (seconds) on an op's first call.
    code = """
import sys, torch
from jettag import ops
from jettag.ops import fused
x = torch.randn(6, 3, requires_grad=True)
ptr = torch.tensor([0, 2, 6])
ops.segment_max(ops.segment_softmax(x, ptr), ptr).sum().backward()
index, valid = ops.knn(x.detach(), ptr, 2)
fused.edge_conv_messages(x, x, index, valid, [], []).sum().backward()
assert "torch._dynamo" not in sys.modules, "torch._dynamo was imported"
print("ok")
"""
    res = _python(code)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


# --------------------------------------------------------------------------- Triton


@pytest.mark.parametrize("dtype", [F32, F64])
def test_triton_reductions_match_reference(triton_interpreter, dtype):
    x, ptr = _data(SIZES, 5, dtype)
    for name in REDUCTIONS:
        torch.testing.assert_close(getattr(ops, name)(x, ptr), getattr(reference, name)(x, ptr),
                                   **_tol(dtype), msg=name)
    empty = x[:0]
    torch.testing.assert_close(ops.segment_sum(empty, _ptr([0, 0])), torch.zeros(2, 5,
                                                                                dtype=dtype))


@pytest.mark.parametrize("dtype", [F32, F64])
def test_triton_scatter_atomics(triton_interpreter, dtype):
    x, _ = _data(SIZES, 3, dtype)
    index = torch.randint(0, 6, (x.shape[0],), generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(ops.scatter_sum(x, index, 7), reference.scatter_sum(x, index, 7),
                               **_tol(dtype))


@pytest.mark.parametrize(("dtype", "k", "include_self"),
                         [(F32, 1, False), (F64, 4, True), (F32, 12, False)])
def test_triton_knn_equals_reference(triton_interpreter, dtype, k, include_self):
    x, ptr = _data(SIZES, 3, dtype, seed=5)
    index, valid = ops.knn(x, ptr, k, include_self=include_self)
    ref_index, ref_valid = reference.knn(x, ptr, k, include_self=include_self)
    assert torch.equal(index, ref_index) and torch.equal(valid, ref_valid)


def test_triton_knn_ties(triton_interpreter):
    index, valid = ops.knn(torch.zeros(4, 2), _ptr([4]), 2)
    assert index.tolist() == [[1, 2], [0, 2], [0, 1], [0, 1]] and bool(valid.all())
    # Distances that overflow to inf or are NaN: never neighbours, as in the reference.
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [float("nan"), 0.0], [3e38, 0.0], [0.5, 0.0]])
    for k in (2, 4):
        got, want = ops.knn(x, _ptr([5]), k), reference.knn(x, _ptr([5]), k)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_triton_reduction_gradients_match_reference(triton_interpreter):
    x, ptr = _data(SIZES, 3, F64)
    x.requires_grad_(True)
    weights = torch.randn_like(x)
    for name in ["segment_max", "segment_softmax"]:
        (got,) = torch.autograd.grad((getattr(ops, name)(x, ptr)).square().sum(), x)
        (ref,) = torch.autograd.grad((getattr(reference, name)(x, ptr)).square().sum(), x)
        torch.testing.assert_close(got, ref, msg=name)
    index = torch.randint(0, 4, (x.shape[0],), generator=torch.Generator().manual_seed(6))
    (got,) = torch.autograd.grad((ops.scatter_sum(x, index, 4) * weights[:4]).sum(), x)
    torch.testing.assert_close(got, weights[:4][index])


def test_triton_gradcheck_fast(triton_interpreter):
    # fast_mode: a random projection of the Jacobian (few kernel calls in the interpreter);
    # the full Jacobians are compared by the slow test below.
    x, ptr = _data([2, 0, 1, 3], 2, F64)
    x.requires_grad_(True)
    index = torch.tensor([2, 0, 2, 1, 0, 2])
    cases = {name: (lambda t, n=name: getattr(ops, n)(t, ptr)) for name in REDUCTIONS}
    cases["scatter_sum"] = lambda t: ops.scatter_sum(t, index, 4)
    for name, fn in cases.items():
        assert torch.autograd.gradcheck(fn, (x,), fast_mode=True), name


@pytest.mark.slow
def test_triton_reductions_gradcheck(triton_interpreter):
    x, ptr = _data([3, 0, 1, 4], 2, F64)
    x.requires_grad_(True)
    for name in ["segment_sum", "segment_max", "segment_softmax"]:
        assert torch.autograd.gradcheck(lambda t, n=name: getattr(ops, n)(t, ptr), (x,))


def test_triton_float16_computed_in_float32(triton_interpreter):
    x, ptr = _data(SIZES, 4, F32)
    got = ops.segment_sum(x.half(), ptr)
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.float(), reference.segment_sum(x.half().float(), ptr),
                               atol=1e-2, rtol=1e-2)


def test_direct_cpu_calls_skip_the_custom_op_only_without_autograd(monkeypatch):
    """Inference calls on CPU tensors run the CPU code directly (the custom op's dispatch
    costs as much as a small batch's work); calls that need autograd go through the op."""
    from jettag.ops import _library

    x, ptr = _data([3, 0, 5], 4, F32)
    x.requires_grad_(True)
    calls = []
    for name in ("_segment_sum", "_knn"):
        real = getattr(_library, name)
        monkeypatch.setattr(_library, name,
                            lambda *a, real=real, name=name: calls.append(name) or real(*a))
    with dispatch.use_backend("cpu"):
        with torch.no_grad():
            direct = ops.segment_sum(x, ptr)
            ops.knn(x, ptr, 2)
        assert calls == []
        ops.knn(x, ptr, 2)  # (kNN is never differentiated)
        assert calls == []
        through = ops.segment_sum(x, ptr)
        assert calls == ["_segment_sum"] and through.requires_grad
        assert torch.equal(direct, through.detach())
        through.sum().backward()
        assert torch.equal(x.grad, torch.ones_like(x))
