"""Pretrained taggers: the model zoo, ``Tagger``, ONNX export and importers of published
checkpoints.

- :class:`Tagger`: a model with its configuration, input preprocessing, class names and
  model card; :meth:`Tagger.predict` on awkward arrays, ``JetBatch`` es or padded arrays;
  :meth:`Tagger.save` / :meth:`Tagger.load` (safetensors + YAML card, no code execution).
- :func:`list_pretrained`, :func:`load_pretrained`: the zoo (``jettag/hub/zoo/``).
- :func:`export_onnx`: padded inputs, dynamic axes, metadata.
- :func:`predict_file`: score a ROOT/HDF5/npz/parquet file (``jettag predict``).
- :func:`load_weaver_particlenet`, :func:`load_lorentznet_release`: published weights,
  returned as the same :class:`Tagger`.

Modules are imported on first use of a name.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "Prediction": "jettag.hub.tagger",
    "StateDictMismatchError": "jettag.hub.tagger",
    "Tagger": "jettag.hub.tagger",
    "TaggerFileError": "jettag.hub.tagger",
    "TaggerInputs": "jettag.hub.tagger",
    "MODEL_CARD_SCHEMA": "jettag.hub.zoo",
    "ModelCardError": "jettag.hub.zoo",
    "UnknownTaggerError": "jettag.hub.zoo",
    "list_pretrained": "jettag.hub.zoo",
    "load_pretrained": "jettag.hub.zoo",
    "pretrained_card": "jettag.hub.zoo",
    "validate_model_card": "jettag.hub.zoo",
    "OnnxExportError": "jettag.hub.export",
    "PaddedTagger": "jettag.hub.export",
    "export_onnx": "jettag.hub.export",
    "read_onnx_metadata": "jettag.hub.export",
    "predict_file": "jettag.hub.predict",
    "load_weaver_particlenet": "jettag.hub.weaver",
    "to_weaver_state_dict": "jettag.hub.weaver",
    "load_lorentznet_release": "jettag.hub.lorentznet",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jettag.hub' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
