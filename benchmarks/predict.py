"""Throughput of ``jettag predict`` (jets/s, CPU) on 100k-jet ROOT and top-tagging HDF5 files.

The input files are built once from generated jets: the 20,000 jets of the ``top-tagging``
generator's acceptance training split (seed 0, found in the generator cache or generated)
written five times over, in the top-tagging HDF5 layout and as a JetClass-style ROOT tree
(jagged ``part_*`` branches, read by uproot). Repeating jets does not change the cost of
reading or scoring a jet.

Each measurement runs the command an analyst runs, in a fresh process::

    OMP_NUM_THREADS=1 jettag predict --model MODEL --input FILE --output OUT.parquet \\
        --device cpu --quiet --overwrite

and records its wall time (start-up, reading, scoring, writing the parquet file) and the
process's CPU time; jets/s = jets / wall time, and jets per CPU second, the steadier figure
on a machine shared with other jobs. The load average is recorded before and after.

Usage::

    python benchmarks/predict.py --models top-particlenet-lite --formats root,hdf5 \\
        --jets 100000 --out results/predict
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

SUFFIX = {"root": ".root", "hdf5": ".h5"}


def _source_chunks(jets: int, cache_dir: str | None):
    from jettag.bench.data import generated_splits
    from jettag.data.formats import open_dataset

    path = generated_splits("top", {"train": 20_000}, seed=0, workers=1,
                            data_dir=cache_dir, progress=False)["train"]
    reader = open_dataset(path)
    unique = len(reader)
    chunk = reader.read_chunk(0, unique)
    reader.close()
    left = jets
    while left > 0:
        for start in range(0, unique, 10_000):
            piece = chunk.slice(start, min(start + 10_000, start + left, unique))
            yield piece
            left -= len(piece)
            if left <= 0:
                return


def build_input(fmt: str, jets: int, work: Path, cache_dir: str | None) -> Path:
    """The ``jets``-jet input file of format ``fmt`` in ``work`` (built once)."""
    from jettag.data.formats import write_jetclass_root, write_top_hdf5

    path = work / f"top-{jets}{SUFFIX[fmt]}"
    if path.is_file():
        return path
    work.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    writer = write_jetclass_root if fmt == "root" else write_top_hdf5
    writer(tmp, _source_chunks(jets, cache_dir))
    os.replace(tmp, path)
    return path


def measure(model: str, path: Path, work: Path, threads: int) -> dict:
    output = work / f"scores-{model}-{path.suffix.lstrip('.')}.parquet"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    command = [sys.executable, "-m", "jettag.cli", "predict", "--model", model, "--input",
               str(path), "--output", str(output), "--device", "cpu", "--quiet", "--overwrite"]
    load_before = os.getloadavg()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr}")
    import pyarrow.parquet as pq

    rows = pq.read_metadata(output).num_rows
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "model": model,
        "format": "ROOT (uproot)" if path.suffix == ".root" else "top-tagging HDF5",
        "file": path.name,
        "file_mb": round(path.stat().st_size / 1e6, 1),
        "jets": rows,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "jets_per_s": round(rows / wall, 1),
        "jets_per_cpu_s": round(rows / cpu, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "command": f"OMP_NUM_THREADS={threads} jettag predict --model {model} --input "
                   f"{path.name} --output {output.name} --device cpu --quiet --overwrite",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="top-particlenet-lite",
                        help="comma-separated zoo names or tagger files")
    parser.add_argument("--formats", default="root,hdf5", help="root, hdf5 or both")
    parser.add_argument("--jets", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the runs")
    parser.add_argument("--work", default="/tmp/jettag-predict-bench",
                        help="where the input and score files go")
    parser.add_argument("--cache-dir", default=None, help="generator cache")
    parser.add_argument("--out", default="results/predict", help="results.json and results.md")
    args = parser.parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    bad = sorted(set(formats) - set(SUFFIX))
    if bad:
        parser.error(f"--formats: unknown {bad}; expected root and/or hdf5")
    work = Path(args.work)
    rows = []
    for fmt in formats:
        path = build_input(fmt, args.jets, work, args.cache_dir)
        for model in (m.strip() for m in args.models.split(",") if m.strip()):
            row = measure(model, path, work, args.threads)
            print(json.dumps(row), file=sys.stderr)
            rows.append(row)
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "command": "python benchmarks/predict.py " + " ".join(argv or sys.argv[1:]),
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "cpu_count": os.cpu_count(), "platform": platform.platform()},
        "runs": rows,
    }
    (out / "results.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = ["| model | input | jets | wall s | jets/s | jets per CPU s | load avg (1 min) |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['format']} | {r['jets']:,} | {r['wall_s']} | "
                     f"{r['jets_per_s']:,.0f} | {r['jets_per_cpu_s']:,.0f} | "
                     f"{r['load_average_before'][0]} -> {r['load_average_after'][0]} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
