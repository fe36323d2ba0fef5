"""Accuracy benchmarks of the taggers: top tagging and quark/gluon discrimination.

:func:`run_benchmark` trains the selected taggers over several seeds on one set of jets
(generated with the task's recipe, a seed per split, or a dataset directory), tests them
next to a cut-based baseline (:mod:`jettag.bench.baselines`) and writes a report with the
published numbers of the reference datasets in a separate section
(:mod:`jettag.bench.report`, :mod:`jettag.bench.published`). The same code runs behind
``jettag benchmark top|qg`` and ``benchmarks/top_tagging.py`` / ``benchmarks/quark_gluon.py``.

Example:
    >>> from jettag.bench import PRESETS, run_benchmark                   # doctest: +SKIP
    >>> results = run_benchmark("top", budget=PRESETS["top"]["default"],  # doctest: +SKIP
    ...                         out="results/benchmark-top")
"""

from __future__ import annotations

from jettag.bench.baselines import BASELINES, TOP_MASS, Baseline, evaluate_baseline
from jettag.bench.data import (
    SPLITS,
    TASK_RECIPES,
    InMemoryJets,
    find_splits,
    generated_splits,
    split_seed,
)
from jettag.bench.published import PUBLISHED, PublishedResult
from jettag.bench.runner import (
    DEFAULT_MODELS,
    DISPLAY_NAMES,
    PRESET_MODELS,
    PRESETS,
    Budget,
    acceptance_check,
    resolve_models,
    run_benchmark,
)

__all__ = [
    "BASELINES",
    "DEFAULT_MODELS",
    "DISPLAY_NAMES",
    "PRESETS",
    "PRESET_MODELS",
    "PUBLISHED",
    "SPLITS",
    "TASK_RECIPES",
    "TOP_MASS",
    "Baseline",
    "Budget",
    "InMemoryJets",
    "PublishedResult",
    "acceptance_check",
    "evaluate_baseline",
    "find_splits",
    "generated_splits",
    "resolve_models",
    "run_benchmark",
    "split_seed",
]
