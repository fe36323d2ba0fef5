"""Torch datasets over jet files: random access (:class:`JetDataset`) and streaming
(:class:`IterableJetDataset`), with :func:`collate_jets` building :class:`~jettag.data.JetBatch` es.

Both take any reader of :mod:`jettag.data.formats` (or paths, opened with
:func:`~jettag.data.formats.open_dataset`).

:class:`IterableJetDataset` is the one to train on large datasets. Per epoch it

1. cuts every file into segments of ``chunk_size`` jets and, with ``shuffle``, permutes all
   segments of all files with a generator seeded by ``(seed, epoch)`` - the same on every
   process, so all ranks and workers agree on one global order of the jets;
2. splits that order into contiguous, disjoint ranges of jets (not files): one per
   distributed rank, then one per DataLoader worker of the rank;
3. streams its range segment by segment (the segments of one file in ascending order, so
   compressed files are decompressed once) through a shuffle buffer seeded by
   ``(seed, epoch, rank, worker)``.

Every jet is therefore yielded exactly once per epoch over all ranks and workers, whatever
the file sizes. When the number of jets ``N`` is not a multiple of the world size ``W``,
ranks get ``N // W`` or ``N // W + 1`` jets by default; ``drop_last=True`` drops the
``N mod W`` jets at the end of the epoch order (different jets each epoch when shuffled) so
every rank gets ``N // W``; ``even=True`` pads instead, repeating the first jets of the epoch
order, so every rank gets ``ceil(N / W)`` (as ``DistributedSampler`` does). Use one of the
two with DistributedDataParallel, which needs the same number of batches on every rank. In
batch mode (``batch_size`` set) a rank's range is split between its workers on batch
boundaries, so only the rank's last batch can be short and the number of batches per rank,
``len(dataset)``, does not depend on the number of workers.

Call :meth:`IterableJetDataset.set_epoch` before each epoch, as with ``DistributedSampler``;
the epoch lives in shared memory, so persistent DataLoader workers see it too.

Example:
    >>> from torch.utils.data import DataLoader                               # doctest: +SKIP
    >>> ds = IterableJetDataset("train/*.root", batch_size=256, shuffle=True,  # doctest: +SKIP
    ...                         drop_last=True)
    >>> loader = DataLoader(ds, batch_size=None, num_workers=4,               # doctest: +SKIP
    ...                     collate_fn=collate_jets)
    >>> for epoch in range(10):                                               # doctest: +SKIP
    ...     ds.set_epoch(epoch)
    ...     for jets in loader: ...
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from jettag.data.batch import JetBatch
from jettag.data.formats._common import JetChunk, JetReader, PathLike
from jettag.data.formats.registry import open_dataset

__all__ = ["IterableJetDataset", "JetDataset", "collate_jets"]

_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16}


def collate_jets(items: Sequence[JetBatch | dict[str, Any]] | JetBatch) -> JetBatch:
    """``collate_fn`` for DataLoaders: jet dicts or batches -> one :class:`JetBatch`.

    A single ``JetBatch`` (what :class:`IterableJetDataset` yields in batch mode, with
    ``DataLoader(batch_size=None)``) is returned unchanged.
    """
    if isinstance(items, JetBatch):
        return items
    return JetBatch.collate(items)


def _reader(
    source: JetReader | PathLike | Iterable[PathLike],
    format: str | None,
    dtype: torch.dtype | None,
    reader_kwargs: dict[str, Any],
) -> JetReader:
    if isinstance(source, JetReader):
        if format is not None or reader_kwargs:
            raise ValueError(
                "format and reader options apply only when the source is a path, not a reader"
            )
        return source
    if dtype is not None:
        if dtype not in _NUMPY_DTYPES:
            raise ValueError(f"dtype: expected a floating torch dtype, found {dtype}")
        reader_kwargs.setdefault("dtype", _NUMPY_DTYPES[dtype])
    return open_dataset(source, format, **reader_kwargs)


def _with_index(chunk: JetChunk, name: str | None, first: int) -> JetChunk:
    if name is None:
        return chunk
    index = np.arange(first, first + len(chunk), dtype=np.int64)
    return JetChunk(
        chunk.p4,
        chunk.counts,
        chunk.label,
        chunk.particle_fields,
        {**chunk.jet_fields, name: index},
    )


class JetDataset(Dataset):
    """Map-style dataset of jets: ``dataset[i]`` is jet ``i`` as a dict for :func:`collate_jets`.

    Jets are read in aligned chunks of ``chunk_size`` and the last ``cache_chunks`` chunks are
    kept (per process), so neighbouring indices cost one read. Random access over a
    compressed ``.npz`` restarts decompression on every cache miss; stream such files with
    :class:`IterableJetDataset` instead.

    Args:
        source: a reader or paths (opened with :func:`~jettag.data.formats.open_dataset`).
        format: format name when ``source`` is a path.
        chunk_size: jets per read.
        cache_chunks: chunks kept in memory.
        x_fields: per-particle fields stacked into ``x`` (see :meth:`JetChunk.to_batch`).
        dtype: floating dtype of ``p4``, ``x`` and floating jet fields.
        index_field: if set, each jet carries its global index under this field name.
        transform: optional callable applied to each jet dict.
        **reader_kwargs: reader options when ``source`` is a path.

    Example:
        >>> ds = JetDataset("test.h5")                                     # doctest: +SKIP
        >>> loader = DataLoader(ds, batch_size=128, shuffle=True,           # doctest: +SKIP
        ...                     collate_fn=collate_jets)
    """

    def __init__(
        self,
        source: JetReader | PathLike | Iterable[PathLike],
        *,
        format: str | None = None,
        chunk_size: int = 1024,
        cache_chunks: int = 8,
        x_fields: Sequence[str] | None = None,
        dtype: torch.dtype | None = torch.float32,
        index_field: str | None = None,
        transform: Callable[[dict[str, Any]], Any] | None = None,
        **reader_kwargs: Any,
    ) -> None:
        if chunk_size <= 0 or cache_chunks <= 0:
            raise ValueError(
                f"chunk_size and cache_chunks must be positive, found {chunk_size}, {cache_chunks}"
            )
        self.reader = _reader(source, format, dtype, reader_kwargs)
        self.chunk_size = int(chunk_size)
        self.cache_chunks = int(cache_chunks)
        self.x_fields = None if x_fields is None else list(x_fields)
        self.dtype = dtype
        self.index_field = index_field
        self.transform = transform
        self._cache: OrderedDict[tuple[int, int], tuple[JetChunk, np.ndarray]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.reader)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        return state

    def _chunk(self, f: int, c: int) -> tuple[JetChunk, np.ndarray]:
        key = (f, c)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        start = c * self.chunk_size
        chunk = self.reader.read_file(f, start, start + self.chunk_size)
        first = int(sum(self.reader.file_lengths[:f])) + start
        chunk = _with_index(chunk, self.index_field, first)
        entry = (chunk, chunk.offsets)
        self._cache[key] = entry
        while len(self._cache) > self.cache_chunks:
            self._cache.popitem(last=False)
        return entry

    def __getitem__(self, index: int) -> Any:
        f, local = self.reader.locate(int(index))
        chunk, offsets = self._chunk(f, local // self.chunk_size)
        item = chunk.jet_dict(
            local % self.chunk_size, x_fields=self.x_fields, dtype=self.dtype, offsets=offsets
        )
        return self.transform(item) if self.transform is not None else item

    def __repr__(self) -> str:
        return f"JetDataset({self.reader!r}, jets={len(self)})"


class IterableJetDataset(IterableDataset):
    """Streaming dataset of jets, sharded over distributed ranks and DataLoader workers.

    See the module docstring for the exact sharding and shuffling. Yields jet dicts (use
    ``DataLoader(ds, batch_size=B, collate_fn=collate_jets)``) or, with ``batch_size``,
    whole :class:`JetBatch` es (use ``DataLoader(ds, batch_size=None, collate_fn=collate_jets)``,
    which is faster).

    Args:
        source: a reader or paths (opened with :func:`~jettag.data.formats.open_dataset`).
        format: format name when ``source`` is a path.
        batch_size: yield batches of this many jets instead of single jets.
        shuffle: shuffle segment order (globally) and jets (in a buffer) every epoch.
        seed: base seed; the epoch order depends only on ``(seed, epoch)``.
        chunk_size: jets per segment (the unit of reading and of the global shuffle).
        buffer_size: jets in the shuffle buffer of each worker.
        rank, world_size: distributed position; default from ``torch.distributed`` when it
            is initialised, else 0 and 1.
        drop_last: give every rank ``N // W`` jets, dropping the rest of the epoch.
        even: give every rank ``ceil(N / W)`` jets, repeating the first jets of the epoch.
        x_fields: per-particle fields stacked into ``x``.
        dtype: floating dtype of ``p4``, ``x`` and floating jet fields.
        index_field: if set, each jet carries its global index (position in the list of
            files) under this field name.
        transform: optional callable applied to every yielded item.
        **reader_kwargs: reader options when ``source`` is a path.
    """

    def __init__(
        self,
        source: JetReader | PathLike | Iterable[PathLike],
        *,
        format: str | None = None,
        batch_size: int | None = None,
        shuffle: bool = False,
        seed: int = 0,
        chunk_size: int = 4096,
        buffer_size: int = 16384,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
        even: bool = False,
        x_fields: Sequence[str] | None = None,
        dtype: torch.dtype | None = torch.float32,
        index_field: str | None = None,
        transform: Callable[[Any], Any] | None = None,
        **reader_kwargs: Any,
    ) -> None:
        if drop_last and even:
            raise ValueError("drop_last and even are exclusive: drop the remainder or pad it")
        if batch_size is not None and batch_size <= 0:
            raise ValueError(f"batch_size: expected a positive integer, found {batch_size}")
        if chunk_size <= 0 or buffer_size < 0:
            raise ValueError(
                f"chunk_size must be positive and buffer_size >= 0, found {chunk_size}, "
                f"{buffer_size}"
            )
        if (rank is None) != (world_size is None):
            raise ValueError("pass both rank and world_size, or neither")
        if world_size is not None and not 0 <= rank < world_size:  # type: ignore[operator]
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        self.reader = _reader(source, format, dtype, reader_kwargs)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = int(seed)
        self.chunk_size = int(chunk_size)
        self.buffer_size = int(buffer_size)
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.even = even
        self.x_fields = None if x_fields is None else list(x_fields)
        self.dtype = dtype
        self.index_field = index_field
        self.transform = transform
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    # -- epochs and positions ---------------------------------------------------------
    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration follows (call before each epoch)."""
        self._epoch.fill_(int(epoch))

    def _distributed(self) -> tuple[int, int]:
        if self.world_size is not None:
            return int(self.rank), int(self.world_size)  # type: ignore[arg-type]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _rank_range(self, rank: int, world_size: int) -> tuple[int, int]:
        """Positions ``[a, b)`` of the epoch order assigned to ``rank`` (may exceed N if even)."""
        n = len(self.reader)
        if self.drop_last:
            q = n // world_size
            return rank * q, (rank + 1) * q
        if self.even:
            q = -(-n // world_size)
            return rank * q, (rank + 1) * q
        return rank * n // world_size, (rank + 1) * n // world_size

    def num_jets(self, rank: int | None = None, world_size: int | None = None) -> int:
        """Jets one rank yields per epoch (this process's rank by default)."""
        if rank is None or world_size is None:
            rank, world_size = self._distributed()
        a, b = self._rank_range(rank, world_size)
        return b - a

    def __len__(self) -> int:
        """Items this rank yields per epoch: jets, or batches in batch mode."""
        n = self.num_jets()
        return n if self.batch_size is None else -(-n // self.batch_size)

    def _segments(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Epoch order of the segments ``(file, start, stop)`` and their cumulative sizes."""
        rows = [
            (f, s, min(s + self.chunk_size, n))
            for f, n in enumerate(self.reader.file_lengths)
            for s in range(0, n, self.chunk_size)
        ]
        segs = np.array(rows, dtype=np.int64).reshape(-1, 3)
        if self.shuffle and len(segs):
            order = np.random.default_rng([self.seed, epoch]).permutation(len(segs))
            segs = segs[order]
        cum = np.zeros(len(segs) + 1, dtype=np.int64)
        np.cumsum(segs[:, 2] - segs[:, 1], out=cum[1:])
        return segs, cum

    def worker_segments(
        self,
        epoch: int | None = None,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        worker_id: int = 0,
        num_workers: int = 1,
    ) -> list[tuple[int, int, int]]:
        """The ``(file, start, stop)`` pieces one (rank, worker) reads in an epoch, in order."""
        epoch = self.epoch if epoch is None else epoch
        if rank is None or world_size is None:
            rank, world_size = self._distributed()
        segs, cum = self._segments(epoch)
        n = int(cum[-1])
        a, b = self._rank_range(rank, world_size)
        size = b - a
        if self.batch_size is None:
            lo, hi = a + worker_id * size // num_workers, a + (worker_id + 1) * size // num_workers
        else:
            nb = -(-size // self.batch_size)
            b0, b1 = worker_id * nb // num_workers, (worker_id + 1) * nb // num_workers
            lo, hi = a + min(b0 * self.batch_size, size), a + min(b1 * self.batch_size, size)
        pieces: list[tuple[int, int, int]] = []
        while lo < hi and n > 0:
            # positions >= n only occur with even=True: they wrap to the start of the order
            base = (lo // n) * n
            p, q = lo - base, min(hi - base, n)
            first = int(np.searchsorted(cum, p, side="right") - 1)
            k = first
            while k < len(segs) and cum[k] < q:
                f, s, _ = (int(v) for v in segs[k])
                u, v = max(p, int(cum[k])), min(q, int(cum[k + 1]))
                pieces.append((f, s + u - int(cum[k]), s + v - int(cum[k])))
                k += 1
            lo = base + q
        if self.shuffle:
            pieces = _ascending_per_file(pieces)
        return pieces

    # -- iteration --------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker_id, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        rank, world_size = self._distributed()
        return self.iter_shard(
            rank=rank, world_size=world_size, worker_id=worker_id, num_workers=num_workers
        )

    def iter_shard(
        self,
        epoch: int | None = None,
        *,
        rank: int = 0,
        world_size: int = 1,
        worker_id: int = 0,
        num_workers: int = 1,
    ) -> Iterator[Any]:
        """What one (rank, worker) yields in an epoch (``__iter__`` calls this with the
        current epoch, the distributed rank and the DataLoader worker)."""
        epoch = self.epoch if epoch is None else epoch
        pieces = self.worker_segments(
            epoch, rank=rank, world_size=world_size, worker_id=worker_id, num_workers=num_workers
        )
        rng = np.random.default_rng([self.seed, epoch, rank, worker_id, 1])
        starts = np.concatenate([[0], np.cumsum(self.reader.file_lengths)])

        def read() -> Iterator[JetChunk]:
            for f, s, e in pieces:
                chunk = self.reader.read_file(f, s, e)
                yield _with_index(chunk, self.index_field, int(starts[f]) + s)

        chunks = _shuffled(read(), rng, self.buffer_size if self.shuffle else 0)
        items = self._batches(chunks) if self.batch_size is not None else self._jets(chunks)
        for item in items:
            yield self.transform(item) if self.transform is not None else item

    def _jets(self, chunks: Iterator[JetChunk]) -> Iterator[dict[str, Any]]:
        for chunk in chunks:
            offsets = chunk.offsets
            for i in range(len(chunk)):
                yield chunk.jet_dict(i, x_fields=self.x_fields, dtype=self.dtype, offsets=offsets)

    def _batches(self, chunks: Iterator[JetChunk]) -> Iterator[JetBatch]:
        assert self.batch_size is not None
        bs = self.batch_size
        carry: JetChunk | None = None
        for chunk in chunks:
            pool = chunk if carry is None else JetChunk.concatenate([carry, chunk])
            full = len(pool) // bs * bs
            for a in range(0, full, bs):
                yield pool.slice(a, a + bs).to_batch(x_fields=self.x_fields, dtype=self.dtype)
            carry = pool.slice(full, len(pool))
        if carry is not None and len(carry):
            yield carry.to_batch(x_fields=self.x_fields, dtype=self.dtype)

    def __repr__(self) -> str:
        return (
            f"IterableJetDataset({self.reader!r}, jets={len(self.reader)}, "
            f"batch_size={self.batch_size}, shuffle={self.shuffle})"
        )


def _ascending_per_file(pieces: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Keep the interleaving of files but visit each file's pieces in ascending order."""
    by_file: dict[int, list[tuple[int, int, int]]] = {}
    for p in pieces:
        by_file.setdefault(p[0], []).append(p)
    queues = {f: iter(sorted(ps, key=lambda p: p[1])) for f, ps in by_file.items()}
    return [next(queues[p[0]]) for p in pieces]


def _shuffled(
    chunks: Iterator[JetChunk], rng: np.random.Generator, buffer_size: int
) -> Iterator[JetChunk]:
    """Buffer shuffle over chunks: permute once the buffer holds ``buffer_size`` jets, emit
    all but half a buffer, keep the rest to mix with what comes next. ``0``: no shuffle."""
    if buffer_size <= 0:
        yield from chunks
        return
    pool: list[JetChunk] = []
    n_pool = 0
    for chunk in chunks:
        pool.append(chunk)
        n_pool += len(chunk)
        if n_pool >= buffer_size:
            merged = JetChunk.concatenate(pool).take(rng.permutation(n_pool))
            keep = buffer_size // 2
            yield merged.slice(0, n_pool - keep)
            pool, n_pool = [merged.slice(n_pool - keep, n_pool)], keep
    if n_pool:
        yield JetChunk.concatenate(pool).take(rng.permutation(n_pool))
