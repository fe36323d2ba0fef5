"""The native (C) CPU kernel of the fused Lorentz operator: forward, backward and the pair
BatchNorm's psi moments against the references, on every code path of its matrix products
(hidden widths that are and are not multiples of 8 and 24, jets whose pair rows are and are
not multiples of 4), deterministic across calls and independent of the thread split in the
forward pass; the build, its cache and the fallbacks when it cannot be built."""

from __future__ import annotations

import warnings

import pytest
import torch
from test_fused import F32, F64, _lorentz_grads, _lorentz_inputs

from jettag import ops
from jettag.ops import _cpu, _native, dispatch, fused, reference

needs_native = pytest.mark.skipif(not _native.available(),
                                  reason="no C compiler: the native kernel is not built")

# Jets of 0, 1, 2 (one pair row each), 3, ... particles: pair rows 0 to 12 per particle,
# every remainder modulo 4 (the kernels' 4-row blocks).
SIZES = [5, 0, 1, 2, 13, 3, 4, 9, 6]


@pytest.fixture(params=["saved", "recomputed"])
def native_only(request, monkeypatch):
    """The CPU backend with the tile path made to fail, so that whatever passes ran the
    native kernel; its backward pass with the pair rows saved by the forward pass (in
    training) or recomputed (``SAVE_BYTES`` 0, as for large batches)."""
    def no_tiles(*args, **kwargs):
        raise AssertionError("the tile path ran instead of the native kernel")

    monkeypatch.setattr(_cpu, "_lorentz_tiles", no_tiles)
    if request.param == "recomputed":
        monkeypatch.setattr(_native, "SAVE_BYTES", 0)
    else:
        real = _native.saved_buffers

        def must_save(*args):
            buffers = real(*args)
            assert buffers is not None
            return buffers

        monkeypatch.setattr(_native, "saved_buffers", must_save)
    with dispatch.use_backend("cpu"):
        yield request.param


@needs_native
@pytest.mark.parametrize("hidden", [72, 40, 16, 5])
@pytest.mark.parametrize("update_x", [True, False])
def test_native_forward_and_backward_equal_reference_f32(native_only, hidden, update_x):
    clamp = 0.5 if update_x else 100.0  # some coordinate shifts clamped
    inputs = _lorentz_inputs(F32, update_x, hidden=hidden, sizes=SIZES)
    out, grads = _lorentz_grads(fused.lorentz_messages, *inputs, clamp)
    with dispatch.use_backend("reference"):
        ref, ref_grads = _lorentz_grads(fused.lorentz_messages_reference, *inputs, clamp)
    for got, want in zip((*out, *grads), (*ref, *ref_grads), strict=True):
        # sums over up to 12 pairs and, for the weights, over all ~350 pair rows
        scale = float(want.detach().abs().max())
        torch.testing.assert_close(got, want, atol=2e-5 * scale, rtol=1e-5)


@needs_native
@pytest.mark.parametrize("hidden", [24, 3])
def test_native_gradcheck_f64(native_only, hidden):
    hu, hv, x, ptr, params, phi_x = _lorentz_inputs(F64, True, hidden=hidden,
                                                    sizes=[3, 0, 1, 2, 5])

    def fn(hu, hv, x, *weights):
        return fused.lorentz_messages(hu, hv, x, ptr, *weights, clamp=0.7)

    assert torch.autograd.gradcheck(fn, (hu, hv, x, *params, *phi_x))


@needs_native
def test_native_is_deterministic_and_forward_independent_of_threads(native_only):
    hu, hv, x, ptr, params, phi_x = _lorentz_inputs(F32, True, hidden=16,
                                                    sizes=[60, 1, 50, 45, 0, 70])
    assert _native._plan(ptr, 3)[1].numel() == 4  # enough pairs for 3 particle ranges
    threads = torch.get_num_threads()
    outputs = []
    try:
        for n in (1, 2, 3, 2):
            torch.set_num_threads(n)
            outputs.append(_lorentz_grads(fused.lorentz_messages, hu, hv, x, ptr, params,
                                          phi_x, 100.0))
    finally:
        torch.set_num_threads(threads)
    # Each particle's messages are computed by one thread whatever the split: the forward
    # outputs and the receivers' gradients (hu) are the same bits for any thread count.
    for out, grads in outputs[1:]:
        for a, b in zip(out, outputs[0][0], strict=True):
            assert torch.equal(a, b)
        assert torch.equal(grads[0], outputs[0][1][0])
    # Gradients summed over threads are added in a fixed order: same thread count, same bits.
    for a, b in zip(outputs[1][1], outputs[3][1], strict=True):
        assert torch.equal(a, b)


def _psi_moments_reference(x, ptr):
    from jettag.nn.lorentz import lorentz_edge_features
    from jettag.ops import reference

    receiver, sender = reference.fully_connected_edges(ptr)
    psi = lorentz_edge_features(x.double(), torch.stack([receiver, sender]))
    rows = reference.scatter_sum(psi, receiver, x.shape[0])
    return rows, psi.sum(0), psi.T @ psi


@needs_native
@pytest.mark.parametrize("dtype", [F32, F64])
def test_psi_moments_equal_pair_list(dtype):
    _, _, x, ptr, _, _ = _lorentz_inputs(dtype, False, sizes=SIZES)
    x = x.detach()
    x[3, 1:] = x[4, 1:]  # an invariant exactly 0 (psi's kink) is handled like the reference
    got = _native.psi_moments(x, ptr)
    want = _psi_moments_reference(x, ptr)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == torch.float64
        torch.testing.assert_close(a, b, rtol=1e-12 if dtype == F64 else 1e-6, atol=1e-9)
    # gradients: the float64 reference's autograd and gradcheck
    x64 = x.double().requires_grad_(True)
    probe = [torch.randn(t.shape, dtype=F64, generator=torch.Generator().manual_seed(k))
             for k, t in enumerate(want)]

    def loss(fn):
        return sum((t * p).sum() for t, p in zip(fn(x64, ptr), probe, strict=True))

    torch.testing.assert_close(torch.autograd.grad(loss(_native.psi_moments), x64)[0],
                               torch.autograd.grad(loss(_psi_moments_reference), x64)[0])
    # gradcheck away from the kink (finite differences across it are not the derivative)
    _, _, x, ptr, _, _ = _lorentz_inputs(F64, False, sizes=[5, 0, 1, 3])
    assert torch.autograd.gradcheck(lambda v: _native.psi_moments(v, ptr), (x,))


@needs_native
@pytest.mark.parametrize("native_only", ["saved"], indirect=True)
def test_saved_pair_rows_are_reused_and_released(native_only):
    """Training calls keep the pair rows for their backward pass, hand the memory back
    afterwards for the next call, and a second backward pass through the same graph
    (``retain_graph``) recomputes them: the same gradients twice."""
    _cpu.release_scratch()
    assert _native.pool_bytes() == 0
    hu, hv, x, ptr, params, phi_x = _lorentz_inputs(F32, True, hidden=16, sizes=SIZES)
    msum, xs = fused.lorentz_messages(hu, hv, x, ptr, *params, *phi_x, clamp=0.5)
    loss = msum.square().sum() + xs.square().sum()
    leaves = [hu, hv, x, *params, *phi_x]
    first = torch.autograd.grad(loss, leaves, retain_graph=True)
    kept = _native.pool_bytes()
    counts = ptr[1:] - ptr[:-1]
    assert kept == int((counts * counts).sum()) * 16 * 2 * 4  # m and phi_x's product
    assert _cpu.scratch_bytes() >= kept
    second = torch.autograd.grad(loss, leaves)
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    fused.lorentz_messages(hu, hv, x, ptr, *params, *phi_x, clamp=0.5)  # reuses the buffer
    assert _native.pool_bytes() == 0
    _cpu.release_scratch()
    assert _native.pool_bytes() == 0


@needs_native
@pytest.mark.parametrize("dtype", [F32, F64])
def test_native_knn_equals_reference_on_any_thread_split(monkeypatch, dtype):
    """Jets of 0 to 150 particles (longer than any bucket of a small batch), coordinates of
    2, 7 and 64 dimensions, one and two threads (the work threshold forced to 0): the same
    neighbours as the reference, bitwise the same on any split (each jet on one thread)."""
    gen = torch.Generator().manual_seed(11)
    sizes = [150, 0, 1, 17, 16, 2, 63, 40, 0, 9]
    ptr = torch.tensor([0, *torch.tensor(sizes).cumsum(0).tolist()])
    monkeypatch.setattr(_cpu, "_bucket_rows", None)  # the PyTorch path would fail
    for dims in (2, 7, 64):
        x = torch.randn(int(ptr[-1]), dims, generator=gen, dtype=dtype)
        want = reference.knn(x, ptr, 16)
        results = []
        for threads, work in ((1, 1 << 40), (2, 0)):
            monkeypatch.setattr(_native, "_KNN_THREAD_WORK", work)
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                with dispatch.use_backend("cpu"):
                    results.append(ops.knn(x, ptr, 16))
            finally:
                torch.set_num_threads(previous)
        for index, valid in results:
            assert torch.equal(index, want[0]) and torch.equal(valid, want[1])


@needs_native
def test_build_is_cached_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("JETTAG_NATIVE_DIR", str(tmp_path))
    compiler = _native._compiler()
    first = _native._build(compiler)
    assert first.parent == tmp_path and first.exists()
    stamp = first.stat().st_mtime_ns
    assert _native._build(compiler) == first  # found, not rebuilt
    assert first.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary files left


def test_no_compiler_warns_once_and_keeps_the_tile_path(monkeypatch, tmp_path):
    monkeypatch.setattr(_native, "_STATE", {"lib": None, "tried": False, "path": None})
    monkeypatch.setattr(_native, "_enabled", True)
    monkeypatch.setattr(_native, "_compiler", lambda: None)
    inputs = _lorentz_inputs(F32, True, sizes=[3, 4])
    with dispatch.use_backend("cpu"):
        with pytest.warns(RuntimeWarning, match="no C compiler found"):
            got = _lorentz_grads(fused.lorentz_messages, *inputs, 100.0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no second warning
            again = _lorentz_grads(fused.lorentz_messages, *inputs, 100.0)
    assert not _native.available()
    with dispatch.use_backend("reference"):
        want = _lorentz_grads(fused.lorentz_messages_reference, *inputs, 100.0)
    for a, b, c in zip((*got[0], *got[1]), (*again[0], *again[1]), (*want[0], *want[1]),
                       strict=True):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-5)


def test_failed_compilation_names_the_compiler_error(monkeypatch, tmp_path):
    script = tmp_path / "cc"
    script.write_text("#!/bin/sh\necho 'cc: fatal error: something is broken' >&2\nexit 3\n")
    script.chmod(0o755)
    monkeypatch.setenv("JETTAG_NATIVE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(_native, "_STATE", {"lib": None, "tried": False, "path": None})
    monkeypatch.setattr(_native, "_enabled", True)
    monkeypatch.setattr(_native, "_compiler", lambda: str(script))
    with pytest.warns(RuntimeWarning, match="exited with 3: cc: fatal error: something"):
        assert not _native.available()
    assert not any((tmp_path / "cache").iterdir())  # nothing half-written left behind


def test_switch_and_environment(monkeypatch):
    with pytest.raises(TypeError, match="expected True or False"):
        _native.set_enabled(1)  # type: ignore[arg-type]
    monkeypatch.setenv("JETTAG_NATIVE", "maybe")
    with pytest.raises(ValueError, match="JETTAG_NATIVE: expected 0 or 1, found 'maybe'"):
        _native._env_enabled()
    monkeypatch.setenv("JETTAG_NATIVE", "0")
    assert _native._env_enabled() is False
    monkeypatch.delenv("JETTAG_NATIVE")
    assert _native._env_enabled() is True
    monkeypatch.setattr(_native, "_enabled", True)
    _native.set_enabled(False)
    assert not _native.enabled() and not _native.available()
    assert not _native.usable(torch.zeros(1))
    _native.set_enabled(True)
    assert _native.enabled()
    assert not _native.usable(torch.zeros(1, dtype=torch.float16))


@needs_native
def test_eval_fast_path_follows_weight_changes():
    """lgeb_eval keeps folded weights between inference calls: any change of the block's
    tensors (in-place update, load_state_dict, new running statistics) is seen."""
    from jettag.nn.lorentz import LGEB

    gen = torch.Generator().manual_seed(4)
    block = LGEB(8, hidden_channels=16, attr_channels=2, c_weight=0.1).eval()
    for norm in (block.phi_e[1], block.phi_h[1]):
        norm.running_mean.copy_(0.1 * torch.randn(16, generator=gen))
        norm.running_var.copy_(0.5 + torch.rand(16, generator=gen))
    hu, _, x, ptr, _, _ = _lorentz_inputs(F32, False, hidden=8, sizes=SIZES)
    h, x = hu.detach(), x.detach()
    attr = torch.randn(h.shape[0], 2, generator=gen)

    def both():
        with torch.no_grad():
            fast = fused.lgeb_eval(block, h, x, ptr, attr)
            with dispatch.use_backend("reference"):
                plain = block(h, x, ptr, attr)
        for a, b in zip(fast, plain, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        return fast

    first = both()
    assert block in fused._EVAL_WEIGHTS
    with torch.no_grad():
        block.phi_e[3].weight.mul_(1.5)  # in place: same storage, new version
    second = both()
    assert not torch.allclose(first[0], second[0])
    state = {k: v.clone() for k, v in block.state_dict().items()}
    state["phi_h.1.running_var"] += 1.0
    block.load_state_dict(state)
    third = both()
    assert not torch.allclose(second[0], third[0])
    block.phi_h = torch.nn.Sequential(torch.nn.Linear(8 + 16 + 2, 8), torch.nn.Tanh())
    both()  # a phi_h of another form runs as a module
