"""Thin helpers over :mod:`torch.distributed` for the training loop.

The same code runs as one process or under ``torchrun --nproc_per_node N``: torchrun sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, and
:func:`init_distributed` then starts the process group (``nccl`` on CUDA, ``gloo`` on CPU).
Every helper is a no-op, or the identity, in a single process.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "all_gather_object",
    "all_gather_rows",
    "all_reduce_sum",
    "barrier",
    "env_world",
    "init_distributed",
    "is_distributed",
    "rank",
    "world_size",
]


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment (0, 1, 0 if unset)."""
    try:
        return (
            int(os.environ.get("RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)),
        )
    except ValueError as err:
        raise ValueError(
            f"RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them), found "
            f"RANK={os.environ.get('RANK')!r}, WORLD_SIZE={os.environ.get('WORLD_SIZE')!r}, "
            f"LOCAL_RANK={os.environ.get('LOCAL_RANK')!r}"
        ) from err


def is_distributed() -> bool:
    """Whether a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def init_distributed(device_type: str) -> bool:
    """Start the process group if torchrun's environment asks for more than one process.

    Returns True if this call created the group (the caller then destroys it at the end).
    """
    _, size, _ = env_world()
    if size <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    if not dist.is_available():
        raise ValueError(
            f"WORLD_SIZE={size} asks for distributed training, but this PyTorch build has no "
            f"torch.distributed"
        )
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    return True


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum each number over all processes (float64)."""
    if not is_distributed():
        return [float(v) for v in values]
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().tolist()


def all_gather_object(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every process (``[obj]`` in one process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_gather_rows(tensor: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    """Gather tensors whose first dimension differs between processes; returns the CPU tensor
    of every rank, in rank order (``[tensor]`` in one process)."""
    if not is_distributed():
        return [tensor.cpu()]
    local = tensor.to(device).contiguous()
    size = torch.tensor([local.shape[0]], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    longest = max(counts)
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: local.shape[0]] = local
    gathered = [torch.zeros_like(padded) for _ in counts]
    dist.all_gather(gathered, padded)
    return [g[:n].cpu() for g, n in zip(gathered, counts, strict=True)]
