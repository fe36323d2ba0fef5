"""jettag: symmetry-aware (equivariant) neural networks for jet tagging.

Subpackages are imported on first use, so ``import jettag`` stays light and works with only
the core dependencies installed.
"""

from __future__ import annotations

import importlib
from typing import Any

from jettag._optional import MissingExtraError
from jettag._version import __version__

__all__ = [
    "MissingExtraError",
    "__version__",
    "cli",
    "data",
    "hub",
    "metrics",
    "models",
    "nn",
    "ops",
    "physics",
    "testing",
    "train",
]

_SUBMODULES = {
    "cli", "data", "hub", "metrics", "models", "nn", "ops", "physics", "testing", "train",
}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"jettag.{name}")
    raise AttributeError(f"module 'jettag' has no attribute {name!r}")
