"""Jets in memory and on disk: ``JetBatch``, dataset readers and writers, features, generator."""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> module that defines it; imported on first use so that optional
# dependencies of one reader never break another.
_EXPORTS: dict[str, str] = {
    "JetBatch": "jettag.data.batch",
    "open_dataset": "jettag.data.formats",
    "open_writer": "jettag.data.formats",
    "JetChunk": "jettag.data.formats",
    "JetFileError": "jettag.data.formats",
    "JetDataset": "jettag.data.dataset",
    "IterableJetDataset": "jettag.data.dataset",
    "collate_jets": "jettag.data.dataset",
    "generate": "jettag.data.generate",
    "DataCard": "jettag.data.cards",
    "load_card": "jettag.data.cards",
    "list_cards": "jettag.data.cards",
    "download": "jettag.data.download",
    "Preprocessor": "jettag.data.features",
    "particle_features": "jettag.data.features",
    "lorentznet_inputs": "jettag.data.features",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jettag.data' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
