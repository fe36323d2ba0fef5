"""Offline jet generator: Pythia 8 events clustered with FastJet into labelled jets.

Recipes reproduce the published generation of standard datasets and write their layouts:

===============  ====================================================  ==================
recipe           classes (label)                                       output
===============  ====================================================  ==================
``top-tagging``  top (1), qcd (0)                                      top-tagging HDF5
``quark-gluon``  quark (1), gluon (0)                                  EnergyFlow npz
``b-tagging``    light (0), b (1), optionally c (2); track parameters  JetClass-style ROOT
===============  ====================================================  ==================

:func:`generate` writes (and caches) a file; :func:`generate_jets` returns canonical awkward
jets in memory; each recipe module (:mod:`.top`, :mod:`.quark_gluon`, :mod:`.btag`) has a
``generate_class(cls, n_jets, seed, options)`` that makes the jets of one class from one
Pythia instance. Results depend only on the seed and options, never on the number of
worker processes. Needs the ``generate`` extra (``pythia8mc``, ``fastjet``).

Example:
    >>> from jettag.data.generate import generate_jets              # doctest: +SKIP
    >>> jets = generate_jets("top-tagging", 100, seed=1)            # doctest: +SKIP
    >>> jets.fields[:4]                                              # doctest: +SKIP
    ['part_energy', 'part_px', 'part_py', 'part_pz']
"""

from jettag.data.generate.recipes import RECIPES, Recipe, get_recipe
from jettag.data.generate.runner import (
    DEFAULT_CHUNK_SIZE,
    default_data_dir,
    generate,
    generate_jets,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "RECIPES",
    "Recipe",
    "default_data_dir",
    "generate",
    "generate_jets",
    "get_recipe",
]
