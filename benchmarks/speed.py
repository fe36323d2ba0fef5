"""Speed and memory of jettag's taggers, side by side with weaver-core and PyTorch Geometric.

Measures, in one run and on one device:

- inference and training-step throughput (jets/s) and peak memory of every tagger in
  ``jettag.models.available()``, on generated top-tagging jets (their multiplicity
  distribution) and on jets of exactly 128 particles (a fixed padding of 128), for batch
  sizes 1 to 512;
- ParticleNet against weaver-core's ``ParticleNet`` (the same weights, inputs padded per
  batch) and a PyTorch Geometric ``EdgeConv`` ParticleNet (mean aggregation), as ratios;
- LorentzNet against an edge-list implementation in the style of its released code
  (per-jet edge lists built on the CPU with ``scipy.sparse.coo_matrix``, ``index_add_``
  segment sums), same weights;
- achieved GFLOP/s of ParticleNet next to this machine's measured matrix-multiply peak;
- that every tagger's output equals the reference path's (``jettag.ops`` backend
  ``"reference"``) and that the baselines agree with jettag on the same weights.

Timing: on CPU ``time.perf_counter`` around each call, on CUDA CUDA events with a warm-up;
the median of repetitions (at least ``--min-time`` seconds of them). The implementations
of a row (jettag's variants and the baselines) are measured in ``--rounds`` interleaved
rounds (A, B, C, A, B, C, ...) and the median over rounds is reported, so that the
machine's slow drifts hit all alike. Peak memory: on CUDA
``torch.cuda.max_memory_allocated``; on CPU the largest sum of live allocations recorded by
the PyTorch profiler during one call (memory allocated before the call, such as weights and
inputs, is not counted). Writes ``speed.md`` and ``speed.json`` under ``--out``.

Examples::

    python benchmarks/speed.py                    # full run (CPU: ~20-40 min on 2 cores)
    python benchmarks/speed.py --quick            # smoke test (< 3 min on a quiet machine)
    python benchmarks/speed.py --device cuda      # GPU mode (CUDA events)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as _dt
import importlib
import itertools
import json
import os
import platform
import shlex
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import jettag
from jettag.data import JetBatch
from jettag.ops import dispatch, release_scratch

FULL_BATCHES = (1, 8, 64, 512)
QUICK_BATCHES = (1, 32)
FIXED_PARTICLES = 128


# --------------------------------------------------------------------------- helpers


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def environment(device: torch.device, threads: int) -> dict[str, Any]:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "jettag": jettag.__version__,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "device": str(device),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    for dist in ("weaver-core", "torch-geometric", "triton", "pyg-lib"):
        try:
            from importlib import metadata

            env[dist] = metadata.version(dist)
        except Exception:
            env[dist] = None
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    return env


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_time(fn: Callable[[], Any], device: torch.device, *, min_time: float,
                 max_reps: int, min_reps: int = 3) -> dict[str, float]:
    """Median (and 20/80 % quantiles) of the seconds per call after one warm-up call."""
    fn()
    synchronize(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps
                                     or time.perf_counter() - start < min_time):
        if device.type == "cuda":
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(begin.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    qs = np.quantile(times, [0.2, 0.5, 0.8]) if len(times) > 1 else [times[0]] * 3
    return {"median_s": float(qs[1]), "p20_s": float(qs[0]), "p80_s": float(qs[2]),
            "reps": len(times)}


def measure_peak_memory(fn: Callable[[], Any], device: torch.device) -> int:
    """Bytes allocated at the peak of one call, beyond what was allocated before it. The
    scratch memory jettag's CPU paths keep between calls is freed first, so that the call
    allocates it again and it counts."""
    release_scratch()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    activities = [torch.profiler.ProfilerActivity.CPU]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.profiler.profile(activities=activities, profile_memory=True) as prof:
            fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
              and e.device_type() == torch.profiler.DeviceType.CPU]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return int(peak)


def matmul_peak(device: torch.device, *, quick: bool) -> float:
    """Measured float32 matrix-multiply GFLOP/s (best of several square products)."""
    best = 0.0
    for n in (1024, 2048) if not quick else (1024,):
        a = torch.randn(n, n, device=device)
        b = torch.randn(n, n, device=device)
        timing = measure_time(lambda a=a, b=b: a @ b, device, min_time=0.5 if not quick else 0.2,
                              max_reps=50)
        best = max(best, 2 * n**3 / timing["median_s"] / 1e9)
    return best


# --------------------------------------------------------------------------- workloads


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "jettag" / "benchmarks"


def generated_jets(n_per_class: int, seed: int) -> tuple[JetBatch, str]:
    """Top-tagging jets from the offline generator (cached), or a synthetic stand-in."""
    path = _cache_dir() / f"top-tagging_seed{seed}_n{n_per_class}.pt"
    if path.exists():
        data = torch.load(path)
        return JetBatch.from_counts(data["p4"], data["counts"], label=data["label"]), \
            f"generated top-tagging jets (cached at {path})"
    try:
        from jettag.data.generate import generate_jets

        log(f"generating {2 * n_per_class} top-tagging jets (seed {seed}) ...")
        array = generate_jets("top-tagging", n_per_class, seed=seed, shuffle=True)
        jets = JetBatch.from_awkward(array)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"p4": jets.p4.float(), "counts": jets.counts, "label": jets.label}, path)
        return JetBatch.from_counts(jets.p4.float(), jets.counts, label=jets.label), \
            f"generated top-tagging jets ({2 * n_per_class}, seed {seed}; cached at {path})"
    except Exception as err:
        msg = (f"WARNING: could not generate top-tagging jets ({type(err).__name__}: {err}); "
               "using the synthetic multiplicity distribution: half the jets with "
               "N(58, 15) particles, half with N(40, 12), clipped to [5, 200] (close to the "
               "generated top and QCD jets)")
        log(msg)
        gen = torch.Generator().manual_seed(seed)
        means = torch.tensor([58.0, 40.0]).repeat_interleave(n_per_class)
        sigmas = torch.tensor([15.0, 12.0]).repeat_interleave(n_per_class)
        counts = (means + sigmas * torch.randn(2 * n_per_class, generator=gen)).round()
        counts = counts.clamp(5, 200).long()
        return _random_jets(counts, gen), msg


def _random_jets(counts: Tensor, gen: torch.Generator) -> JetBatch:
    """Massless particles spread around a jet axis, ``counts`` per jet (pT-falling)."""
    num = int(counts.sum())
    pt = 30.0 * -torch.log(torch.rand(num, generator=gen)) + 1.0
    eta = 0.3 * torch.randn(num, generator=gen)
    phi = 0.3 * torch.randn(num, generator=gen)
    p4 = torch.stack([pt * torch.cosh(eta), pt * torch.cos(phi), pt * torch.sin(phi),
                      pt * torch.sinh(eta)], 1)
    label = torch.arange(counts.numel()) % 2
    return JetBatch.from_counts(p4, counts, label=label)


def fixed_jets(n: int, seed: int) -> JetBatch:
    gen = torch.Generator().manual_seed(seed + 1)
    return _random_jets(torch.full((n,), FIXED_PARTICLES), gen)


def batches(pool: JetBatch, size: int, count: int) -> list[JetBatch]:
    """``count`` consecutive batches of ``size`` jets from the pool (wrapping around)."""
    out = []
    n = len(pool)
    for i in range(count):
        idx = [(i * size + j) % n for j in range(size)]
        out.append(pool[idx])
    return out


# --------------------------------------------------------------------------- baselines


class PygParticleNet(nn.Module):
    """ParticleNet from PyTorch Geometric's ``EdgeConv`` (mean aggregation), weights named so
    that jettag's ParticleNet state dict maps onto it.

    The kNN graph of each block comes from ``DynamicEdgeConv``'s kernel (pyg-lib) when
    installed, otherwise from a brute-force per-batch dense search (what torch_cluster's CPU
    kNN computes), excluding the particle itself.
    """

    def __init__(self, input_dims: int, num_classes: int, blocks, fc) -> None:
        super().__init__()
        from torch_geometric.nn import EdgeConv

        self.input_norm = nn.BatchNorm1d(input_dims)
        self.ks = [k for k, _ in blocks]
        self.convs = nn.ModuleList()
        self.shortcuts = nn.ModuleList()
        c_in = input_dims
        for _, widths in blocks:
            layers: list[nn.Module] = []
            sizes = [2 * c_in, *widths]
            for a, b in itertools.pairwise(sizes):
                layers += [nn.Linear(a, b, bias=False), nn.BatchNorm1d(b), nn.ReLU()]
            self.convs.append(EdgeConv(nn.Sequential(*layers), aggr="mean"))
            if c_in == widths[-1]:
                self.shortcuts.append(nn.Identity())
            else:
                self.shortcuts.append(nn.Sequential(nn.Linear(c_in, widths[-1], bias=False),
                                                    nn.BatchNorm1d(widths[-1])))
            c_in = widths[-1]
        head: list[nn.Module] = []
        for width, drop in fc:
            head += [nn.Linear(c_in, width), nn.ReLU(), nn.Dropout(drop)]
            c_in = width
        head.append(nn.Linear(c_in, num_classes))
        self.head = nn.Sequential(*head)

    @staticmethod
    def knn_graph(pos: Tensor, batch: Tensor, k: int) -> Tensor:
        import torch_geometric.typing as pyg_typing

        if getattr(pyg_typing, "WITH_KNN", False):
            from torch_geometric.nn import knn_graph

            return knn_graph(pos, k, batch, loop=False, flow="source_to_target")
        from torch_geometric.utils import to_dense_batch

        dense, mask = to_dense_batch(pos, batch)
        sq = (dense * dense).sum(-1)
        dist = sq[:, :, None] + sq[:, None, :] - 2 * dense @ dense.transpose(1, 2)
        n = dense.shape[1]
        blocked = ~mask[:, None, :] | torch.eye(n, dtype=torch.bool, device=pos.device)
        dist = dist.masked_fill(blocked, float("inf"))
        kk = min(k, n)
        dist, nbr = dist.topk(kk, dim=-1, largest=False)
        offsets = torch.cumsum(mask.sum(1), 0) - mask.sum(1)
        target = torch.arange(pos.shape[0], device=pos.device)
        ok = torch.isfinite(dist)[mask]
        source = (nbr + offsets[:, None, None])[mask]
        target = target[:, None].expand_as(source)
        return torch.stack([source[ok], target[ok]])

    def forward(self, points: Tensor, features: Tensor, batch: Tensor, num_jets: int) -> Tensor:
        from torch_geometric.nn import global_mean_pool

        x = self.input_norm(features)
        pos = points
        for k, conv, shortcut in zip(self.ks, self.convs, self.shortcuts, strict=True):
            edge_index = self.knn_graph(pos, batch, k)
            x = torch.relu(conv(x, edge_index) + shortcut(x))
            pos = x
        return self.head(global_mean_pool(x, batch, size=num_jets))

    def load_jettag(self, model: nn.Module) -> None:
        state = {}
        for key, value in model.state_dict().items():
            parts = key.split(".")
            if parts[0] == "blocks":
                b, kind = parts[1], parts[2]
                if kind in ("linears", "norms"):
                    idx = 3 * int(parts[3]) + (0 if kind == "linears" else 1)
                    key = f"convs.{b}.nn.{idx}.{'.'.join(parts[4:])}"
                elif kind == "shortcut":
                    key = f"shortcuts.{b}.0.{'.'.join(parts[3:])}"
                elif kind == "shortcut_norm":
                    key = f"shortcuts.{b}.1.{'.'.join(parts[3:])}"
            state[key] = value
        self.load_state_dict(state)


def released_style_edges(node_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Edge lists as LorentzNet's released collate builds them: a Python loop over jets,
    ``scipy.sparse.coo_matrix`` of each jet's node-pair mask (no self edges), on the CPU."""
    from scipy.sparse import coo_matrix

    batch_size, n_nodes = node_mask.shape
    mask = node_mask.cpu()
    edge_mask = mask.unsqueeze(1) & mask.unsqueeze(2)
    edge_mask &= ~torch.eye(n_nodes, dtype=torch.bool)
    rows, cols = [], []
    for batch_idx in range(batch_size):
        offset = batch_idx * n_nodes
        coo = coo_matrix(edge_mask[batch_idx].numpy())
        rows.append(offset + coo.row)
        cols.append(offset + coo.col)
    return (torch.from_numpy(np.concatenate(rows)).long(),
            torch.from_numpy(np.concatenate(cols)).long())


def _unsorted_segment_sum(data: Tensor, segment_ids: Tensor, num_segments: int) -> Tensor:
    result = data.new_zeros((num_segments, data.size(1)))
    return result.index_add_(0, segment_ids, data)


def _unsorted_segment_mean(data: Tensor, segment_ids: Tensor, num_segments: int) -> Tensor:
    result = data.new_zeros((num_segments, data.size(1)))
    count = data.new_zeros((num_segments, data.size(1)))
    result.index_add_(0, segment_ids, data)
    count.index_add_(0, segment_ids, torch.ones_like(data))
    return result / count.clamp(min=1)


class EdgeListLorentzNet(nn.Module):
    """LorentzNet in the style of its released code, sharing a jettag LorentzNet's weights.

    Padded nodes ``(B * N, C)``, explicit edge lists from :func:`released_style_edges`
    built inside ``forward`` (as the released collate does per batch), per-edge
    ``cat([h_i, h_j, psi(norm), psi(dot)])`` into phi_e, ``index_add_`` sums. The readout
    averages over each jet's real nodes, like jettag's default ``readout="mean"``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @staticmethod
    def _psi(p: Tensor) -> Tensor:
        return torch.sign(p) * torch.log(torch.abs(p) + 1)

    def _lgeb(self, block: nn.Module, h: Tensor, x: Tensor, edges, node_attr: Tensor):
        i, j = edges
        x_diff = x[i] - x[j]
        norms = (x_diff[:, 0] ** 2 - (x_diff[:, 1:] ** 2).sum(-1)).unsqueeze(-1)
        dots = (x[i][:, 0] * x[j][:, 0] - (x[i][:, 1:] * x[j][:, 1:]).sum(-1)).unsqueeze(-1)
        norms, dots = self._psi(norms), self._psi(dots)
        out = torch.cat([h[i], h[j], norms, dots], dim=1)
        m = block.phi_e(out)
        m = m * block.phi_m(m)
        if block.phi_x is not None:
            trans = torch.clamp(x_diff * block.phi_x(m), min=-100, max=100)
            x = x + _unsorted_segment_mean(trans, i, x.size(0)) * block.c_weight
        agg = _unsorted_segment_sum(m, i, h.size(0))
        h = h + block.phi_h(torch.cat([h, agg, node_attr], dim=1))
        return h, x

    def forward(self, scalars: Tensor, x: Tensor, node_mask: Tensor) -> Tensor:
        batch_size, n_nodes, _ = x.shape
        edges = released_style_edges(node_mask)
        edges = (edges[0].to(x.device), edges[1].to(x.device))
        flat_s = scalars.view(batch_size * n_nodes, -1)
        flat_x = x.view(batch_size * n_nodes, 4)
        h = self.model.embedding(flat_s)
        for block in self.model.blocks:
            h, flat_x = self._lgeb(block, h, flat_x, edges, flat_s)
        mask = node_mask.view(-1, 1).to(h.dtype)
        h = (h * mask).view(batch_size, n_nodes, -1).sum(1)
        h = h / node_mask.sum(1, keepdim=True).clamp_min(1).to(h.dtype)
        return self.model.decoder(h)


def padded(values: Tensor, ptr: Tensor, length: int | None = None) -> tuple[Tensor, Tensor]:
    counts = ptr[1:] - ptr[:-1]
    num_jets = counts.numel()
    n = int(counts.max()) if length is None else length
    batch = torch.repeat_interleave(torch.arange(num_jets, device=ptr.device), counts)
    pos = torch.arange(values.shape[0], device=ptr.device) - ptr[batch]
    out = values.new_zeros(num_jets, n, *values.shape[1:])
    out[batch, pos] = values
    mask = torch.zeros(num_jets, n, dtype=torch.bool, device=ptr.device)
    mask[batch, pos] = True
    return out, mask


# --------------------------------------------------------------------------- FLOPs


def particlenet_flops(model: nn.Module, counts: Tensor, *, padded_to: int | None = None,
                      decomposed: bool = True) -> float:
    """Floating-point operations of one ParticleNet forward (multiply-adds count 2).

    ``decomposed``: the first edge layer per particle (jettag); otherwise per edge (the
    standard formulation, weaver-core). ``padded_to``: every jet computed at this length
    with k edges per particle (weaver-core's padded tensors).
    """
    counts = counts.double()
    if padded_to is not None:
        counts = torch.full_like(counts, float(padded_to))
    nodes = float(counts.sum())
    c_in = model.input_dims
    total = 0.0
    dims = 2
    for k, widths in model.block_params:
        edges = float((counts * (counts - 1).clamp(max=k)).sum()) if padded_to is None \
            else nodes * k
        total += 2 * float((counts**2).sum()) * dims  # kNN distances
        if decomposed:
            total += 2 * nodes * c_in * 2 * widths[0]
        else:
            total += 2 * edges * 2 * c_in * widths[0]
        total += sum(2 * edges * a * b for a, b in itertools.pairwise(widths))
        if c_in != widths[-1]:
            total += 2 * nodes * c_in * widths[-1]
        c_in = dims = widths[-1]
    batch = counts.numel()
    for width, _ in model.fc_params:
        total += 2 * batch * c_in * width
        c_in = width
    return total + 2 * batch * c_in * model.num_classes


# --------------------------------------------------------------------------- runs


@contextlib.contextmanager
def plain_layers() -> Iterator[None]:
    """The layers without their fused path (as if ``EdgeConv.fused = LGEB.fused = False``
    for every instance): the rows ``jettag (unfused)``. The shipped layers fuse."""
    import jettag.models.lorentznet as lorentznet_module
    import jettag.nn.edge_conv as edge_module
    import jettag.nn.lorentz as lorentz_module

    modules = (edge_module, lorentz_module, lorentznet_module)
    saved = [m.use_fused for m in modules]
    for m in modules:
        m.use_fused = lambda tensor: False
    try:
        yield
    finally:
        for m, fn in zip(modules, saved, strict=True):
            m.use_fused = fn


@contextlib.contextmanager
def without_native() -> Iterator[None]:
    """The fused Lorentz operator on its PyTorch tiles (the native C kernel off, as on a
    machine without a C compiler): the rows ``jettag (PyTorch tiles)``."""
    from jettag.ops import _native

    previous = _native.enabled()
    _native.set_enabled(False)
    try:
        yield
    finally:
        _native.set_enabled(previous)


def _variants(name: str, tiles: bool = False) -> list[tuple[str, Callable[[], Any]]]:
    """The rows of one implementation: jettag's shipped layers (fused), with ``tiles`` also
    the same without the native kernel (:func:`without_native`), and the layers with the
    fused path off; the others as they are."""
    if name == "jettag":
        rows = [("jettag", contextlib.nullcontext)]
        if tiles:
            rows.append(("jettag (PyTorch tiles)", without_native))
        return [*rows, ("jettag (unfused)", plain_layers)]
    return [(name, contextlib.nullcontext)]


class Runner:
    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.args = args
        self.device = device
        self.min_time = 0.2 if args.quick else args.min_time
        self.max_reps = 10 if args.quick else 100
        self.min_reps = 2 if args.quick else 3

    def time(self, fn: Callable[[], Any]) -> dict[str, float]:
        return measure_time(fn, self.device, min_time=self.min_time, max_reps=self.max_reps,
                            min_reps=self.min_reps)

    def infer(self, fn: Callable[[], Any], jets: int, memory: bool = True) -> dict[str, Any]:
        with torch.no_grad():
            timing = self.time(fn)
            peak = measure_peak_memory(fn, self.device) if memory else None
        return {"jets_per_s": jets / timing["median_s"], **timing, "peak_bytes": peak}

    def train(self, model: nn.Module, forward: Callable[[], Tensor], labels: Tensor,
              jets: int, memory: bool = True) -> dict[str, Any]:
        model.train()
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-6)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(forward(), labels)
            loss.backward()
            opt.step()

        timing = self.time(step)
        peak = measure_peak_memory(step, self.device) if memory else None
        model.eval()
        return {"jets_per_s": jets / timing["median_s"], **timing, "peak_bytes": peak}

    def measure(self, fn: Callable[[], Any], jets: int, net: nn.Module, labels: Tensor, *,
                first: bool, infer_bytes: float = 0.0, train_bytes: float = 0.0
                ) -> dict[str, Any]:
        """Inference and (batch > 1, unless ``--no-train``) a training step of ``net``
        through ``fn``; each is skipped when its estimated memory is above
        ``--memory-limit-gb``. Peak memory is measured when ``first``."""
        limit = self.args.memory_limit_gb * 2**30
        res: dict[str, Any] = {}
        if infer_bytes > limit:
            res["inference"] = {"skipped": f"estimated {infer_bytes / 2**30:.1f} GiB > "
                                "--memory-limit-gb"}
        else:
            res["inference"] = self.infer(fn, jets, memory=first)
        if self.args.no_train or jets == 1:
            pass
        elif train_bytes > limit:
            res["train"] = {"skipped": f"estimated {train_bytes / 2**30:.1f} GiB of "
                            "activations > --memory-limit-gb"}
        else:
            res["train"] = self.train(net, fn, labels, jets, memory=first)
        return res

    def rounds(self, variants: list[tuple[str, Callable[[], Any], Callable[..., dict]]],
               jets: int, tag: str) -> dict[str, dict[str, Any]]:
        """Measure every variant ``(label, context, measure)`` ``--rounds`` times,
        interleaved (variant A, B, C, A, B, C, ...), so that slow drifts of the machine hit
        all alike. ``measure(first=...)`` (run inside ``context()``) returns
        ``{"inference": ..., "train": ...}`` (memory measured in the first round); the
        result per variant keeps the first round's memory and, per mode, the median over
        the rounds of the per-round medians (``round_medians_s`` lists them)."""
        per: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in variants}
        for r in range(self.args.rounds):
            for label, ctx, measure in variants:
                if per[label] and "error" in per[label][0]:
                    continue
                try:
                    with ctx():
                        res = measure(first=r == 0)
                except Exception as err:
                    res = {"error": f"{type(err).__name__}: {err}"}
                per[label].append(res)
                log(f"[{tag}/{label}] round {r + 1}/{self.args.rounds}: {_short(res)}")
        out = {}
        for label, results in per.items():
            first = copy.deepcopy(results[0])
            for mode in ("inference", "train"):
                entry = first.get(mode)
                if not entry or "median_s" not in entry:
                    continue
                medians = [res[mode]["median_s"] for res in results if "median_s" in
                           res.get(mode, {})]
                entry["round_medians_s"] = medians
                entry["median_s"] = float(np.median(medians))
                entry["jets_per_s"] = jets / entry["median_s"]
            out[label] = first
        return out


def _max_diff(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def _model_config(name: str) -> dict[str, Any]:
    from jettag import models

    mod = importlib.import_module(models._REGISTRY[name].split(":")[0])
    cfg = getattr(mod, "default_config", None)
    if cfg is None:
        return {}
    try:
        return dict(cfg("top"))
    except Exception:
        return {}


def run_taggers(runner: Runner, pools: dict[str, JetBatch], batch_sizes, results) -> None:
    from jettag import models

    names = models.available() if runner.args.models is None else runner.args.models
    for name in names:
        try:
            try:  # factories default to top tagging; otherwise the module's task defaults
                model = models.create(name)
            except Exception:
                model = models.create(name, **_model_config(name))
            model = model.to(runner.device).eval()
            _randomise_batchnorm(model)
        except Exception as err:
            results["taggers"][name] = {"error": f"cannot create: {type(err).__name__}: {err}"}
            log(f"[{name}] cannot create: {err}")
            continue
        entry: dict[str, Any] = {"params": sum(p.numel() for p in model.parameters())}
        # Training steps move the weights and BatchNorm statistics: every row starts from the
        # same state, so its comparison with the reference path is of the model as created.
        initial = copy.deepcopy(model.state_dict())
        x_names = getattr(getattr(model, "inputs", None), "x_names", None)
        if x_names:
            entry["note"] = f"synthetic per-particle features for {list(x_names)}"
        for workload, pool in pools.items():
            rows = []
            for size in batch_sizes:
                jets = batches(pool, size, 1)[0]
                if x_names:
                    jets = with_features(jets, x_names, runner.args.seed)
                jets = jets.to(device=runner.device)
                row: dict[str, Any] = {"batch": size}
                model.load_state_dict(initial)
                try:
                    with torch.no_grad():
                        out = model(jets)
                        with dispatch.use_backend("reference"):
                            ref = model(jets)
                    row["max_abs_diff_vs_reference"] = _max_diff(out, ref)
                    row["inference"] = runner.infer(lambda m=model, j=jets: m(j), size)
                    if not runner.args.no_train and size > 1:
                        labels = (torch.arange(size, device=runner.device) % 2)
                        row["train"] = runner.train(model, lambda m=model, j=jets: m(j), labels,
                                                    size)
                except Exception as err:
                    row["error"] = f"{type(err).__name__}: {err}"
                rows.append(row)
                log(f"[{name}] {workload} batch {size}: {_short(row)}")
            entry[workload] = rows
        results["taggers"][name] = entry


def with_features(jets: JetBatch, names, seed: int) -> JetBatch:
    """The jets with synthetic ``JetBatch.x`` columns (track taggers need them): 0/1 flags
    for ``*is*`` fields, +-1 for charges, small Gaussian values otherwise."""
    gen = torch.Generator().manual_seed(seed)
    cols = []
    num = jets.num_particles
    for name in names:
        low = name.lower()
        if "charge" in low:
            cols.append(torch.randint(0, 2, (num,), generator=gen).float() * 2 - 1)
        elif "is" in low.removeprefix("part_")[:3]:
            cols.append(torch.randint(0, 2, (num,), generator=gen).float())
        else:
            cols.append(0.1 * torch.randn(num, generator=gen))
    x = torch.stack(cols, 1).to(jets.p4.dtype)
    return JetBatch(jets.p4, jets.ptr, x=x, label=jets.label)


def _short(row: dict[str, Any]) -> str:
    if "error" in row:
        return "error: " + row["error"][:120]
    parts = []
    for key in ("inference", "train"):
        sub = row.get(key)
        if sub is None:
            continue
        if "skipped" in sub:
            parts.append(f"{key} skipped ({sub['skipped']})")
        else:
            memory = sub.get("peak_bytes")
            parts.append(f"{key} {sub['jets_per_s']:.1f} jets/s"
                         + ("" if memory is None else f" {memory / 2**20:.1f} MiB"))
    return ", ".join(parts)


def run_particlenet(runner: Runner, pools, batch_sizes, results, peak_gflops: float) -> None:
    from weaver.nn.model.ParticleNet import ParticleNet as WeaverParticleNet

    from jettag.hub.weaver import to_weaver_state_dict
    from jettag.models.particlenet import ParticleNetInputs, particlenet

    torch.manual_seed(runner.args.seed)
    model = particlenet(input_dims=7).to(runner.device).eval()
    _randomise_batchnorm(model)
    inputs = ParticleNetInputs("top-tagging:kin")
    weaver = WeaverParticleNet(7, 2, conv_params=model.block_params, fc_params=model.fc_params,
                               use_fusion=False, use_fts_bn=True).to(runner.device).eval()
    weaver.load_state_dict(to_weaver_state_dict(model))
    pyg = PygParticleNet(7, 2, model.block_params, model.fc_params).to(runner.device).eval()
    pyg.load_jettag(model)
    nets = (model, weaver, pyg)
    initial = [copy.deepcopy(net.state_dict()) for net in nets]
    out: dict[str, Any] = {}
    for workload, pool in pools.items():
        rows = []
        for size in batch_sizes:
            # Training steps move weights and BatchNorm statistics apart: every row starts
            # from the same shared weights, so the output comparisons are meaningful.
            for net, state in zip(nets, initial, strict=True):
                net.load_state_dict(state)
            jets = batches(pool, size, 1)[0]
            with torch.no_grad():
                points, features = (t.to(runner.device) for t in inputs(jets))
            ptr = jets.ptr.to(runner.device)
            length = FIXED_PARTICLES if workload == "fixed128" else None
            pp, mask = padded(points, ptr, length)
            ff, _ = padded(features, ptr, length)
            w_args = (pp.transpose(1, 2).contiguous(), ff.transpose(1, 2).contiguous(),
                      mask.unsqueeze(1).to(ff.dtype))
            batch_index = torch.repeat_interleave(torch.arange(size, device=runner.device),
                                                  ptr[1:] - ptr[:-1])
            labels = torch.arange(size, device=runner.device) % 2
            n_pad = pp.shape[1]
            impls: dict[str, Callable[[], Tensor]] = {
                "jettag": partial(model.forward_tensors, points, features, ptr),
                "weaver": partial(weaver, *w_args),
                "pyg": partial(pyg, points, features, batch_index, size),
            }
            row: dict[str, Any] = {"batch": size, "padded_length": n_pad,
                                   "mean_particles": float((ptr[-1] / size).item())}
            with torch.no_grad():
                ref = impls["jettag"]()
                with dispatch.use_backend("reference"):
                    row["max_abs_diff_reference"] = _max_diff(ref, impls["jettag"]())
                with plain_layers():
                    row["max_abs_diff_unfused"] = _max_diff(ref, impls["jettag"]())
                for name in ("weaver", "pyg"):
                    row[f"max_abs_diff_{name}"] = _max_diff(ref, impls[name]())
            flops = particlenet_flops(model, ptr[1:] - ptr[:-1])
            row["gflop_per_batch_jettag"] = flops / 1e9
            row["gflop_per_batch_standard"] = particlenet_flops(
                model, ptr[1:] - ptr[:-1], decomposed=False) / 1e9
            row["gflop_per_batch_weaver"] = particlenet_flops(
                model, ptr[1:] - ptr[:-1], padded_to=n_pad, decomposed=False) / 1e9
            variants = []
            for name, fn in impls.items():
                net = {"weaver": weaver, "pyg": pyg}.get(name, model)
                for label, ctx in _variants(name):
                    est = _train_bytes(label, size, n_pad, float(ptr[-1]), model)
                    variants.append((label, ctx, partial(runner.measure, fn, size, net, labels,
                                                         train_bytes=est)))
            measured = runner.rounds(variants, size, f"particlenet {workload} batch {size}")
            for label, res in measured.items():
                if "inference" in res:
                    name = label.split(" ")[0]
                    gflop = flops if name == "jettag" else (
                        row["gflop_per_batch_weaver"] * 1e9 if name == "weaver"
                        else row["gflop_per_batch_standard"] * 1e9)
                    achieved = gflop / res["inference"]["median_s"] / 1e9
                    res["inference"]["gflops"] = achieved
                    res["inference"]["fraction_of_matmul_peak"] = achieved / peak_gflops
                row[label] = res
                log(f"[particlenet/{label}] {workload} batch {size}: {_short(res)}")
            rows.append(row)
        out[workload] = rows
    results["particlenet"] = out


def _train_bytes(label: str, size: int, n_pad: int, particles: float, model) -> float:
    """Rough activation memory of a training step, to skip runs that would not fit. The
    shipped (fused) jettag layers keep one pre-activation per edge and layer (measured:
    37 / 248 MiB at batch 8 / 64, estimated 34 / 253); the others also the edge inputs and
    the post-activations."""
    per_edge = 0
    c_in = model.input_dims
    for _, widths in model.block_params:
        per_edge += sum(widths) if label == "jettag" else 2 * c_in + 3 * sum(widths)
        c_in = widths[-1]
    k = model.block_params[0][0]
    edges = size * n_pad * k if label == "weaver" else particles * k
    return float(edges * per_edge * 4 * (1.5 if label == "weaver" else 1.0))


def _randomise_batchnorm(model: nn.Module) -> None:
    # Non-trivial running statistics, so folding BatchNorm is actually exercised.
    gen = torch.Generator().manual_seed(0)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm1d):
            n = mod.num_features
            mod.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
            mod.running_var.copy_(0.5 + torch.rand(n, generator=gen))


def run_lorentznet(runner: Runner, pools, batch_sizes, results) -> None:
    from jettag.models.lorentznet import lorentznet

    torch.manual_seed(runner.args.seed)
    model = lorentznet().to(runner.device).eval()
    _randomise_batchnorm(model)
    edge_list = EdgeListLorentzNet(model)
    initial = copy.deepcopy(model.state_dict())
    out: dict[str, Any] = {}
    for workload, pool in pools.items():
        rows = []
        for size in batch_sizes:
            model.load_state_dict(initial)  # as in run_particlenet
            jets = batches(pool, size, 1)[0].to(device=runner.device)
            with torch.no_grad():
                scalars, x, ptr = model.inputs(jets)
            xs, mask = padded(x, ptr)
            ss, _ = padded(scalars, ptr)
            labels = torch.arange(size, device=runner.device) % 2
            impls = {
                "jettag": partial(model.forward_tensors, scalars, x, ptr),
                "edge-list (released style)": partial(edge_list, ss, xs, mask),
            }
            counts = (ptr[1:] - ptr[:-1]).double()
            pairs = float((counts * (counts - 1)).sum())
            row: dict[str, Any] = {"batch": size, "mean_nodes": float(ptr[-1]) / size,
                                   "pairs": pairs}
            limit = runner.args.memory_limit_gb * 2**30
            with torch.no_grad():
                ref = impls["jettag"]()  # the fused path needs no pair-sized memory
                with without_native():
                    row["max_abs_diff_tiles"] = _max_diff(ref, impls["jettag"]())
            if pairs * 1.6e3 <= limit:
                with torch.no_grad():
                    with plain_layers():
                        row["max_abs_diff_unfused"] = _max_diff(ref, impls["jettag"]())
                    with dispatch.use_backend("reference"):
                        row["max_abs_diff_reference"] = _max_diff(ref, impls["jettag"]())
                    row["max_abs_diff_edge_list"] = _max_diff(ref, impls[
                        "edge-list (released style)"]())
            # Measured: ~1.6 kB per pair in inference and ~14 kB in training for the
            # edge-list paths (every pair's activations are stored). The fused paths keep per
            # pair only its 2 invariants and the edge list (tens of bytes by construction;
            # 1 kB allowed in the estimate).
            variants = []
            for name, fn in impls.items():
                for label, ctx in _variants(name, tiles=True):
                    fused = label.startswith("jettag") and label != "jettag (unfused)"
                    variants.append((label, ctx, partial(
                        runner.measure, fn, size, model, labels,
                        infer_bytes=0.0 if fused else pairs * 1.6e3,
                        train_bytes=pairs * (1e3 if fused else 14e3))))
            measured = runner.rounds(variants, size, f"lorentznet {workload} batch {size}")
            for label, res in measured.items():
                row[label] = res
                log(f"[lorentznet/{label}] {workload} batch {size}: {_short(res)}")
            rows.append(row)
        out[workload] = rows
    results["lorentznet"] = out


# --------------------------------------------------------------------------- report


def _fmt_rate(res: dict[str, Any] | None, key: str) -> str:
    if not res or "error" in res:
        return "error" if res else "-"
    sub = res.get(key)
    if sub is None:
        return "-"
    if "skipped" in sub:
        return "skipped"
    return f"{sub['jets_per_s']:.1f}"


def _fmt_mem(res: dict[str, Any] | None, key: str) -> str:
    sub = (res or {}).get(key)
    if not sub or sub.get("peak_bytes") is None:
        return "-"
    return f"{sub['peak_bytes'] / 2**20:.1f}"


def _ratio(a: dict | None, b: dict | None, key: str, field: str = "jets_per_s",
           invert: bool = False) -> str:
    try:
        x, y = a[key][field], b[key][field]
    except (KeyError, TypeError):
        return "-"
    if not x or not y:
        return "-"
    return f"{(y / x if invert else x / y):.2f}"


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    lines = [
        "# jettag speed benchmark",
        "",
        f"Command: `{results['command']}`  ",
        f"Date: {results['date']}  ",
        f"Device: {env['device']}, {env['threads']} threads, CPU: {env['cpu']}  ",
        f"torch {env['torch']}, weaver-core {env['weaver-core']}, "
        f"torch-geometric {env['torch-geometric']}, triton {env['triton']}  ",
        f"Matrix-multiply peak (measured, float32): {results['matmul_peak_gflops']:.1f} GFLOP/s  ",
        f"Load average at start: {env['load_average_1min']}  ",
        f"Rounds: {results.get('rounds', 1)} interleaved per row (median over rounds)",
        "",
    ]
    lines += [f"> {note}" for note in results["notes"]]
    lines.append("")
    lines += ["Workloads: " + "; ".join(f"**{k}**: {v}" for k, v in results["workloads"].items()),
              ""]
    pn = results.get("particlenet")
    if pn:
        lines += ["## ParticleNet: jettag vs weaver-core vs PyTorch Geometric", "",
                  "Same weights in all three (evaluation-mode outputs compared); inputs are the "
                  "7 top-tagging features, precomputed (model time only). weaver-core gets "
                  "inputs padded to the longest jet of the batch (generated workload) or to "
                  "128. *jettag*: the shipped layers, whose EdgeConv runs through "
                  "`jettag.ops.fused.edge_conv_eval` in evaluation and `edge_conv_train` in "
                  "training (recomputes BatchNorm+ReLU in backward); *jettag (unfused)*: the "
                  "same layers with `fused = False`. *max abs diff*: of the logits from "
                  "jettag's (for jettag: from the reference backend). Ratios: jettag / "
                  "baseline for throughput, baseline / jettag for training memory.", ""]
        head = ("| workload | batch | mean n | impl | infer jets/s | train jets/s | "
                "infer MiB | train MiB | GFLOP/s | % of peak | max abs diff |")
        lines += [head, "|" + "---|" * 11]
        for workload, rows in pn.items():
            for row in rows:
                for label in ("jettag", "jettag (unfused)", "weaver", "pyg"):
                    res = row.get(label, {})
                    inf = res.get("inference", {})
                    diff = {"jettag": row.get("max_abs_diff_reference"),
                            "jettag (unfused)": row.get("max_abs_diff_unfused"),
                            "weaver": row.get("max_abs_diff_weaver"),
                            "pyg": row.get("max_abs_diff_pyg")}[label]
                    gf = f"{inf['gflops']:.1f}" if "gflops" in inf else "-"
                    frac = f"{100 * inf['fraction_of_matmul_peak']:.0f}" if "gflops" in inf \
                        else "-"
                    diff_s = "-" if diff is None else f"{diff:.1e}"
                    lines.append(
                        f"| {workload} | {row['batch']} | {row['mean_particles']:.1f} | {label} "
                        f"| {_fmt_rate(res, 'inference')} | {_fmt_rate(res, 'train')} "
                        f"| {_fmt_mem(res, 'inference')} | {_fmt_mem(res, 'train')} | {gf} "
                        f"| {frac} | {diff_s} |")
        lines += ["", "Ratios:", "",
                  "| workload | batch | infer vs weaver | train vs weaver | "
                  "train memory weaver/jettag | infer vs PyG | train vs PyG |",
                  "|---|---|---|---|---|---|---|"]
        for workload, rows in pn.items():
            for row in rows:
                best = row.get("jettag")
                lines.append(
                    f"| {workload} | {row['batch']} "
                    f"| {_ratio(best, row.get('weaver'), 'inference')} "
                    f"| {_ratio(best, row.get('weaver'), 'train')} "
                    f"| {_ratio(row.get('weaver'), best, 'train', 'peak_bytes')} "
                    f"| {_ratio(best, row.get('pyg'), 'inference')} "
                    f"| {_ratio(best, row.get('pyg'), 'train')} |")
        lines.append("")
    ln = results.get("lorentznet")
    if ln:
        lines += ["## LorentzNet: jettag vs an edge-list implementation (released-code style)",
                  "", "Same weights; the edge-list model builds its edge lists on the CPU per "
                  "batch inside the timed call, as the released collate does. *max abs diff*: "
                  "of the logits from jettag's (for jettag: from the reference backend). "
                  "*jettag*: the shipped LGEB (`jettag.ops.fused.lgeb_eval` / `lgeb_train`, "
                  "the fused operator on its native C kernel); *jettag (PyTorch tiles)*: the "
                  "same with the native kernel off (as without a C compiler; its *max abs "
                  "diff* is from the native kernel's); *jettag (unfused)*: `fused = False` "
                  "(an edge list per block).",
                  "",
                  "| workload | batch | mean nodes | impl | infer jets/s | train jets/s | "
                  "infer MiB | train MiB | infer ratio | train ratio | train memory ratio "
                  "| max abs diff |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        base_name = "edge-list (released style)"
        for workload, rows in ln.items():
            for row in rows:
                for label in ("jettag", "jettag (PyTorch tiles)", "jettag (unfused)",
                              base_name):
                    if label not in row:
                        continue
                    res = row.get(label, {})
                    diff = {"jettag": row.get("max_abs_diff_reference"),
                            "jettag (PyTorch tiles)": row.get("max_abs_diff_tiles"),
                            "jettag (unfused)": row.get("max_abs_diff_unfused"),
                            base_name: row.get("max_abs_diff_edge_list")}[label]
                    base = row.get(base_name)
                    ratio = " | ".join([_ratio(res, base, "inference"), _ratio(res, base, "train"),
                                        _ratio(base, res, "train", "peak_bytes")]) \
                        if label != base_name else "1.00 | 1.00 | 1.00"
                    diff_s = "-" if diff is None else f"{diff:.1e}"
                    lines.append(
                        f"| {workload} | {row['batch']} | {row['mean_nodes']:.1f} | {label} "
                        f"| {_fmt_rate(res, 'inference')} | {_fmt_rate(res, 'train')} "
                        f"| {_fmt_mem(res, 'inference')} | {_fmt_mem(res, 'train')} "
                        f"| {ratio} | {diff_s} |")
        lines.append("")
    lines += ["## Every tagger (`jettag.models.available()`, task defaults for top tagging)", "",
              "Through `model(JetBatch)`, input features included. *diff*: largest absolute "
              "difference of the logits from the reference path (`jettag.ops` backend "
              "`reference`).", "",
              "| tagger | workload | batch | infer jets/s | train jets/s | infer MiB | "
              "train MiB | diff |", "|---|---|---|---|---|---|---|---|"]
    for name, entry in results["taggers"].items():
        if "error" in entry:
            lines.append(f"| {name} | - | - | {entry['error']} | | | | |")
            continue
        for workload in results["workloads"]:
            for row in entry.get(workload, []):
                if "error" in row:
                    lines.append(f"| {name} | {workload} | {row['batch']} | "
                                 f"error: {row['error'][:80]} | | | | |")
                    continue
                lines.append(
                    f"| {name} | {workload} | {row['batch']} | {_fmt_rate(row, 'inference')} "
                    f"| {_fmt_rate(row, 'train')} | {_fmt_mem(row, 'inference')} "
                    f"| {_fmt_mem(row, 'train')} | {row['max_abs_diff_vs_reference']:.1e} |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke test (< 3 min)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--batch-sizes", default=None,
                        help="comma-separated batch sizes (default 1,8,64,512; quick 1,32)")
    parser.add_argument("--models", default=None,
                        help="comma-separated taggers (default: jettag.models.available())")
    parser.add_argument("--jets", type=int, default=None,
                        help="generated jets per class in the pool (default 512; quick 64)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min-time", type=float, default=1.0,
                        help="seconds of repetitions per measurement (default 1)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved rounds per measurement: every implementation of a "
                        "row is measured once per round, the median over rounds is reported "
                        "(default 3; quick 1)")
    parser.add_argument("--memory-limit-gb", type=float, default=6.0,
                        help="skip training runs whose activations are estimated above this")
    parser.add_argument("--no-train", action="store_true", help="inference only")
    parser.add_argument("--skip", default="",
                        help="comma-separated sections to skip: taggers,particlenet,lorentznet")
    parser.add_argument("--workloads", default="generated,fixed128",
                        help="comma-separated workloads: generated,fixed128 (default both)")
    parser.add_argument("--out", default="benchmarks/results/speed",
                        help="output directory (default benchmarks/results/speed)")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.rounds < 1:
        parser.error(f"--rounds: expected a positive integer, found {args.rounds}")
    args.models = None if args.models is None else [m for m in args.models.split(",") if m]
    skip = {s for s in args.skip.split(",") if s}

    device = torch.device(args.device)
    notes = []
    if device.type == "cuda" and not torch.cuda.is_available():
        log("no CUDA device: running on the CPU")
        device = torch.device("cpu")
    if device.type == "cpu":
        notes.append("GPU mode (CUDA events, warm-up, median of repetitions) has not been run "
                     "here: no CUDA device on this machine. Run with --device cuda on a GPU.")
    torch.set_num_threads(args.threads)
    batch_sizes = ([int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes
                   else list(QUICK_BATCHES if args.quick else FULL_BATCHES))
    n_jets = args.jets or (64 if args.quick else 512)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > (os.cpu_count() or 1):
        notes.append(f"The machine was loaded during this run (1-minute load average {load:.1f} "
                     f"on {os.cpu_count()} CPUs): absolute numbers are low and noisy; ratios "
                     "measured back to back are more reliable. Re-run on a quiet machine.")

    pool, source = generated_jets(n_jets, args.seed)
    if source.startswith("WARNING"):
        notes.append(source)
    pools = {"generated": pool, "fixed128": fixed_jets(max(batch_sizes), args.seed)}
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = sorted(set(workloads) - set(pools))
    if unknown or not workloads:
        parser.error(f"--workloads: expected names among {', '.join(pools)}, found "
                     f"{args.workloads!r}")
    pools = {name: pools[name] for name in workloads}
    counts = pool.counts.double()
    descriptions = {
        "generated": f"{source}; multiplicity mean {counts.mean():.1f}, median "
                     f"{counts.median():.0f}, max {counts.max():.0f}",
        "fixed128": "every jet with exactly 128 particles (random massless particles)",
    }
    results: dict[str, Any] = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "rounds": args.rounds,
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "environment": environment(device, args.threads),
        "notes": notes,
        "workloads": {name: descriptions[name] for name in pools},
        "taggers": {},
    }
    log("measuring the matrix-multiply peak ...")
    peak = matmul_peak(device, quick=args.quick)
    results["matmul_peak_gflops"] = peak
    runner = Runner(args, device)
    if "particlenet" not in skip:
        run_particlenet(runner, pools, batch_sizes, results, peak)
    if "lorentznet" not in skip:
        run_lorentznet(runner, pools, batch_sizes, results)
    if "taggers" not in skip:
        run_taggers(runner, pools, batch_sizes, results)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.json").write_text(json.dumps(results, indent=1, default=float))
    (out / "speed.md").write_text(markdown(results))
    print(markdown(results))
    log(f"wrote {out / 'speed.md'} and {out / 'speed.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
