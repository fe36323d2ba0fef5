"""Data for training and benchmarks: generated splits that never overlap, split discovery in
a dataset directory, and an in-memory dataset that hands the trainer whole batches.

Generated data: each split of a task is made by the task's generator recipe
(:data:`TASK_RECIPES`) with its own seed, ``split_seed(seed, split) = 3 * seed + k`` for
``k = 0, 1, 2`` (train, val, test). The generator derives the Pythia seed of every work
unit from the base seed, so the three splits are independent event samples and never share
a jet; a request is cached (see :func:`jettag.data.generate.generate`), so repeated runs
with the same sizes and seed generate nothing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from jettag.data.batch import JetBatch
from jettag.data.formats import FORMATS, JetChunk, JetReader, open_dataset

__all__ = [
    "SPLITS",
    "TASK_RECIPES",
    "InMemoryJets",
    "check_x_fields",
    "find_splits",
    "generated_splits",
    "split_seed",
]

#: Generator recipe of each task.
TASK_RECIPES: dict[str, str] = {"top": "top-tagging", "qg": "quark-gluon", "btag": "b-tagging"}
#: Split names, in the order of their seed offsets.
SPLITS: tuple[str, ...] = ("train", "val", "test")
_SPLIT_PREFIXES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "val": ("val", "valid", "validation"),
    "test": ("test",),
}


def split_seed(seed: int, split: str) -> int:
    """Generator seed of ``split`` for the base ``seed``: ``3 * seed + k`` (k = 0, 1, 2 for
    train, val, test), so no two (seed, split) pairs share a generator seed."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {list(SPLITS)}, found {split!r}")
    return 3 * int(seed) + SPLITS.index(split)


def generated_splits(
    task: str,
    sizes: Mapping[str, int],
    *,
    seed: int = 0,
    workers: int | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Generate (or find in the cache) one file per split with the task's recipe.

    Args:
        task: ``"top"``, ``"qg"`` or ``"btag"``.
        sizes: jets per split, e.g. ``{"train": 10000, "val": 2000, "test": 6000}``; each
            class gets ``ceil(n / 2)`` jets (the classes are balanced).
        seed: base seed; split ``s`` uses :func:`split_seed` ``(seed, s)``.
        workers: generator processes (default: the number of CPUs).
        data_dir: generator cache (default ``$JETTAG_DATA`` or ``~/.cache/jettag``).
        progress: progress bars.

    Returns:
        ``{split: path}`` in the recipe's published format.

    Under ``torchrun`` (process group started), rank 0 generates and the other ranks then
    read the cached files.
    """
    from jettag.data.generate import generate
    from jettag.train import distributed as D

    if task not in TASK_RECIPES:
        raise ValueError(f"task: expected one of {sorted(TASK_RECIPES)}, found {task!r}")
    for split, n in sizes.items():
        split_seed(seed, split)
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ValueError(f"{split} jets: expected an integer >= 2, found {n!r}")
    workers = workers or os.cpu_count() or 1
    main = D.rank() == 0
    if not main:
        D.barrier()
    paths = {
        split: Path(
            generate(
                TASK_RECIPES[task],
                math.ceil(n / 2),
                seed=split_seed(seed, split),
                workers=workers,
                data_dir=data_dir,
                progress=progress and main,
            )
        )
        for split, n in sizes.items()
    }
    if main:
        D.barrier()
    return paths


def find_splits(directory: str | os.PathLike[str]) -> dict[str, list[Path]]:
    """Files of the train, val and test splits of a dataset directory.

    A split is a subdirectory (``train/``, ``val/`` or ``valid/``/``validation/``,
    ``test/``) or the files whose names start with that word and end in an extension of a
    known format (``train.h5``, ``val.h5``, ``test.h5`` of the top-tagging dataset).

    Raises:
        FileNotFoundError: naming the directory and the split that is missing.
    """
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"--data-dir {root}: no such directory")
    extensions = {e for _, _, exts in FORMATS.values() for e in exts}
    out: dict[str, list[Path]] = {}
    for split, prefixes in _SPLIT_PREFIXES.items():
        found: list[Path] = []
        for prefix in prefixes:
            sub = root / prefix
            if sub.is_dir():
                found = sorted(p for p in sub.iterdir() if p.suffix.lower() in extensions)
                break
        if not found:
            found = sorted(
                p
                for p in root.iterdir()
                if p.is_file()
                and p.suffix.lower() in extensions
                and any(p.name.lower().startswith(x) for x in prefixes)
            )
        if not found:
            raise FileNotFoundError(
                f"--data-dir {root}: no {split} split; expected a subdirectory {prefixes[0]}/ or "
                f"files named {prefixes[0]}*{{{','.join(sorted(extensions))}}} (e.g. train.h5, "
                f"val.h5, test.h5 of the top-tagging dataset)"
            )
        out[split] = found
    return out


def check_x_fields(reader: JetReader, x_fields: Sequence[str], what: str) -> None:
    """Fail early, naming the file, if ``reader``'s jets lack a per-particle field that a
    configuration reads into ``JetBatch.x`` (``data.x_fields``)."""
    if not x_fields:
        return
    fields = set(reader.read_file(0, 0, 1).particle_fields)
    missing = [f for f in x_fields if f not in fields]
    if missing:
        raise ValueError(
            f"{what} {reader.paths[0]}: lacks the per-particle field(s) {missing} that the "
            f"configuration reads (data.x_fields); it has {sorted(fields) or 'none'}. Use "
            f"files with them, or a model that does not read them"
        )


class InMemoryJets(Dataset):
    """Map-style dataset over jets held in memory, fetching whole batches at once.

    The trainer's DataLoader asks for a list of indices per batch; :meth:`__getitems__`
    answers with one :class:`~jettag.data.JetBatch` (``collate_jets`` passes it through),
    so a batch costs one gather instead of one collation per jet.

    Args:
        chunk: the jets (read with :meth:`from_reader` or any reader's ``read_chunk``).
        x_fields: per-particle fields stacked into ``JetBatch.x`` (``[]``: none).
        dtype: floating dtype of the momenta and features.
        transform: applied to every batch (e.g. :meth:`jettag.hub.TaggerInputs.prepare`).

    Example:
        >>> from jettag.data.formats._synthetic import random_jets
        >>> ds = InMemoryJets(random_jets(10, seed=1), x_fields=["part_pid"])
        >>> batch = ds.__getitems__([0, 3, 5])
        >>> len(batch), batch.x.shape[1]
        (3, 1)
    """

    def __init__(
        self,
        chunk: JetChunk,
        *,
        x_fields: Sequence[str] = (),
        dtype: torch.dtype = torch.float32,
        transform: Callable[[JetBatch], JetBatch] | None = None,
    ) -> None:
        if chunk.label is None:
            raise ValueError("InMemoryJets: the jets have no labels; training data needs them")
        missing = [f for f in x_fields if f not in chunk.particle_fields]
        if missing:
            raise ValueError(
                f"InMemoryJets: x_fields {missing} are not in the data, which has per-particle "
                f"fields {sorted(chunk.particle_fields)}"
            )
        self.chunk = chunk
        self.x_fields = list(x_fields)
        self.dtype = dtype
        self.transform = transform

    @classmethod
    def from_reader(
        cls, reader: JetReader | str | os.PathLike[str] | Sequence[Any], limit: int | None = None,
        **kwargs: Any,
    ) -> InMemoryJets:
        """The first ``limit`` jets (all if None) of a reader or of paths."""
        if not isinstance(reader, JetReader):
            reader = open_dataset(reader)
        return cls(reader.read_chunk(0, limit), **kwargs)

    def view(self, **kwargs: Any) -> InMemoryJets:
        """The same jets with other ``x_fields``/``dtype``/``transform`` (no copy)."""
        options = {"x_fields": self.x_fields, "dtype": self.dtype, "transform": self.transform}
        return InMemoryJets(self.chunk, **{**options, **kwargs})

    def __len__(self) -> int:
        return len(self.chunk)

    @property
    def labels(self) -> np.ndarray:
        """Labels ``(N,)`` of all jets."""
        assert self.chunk.label is not None
        return self.chunk.label

    def __getitem__(self, index: int) -> JetBatch:
        return self.__getitems__([index])

    def __getitems__(self, indices: Sequence[int]) -> JetBatch:
        batch = self.chunk.take(np.asarray(indices, dtype=np.int64)).to_batch(
            x_fields=self.x_fields, dtype=self.dtype
        )
        return self.transform(batch) if self.transform is not None else batch

    def __repr__(self) -> str:
        return f"InMemoryJets(jets={len(self)}, x_fields={self.x_fields})"
