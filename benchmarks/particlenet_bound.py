"""How close jettag's ParticleNet inference is to what its matrix products allow.

For each batch size, on the jets and weights of ``speed.py`` (generated top-tagging jets),
measures jettag's and weaver-core's ParticleNet inference time per batch (interleaved
rounds, medians), then profiles jettag's forward with the PyTorch profiler and sums the
time of its matrix products (``aten::addmm``, ``mm``, ``bmm``, ...). If the matrix products
alone take longer than a quarter of weaver-core's time, no removal of the other work
(kNN, gathers, ReLUs, Python) can make jettag 4x faster than weaver-core at that batch size
with these matrix products; their GFLOP/s is printed next to the machine's measured matrix-
multiply peak::

    python benchmarks/particlenet_bound.py --batch-sizes 1,8,64 --rounds 5

Writes ``particlenet_bound.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed
from fresh_process import _particlenet

#: Profiler names of the matrix products in jettag's ParticleNet forward.
MATMUL_OPS = ("aten::addmm", "aten::mm", "aten::bmm", "aten::addmm_", "aten::baddbmm")


def _median_time(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _matmul_seconds(fn, calls: int) -> float:
    """Seconds per call spent in matrix products (self CPU time, profiler)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn()
    total_us = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in MATMUL_OPS)
    return total_us / 1e6 / calls


def measure(size: int, rounds: int, seed: int) -> dict[str, float]:
    model, jettag_fn = _particlenet("jettag", size, seed)
    _, weaver_fn = _particlenet("weaver", size, seed)
    pool, _ = speed.generated_jets(512, seed)
    jets = speed.batches(pool, size, 1)[0]
    counts = jets.ptr[1:] - jets.ptr[:-1]
    reps = 40 if size < 64 else 6
    jt, wv = [], []
    with torch.no_grad():
        for _ in range(rounds):
            jt.append(_median_time(jettag_fn, reps))
            wv.append(_median_time(weaver_fn, reps))
        matmul = _matmul_seconds(jettag_fn, reps)
    jettag_s, weaver_s = statistics.median(jt), statistics.median(wv)
    gflop = speed.particlenet_flops(model, counts) / 1e9
    return {"batch": size, "mean_particles": float(counts.float().mean()),
            "jettag_ms": jettag_s * 1e3, "weaver_ms": weaver_s * 1e3,
            "ratio": weaver_s / jettag_s, "budget_4x_ms": weaver_s / 4 * 1e3,
            "matmul_ms": matmul * 1e3, "gflop": gflop,
            "matmul_gflops": gflop / matmul, "needed_gflops_4x": gflop / (weaver_s / 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="1,8,64")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/speed"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    peak = speed.matmul_peak(torch.device("cpu"), quick=False)
    rows = [measure(int(b), args.rounds, args.seed) for b in args.batch_sizes.split(",")]
    lines = [f"matrix-multiply peak (speed.py's measurement): {peak:.0f} GFLOP/s, "
             f"{args.threads} threads", "",
             "| batch | mean n | jettag ms | weaver ms | ratio | 4x budget ms | jettag matmul ms "
             "| matmul GFLOP/s (% of peak) | GFLOP/s needed for 4x (% of peak) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['batch']} | {r['mean_particles']:.1f} | {r['jettag_ms']:.2f} | "
            f"{r['weaver_ms']:.2f} | {r['ratio']:.2f} | {r['budget_4x_ms']:.2f} | "
            f"{r['matmul_ms']:.2f} | {r['matmul_gflops']:.0f} "
            f"({100 * r['matmul_gflops'] / peak:.0f}) | {r['needed_gflops_4x']:.0f} "
            f"({100 * r['needed_gflops_4x'] / peak:.0f}) |")
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "particlenet_bound.json"
    path.write_text(json.dumps({"command": " ".join(sys.argv), "peak_gflops": peak,
                                "threads": args.threads, "rows": rows}, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
