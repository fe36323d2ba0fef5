"""Reference taggers assembled from :mod:`jettag.nn` layers; each takes a ``JetBatch``.

``create(name, **config)`` builds a tagger by name; model modules are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

__all__ = ["available", "create"]

# name -> "module:factory"; a factory takes keyword options and returns an nn.Module.
_REGISTRY: dict[str, str] = {
    "particlenet": "jettag.models.particlenet:particlenet",
    "particlenet-lite": "jettag.models.particlenet:particlenet_lite",
    "lorentznet": "jettag.models.lorentznet:lorentznet",
    "pfn": "jettag.models.deep_sets:pfn",
    "efn": "jettag.models.deep_sets:efn",
    "rpcn": "jettag.models.rpcn:rpcn",
    "rpcn-irc": "jettag.models.rpcn:rpcn_irc",
    "track-pfn": "jettag.models.btag:track_pfn",
    "vector-pfn": "jettag.models.btag:vector_pfn",
    "tensor-pfn": "jettag.models.btag:tensor_pfn",
}


def available() -> list[str]:
    """Names accepted by :func:`create`."""
    return sorted(_REGISTRY)


def create(name: str, **config: Any) -> nn.Module:
    """Build the tagger called ``name`` with keyword ``config`` (see each model's defaults).

    Example:
        >>> import jettag.models
        >>> sorted(jettag.models.available())  # doctest: +SKIP
    """
    target = _REGISTRY.get(name)
    if target is None:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(available())}")
    module, factory = target.split(":")
    return getattr(importlib.import_module(module), factory)(**config)
