"""Top-tagging benchmark: train the taggers and compare them with the jet-mass window.

Thin wrapper of ``jettag benchmark top`` (the implementation is :mod:`jettag.bench`)::

    python benchmarks/top_tagging.py                       # default budget (~15 min, 2 CPUs)
    python benchmarks/top_tagging.py --preset acceptance   # 20k training jets + checks
    python benchmarks/top_tagging.py --models particlenet-lite,pfn --seeds 3 --epochs 10

See benchmarks/README.md for the budgets, the outputs and measured results.
"""

import sys

from jettag.cli.benchmark import script_main

if __name__ == "__main__":
    sys.exit(script_main("top"))
