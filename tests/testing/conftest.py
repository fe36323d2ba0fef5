"""Fixtures for the tests of ``jettag.testing``: padded jets and a JetBatch, float64."""

from __future__ import annotations

import pytest

from jettag.data import JetBatch
from jettag.testing import PaddedJets, random_jets


@pytest.fixture
def jets() -> PaddedJets:
    """12 padded jets of 3 to 16 particles with 3 features, float64."""
    return random_jets(12, 16, generator=0, min_particles=3, n_features=3)


@pytest.fixture
def batch() -> JetBatch:
    """10 packed jets of 2 to 12 massive particles with 2 features, float64."""
    return random_jets(10, 12, generator=1, min_particles=2, n_features=2, massive=True,
                       layout="batch")
