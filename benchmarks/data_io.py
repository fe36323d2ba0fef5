"""Reading throughput and peak memory: jettag's top-tagging reader vs the pandas route.

The anchors' converters (particle_transformer ``convert_top_datasets.py``, the ParticleNet
notebook, LorentzNet's ``top/utils.py``) read the Top Quark Tagging HDF5 files with
``pandas.read_hdf`` and reshape the 800 constituent columns. This script times, in separate
processes so that peak memory (max RSS) is measured cleanly:

* ``jettag``: ``jettag.data.open_dataset(path).iter_batches(B)`` -> ``JetBatch`` es
  (chunked h5py reads, padding removed);
* ``pandas``: ``pandas.read_hdf(path, "table")`` -> ``(N, 200, 4)`` float32 array + mask ->
  ``JetBatch`` es built with ``JetBatch.from_padded`` (what a user of the anchors' route
  does to get the same packed jets).

Both yield identical jets (checked on the first batch). The file is built from jets of the
``top-tagging`` generator: ``--unique`` jets are generated (cached) and written repeatedly
until the file holds ``--jets`` jets, in the published layout. Repeating jets does not
change the cost of reading (the layout is fixed-width, uncompressed). Several file sizes
show whether the reader's peak memory grows with the file.

Usage::

    python benchmarks/data_io.py --jets 200000 --unique 2000 --out results/data_io
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

_READ_JETTAG = """
import sys, time, resource, torch
from jettag.data import open_dataset
path, batch_size = sys.argv[1], int(sys.argv[2])
t0 = time.perf_counter(); n = 0; p = 0
for b in open_dataset(path).iter_batches(batch_size):
    n += len(b); p += b.num_particles
dt = time.perf_counter() - t0
print(n, p, dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

_READ_PANDAS = """
import sys, time, resource, numpy as np, pandas as pd, torch
from jettag.data import JetBatch
path, batch_size = sys.argv[1], int(sys.argv[2])
t0 = time.perf_counter()
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
dt = time.perf_counter() - t0
print(n, p, dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _baseline_rss() -> int:
    code = "import resource, torch, jettag.data, numpy, pandas, h5py; " \
           "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True).stdout)


def _run(code: str, path: Path, batch_size: int) -> dict:
    res = subprocess.run([sys.executable, "-c", code, str(path), str(batch_size)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"reader process failed:\n{res.stderr}")
    n, p, dt, rss = res.stdout.split()
    return {"jets": int(n), "particles": int(p), "seconds": float(dt),
            "jets_per_s": int(n) / float(dt), "peak_rss_mb": int(rss) / 1024}


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jets", type=int, default=200_000, help="jets in the largest file")
    parser.add_argument("--unique", type=int, default=2000, help="generated jets to repeat")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=Path("results/data_io"))
    args = parser.parse_args(argv)

    sizes = sorted({max(args.jets // 4, 1), max(args.jets // 2, 1), args.jets})
    rows = []
    base = _baseline_rss() / 1024
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = Path(tmp) / f"top_{n}.h5"
            t0 = time.perf_counter()
            build_file(path, n, args.unique, args.seed)
            print(f"built {path.name} ({path.stat().st_size / 2**20:.0f} MiB) "
                  f"in {time.perf_counter() - t0:.0f} s", flush=True)
            ours = _run(_READ_JETTAG, path, args.batch_size)
            theirs = _run(_READ_PANDAS, path, args.batch_size)
            if (ours["jets"], ours["particles"]) != (theirs["jets"], theirs["particles"]):
                raise RuntimeError(f"the two routes read different jets: {ours} vs {theirs}")
            rows.append({"file_jets": n, "file_mib": path.stat().st_size / 2**20,
                         "jettag": ours, "pandas": theirs,
                         "speedup": ours["jets_per_s"] / theirs["jets_per_s"]})
            print(f"{n:>8} jets: jettag {ours['jets_per_s']:>9.0f} jets/s, "
                  f"{ours['peak_rss_mb']:.0f} MB | pandas {theirs['jets_per_s']:>9.0f} jets/s, "
                  f"{theirs['peak_rss_mb']:.0f} MB | speed-up {rows[-1]['speedup']:.1f}x",
                  flush=True)

    command = "python benchmarks/data_io.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {"command": command.strip(), "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "baseline_rss_mb": base,
              "batch_size": args.batch_size, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "data_io.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "| file jets | MiB | jettag jets/s | jettag peak RSS MB | pandas jets/s | "
        "pandas peak RSS MB | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['file_jets']} | {r['file_mib']:.0f} | {r['jettag']['jets_per_s']:.0f} | "
            f"{r['jettag']['peak_rss_mb']:.0f} | {r['pandas']['jets_per_s']:.0f} | "
            f"{r['pandas']['peak_rss_mb']:.0f} | {r['speedup']:.1f}x |")
    grow = np.ptp([r["jettag"]["peak_rss_mb"] for r in rows])
    text = (f"# Reading throughput: top-tagging HDF5 -> JetBatch\n\n`{result['command']}`\n\n"
            + "\n".join(lines)
            + f"\n\nPeak RSS of a process that only imports the libraries: {base:.0f} MB. "
            f"jettag's peak RSS varies by {grow:.0f} MB across file sizes.\n")
    (args.out / "data_io.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
