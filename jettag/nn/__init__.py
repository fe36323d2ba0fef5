"""Layers for jet tagging; they take tensors (PyG style) and work on packed jets.

Modules are imported on first use of a name.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "DeepSetsEncoder": "jettag.nn.deep_sets",
    "EdgeConv": "jettag.nn.edge_conv",
    "LGEB": "jettag.nn.lorentz",
    "psi": "jettag.nn.lorentz",
    "pairwise_minkowski": "jettag.nn.lorentz",
    "lorentz_edge_features": "jettag.nn.lorentz",
    "EnergyFlowLayer": "jettag.nn.deep_sets",
    "RotationalParticleConv": "jettag.nn.particle_conv",
    "IRCSafeRotationalParticleConv": "jettag.nn.particle_conv",
    "CyclicGroupConv": "jettag.nn.particle_conv",
    "cyclic_angles": "jettag.nn.particle_conv",
    "group_pool": "jettag.nn.particle_conv",
    "SVT": "jettag.nn.so2",
    "SO3Affine": "jettag.nn.so2",
    "SO2Linear": "jettag.nn.so2",
    "TensorBilinear": "jettag.nn.so2",
    "EquivariantActivation": "jettag.nn.so2",
    "EquivariantRMSNorm": "jettag.nn.so2",
    "InvariantNorms": "jettag.nn.so2",
    "BilinearTensorLayer": "jettag.nn.so2",
    "E3NNTensorBlock": "jettag.nn.so2",
    "VReLU": "jettag.nn.so2",
    "TReLU": "jettag.nn.so2",
    "vrelu": "jettag.nn.so2",
    "trelu": "jettag.nn.so2",
    "squared_norms": "jettag.nn.so2",
    "cartesian_to_irreps": "jettag.nn.so2",
    "irreps_to_cartesian": "jettag.nn.so2",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jettag.nn' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
