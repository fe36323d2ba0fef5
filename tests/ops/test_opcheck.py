"""``torch.library`` registration: opcheck of every custom op (schema, fake tensors,
autograd registration, AOT dispatch), ``torch.compile`` through the ops, and the
reference path during ONNX export."""

from __future__ import annotations

import pytest
import torch

from jettag import ops
from jettag.ops import dispatch, fused, reference

F64 = torch.float64


def _ptr(sizes):
    return torch.tensor([0, *torch.tensor(sizes).cumsum(0).tolist()], dtype=torch.int64)


def _cases():
    gen = torch.Generator().manual_seed(0)
    ptr = _ptr([3, 0, 1, 4])
    num = int(ptr[-1])
    x = torch.randn(num, 3, dtype=F64, generator=gen, requires_grad=True)
    index = torch.tensor([0, 2, 1, 1, 0, 3, 2, 0])
    knn_index, valid = reference.knn(x.detach(), ptr, 2)
    h = 2

    def r(*shape):
        return torch.randn(*shape, dtype=F64, generator=gen, requires_grad=True)

    p4 = torch.cat([torch.full((num, 1), 5.0, dtype=F64), torch.randn(num, 3, dtype=F64,
                                                                     generator=gen)], 1)
    jt = torch.ops.jettag
    return {
        "segment_sum": (jt.segment_sum, (x, ptr)),
        "segment_max": (jt.segment_max, (x, ptr)),
        "segment_softmax": (jt.segment_softmax, (x, ptr)),
        "scatter_sum": (jt.scatter_sum, (x, index, 5)),
        "knn": (jt.knn, (x.detach(), ptr, 2, False)),
        "edge_conv_messages": (jt.edge_conv_messages,
                               (r(num, 3), r(num, 3), knn_index, valid, [r(4, 3)], [r(4)],
                                "mean")),
        "lorentz_messages": (jt.lorentz_messages,
                             (r(num, h), r(num, h), p4.requires_grad_(True), ptr, r(2, h),
                              r(h, h), r(h), r(h), r(1), r(h, h), r(h), r(h), 100.0)),
    }


@pytest.mark.parametrize("name", list(_cases()))
def test_opcheck(name):
    op, args = _cases()[name]
    with dispatch.use_backend("cpu"):
        torch.library.opcheck(op, args)


def test_torch_compile_through_custom_ops():
    ptr = _ptr([3, 0, 5, 2])
    x = torch.randn(10, 4)

    def pooled(t):
        return ops.segment_sum(ops.segment_softmax(t, ptr) * t, ptr)

    compiled = torch.compile(pooled, backend="aot_eager", fullgraph=True)
    with dispatch.use_backend("cpu"):
        torch.testing.assert_close(compiled(x), reference.segment_sum(
            reference.segment_softmax(x, ptr) * x, ptr))


def test_fused_op_under_torch_compile():
    ptr = _ptr([3, 0, 5, 2])
    index, valid = reference.knn(torch.randn(10, 2), ptr, 3)
    own, other = torch.randn(10, 4), torch.randn(10, 4)
    weights, biases = [torch.randn(6, 4)], [torch.randn(6)]

    def messages(o, t):
        return fused.edge_conv_messages(o, t, index, valid, weights, biases)

    compiled = torch.compile(messages, backend="aot_eager", fullgraph=True)
    with dispatch.use_backend("cpu"):
        torch.testing.assert_close(compiled(own, other), fused.edge_conv_messages_reference(
            own, other, index, valid, weights, biases))


def test_onnx_export_takes_the_reference_path(monkeypatch):
    calls = []
    original = reference.segment_sum
    monkeypatch.setattr(reference, "segment_sum",
                        lambda *a, **kw: calls.append(1) or original(*a, **kw))
    ptr = _ptr([2, 3])
    x = torch.randn(5, 2)
    with dispatch.use_backend("cpu"):
        ops.segment_sum(x, ptr)
        assert not calls
        monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
        torch.testing.assert_close(ops.segment_sum(x, ptr), original(x, ptr))
        assert calls


def test_fused_lorentz_training_under_torch_compile():
    """A training step of an LGEB through the fused path, compiled (aot_eager), gives the
    eager step's output and gradients."""
    import copy

    from jettag.nn.lorentz import LGEB

    gen = torch.Generator().manual_seed(3)
    ptr = _ptr([4, 0, 6, 3])
    block = LGEB(6, hidden_channels=5, c_weight=0.1).train()
    twin = copy.deepcopy(block)
    h = torch.randn(13, 6, generator=gen)
    p3 = torch.randn(13, 3, generator=gen)
    x = torch.cat([p3.norm(dim=1, keepdim=True) + 0.5, p3], 1)

    def step(module):
        out_h, out_x = module(h, x, ptr)
        loss = out_h.square().sum() + out_x.sum()
        return loss, torch.autograd.grad(loss, list(module.parameters()))

    compiled = torch.compile(twin, backend="aot_eager")
    with dispatch.use_backend("cpu"):
        want = step(block)
        got = step(compiled)
    torch.testing.assert_close(got[0], want[0])
    for a, b in zip(got[1], want[1], strict=True):
        torch.testing.assert_close(a, b)
