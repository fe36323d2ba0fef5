"""The reference primitives against explicit per-jet Python loops (float64)."""

from __future__ import annotations

import pytest
import torch

from jettag import ops

F64 = torch.float64


def _ptr(sizes):
    return torch.tensor([0, *torch.tensor(sizes).cumsum(0).tolist()], dtype=torch.int64)


SIZES = [5, 0, 1, 3, 20, 0, 2]


@pytest.fixture
def data():
    gen = torch.Generator().manual_seed(0)
    ptr = _ptr(SIZES)
    x = torch.randn(int(ptr[-1]), 3, dtype=F64, generator=gen)
    return x, ptr


def test_batch_ptr_round_trip(data):
    _, ptr = data
    batch = ops.batch_from_ptr(ptr)
    assert batch.tolist() == [j for j, n in enumerate(SIZES) for _ in range(n)]
    assert torch.equal(ops.ptr_from_batch(batch, len(SIZES)), ptr)
    with pytest.raises(ValueError, match="sorted"):
        ops.ptr_from_batch(torch.tensor([1, 0]))


def test_segment_reductions_match_loops(data):
    x, ptr = data
    for j in range(len(SIZES)):
        seg = x[ptr[j]:ptr[j + 1]]
        if len(seg):
            torch.testing.assert_close(ops.segment_sum(x, ptr)[j], seg.sum(0))
            torch.testing.assert_close(ops.segment_mean(x, ptr)[j], seg.mean(0))
            torch.testing.assert_close(ops.segment_max(x, ptr)[j], seg.max(0).values)
            torch.testing.assert_close(ops.segment_softmax(x, ptr)[ptr[j]:ptr[j + 1]],
                                       torch.softmax(seg, 0))
        else:
            for f in (ops.segment_sum, ops.segment_mean, ops.segment_max):
                assert bool((f(x, ptr)[j] == 0).all())


def test_scatter(data):
    x, _ = data
    index = torch.tensor([2, 0, 2, 5] * (x.shape[0] // 4) + [0] * (x.shape[0] % 4))
    s = ops.scatter_sum(x, index, 7)
    m = ops.scatter_mean(x, index, 7)
    for i in range(7):
        sel = x[index == i]
        torch.testing.assert_close(s[i], sel.sum(0))
        torch.testing.assert_close(m[i], sel.mean(0) if len(sel) else torch.zeros(3, dtype=F64))


@pytest.mark.parametrize("k", [1, 3, 16])
@pytest.mark.parametrize("include_self", [False, True])
def test_knn_matches_brute_force_within_jets(data, k, include_self):
    x, ptr = data
    index, valid = ops.knn(x, ptr, k, include_self=include_self)
    for j in range(len(SIZES)):
        lo, hi = int(ptr[j]), int(ptr[j + 1])
        for i in range(lo, hi):
            cand = [c for c in range(lo, hi) if include_self or c != i]
            cand.sort(key=lambda c: (float(((x[c] - x[i]) ** 2).sum()), c))
            expect = cand[:k]
            got = index[i][valid[i]].tolist()
            assert got == expect
            assert bool((index[i][~valid[i]] == i).all())  # safe padding: the particle itself


def test_knn_ties_go_to_lower_index():
    x = torch.zeros(4, 2, dtype=F64)
    index, valid = ops.knn(x, _ptr([4]), 2)
    assert index.tolist() == [[1, 2], [0, 2], [0, 1], [0, 1]] and bool(valid.all())


def test_knn_errors():
    with pytest.raises(ValueError, match="last offset"):
        ops.knn(torch.zeros(3, 2), _ptr([2]), 2)
    with pytest.raises(ValueError, match="positive"):
        ops.knn(torch.zeros(2, 2), _ptr([2]), 0)


def test_fully_connected_edges():
    ptr = _ptr([3, 0, 1, 2])
    edges = ops.fully_connected_edges(ptr)
    expect = [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (4, 5), (5, 4)]
    assert list(zip(*edges.tolist(), strict=True)) == expect
    loops = ops.fully_connected_edges(ptr, self_loops=True)
    assert loops.shape[1] == 9 + 1 + 4
