"""Fused EdgeConv and Lorentz operators: CPU path and Triton kernels (interpreter) against the
edge-list references, their gradients, and the evaluation-mode drop-ins against the layers."""

from __future__ import annotations

import pytest
import torch

from jettag.ops import _native, _triton, dispatch, fused, reference

F32, F64 = torch.float32, torch.float64
SIZES = [4, 0, 1, 3, 9, 0, 2, 6]


def _ptr(sizes):
    return torch.tensor([0, *torch.tensor(sizes).cumsum(0).tolist()], dtype=torch.int64)


@pytest.fixture
def triton_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    pytest.importorskip("triton")
    if not _triton.interpreter_ready():
        pytest.skip("triton was imported before TRITON_INTERPRET=1 was set")
    with dispatch.use_backend("triton"):
        yield


@pytest.fixture(params=["native", "tiles"])
def cpu_lorentz_path(request, monkeypatch):
    """The CPU path of the Lorentz operator both ways: the native kernel (skipped without a
    C compiler) and the PyTorch tiles (native kernel switched off)."""
    if request.param == "native":
        if not _native.available():
            pytest.skip("no C compiler: the native kernel is not built")
    else:
        monkeypatch.setattr(_native, "_enabled", False)
    return request.param


def _edge_inputs(dtype, layers, k=4, widths=(5, 6, 7), seed=0):
    gen = torch.Generator().manual_seed(seed)
    ptr = _ptr(SIZES)
    num = int(ptr[-1])

    def r(*shape):
        return torch.randn(*shape, dtype=dtype, generator=gen).requires_grad_(True)

    own, other = r(num, widths[0]), r(num, widths[0])
    index, valid = reference.knn(torch.randn(num, 2, dtype=dtype, generator=gen), ptr, k)
    weights = [r(widths[i + 1], widths[i]) for i in range(layers)]
    biases = [r(widths[i + 1]) for i in range(layers)]
    return own, other, index, valid, weights, biases


def _edge_grads(fn, own, other, index, valid, weights, biases, aggr):
    out = fn(own, other, index, valid, weights, biases, aggr=aggr)
    probe = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(9))
    grads = torch.autograd.grad((out * probe).sum(), [own, other, *weights, *biases])
    return out, grads


def _check_edge(dtype, layers, aggr):
    inputs = _edge_inputs(dtype, layers)
    out, grads = _edge_grads(fused.edge_conv_messages, *inputs, aggr)
    ref, ref_grads = _edge_grads(fused.edge_conv_messages_reference, *inputs, aggr)
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == F32 else {}
    torch.testing.assert_close(out, ref, **tol)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, **tol)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("layers", [0, 1, 2])
@pytest.mark.parametrize("aggr", ["mean", "max"])
def test_cpu_edge_conv_messages(dtype, layers, aggr):
    with dispatch.use_backend("cpu"):
        _check_edge(dtype, layers, aggr)


@pytest.mark.parametrize(("dtype", "layers"), [(F32, 2), (F64, 1)])
def test_triton_edge_conv_messages(triton_interpreter, dtype, layers):
    _check_edge(dtype, layers, "mean")


def test_edge_conv_gradcheck_cpu():
    own, other, index, valid, weights, biases = _edge_inputs(F64, 2, widths=(3, 4, 2))
    with dispatch.use_backend("cpu"):
        assert torch.autograd.gradcheck(
            lambda o, t, w0, w1, b0, b1: fused.edge_conv_messages(
                o, t, index, valid, [w0, w1], [b0, b1]),
            (own, other, *weights, *biases))


@pytest.mark.slow
def test_edge_conv_gradcheck_triton(triton_interpreter):
    own, other, index, valid, weights, biases = _edge_inputs(F64, 2, widths=(2, 3, 2))
    assert torch.autograd.gradcheck(
        lambda o, t, w0, w1, b0, b1: fused.edge_conv_messages(o, t, index, valid, [w0, w1],
                                                              [b0, b1]),
        (own, other, *weights, *biases))


def test_edge_conv_gradcheck_triton_fast(triton_interpreter):
    own, other, index, valid, weights, biases = _edge_inputs(F64, 2, widths=(2, 3, 2))
    assert torch.autograd.gradcheck(
        lambda o, t, w0, w1, b0, b1: fused.edge_conv_messages(o, t, index, valid, [w0, w1],
                                                              [b0, b1]),
        (own, other, *weights, *biases), fast_mode=True)


def test_edge_conv_messages_errors():
    own, other, index, valid, weights, biases = _edge_inputs(F32, 1)
    with pytest.raises(ValueError, match="aggr"):
        fused.edge_conv_messages(own, other, index, valid, weights, biases, aggr="sum")
    with pytest.raises(ValueError, match=r"weights\[0\]"):
        fused.edge_conv_messages(own, other, index, valid, [weights[0].T], biases)


def _lorentz_inputs(dtype, update_x, hidden=5, sizes=SIZES, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ptr = _ptr(sizes)
    num = int(ptr[-1])

    def r(*shape, scale=1.0):
        return (scale * torch.randn(*shape, dtype=dtype, generator=gen)).requires_grad_(True)

    p3 = 3 * torch.randn(num, 3, dtype=dtype, generator=gen)
    mass = torch.rand(num, 1, dtype=dtype, generator=gen)
    x = torch.cat([(p3.square().sum(1, keepdim=True) + mass.square()).sqrt(), p3], 1)
    x.requires_grad_(True)
    params = [r(2, hidden, scale=0.5), r(hidden, hidden), r(hidden), r(hidden), r(1)]
    phi_x = [r(hidden, hidden), r(hidden), r(hidden)] if update_x else [None, None, None]
    return r(num, hidden), r(num, hidden), x, ptr, params, phi_x


def _lorentz_grads(fn, hu, hv, x, ptr, params, phi_x, clamp):
    msum, xs = fn(hu, hv, x, ptr, *params, *phi_x, clamp=clamp)
    gen = torch.Generator().manual_seed(9)
    loss = (msum * torch.randn(msum.shape, dtype=msum.dtype, generator=gen)).sum()
    loss = loss + (xs * torch.randn(xs.shape, dtype=xs.dtype, generator=gen)).sum()
    leaves = [hu, hv, x, *params, *(p for p in phi_x if p is not None)]
    return (msum, xs), torch.autograd.grad(loss, leaves)


def _check_lorentz(dtype, update_x, clamp=100.0):
    inputs = _lorentz_inputs(dtype, update_x)
    out, grads = _lorentz_grads(fused.lorentz_messages, *inputs, clamp)
    ref, ref_grads = _lorentz_grads(fused.lorentz_messages_reference, *inputs, clamp)
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == F32 else {}
    for got, want in zip((*out, *grads), (*ref, *ref_grads), strict=True):
        torch.testing.assert_close(got, want, **tol)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("update_x", [True, False])
def test_cpu_lorentz_messages(cpu_lorentz_path, dtype, update_x):
    with dispatch.use_backend("cpu"):
        _check_lorentz(dtype, update_x)
        if update_x:
            _check_lorentz(dtype, update_x, clamp=0.5)  # some shifts clamped


def test_cpu_scratch_memory_is_reused_safely(monkeypatch):
    """The CPU tiles (native kernel off) reuse scratch memory between tiles and calls:
    results of earlier calls stay intact, a larger batch after a smaller one (and back) is
    right, and scratch first made under inference mode serves calls outside it (and the
    other way)."""
    monkeypatch.setattr(_native, "_enabled", False)
    small = _lorentz_inputs(F32, True, sizes=[3, 2])
    large = _lorentz_inputs(F32, True, sizes=[40, 7, 33], seed=1)

    def run(inputs):
        hu, hv, x, ptr, params, phi_x = inputs
        return fused.lorentz_messages(hu, hv, x, ptr, *params, *phi_x)

    with dispatch.use_backend("reference"), torch.no_grad():
        want = [run(small), run(large)]
    with dispatch.use_backend("cpu"):
        with torch.inference_mode():
            first = run(small)
        kept = [t.clone() for t in first]
        with torch.no_grad():
            second = run(large)
        with torch.inference_mode():
            third = run(small)
        _, grads = _lorentz_grads(fused.lorentz_messages, *large, 100.0)
        _, ref_grads = _lorentz_grads(fused.lorentz_messages_reference, *large, 100.0)
    for got, ref in zip((*first, *second, *third), (*want[0], *want[1], *want[0]), strict=True):
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    for got, ref in zip(first, kept, strict=True):
        assert torch.equal(got, ref)
    for got, ref in zip(grads, ref_grads, strict=True):  # sums over ~3,000 pairs
        torch.testing.assert_close(got, ref, atol=1e-5 * float(ref.abs().max()), rtol=1e-5)
    from jettag.ops import release_scratch, scratch_bytes

    assert scratch_bytes() > 0
    release_scratch()
    assert scratch_bytes() == 0


@pytest.mark.parametrize(("dtype", "update_x"), [(F32, True), (F64, False)])
def test_triton_lorentz_messages(triton_interpreter, dtype, update_x):
    _check_lorentz(dtype, update_x)


def test_lorentz_gradcheck_cpu(cpu_lorentz_path):
    hu, hv, x, ptr, params, phi_x = _lorentz_inputs(F64, True, hidden=2, sizes=[3, 0, 1, 2])

    def fn(hu, hv, x, *weights):
        return fused.lorentz_messages(hu, hv, x, ptr, *weights)

    with dispatch.use_backend("cpu"):
        assert torch.autograd.gradcheck(fn, (hu, hv, x, *params, *phi_x))


def test_lorentz_gradcheck_triton_fast(triton_interpreter):
    hu, hv, x, ptr, params, phi_x = _lorentz_inputs(F64, True, hidden=2, sizes=[3, 0, 1, 2])

    def fn(hu, hv, x, *weights):
        return fused.lorentz_messages(hu, hv, x, ptr, *weights)

    assert torch.autograd.gradcheck(fn, (hu, hv, x, *params, *phi_x), fast_mode=True)


def test_lorentz_messages_errors():
    hu, hv, x, ptr, params, _ = _lorentz_inputs(F32, False)
    with pytest.raises(ValueError, match="w_e: expected shape"):
        fused.lorentz_messages(hu, hv, x, ptr, params[0], params[1][:2], *params[2:])
    with pytest.raises(ValueError, match="hu, hv, x"):
        fused.lorentz_messages(hu, hv[:2], x, ptr, *params)


def _randomise_norms(module, gen):
    for mod in module.modules():
        if isinstance(mod, torch.nn.BatchNorm1d):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=gen))
            mod.running_var.copy_(0.5 + torch.rand(mod.num_features, generator=gen))
            mod.weight.data.copy_(torch.randn(mod.num_features, generator=gen))
            mod.bias.data.copy_(torch.randn(mod.num_features, generator=gen))


@pytest.mark.parametrize("in_channels", [7, 32])
def test_edge_conv_eval_drop_in_equals_layer(in_channels):
    from jettag.nn.edge_conv import EdgeConv

    gen = torch.Generator().manual_seed(1)
    conv = EdgeConv(in_channels, (32, 32, 32), k=5)
    _randomise_norms(conv, gen)
    conv.eval()
    ptr = _ptr([*SIZES, 30, 17])
    x = torch.randn(int(ptr[-1]), in_channels, generator=gen)
    pos = torch.randn(int(ptr[-1]), 2, generator=gen)
    with torch.no_grad(), dispatch.use_backend("reference"):
        expected = conv(x, pos, ptr)
    with torch.no_grad():
        got = fused.edge_conv_eval(conv, x, pos, ptr)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("aggr", ["mean", "max"])
# The edge rows are processed in chunks: one chunk, or many (and a partial last one).
@pytest.mark.parametrize("chunk_elements", [None, 40])
def test_edge_conv_train_drop_in_equals_layer(aggr, chunk_elements, monkeypatch):
    import copy

    from jettag.nn.edge_conv import EdgeConv

    if chunk_elements is not None:
        monkeypatch.setattr(fused, "_CHUNK_ELEMENTS", chunk_elements)
    gen = torch.Generator().manual_seed(4)
    conv = EdgeConv(6, (8, 8, 5), k=4, aggr=aggr).double().train()
    twin = copy.deepcopy(conv)
    conv.fused = False  # the expectation is the plain layer (the shipped one fuses)
    ptr = _ptr([*SIZES, 15])
    x = torch.randn(int(ptr[-1]), 6, dtype=F64, generator=gen, requires_grad=True)
    pos = torch.randn(int(ptr[-1]), 2, dtype=F64, generator=gen)
    expected = conv(x, pos, ptr)
    got = fused.edge_conv_train(twin, x, pos, ptr)
    torch.testing.assert_close(got, expected)
    probe = torch.randn(got.shape, dtype=F64, generator=gen)
    want = torch.autograd.grad((expected * probe).sum(), [x, *conv.parameters()])
    have = torch.autograd.grad((got * probe).sum(), [x, *twin.parameters()])
    for a, b in zip(have, want, strict=True):
        torch.testing.assert_close(a, b)
    for a, b in zip(twin.buffers(), conv.buffers(), strict=True):  # running statistics
        torch.testing.assert_close(a, b)


def test_batchnorm_relu_linear_gradcheck():
    gen = torch.Generator().manual_seed(5)
    norm = torch.nn.BatchNorm1d(3).double()
    linear = torch.nn.Linear(3, 2).double()
    z = torch.randn(7, 3, dtype=F64, generator=gen, requires_grad=True)
    ptr = _ptr([3, 0, 4])

    def fn(z, *params):
        return (fused.batchnorm_relu_linear(z, norm, linear),
                fused.batchnorm_relu_mean(z, norm, ptr))

    assert torch.autograd.gradcheck(fn, (z, *norm.parameters(), *linear.parameters()))


@pytest.mark.parametrize("update_x", [True, False])
def test_lgeb_eval_drop_in_equals_block(cpu_lorentz_path, update_x):
    from jettag.nn.lorentz import LGEB

    gen = torch.Generator().manual_seed(2)
    block = LGEB(8, hidden_channels=6, attr_channels=2, c_weight=0.1, update_x=update_x)
    _randomise_norms(block, gen)
    block.eval()
    hu, _, x, ptr, _, _ = _lorentz_inputs(F32, False, hidden=8, sizes=[*SIZES, 12])
    h, x = hu.detach(), x.detach()
    attr = torch.randn(h.shape[0], 2, generator=gen)
    with torch.no_grad(), dispatch.use_backend("reference"):
        expected = block(h, x, ptr, attr)
    with torch.no_grad():
        got = fused.lgeb_eval(block, h, x, ptr, attr)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_fold_batchnorm_matches_module():
    gen = torch.Generator().manual_seed(3)
    lin = torch.nn.Linear(4, 3)
    norm = torch.nn.BatchNorm1d(3)
    _randomise_norms(norm, gen)
    norm.eval()
    weight, bias = fused.fold_batchnorm(lin.weight, lin.bias, norm)
    x = torch.randn(6, 4, generator=gen)
    torch.testing.assert_close(x @ weight.T + bias, norm(lin(x)), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("update_x", [True, False])
def test_lgeb_train_drop_in_equals_block(cpu_lorentz_path, update_x, dtype):
    """Training mode: outputs, every gradient and the BatchNorm running statistics of the
    fused block equal the plain block's (edge list, BatchNorm over the pairs)."""
    import copy

    from jettag.nn.lorentz import LGEB

    gen = torch.Generator().manual_seed(6)
    block = LGEB(8, hidden_channels=6, attr_channels=2, c_weight=0.1, update_x=update_x)
    _randomise_norms(block, gen)
    block = block.to(dtype).train()
    twin = copy.deepcopy(block)
    block.fused = False
    hu, _, x, ptr, _, _ = _lorentz_inputs(dtype, False, hidden=8, sizes=[*SIZES, 12])
    h = hu.detach().requires_grad_(True)
    x = x.detach().requires_grad_(True)
    attr = torch.randn(h.shape[0], 2, dtype=dtype, generator=gen)
    calls = []
    real = fused.lorentz_messages
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fused, "lorentz_messages", lambda *a, **k: calls.append(1) or real(*a, **k))
        got = twin(h, x, ptr, attr)
    assert calls  # the shipped block took the fused path
    expected = block(h, x, ptr, attr)
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == F32 else {}
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, **tol)
    probe = [torch.randn(t.shape, dtype=dtype, generator=gen) for t in got]

    def grads(out, module):
        loss = sum((o * p).sum() for o, p in zip(out, probe, strict=True))
        return torch.autograd.grad(loss, [h, x, *module.parameters()], allow_unused=True)

    for a, b in zip(grads(got, twin), grads(expected, block), strict=True):
        if a is None or b is None:
            assert (a is None and b is None) or (a if b is None else b).abs().max() == 0
            continue
        torch.testing.assert_close(a, b, **({"atol": 1e-4, "rtol": 1e-4} if dtype == F32
                                            else {}))
    for a, b in zip(twin.buffers(), block.buffers(), strict=True):  # running statistics
        torch.testing.assert_close(a, b, **tol)


def test_pair_batchnorm_stats_equal_direct_statistics():
    """Mean and variance from per-particle sums equal those of the explicit pair values,
    also when the parts have large means (the centring keeps float64 accurate)."""
    from jettag.nn.lorentz import lorentz_edge_features

    gen = torch.Generator().manual_seed(8)
    ptr = _ptr([5, 0, 1, 7, 2, 30])
    num = int(ptr[-1])
    a = 1e3 + torch.randn(num, 4, dtype=F64, generator=gen)
    b = -1e3 + torch.randn(num, 4, dtype=F64, generator=gen)
    w = torch.randn(2, 4, dtype=F64, generator=gen)
    x = torch.randn(num, 4, dtype=F64, generator=gen) * 10
    mean, var, pairs = fused._pair_batchnorm_stats(a, b, x, ptr, w)
    edges = reference.fully_connected_edges(ptr)
    z = a[edges[0]] + b[edges[1]] + lorentz_edge_features(x, edges) @ w
    assert pairs == z.shape[0] == 5 * 4 + 7 * 6 + 2 + 30 * 29
    torch.testing.assert_close(mean, z.mean(0), rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(var, z.var(0, unbiased=False), rtol=1e-10, atol=1e-10)
