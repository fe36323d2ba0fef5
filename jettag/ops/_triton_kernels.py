"""Triton kernels of :mod:`jettag.ops` (launched by :mod:`jettag.ops._triton`).

Imported only when a Triton path is taken. Without Triton the module still imports (the
kernels stay plain, never-launched functions) so that walking the package works. Kernels
are defined at import: set ``TRITON_INTERPRET=1`` before the first import to run them in
Triton's interpreter on CPU tensors (what the tests do).

Conventions: float32 or float64 tensors (the launcher converts other float types), row-major
contiguous; accumulation in the input's precision; ``tl.dot`` with IEEE float32 inputs (no
TF32), so results match the reference to float32 rounding. The CSR reductions loop over
each segment's rows in order, without atomics (deterministic); the unsorted scatter and the
weight gradients of the fused operators use atomic adds.
"""

from __future__ import annotations

import os

try:
    import triton
    import triton.language as tl

    jit = triton.jit
    HAVE_TRITON = True
except ImportError:  # the kernels are then never launched
    triton = tl = None
    HAVE_TRITON = False

    def jit(fn):  # type: ignore[no-redef]
        return fn


#: Whether these kernels were defined for Triton's interpreter.
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def autotune(configs, key, prune=None):
    """``triton.autotune`` on a GPU (configs filtered by ``prune(configs, named_args)``);
    the first config alone in the interpreter, which has no benchmarking driver."""
    if not HAVE_TRITON:
        return lambda fn: fn
    if INTERPRETED:
        return triton.autotune(configs=configs[:1], key=key)
    pruning = None if prune is None else {"early_config_prune": prune}
    return triton.autotune(configs=configs, key=key, prune_configs_by=pruning)


def _configs(**choices):
    if not HAVE_TRITON:
        return []
    names = list(choices)
    out = []

    def walk(i, current):
        if i == len(names):
            out.append(triton.Config(dict(current), num_warps=4))
            return
        for value in choices[names[i]]:
            walk(i + 1, {**current, names[i]: value})

    walk(0, {})
    return out


# --------------------------------------------------------------------------- CSR reductions


@autotune(_configs(BLOCK_R=[16, 64], BLOCK_C=[32, 128]), key=["C"])
@jit
def segment_reduce_kernel(src, ptr, out, C, IS_MAX: tl.constexpr, BLOCK_R: tl.constexpr,
                          BLOCK_C: tl.constexpr):
    seg = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    start = tl.load(ptr + seg)
    end = tl.load(ptr + seg + 1)
    zero = tl.zeros([BLOCK_R, BLOCK_C], dtype=src.dtype.element_ty)
    if IS_MAX:
        acc = zero - float("inf")
    else:
        acc = zero
    for r0 in range(start, end, BLOCK_R):
        rows = r0 + tl.arange(0, BLOCK_R)
        mask = (rows < end)[:, None] & cmask[None, :]
        if IS_MAX:
            tile = tl.load(src + rows[:, None] * C + cols[None, :], mask=mask,
                           other=float("-inf"))
            acc = tl.maximum(acc, tile)
        else:
            tile = tl.load(src + rows[:, None] * C + cols[None, :], mask=mask, other=0.0)
            acc += tile
    if IS_MAX:
        res = tl.max(acc, axis=0)
        res = tl.where(end > start, res, 0.0)
    else:
        res = tl.sum(acc, axis=0)
    tl.store(out + seg * C + cols, res, mask=cmask)


@autotune(_configs(BLOCK_R=[16, 64], BLOCK_C=[32, 128]), key=["C"])
@jit
def segment_softmax_kernel(src, ptr, out, C, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    seg = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    start = tl.load(ptr + seg)
    end = tl.load(ptr + seg + 1)
    zero = tl.zeros([BLOCK_R, BLOCK_C], dtype=src.dtype.element_ty)
    top = zero - float("inf")
    for r0 in range(start, end, BLOCK_R):
        rows = r0 + tl.arange(0, BLOCK_R)
        mask = (rows < end)[:, None] & cmask[None, :]
        tile = tl.load(src + rows[:, None] * C + cols[None, :], mask=mask, other=float("-inf"))
        top = tl.maximum(top, tile)
    peak = tl.max(top, axis=0)
    total = zero
    for r0 in range(start, end, BLOCK_R):
        rows = r0 + tl.arange(0, BLOCK_R)
        mask = (rows < end)[:, None] & cmask[None, :]
        tile = tl.load(src + rows[:, None] * C + cols[None, :], mask=mask, other=0.0)
        total += tl.where(mask, tl.exp(tile - peak[None, :]), 0.0)
    norm = tl.sum(total, axis=0)
    for r0 in range(start, end, BLOCK_R):
        rows = r0 + tl.arange(0, BLOCK_R)
        mask = (rows < end)[:, None] & cmask[None, :]
        tile = tl.load(src + rows[:, None] * C + cols[None, :], mask=mask, other=0.0)
        res = tl.exp(tile - peak[None, :]) / norm[None, :]
        tl.store(out + rows[:, None] * C + cols[None, :], res, mask=mask)


# --------------------------------------------------------------------------- scatter


@autotune(_configs(BLOCK_E=[32, 128], BLOCK_C=[32, 128]), key=["C"])
@jit
def scatter_add_kernel(src, index, out, E, C, BLOCK_E: tl.constexpr, BLOCK_C: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_E + tl.arange(0, BLOCK_E)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    rmask = rows < E
    mask = rmask[:, None] & (cols < C)[None, :]
    dest = tl.load(index + rows, mask=rmask, other=0)
    tile = tl.load(src + rows[:, None] * C + cols[None, :], mask=mask, other=0.0)
    tl.atomic_add(out + dest[:, None] * C + cols[None, :], tile, mask=mask)


# --------------------------------------------------------------------------- kNN


@autotune(_configs(BLOCK_Q=[16, 32], BLOCK_J=[32, 64], BLOCK_D=[16]), key=["D", "k"])
@jit
def knn_kernel(x, ptr, batch, index, valid, P, D, k, INCLUDE_SELF: tl.constexpr,
               BLOCK_Q: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr):
    # k rounds of "next nearest": each round scans the candidates of the queries' jets for
    # the smallest (distance, index) pair above the previous round's, so ties go to the
    # lower index and no per-query list has to live in registers.
    q = tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    qmask = q < P
    jet = tl.load(batch + q, mask=qmask, other=0)
    lo_q = tl.load(ptr + jet, mask=qmask, other=0)
    hi_q = tl.load(ptr + jet + 1, mask=qmask, other=0)
    lo = tl.min(tl.where(qmask, lo_q, P), axis=0)
    hi = tl.max(tl.where(qmask, hi_q, 0), axis=0)
    big = P + 1
    prev_d = tl.zeros([BLOCK_Q], dtype=x.dtype.element_ty) - 1.0
    prev_i = tl.zeros([BLOCK_Q], dtype=tl.int64) - 1
    for r in range(0, k):
        best_d = tl.zeros([BLOCK_Q], dtype=x.dtype.element_ty) + float("inf")
        best_i = tl.zeros([BLOCK_Q], dtype=tl.int64) + big
        for j0 in range(lo, hi, BLOCK_J):
            cand = j0 + tl.arange(0, BLOCK_J)
            dist = tl.zeros([BLOCK_Q, BLOCK_J], dtype=x.dtype.element_ty)
            for d0 in range(0, D, BLOCK_D):
                dims = d0 + tl.arange(0, BLOCK_D)
                dmask = dims < D
                xq = tl.load(x + q[:, None] * D + dims[None, :],
                             mask=qmask[:, None] & dmask[None, :], other=0.0)
                xc = tl.load(x + cand[:, None] * D + dims[None, :],
                             mask=(cand < hi)[:, None] & dmask[None, :], other=0.0)
                diff = xq[:, None, :] - xc[None, :, :]
                dist += tl.sum(diff * diff, axis=2)
            cand64 = cand.to(tl.int64)[None, :]
            ok = (cand[None, :] >= lo_q[:, None]) & (cand[None, :] < hi_q[:, None])
            ok = ok & qmask[:, None]
            if not INCLUDE_SELF:
                ok = ok & (cand[None, :] != q[:, None])
            later = (dist > prev_d[:, None]) | ((dist == prev_d[:, None])
                                                & (cand64 > prev_i[:, None]))
            ok = ok & later
            dist = tl.where(ok, dist, float("inf"))
            tile_d = tl.min(dist, axis=1)
            tile_i = tl.min(tl.where(ok & (dist == tile_d[:, None]), cand64, big), axis=1)
            better = (tile_d < best_d) | ((tile_d == best_d) & (tile_i < best_i))
            best_d = tl.where(better, tile_d, best_d)
            best_i = tl.where(better, tile_i, best_i)
        found = (best_i < big) & (best_d < float("inf"))  # inf / NaN: not a neighbour
        tl.store(index + q * k + r, tl.where(found, best_i, q.to(tl.int64)), mask=qmask)
        tl.store(valid + q * k + r, found.to(tl.int8), mask=qmask)
        prev_d = best_d
        prev_i = best_i


# --------------------------------------------------------------------------- EdgeConv

_EDGE_CONFIGS = _configs(BLOCK_P=[2, 1, 4, 8, 16], BLOCK_C=[16, 32], BLOCK_N=[32, 64])


def _edge_prune(configs, named_args, **kwargs):
    # tl.dot needs at least 16 rows; more than 128 edges per program exhausts registers.
    kp = named_args.get("KP", kwargs.get("KP", 16))
    kept = [c for c in configs if 16 <= c.kwargs["BLOCK_P"] * kp <= 128]
    return kept or configs[:1]


@autotune(_EDGE_CONFIGS, key=["C1", "C2", "C3", "k"], prune=_edge_prune)
@jit
def edge_conv_fwd_kernel(own, other, index, valid, w1, b1, w2, b2, out, P, k, C1, C2, C3,
                         KP: tl.constexpr, C2P: tl.constexpr, TWO: tl.constexpr,
                         BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
                         BLOCK_N: tl.constexpr):
    # One program: BLOCK_P particles x KP neighbour slots = E edges, all in registers.
    E: tl.constexpr = BLOCK_P * KP
    e = tl.arange(0, E)
    p = tl.program_id(0) * BLOCK_P + e // KP
    s = e % KP
    emask = (p < P) & (s < k)
    nbr = tl.load(index + p * k + s, mask=emask, other=0)
    okf = (tl.load(valid + p * k + s, mask=emask, other=0) != 0).to(own.dtype.element_ty)
    c2 = tl.arange(0, C2P)
    c2mask = c2 < C2
    acc = tl.zeros([E, C2P], dtype=own.dtype.element_ty)
    for c0 in range(0, C1, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        m = emask[:, None] & (c < C1)[None, :]
        h0 = tl.load(own + p[:, None] * C1 + c[None, :], mask=m, other=0.0)
        h0 += tl.load(other + nbr[:, None] * C1 + c[None, :], mask=m, other=0.0)
        h0 = tl.maximum(h0, 0.0)
        w = tl.load(w1 + c2[None, :] * C1 + c[:, None],
                    mask=c2mask[None, :] & (c < C1)[:, None], other=0.0)
        acc = tl.dot(h0, w, acc, input_precision="ieee")
    h1 = tl.maximum(acc + tl.load(b1 + c2, mask=c2mask, other=0.0)[None, :], 0.0)
    pp = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    count = tl.sum(tl.reshape(okf, (BLOCK_P, KP)), axis=1)
    inv = 1.0 / tl.maximum(count, 1.0)
    if TWO:
        for n0 in range(0, C3, BLOCK_N):
            n = n0 + tl.arange(0, BLOCK_N)
            nmask = n < C3
            w = tl.load(w2 + n[None, :] * C2 + c2[:, None],
                        mask=nmask[None, :] & c2mask[:, None], other=0.0)
            z = tl.dot(h1, w, tl.zeros([E, BLOCK_N], dtype=own.dtype.element_ty),
                       input_precision="ieee")
            z += tl.load(b2 + n, mask=nmask, other=0.0)[None, :]
            h2 = tl.maximum(z, 0.0) * okf[:, None]
            agg = tl.sum(tl.reshape(h2, (BLOCK_P, KP, BLOCK_N)), axis=1) * inv[:, None]
            tl.store(out + pp[:, None] * C3 + n[None, :], agg,
                     mask=(pp < P)[:, None] & nmask[None, :])
    else:
        agg = tl.sum(tl.reshape(h1 * okf[:, None], (BLOCK_P, KP, C2P)), axis=1) * inv[:, None]
        tl.store(out + pp[:, None] * C2 + c2[None, :], agg,
                 mask=(pp < P)[:, None] & c2mask[None, :])


@autotune(_EDGE_CONFIGS, key=["C1", "C2", "C3", "k"], prune=_edge_prune)
@jit
def edge_conv_bwd_kernel(grad, own, other, index, valid, w1, b1, w2, b2, d_own, d_other,
                         d_w1, d_b1, d_w2, d_b2, P, k, C1, C2, C3, KP: tl.constexpr,
                         C2P: tl.constexpr, TWO: tl.constexpr, BLOCK_P: tl.constexpr,
                         BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr):
    # Recomputes the tile's edge activations, then back-propagates; the particle's own
    # gradient is written once by its program, neighbours' and weights' by atomic adds.
    E: tl.constexpr = BLOCK_P * KP
    e = tl.arange(0, E)
    p = tl.program_id(0) * BLOCK_P + e // KP
    s = e % KP
    emask = (p < P) & (s < k)
    nbr = tl.load(index + p * k + s, mask=emask, other=0)
    okf = (tl.load(valid + p * k + s, mask=emask, other=0) != 0).to(own.dtype.element_ty)
    count = tl.sum(tl.reshape(okf, (BLOCK_P, KP)), axis=1)
    inv = tl.reshape(tl.broadcast_to((1.0 / tl.maximum(count, 1.0))[:, None], (BLOCK_P, KP)),
                     (E,))
    scale = okf * inv
    c2 = tl.arange(0, C2P)
    c2mask = c2 < C2
    acc = tl.zeros([E, C2P], dtype=own.dtype.element_ty)
    for c0 in range(0, C1, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        m = emask[:, None] & (c < C1)[None, :]
        h0 = tl.load(own + p[:, None] * C1 + c[None, :], mask=m, other=0.0)
        h0 += tl.load(other + nbr[:, None] * C1 + c[None, :], mask=m, other=0.0)
        h0 = tl.maximum(h0, 0.0)
        w = tl.load(w1 + c2[None, :] * C1 + c[:, None],
                    mask=c2mask[None, :] & (c < C1)[:, None], other=0.0)
        acc = tl.dot(h0, w, acc, input_precision="ieee")
    z1 = acc + tl.load(b1 + c2, mask=c2mask, other=0.0)[None, :]
    h1 = tl.maximum(z1, 0.0)
    if TWO:
        d_h1 = tl.zeros([E, C2P], dtype=own.dtype.element_ty)
        for n0 in range(0, C3, BLOCK_N):
            n = n0 + tl.arange(0, BLOCK_N)
            nmask = n < C3
            w = tl.load(w2 + n[None, :] * C2 + c2[:, None],
                        mask=nmask[None, :] & c2mask[:, None], other=0.0)
            z = tl.dot(h1, w, tl.zeros([E, BLOCK_N], dtype=own.dtype.element_ty),
                       input_precision="ieee")
            z += tl.load(b2 + n, mask=nmask, other=0.0)[None, :]
            g = tl.load(grad + p[:, None] * C3 + n[None, :],
                        mask=emask[:, None] & nmask[None, :], other=0.0)
            d_z = tl.where(z > 0, g * scale[:, None], 0.0)
            d_h1 = tl.dot(d_z, tl.trans(w), d_h1, input_precision="ieee")
            d_w = tl.dot(tl.trans(d_z), h1, tl.zeros([BLOCK_N, C2P], dtype=own.dtype.element_ty),
                         input_precision="ieee")
            tl.atomic_add(d_w2 + n[:, None] * C2 + c2[None, :], d_w,
                          mask=nmask[:, None] & c2mask[None, :])
            tl.atomic_add(d_b2 + n, tl.sum(d_z, axis=0), mask=nmask)
    else:
        d_h1 = tl.load(grad + p[:, None] * C2 + c2[None, :],
                       mask=emask[:, None] & c2mask[None, :], other=0.0) * scale[:, None]
    d_z1 = tl.where(z1 > 0, d_h1, 0.0)
    tl.atomic_add(d_b1 + c2, tl.sum(d_z1, axis=0), mask=c2mask)
    pp = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    for c0 in range(0, C1, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cmask = c < C1
        m = emask[:, None] & cmask[None, :]
        pre = tl.load(own + p[:, None] * C1 + c[None, :], mask=m, other=0.0)
        pre += tl.load(other + nbr[:, None] * C1 + c[None, :], mask=m, other=0.0)
        w = tl.load(w1 + c2[:, None] * C1 + c[None, :],
                    mask=c2mask[:, None] & cmask[None, :], other=0.0)
        d_w = tl.dot(tl.trans(d_z1), tl.maximum(pre, 0.0),
                     tl.zeros([C2P, BLOCK_C], dtype=own.dtype.element_ty),
                     input_precision="ieee")
        tl.atomic_add(d_w1 + c2[:, None] * C1 + c[None, :], d_w,
                      mask=c2mask[:, None] & cmask[None, :])
        d_h0 = tl.dot(d_z1, w, tl.zeros([E, BLOCK_C], dtype=own.dtype.element_ty),
                      input_precision="ieee")
        d_z0 = tl.where(pre > 0, d_h0, 0.0)
        own_grad = tl.sum(tl.reshape(d_z0, (BLOCK_P, KP, BLOCK_C)), axis=1)
        tl.store(d_own + pp[:, None] * C1 + c[None, :], own_grad,
                 mask=(pp < P)[:, None] & cmask[None, :])
        tl.atomic_add(d_other + nbr[:, None] * C1 + c[None, :], d_z0,
                      mask=m & (okf > 0)[:, None])


# --------------------------------------------------------------------------- Lorentz


@jit
def _psi(a):
    return tl.where(a >= 0, 1.0, -1.0) * tl.where(a == 0, 0.0, tl.log(1.0 + tl.abs(a)))


@jit
def _dpsi(a):
    return tl.where(a == 0, 0.0, 1.0 / (1.0 + tl.abs(a)))


_LORENTZ_CONFIGS = _configs(BLOCK_I=[8, 16], BLOCK_J=[8, 16])


@autotune(_LORENTZ_CONFIGS, key=["H"])
@jit
def lorentz_fwd_kernel(hu, hv, x, ptr, batch, w_psi, w_e, b_e, w_m, b_m, w_x1, b_x1, w_x2,
                       msum, xs, P, H, clamp, HP: tl.constexpr, UPDATE_X: tl.constexpr,
                       BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr):
    E: tl.constexpr = BLOCK_I * BLOCK_J
    ii = tl.program_id(0) * BLOCK_I + tl.arange(0, BLOCK_I)
    imask = ii < P
    jet = tl.load(batch + ii, mask=imask, other=0)
    lo_i = tl.load(ptr + jet, mask=imask, other=0)
    hi_i = tl.load(ptr + jet + 1, mask=imask, other=0)
    lo = tl.min(tl.where(imask, lo_i, P), axis=0)
    hi = tl.max(tl.where(imask, hi_i, 0), axis=0)
    dt = hu.dtype.element_ty
    hh = tl.arange(0, HP)
    hmask = hh < H
    hu_i = tl.load(hu + ii[:, None] * H + hh[None, :], mask=imask[:, None] & hmask[None, :],
                   other=0.0)
    wn = tl.load(w_psi + hh, mask=hmask, other=0.0)
    wd = tl.load(w_psi + H + hh, mask=hmask, other=0.0)
    be = tl.load(b_e + hh, mask=hmask, other=0.0)
    wm = tl.load(w_m + hh, mask=hmask, other=0.0)
    bm = tl.load(b_m)
    wmask = hmask[:, None] & hmask[None, :]
    we_t = tl.load(w_e + hh[None, :] * H + hh[:, None], mask=wmask, other=0.0)
    xi0 = tl.load(x + ii * 4 + 0, mask=imask, other=0.0)
    xi1 = tl.load(x + ii * 4 + 1, mask=imask, other=0.0)
    xi2 = tl.load(x + ii * 4 + 2, mask=imask, other=0.0)
    xi3 = tl.load(x + ii * 4 + 3, mask=imask, other=0.0)
    acc_m = tl.zeros([BLOCK_I, HP], dtype=dt)
    ax0 = tl.zeros([BLOCK_I], dtype=dt)
    ax1 = tl.zeros([BLOCK_I], dtype=dt)
    ax2 = tl.zeros([BLOCK_I], dtype=dt)
    ax3 = tl.zeros([BLOCK_I], dtype=dt)
    for j0 in range(lo, hi, BLOCK_J):
        jj = j0 + tl.arange(0, BLOCK_J)
        jmask = jj < hi
        pair = (jj[None, :] >= lo_i[:, None]) & (jj[None, :] < hi_i[:, None])
        pair = pair & (jj[None, :] != ii[:, None]) & imask[:, None]
        pf = pair.to(dt)
        xj0 = tl.load(x + jj * 4 + 0, mask=jmask, other=0.0)
        xj1 = tl.load(x + jj * 4 + 1, mask=jmask, other=0.0)
        xj2 = tl.load(x + jj * 4 + 2, mask=jmask, other=0.0)
        xj3 = tl.load(x + jj * 4 + 3, mask=jmask, other=0.0)
        d0 = xi0[:, None] - xj0[None, :]
        d1 = xi1[:, None] - xj1[None, :]
        d2 = xi2[:, None] - xj2[None, :]
        d3 = xi3[:, None] - xj3[None, :]
        norm = d0 * d0 - d1 * d1 - d2 * d2 - d3 * d3
        dot = xi0[:, None] * xj0[None, :] - xi1[:, None] * xj1[None, :] \
            - xi2[:, None] * xj2[None, :] - xi3[:, None] * xj3[None, :]
        a = _psi(norm)
        b = _psi(dot)
        hv_j = tl.load(hv + jj[:, None] * H + hh[None, :], mask=jmask[:, None] & hmask[None, :],
                       other=0.0)
        z0 = hu_i[:, None, :] + hv_j[None, :, :] + a[:, :, None] * wn[None, None, :] \
            + b[:, :, None] * wd[None, None, :]
        r0 = tl.reshape(tl.maximum(z0, 0.0), (E, HP))
        m = tl.dot(r0, we_t, tl.zeros([E, HP], dtype=dt), input_precision="ieee")
        m = tl.maximum(m + be[None, :], 0.0)
        gate = tl.sigmoid(tl.sum(m * wm[None, :], axis=1) + bm)
        mm = m * (gate * tl.reshape(pf, (E,)))[:, None]
        acc_m += tl.sum(tl.reshape(mm, (BLOCK_I, BLOCK_J, HP)), axis=1)
        if UPDATE_X:
            wx1_t = tl.load(w_x1 + hh[None, :] * H + hh[:, None], mask=wmask, other=0.0)
            q = tl.dot(mm, wx1_t, tl.zeros([E, HP], dtype=dt), input_precision="ieee")
            q = tl.maximum(q + tl.load(b_x1 + hh, mask=hmask, other=0.0)[None, :], 0.0)
            t = tl.sum(q * tl.load(w_x2 + hh, mask=hmask, other=0.0)[None, :], axis=1)
            t = tl.reshape(t, (BLOCK_I, BLOCK_J))
            ax0 += tl.sum(tl.minimum(tl.maximum(d0 * t, -clamp), clamp) * pf, axis=1)
            ax1 += tl.sum(tl.minimum(tl.maximum(d1 * t, -clamp), clamp) * pf, axis=1)
            ax2 += tl.sum(tl.minimum(tl.maximum(d2 * t, -clamp), clamp) * pf, axis=1)
            ax3 += tl.sum(tl.minimum(tl.maximum(d3 * t, -clamp), clamp) * pf, axis=1)
    tl.store(msum + ii[:, None] * H + hh[None, :], acc_m, mask=imask[:, None] & hmask[None, :])
    if UPDATE_X:
        inv = 1.0 / tl.maximum((hi_i - lo_i - 1).to(dt), 1.0)
        tl.store(xs + ii * 4 + 0, ax0 * inv, mask=imask)
        tl.store(xs + ii * 4 + 1, ax1 * inv, mask=imask)
        tl.store(xs + ii * 4 + 2, ax2 * inv, mask=imask)
        tl.store(xs + ii * 4 + 3, ax3 * inv, mask=imask)


@jit
def _shift_grad(g, d, t, pf, clamp):
    # d(clamp(d * t))/d(d * t) is 1 inside the bounds (inclusive, as torch.clamp).
    raw = d * t
    return tl.where(tl.abs(raw) <= clamp, g[:, None] * pf, 0.0)


@autotune(_LORENTZ_CONFIGS, key=["H"])
@jit
def lorentz_bwd_kernel(g_msum, g_xs, hu, hv, x, ptr, batch, w_psi, w_e, b_e, w_m, b_m, w_x1,
                       b_x1, w_x2, d_hu, d_hv, d_x, d_wpsi, d_we, d_be, d_wm, d_bm, d_wx1,
                       d_bx1, d_wx2, P, H, clamp, HP: tl.constexpr, UPDATE_X: tl.constexpr,
                       BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr):
    E: tl.constexpr = BLOCK_I * BLOCK_J
    ii = tl.program_id(0) * BLOCK_I + tl.arange(0, BLOCK_I)
    imask = ii < P
    jet = tl.load(batch + ii, mask=imask, other=0)
    lo_i = tl.load(ptr + jet, mask=imask, other=0)
    hi_i = tl.load(ptr + jet + 1, mask=imask, other=0)
    lo = tl.min(tl.where(imask, lo_i, P), axis=0)
    hi = tl.max(tl.where(imask, hi_i, 0), axis=0)
    dt = hu.dtype.element_ty
    hh = tl.arange(0, HP)
    hmask = hh < H
    wmask = hmask[:, None] & hmask[None, :]
    hu_i = tl.load(hu + ii[:, None] * H + hh[None, :], mask=imask[:, None] & hmask[None, :],
                   other=0.0)
    gm_i = tl.load(g_msum + ii[:, None] * H + hh[None, :],
                   mask=imask[:, None] & hmask[None, :], other=0.0)
    wn = tl.load(w_psi + hh, mask=hmask, other=0.0)
    wd = tl.load(w_psi + H + hh, mask=hmask, other=0.0)
    be = tl.load(b_e + hh, mask=hmask, other=0.0)
    wm = tl.load(w_m + hh, mask=hmask, other=0.0)
    bm = tl.load(b_m)
    we = tl.load(w_e + hh[:, None] * H + hh[None, :], mask=wmask, other=0.0)
    xi0 = tl.load(x + ii * 4 + 0, mask=imask, other=0.0)
    xi1 = tl.load(x + ii * 4 + 1, mask=imask, other=0.0)
    xi2 = tl.load(x + ii * 4 + 2, mask=imask, other=0.0)
    xi3 = tl.load(x + ii * 4 + 3, mask=imask, other=0.0)
    inv = 1.0 / tl.maximum((hi_i - lo_i - 1).to(dt), 1.0)
    gx0 = tl.load(g_xs + ii * 4 + 0, mask=imask, other=0.0) * inv
    gx1 = tl.load(g_xs + ii * 4 + 1, mask=imask, other=0.0) * inv
    gx2 = tl.load(g_xs + ii * 4 + 2, mask=imask, other=0.0) * inv
    gx3 = tl.load(g_xs + ii * 4 + 3, mask=imask, other=0.0) * inv
    acc_hu = tl.zeros([BLOCK_I, HP], dtype=dt)
    for j0 in range(lo, hi, BLOCK_J):
        jj = j0 + tl.arange(0, BLOCK_J)
        jmask = jj < hi
        pair = (jj[None, :] >= lo_i[:, None]) & (jj[None, :] < hi_i[:, None])
        pair = pair & (jj[None, :] != ii[:, None]) & imask[:, None]
        pf = pair.to(dt)
        xj0 = tl.load(x + jj * 4 + 0, mask=jmask, other=0.0)
        xj1 = tl.load(x + jj * 4 + 1, mask=jmask, other=0.0)
        xj2 = tl.load(x + jj * 4 + 2, mask=jmask, other=0.0)
        xj3 = tl.load(x + jj * 4 + 3, mask=jmask, other=0.0)
        d0 = xi0[:, None] - xj0[None, :]
        d1 = xi1[:, None] - xj1[None, :]
        d2 = xi2[:, None] - xj2[None, :]
        d3 = xi3[:, None] - xj3[None, :]
        norm = d0 * d0 - d1 * d1 - d2 * d2 - d3 * d3
        dot = xi0[:, None] * xj0[None, :] - xi1[:, None] * xj1[None, :] \
            - xi2[:, None] * xj2[None, :] - xi3[:, None] * xj3[None, :]
        a = _psi(norm)
        b = _psi(dot)
        hv_j = tl.load(hv + jj[:, None] * H + hh[None, :], mask=jmask[:, None] & hmask[None, :],
                       other=0.0)
        z0 = tl.reshape(hu_i[:, None, :] + hv_j[None, :, :] + a[:, :, None] * wn[None, None, :]
                        + b[:, :, None] * wd[None, None, :], (E, HP))
        r0 = tl.maximum(z0, 0.0)
        z1 = tl.dot(r0, tl.trans(we), tl.zeros([E, HP], dtype=dt), input_precision="ieee")
        z1 += be[None, :]
        m = tl.maximum(z1, 0.0)
        gate = tl.sigmoid(tl.sum(m * wm[None, :], axis=1) + bm)
        pe = tl.reshape(pf, (E,))
        d_mm = tl.reshape(tl.broadcast_to(gm_i[:, None, :], (BLOCK_I, BLOCK_J, HP)), (E, HP))
        d_mm = d_mm * pe[:, None]
        dd0 = tl.zeros([BLOCK_I, BLOCK_J], dtype=dt)
        dd1 = tl.zeros([BLOCK_I, BLOCK_J], dtype=dt)
        dd2 = tl.zeros([BLOCK_I, BLOCK_J], dtype=dt)
        dd3 = tl.zeros([BLOCK_I, BLOCK_J], dtype=dt)
        if UPDATE_X:
            mm = m * (gate * pe)[:, None]
            wx1 = tl.load(w_x1 + hh[:, None] * H + hh[None, :], mask=wmask, other=0.0)
            wx2 = tl.load(w_x2 + hh, mask=hmask, other=0.0)
            qpre = tl.dot(mm, tl.trans(wx1), tl.zeros([E, HP], dtype=dt), input_precision="ieee")
            qpre += tl.load(b_x1 + hh, mask=hmask, other=0.0)[None, :]
            q = tl.maximum(qpre, 0.0)
            t = tl.reshape(tl.sum(q * wx2[None, :], axis=1), (BLOCK_I, BLOCK_J))
            s0 = _shift_grad(gx0, d0, t, pf, clamp)
            s1 = _shift_grad(gx1, d1, t, pf, clamp)
            s2 = _shift_grad(gx2, d2, t, pf, clamp)
            s3 = _shift_grad(gx3, d3, t, pf, clamp)
            d_t = tl.reshape(s0 * d0 + s1 * d1 + s2 * d2 + s3 * d3, (E,))
            dd0 += s0 * t
            dd1 += s1 * t
            dd2 += s2 * t
            dd3 += s3 * t
            tl.atomic_add(d_wx2 + hh, tl.sum(q * d_t[:, None], axis=0), mask=hmask)
            d_q = tl.where(qpre > 0, d_t[:, None] * wx2[None, :], 0.0)
            tl.atomic_add(d_bx1 + hh, tl.sum(d_q, axis=0), mask=hmask)
            gw = tl.dot(tl.trans(d_q), mm, tl.zeros([HP, HP], dtype=dt), input_precision="ieee")
            tl.atomic_add(d_wx1 + hh[:, None] * H + hh[None, :], gw, mask=wmask)
            d_mm = tl.dot(d_q, wx1, d_mm, input_precision="ieee")
        d_s = tl.sum(d_mm * m, axis=1) * gate * (1.0 - gate)
        tl.atomic_add(d_wm + hh, tl.sum(m * d_s[:, None], axis=0), mask=hmask)
        tl.atomic_add(d_bm, tl.sum(d_s, axis=0))
        d_z1 = tl.where(z1 > 0, d_mm * gate[:, None] + d_s[:, None] * wm[None, :], 0.0)
        tl.atomic_add(d_be + hh, tl.sum(d_z1, axis=0), mask=hmask)
        gw = tl.dot(tl.trans(d_z1), r0, tl.zeros([HP, HP], dtype=dt), input_precision="ieee")
        tl.atomic_add(d_we + hh[:, None] * H + hh[None, :], gw, mask=wmask)
        d_z0 = tl.dot(d_z1, we, tl.zeros([E, HP], dtype=dt), input_precision="ieee")
        d_z0 = tl.where(z0 > 0, d_z0, 0.0)
        d_z0_3 = tl.reshape(d_z0, (BLOCK_I, BLOCK_J, HP))
        acc_hu += tl.sum(d_z0_3, axis=1)
        tl.atomic_add(d_hv + jj[:, None] * H + hh[None, :], tl.sum(d_z0_3, axis=0),
                      mask=jmask[:, None] & hmask[None, :])
        a_e = tl.reshape(a, (E,))
        b_e_ = tl.reshape(b, (E,))
        tl.atomic_add(d_wpsi + hh, tl.sum(d_z0 * a_e[:, None], axis=0), mask=hmask)
        tl.atomic_add(d_wpsi + H + hh, tl.sum(d_z0 * b_e_[:, None], axis=0), mask=hmask)
        d_norm = tl.reshape(tl.sum(d_z0 * wn[None, :], axis=1), (BLOCK_I, BLOCK_J)) * _dpsi(norm)
        d_dot = tl.reshape(tl.sum(d_z0 * wd[None, :], axis=1), (BLOCK_I, BLOCK_J)) * _dpsi(dot)
        dd0 += 2.0 * d_norm * d0
        dd1 -= 2.0 * d_norm * d1
        dd2 -= 2.0 * d_norm * d2
        dd3 -= 2.0 * d_norm * d3
        # x_i - x_j: +dd for i, -dd for j; <x_i, x_j>: metric-weighted partner for each.
        tl.atomic_add(d_x + ii * 4 + 0, tl.sum(dd0 + d_dot * xj0[None, :], axis=1), mask=imask)
        tl.atomic_add(d_x + ii * 4 + 1, tl.sum(dd1 - d_dot * xj1[None, :], axis=1), mask=imask)
        tl.atomic_add(d_x + ii * 4 + 2, tl.sum(dd2 - d_dot * xj2[None, :], axis=1), mask=imask)
        tl.atomic_add(d_x + ii * 4 + 3, tl.sum(dd3 - d_dot * xj3[None, :], axis=1), mask=imask)
        tl.atomic_add(d_x + jj * 4 + 0, tl.sum(d_dot * xi0[:, None] - dd0, axis=0), mask=jmask)
        tl.atomic_add(d_x + jj * 4 + 1, tl.sum(-d_dot * xi1[:, None] - dd1, axis=0), mask=jmask)
        tl.atomic_add(d_x + jj * 4 + 2, tl.sum(-d_dot * xi2[:, None] - dd2, axis=0), mask=jmask)
        tl.atomic_add(d_x + jj * 4 + 3, tl.sum(-d_dot * xi3[:, None] - dd3, axis=0), mask=jmask)
    tl.store(d_hu + ii[:, None] * H + hh[None, :], acc_hu, mask=imask[:, None] & hmask[None, :])
