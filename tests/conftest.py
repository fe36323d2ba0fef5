"""Shared pytest configuration: Triton kernels in the interpreter by default, and the `gpu`
marker skips cleanly on machines without CUDA."""

from __future__ import annotations

import os

# Triton decides when it is first imported whether kernels run in its interpreter (on CPU
# tensors, how CI tests them without a GPU): set before anything can import it. Set
# TRITON_INTERPRET=0 in the environment to compile the kernels on a CUDA machine instead.
os.environ.setdefault("TRITON_INTERPRET", "1")

from pathlib import Path

import pytest
import torch

#: Published checkpoints kept beside the repository for fidelity tests (may be absent).
REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none is available on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def reference_dir() -> Path:
    """Directory of published reference checkpoints; skips the test when it is absent."""
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"reference checkpoints not found at {REFERENCE_DIR} (kept outside the repo)")
    return REFERENCE_DIR
