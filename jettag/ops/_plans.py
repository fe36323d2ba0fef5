"""A small least-recently-used cache of per-batch plans (index tensors derived from a
batch's ``ptr``): a model's blocks, forward and backward, share one batch's ``ptr``, so
the CPU paths keep the last few plans instead of rebuilding them for every call."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["PlanCache"]

P = TypeVar("P")


class PlanCache(Generic[P]):
    """The ``size`` plans used last, by key.

    Example:
        >>> cache = PlanCache(size=2)
        >>> cache.get("a", lambda: [1]), cache.get("a", lambda: [2])
        ([1], [1])
    """

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._plans: OrderedDict[Hashable, P] = OrderedDict()

    def get(self, key: Hashable, build: Callable[[], P]) -> P:
        """The plan of ``key``, built by ``build()`` if it is not kept."""
        plan = self._plans.get(key)
        if plan is None:
            plan = build()
            self._plans[key] = plan
            while len(self._plans) > self.size:
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(key)
        return plan
