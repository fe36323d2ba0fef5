"""Quark/gluon benchmark: train the taggers and compare them with the constituent
multiplicity.

Thin wrapper of ``jettag benchmark qg`` (the implementation is :mod:`jettag.bench`)::

    python benchmarks/quark_gluon.py                       # default budget (~15 min, 2 CPUs)
    python benchmarks/quark_gluon.py --models pfn,efn,rpcn-irc --seeds 3
    python benchmarks/quark_gluon.py --data-dir ~/data/qg  # train/ val/ test/ of QG_jets*.npz

See benchmarks/README.md for the budgets, the outputs and measured results.
"""

import sys

from jettag.cli.benchmark import script_main

if __name__ == "__main__":
    sys.exit(script_main("qg"))
