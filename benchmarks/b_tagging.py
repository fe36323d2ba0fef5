"""b-tagging benchmark: the PFN baseline on tracks, the Vector PFN and the Tensor PFN
(arXiv:2303.11288), light-jet rejection at 70% and 85% b-efficiency, and the cost per jet
next to the full-SO(3) e3nn block.

Thin wrapper of ``jettag benchmark btag`` (the implementation is :mod:`jettag.bench`)::

    python benchmarks/b_tagging.py --threads 1 --workers 1    # default: 20k jets, 3 seeds
    python benchmarks/b_tagging.py --tiny                     # smoke test
    python benchmarks/b_tagging.py --models track-pfn,tensor-pfn --epochs 6

See benchmarks/README.md for the budget, the outputs and measured results.
"""

import sys

from jettag.cli.benchmark import script_main

if __name__ == "__main__":
    sys.exit(script_main("btag"))
