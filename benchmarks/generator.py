"""Generator throughput: accepted jets per second per core, for each recipe and class.

Runs one Pythia instance per class in this process (``generate_class``) and divides the
accepted jets by the CPU time spent (Pythia start-up included), so the figure is per core
and does not depend on other load on the machine; the wall time is reported too.

Usage::

    python benchmarks/generator.py --jets 300 --recipes top-tagging --out results/generator
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from jettag.data.generate import get_recipe

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jets", type=int, default=300, help="accepted jets per class")
    parser.add_argument("--recipes", default="top-tagging",
                        help="comma-separated recipes (top-tagging, quark-gluon, b-tagging)")
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--out", type=Path, default=Path("results/generator"))
    args = parser.parse_args(argv)

    rows = []
    for name in args.recipes.split(","):
        recipe = get_recipe(name.strip())
        options = recipe.options({})
        for cls in recipe.classes(options):
            module = recipe.impl
            cpu0, wall0 = time.process_time(), time.perf_counter()
            jets = module.generate_class(cls, args.jets, args.seed, options)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            rows.append({"recipe": recipe.name, "class": cls, "jets": len(jets),
                         "cpu_s": cpu, "wall_s": wall, "jets_per_cpu_s": len(jets) / cpu})
            print(f"{recipe.name:12} {cls:6} {len(jets):5} jets  {len(jets) / cpu:7.1f} jets/s "
                  f"per core (cpu {cpu:.1f} s, wall {wall:.1f} s)", flush=True)

    command = "python benchmarks/generator.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "generator.json").write_text(
        json.dumps({"command": command.strip(), "rows": rows}, indent=2) + "\n")
    lines = ["| recipe | class | jets | jets/s per core (CPU time) | wall s |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['recipe']} | {r['class']} | {r['jets']} | {r['jets_per_cpu_s']:.1f} | "
              f"{r['wall_s']:.1f} |" for r in rows]
    text = f"# Generator throughput\n\n`{command.strip()}`\n\n" + "\n".join(lines) + "\n"
    (args.out / "generator.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
