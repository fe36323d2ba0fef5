"""Reading throughput and peak memory: jettag's top-tagging reader vs the pandas route.

The anchors' converters (particle_transformer ``convert_top_datasets.py``, the ParticleNet
notebook, LorentzNet's ``top/utils.py``) read the Top Quark Tagging HDF5 files with
``pandas.read_hdf`` and reshape the 800 constituent columns. This script times, in separate
processes so that peak memory (max RSS) is measured cleanly:

* ``jettag``: ``jettag.data.open_dataset(path, threads=T).iter_batches(B)`` -> ``JetBatch`` es
  (table chunks read piece by piece, by memory map when uncompressed, padding removed;
  ``T`` pieces read at once, for each ``T`` of ``--threads``: 1 and the CPU count by
  default, so the single-threaded figure is always there next to the default one);
* ``pandas``: ``pandas.read_hdf(path, "table")`` -> ``(N, 200, 4)`` float32 array + mask ->
  ``JetBatch`` es built with ``JetBatch.from_padded`` (what a user of the anchors' route
  does to get the same packed jets), with ``torch.set_num_threads(T)`` for the same ``T``,
  so each jettag figure is compared with the pandas route given the same threads.

Both yield identical jets (momenta, offsets and labels of the first 20,000 jets compared
exactly; jet and particle totals of every run). Wall time and process CPU time are both
recorded: on a machine shared with other jobs the CPU time is the steadier measure.

The pandas route is the faster of the two conversions tried: per batch in torch, as here,
rather than one numpy mask and gather over the whole ``(N, 200, 4)`` array (as
``convert_top_datasets.py`` does), which took 7.7 s against 4.3 s for 200k jets in one
pair of runs (load average 4-6). The file is built from jets of the ``top-tagging``
generator: ``--unique`` jets are generated (cached) and written repeatedly until the file
holds ``--jets`` jets, in the published layout. Repeating jets does not change the cost of
reading (the layout is fixed-width, uncompressed). Several file sizes show whether the
reader's peak memory grows with the file.

Usage::

    python benchmarks/data_io.py --sizes 100000,200000,400000 --unique 400 --out results/data_io
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Peak RSS of this process only: ru_maxrss also counts the parent's memory at fork time on
# Linux (it survives exec), VmHWM belongs to the process's own address space.
_PEAK_RSS = """
import resource
def peak_rss_kb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
"""

# Each route imports its libraries (h5py; pandas and PyTables, which pandas would import on
# its first read) before the clock starts: the timings are of reading, not of importing.
_READ_JETTAG = _PEAK_RSS + """
import sys, time, resource, torch, h5py
from jettag.data import JetBatch, open_dataset
if sys.argv[1] == "--imports-only":
    print(peak_rss_kb()); sys.exit()
path, batch_size, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t0 = time.perf_counter(); c0 = time.process_time(); n = 0; p = 0
for b in open_dataset(path, threads=threads).iter_batches(batch_size):
    n += len(b); p += b.num_particles
dt = time.perf_counter() - t0; dc = time.process_time() - c0
print(n, p, dt, dc, peak_rss_kb())
"""

_READ_PANDAS = _PEAK_RSS + """
import sys, time, resource, numpy as np, pandas as pd, tables, torch
from jettag.data import JetBatch
if sys.argv[1] == "--imports-only":
    print(peak_rss_kb()); sys.exit()
path, batch_size, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
t0 = time.perf_counter(); c0 = time.process_time()
df = pd.read_hdf(path, key="table")
cols = [f"{c}_{i}" for i in range(200) for c in ("E", "PX", "PY", "PZ")]
p4 = df[cols].to_numpy(dtype=np.float32).reshape(-1, 200, 4)
label = df["is_signal_new"].to_numpy()
n = 0; p = 0
for s in range(0, len(p4), batch_size):
    chunk = torch.from_numpy(p4[s:s + batch_size])
    mask = (chunk != 0).any(-1)
    b = JetBatch.from_padded(chunk, mask, label=torch.from_numpy(label[s:s + batch_size]))
    n += len(b); p += b.num_particles
dt = time.perf_counter() - t0; dc = time.process_time() - c0
print(n, p, dt, dc, peak_rss_kb())
"""


def _baseline_rss_mb(code: str) -> float:
    """Peak RSS of a route's process that stops after its imports."""
    res = subprocess.run([sys.executable, "-c", code, "--imports-only"], capture_output=True,
                         text=True, check=True)
    return int(res.stdout) / 1024


def _run(code: str, path: Path, batch_size: int, *extra: str) -> dict:
    res = subprocess.run([sys.executable, "-c", code, str(path), str(batch_size), *extra],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"reader process failed:\n{res.stderr}")
    n, p, dt, dc, rss = res.stdout.split()
    return {"jets": int(n), "particles": int(p), "seconds": float(dt), "cpu_seconds": float(dc),
            "jets_per_s": int(n) / float(dt), "jets_per_cpu_s": int(n) / float(dc),
            "peak_rss_mb": int(rss) / 1024, "load_after": os.getloadavg()[0]}


def build_file(path: Path, n_jets: int, unique: int, seed: int) -> None:
    from jettag.data.formats import TopHDF5Writer, open_dataset
    from jettag.data.generate import generate

    source = generate("top-tagging", unique // 2, seed=seed, workers=2)
    jets = open_dataset(source).read(0, None)
    with TopHDF5Writer(path) as writer:
        written = 0
        while written < n_jets:
            take = jets[: n_jets - written]
            writer.write(take)
            written += len(take)


def check_same_jets(path: Path, n: int) -> None:
    """The first ``n`` jets of both routes are identical (momenta, offsets, labels)."""
    import pandas as pd
    import torch

    from jettag.data import JetBatch
    from jettag.data.formats import open_dataset

    ours = open_dataset(path).read_batch(0, n)
    df = pd.read_hdf(path, key="table", start=0, stop=n)
    cols = [f"{c}_{i}" for i in range(200) for c in ("E", "PX", "PY", "PZ")]
    p4 = torch.from_numpy(df[cols].to_numpy(dtype=np.float32).reshape(-1, 200, 4).copy())
    theirs = JetBatch.from_padded(p4, (p4 != 0).any(-1),
                                  label=torch.from_numpy(df["is_signal_new"].to_numpy().copy()))
    for name in ("p4", "ptr", "label"):
        if not torch.equal(getattr(ours, name), getattr(theirs, name)):
            raise RuntimeError(f"{path}: the two routes read different {name} in the first "
                               f"{n} jets")


def _median(runs: list[dict], key: str) -> float:
    return float(np.median([r[key] for r in runs]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jets", type=int, default=200_000, help="jets in the largest file")
    parser.add_argument("--sizes", type=str, default=None,
                        help="comma-separated file sizes in jets (default: jets/4, jets/2, jets)")
    parser.add_argument("--unique", type=int, default=2000, help="generated jets to repeat")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3,
                        help="timed runs of each route per file, interleaved (medians reported)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--threads", type=str, default=None,
                        help="comma-separated reader thread counts for jettag's route "
                             "(default: 1 and this machine's CPU count, at most 4)")
    parser.add_argument("--out", type=Path, default=Path("results/data_io"))
    args = parser.parse_args(argv)

    if args.sizes:
        sizes = sorted({int(x) for x in args.sizes.split(",")})
    else:
        sizes = sorted({max(args.jets // 4, 1), max(args.jets // 2, 1), args.jets})
    if args.threads:
        thread_counts = sorted({int(x) for x in args.threads.split(",")})
    else:
        thread_counts = sorted({1, max(1, min(4, os.cpu_count() or 1))})
    routes = [f"{r}-{t}t" for t in thread_counts for r in ("jettag", "pandas")]
    rows = []
    base = {"jettag": _baseline_rss_mb(_READ_JETTAG), "pandas": _baseline_rss_mb(_READ_PANDAS)}
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = Path(tmp) / f"top_{n}.h5"
            t0 = time.perf_counter()
            build_file(path, n, args.unique, args.seed)
            print(f"built {path.name} ({path.stat().st_size / 2**20:.0f} MiB) "
                  f"in {time.perf_counter() - t0:.0f} s", flush=True)
            check_same_jets(path, min(n, 20_000))
            runs: dict[str, list[dict]] = {r: [] for r in routes}
            for _ in range(args.repeat):
                for t in thread_counts:
                    runs[f"jettag-{t}t"].append(_run(_READ_JETTAG, path, args.batch_size, str(t)))
                    runs[f"pandas-{t}t"].append(_run(_READ_PANDAS, path, args.batch_size, str(t)))
            first = runs[routes[0]][0]["particles"]
            for r in (r for rs in runs.values() for r in rs):
                if (r["jets"], r["particles"]) != (n, first):
                    raise RuntimeError(f"the routes read different jets: {runs}")
            summary = {}
            for name, rs in runs.items():
                b0 = base[name.split("-")[0]]
                summary[name] = {
                    "jets_per_s": _median(rs, "jets_per_s"),
                    "jets_per_cpu_s": _median(rs, "jets_per_cpu_s"),
                    "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                    "added_rss_mb": max(r["peak_rss_mb"] for r in rs) - b0,
                    "runs": rs,
                }
            for t in thread_counts:
                name, theirs = f"jettag-{t}t", summary[f"pandas-{t}t"]
                ours = summary[name]
                ours["speedup"] = ours["jets_per_s"] / theirs["jets_per_s"]
                ours["speedup_cpu"] = ours["jets_per_cpu_s"] / theirs["jets_per_cpu_s"]
                print(f"{n:>8} jets: {name} {ours['jets_per_s']:>9.0f} jets/s, "
                      f"{ours['peak_rss_mb']:.0f} MB | pandas {theirs['jets_per_s']:>9.0f} "
                      f"jets/s, {theirs['peak_rss_mb']:.0f} MB | speed-up {ours['speedup']:.1f}x "
                      f"wall, {ours['speedup_cpu']:.1f}x CPU | load {os.getloadavg()[0]:.1f}",
                      flush=True)
            rows.append({"file_jets": n, "file_mib": path.stat().st_size / 2**20, **summary})

    load_end = os.getloadavg()
    command = "python benchmarks/data_io.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {"command": command.strip(), "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
              "load_average_start": load_start, "load_average_end": load_end,
              "baseline_rss_mb": base, "batch_size": args.batch_size, "repeat": args.repeat,
              "reader_threads": thread_counts, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "data_io.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "| file jets | MiB | route | jets/s | jets/CPU-s | peak RSS MB (+read) | "
        "speed-up vs pandas (wall) | speed-up (CPU) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for name in routes:
            o = r[name]
            who, t = name.split("-")
            label = (f"pandas.read_hdf, torch threads {t[:-1]}" if who == "pandas"
                     else f"jettag, {t[:-1]} reader thread(s)")
            ratio = (f"{o['speedup']:.1f}x | {o['speedup_cpu']:.1f}x" if "speedup" in o
                     else "1 | 1")
            lines.append(
                f"| {r['file_jets']} | {r['file_mib']:.0f} | {label} | {o['jets_per_s']:.0f} | "
                f"{o['jets_per_cpu_s']:.0f} | {o['peak_rss_mb']:.0f} (+{o['added_rss_mb']:.0f}) "
                f"| {ratio} |")
    grow = {name: float(np.ptp([r[name]["peak_rss_mb"] for r in rows]))
            for name in routes if name.startswith("jettag")}
    text = (f"# Reading throughput: top-tagging HDF5 -> JetBatch\n\n`{result['command']}`\n\n"
            f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={result['OMP_NUM_THREADS']}, load average "
            f"{load_start[0]:.1f} at the start and {load_end[0]:.1f} at the end; medians of "
            f"{args.repeat} interleaved runs per route (peak RSS: the largest). Each jettag "
            "row is compared with the pandas route run with the same number of torch "
            "threads (the pandas route's batch conversion runs in torch; HDF5 reads in one "
            "thread).\n\n"
            + "\n".join(lines)
            + "\n\nPeak RSS is the process's own high-water mark (VmHWM); (+N) is what reading "
            f"added to a process of the same route that stops after its imports ("
            f"{base['jettag']:.0f} MB for jettag, {base['pandas']:.0f} MB for pandas). "
            "Across file sizes jettag's peak RSS varies by "
            + ", ".join(f"{v:.0f} MB ({k})" for k, v in grow.items()) + ".\n")
    (args.out / "data_io.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
