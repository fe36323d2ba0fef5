"""Top Quark Tagging Reference Dataset (Zenodo 2603256): pandas HDF5 files.

Layout of the published ``train.h5`` / ``val.h5`` / ``test.h5``: a pandas ``HDFStore`` key
``table`` in PyTables *table* format, i.e. ``DataFrame.to_hdf(path, key="table",
format="table")``. The HDF5 dataset ``/table/table`` holds one compound row per jet with
fields ``index`` (int64), ``values_block_0`` (804 floats: ``E_0, PX_0, PY_0, PZ_0, ...,
E_199, ..., PZ_199, truthE, truthPX, truthPY, truthPZ``) and ``values_block_1`` (2 integers:
``ttv, is_signal_new``). Constituents are sorted by pT and zero-padded.

The reader does not need pandas: it reads ``/table/table`` rows by chunk with h5py and takes
the column order of each block from the ``values_block_<k>_kind`` attributes that pandas
writes (a pickled list of column names, decoded here with an unpickler that refuses to import
anything). It also reads ``format="fixed"`` stores (``/table/block<k>_values`` with
``/table/block<k>_items``). The writer goes through pandas/PyTables itself so that the files
are the same HDF5 structure pandas writes.

When the constituents are ``4 m`` adjacent little-endian float32 values of one block (the
published layout, ttv in either block), rows are read raw, a few thousand at a time: through
a memory map of the table's chunks when they are stored uncompressed (the published files),
else with HDF5 reads that convert nothing into a reused buffer. Padding is found and the
real constituents gathered while the rows are in the cache, and only the packed jets are
kept, so memory does not grow with the file or with the range read. Other layouts take a
generic path (structured h5py reads, float mask) with the same results.

Example:
    >>> from jettag.data.formats import TopHDF5Reader   # doctest: +SKIP
    >>> reader = TopHDF5Reader("test.h5")                 # doctest: +SKIP
    >>> len(reader), reader.read(0, 2).fields              # doctest: +SKIP
    (404000, ['part_energy', 'part_px', 'part_py', 'part_pz', 'label', 'truth_p4', 'ttv'])
"""

from __future__ import annotations

import array
import io
import mmap
import os
import pickle
import re
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from jettag._optional import require
from jettag.data.formats._common import (
    JetChunk,
    JetFileError,
    JetReader,
    JetWriter,
    MissingKeyError,
    PathLike,
    iter_jet_chunks,
)

if TYPE_CHECKING:
    from jettag.data.batch import JetBatch

__all__ = ["TopHDF5Reader", "TopHDF5Writer", "top_hdf5_columns", "write_top_hdf5"]

NUM_CONSTITUENTS = 200
TRUTH_COLUMNS = ("truthE", "truthPX", "truthPY", "truthPZ")
_COMPONENTS = ("E", "PX", "PY", "PZ")
_CONSTITUENT_RE = re.compile(r"^(E|PX|PY|PZ)_(\d+)$")


def top_hdf5_columns(num_constituents: int = NUM_CONSTITUENTS) -> list[str]:
    """The 806 column names of the published files, in order (for 200 constituents)."""
    cols = [f"{c}_{i}" for i in range(num_constituents) for c in _COMPONENTS]
    return [*cols, *TRUTH_COLUMNS, "ttv", "is_signal_new"]


class _NoGlobalsUnpickler(pickle.Unpickler):
    """Unpickles plain lists/tuples/strings only; any class or function is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from an attribute")


def _decode_names(value: Any, what: str, path: Path) -> list[str]:
    """Column names from a pandas attribute (pickled list of str, or an array of bytes)."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "SUO":
        items = list(value.reshape(-1))
    else:
        if isinstance(value, np.ndarray | np.bytes_):
            value = bytes(value.tobytes() if isinstance(value, np.ndarray) else value)
        if not isinstance(value, bytes):
            raise JetFileError(
                f"{path}: attribute {what} has unexpected type {type(value).__name__}"
            )
        try:
            items = _NoGlobalsUnpickler(io.BytesIO(value), encoding="latin1").load()
        except Exception as err:
            raise JetFileError(f"{path}: cannot decode column names from {what}: {err}") from err
        if not isinstance(items, list | tuple):
            raise JetFileError(f"{path}: attribute {what} is not a list of column names")
    return [i.decode() if isinstance(i, bytes | np.bytes_) else str(i) for i in items]


@dataclass
class _Layout:
    """Where every needed column lives: dataset name(s) and column index per block."""

    kind: str  # "table" | "fixed"
    num_rows: int
    # column name -> (block name, column index in the block)
    columns: dict[str, tuple[str, int]]
    num_constituents: int
    # table stores whose constituents are contiguous little-endian float32 values in one
    # block: byte offset of E_0 in a row (the fast path reads raw rows), else None
    p4_offset: int | None = None


class _Handle:
    def __init__(self, h5file: Any, layout: _Layout, key: str, path: Path) -> None:
        self.file = h5file
        self.layout = layout
        self.key = key
        self.path = path
        self._rows: np.ndarray | None = None  # row buffer reused across reads
        self._mapped: _MappedChunks | bool | None = False  # False: not looked at yet

    def rows(self, n: int, dtype: np.dtype) -> np.ndarray:
        """A reusable buffer of ``n`` rows of the table's compound type."""
        if self._rows is None or len(self._rows) < n:
            self._rows = np.empty(n, dtype=dtype)
        return self._rows[:n]

    def mapped(self, ds: Any) -> _MappedChunks | None:
        """The table's chunks for reading by memory map, or ``None`` when that does not apply."""
        if self._mapped is False:
            self._mapped = _MappedChunks.open(ds, self.path)
        return self._mapped  # type: ignore[return-value]

    def close(self) -> None:
        self._rows = None
        if isinstance(self._mapped, _MappedChunks):
            self._mapped.close()
        self._mapped = False
        self.file.close()


class _MappedChunks:
    """Raw rows of an uncompressed chunked table, read through ``mmap`` instead of ``H5Dread``.

    HDF5 reads copy every byte from the page cache into the caller's buffer; a memory map
    lets the padding scan read the page cache directly, which removes the most expensive
    pass of a read. Only used when nothing stands between the chunk bytes and the rows: no
    filters (compression, checksums), no user block, the default file driver, every chunk
    allocated and whole. The first chunk is compared with an HDF5 read when the map is
    set up. Chunk addresses beyond the end of the file (a truncated file) raise
    :class:`JetFileError` when the map is set up, and the file size is checked again before
    each piece is mapped, so a read does not touch a page past the end of the file (which
    would kill the process with SIGBUS) unless the file shrinks during that very piece.
    Each piece is unmapped as soon as it is packed, so the memory in use does not grow
    with the file.
    """

    def __init__(
        self,
        path: Path,
        fd: int,
        addresses: np.ndarray,
        chunk_rows: int,
        num_rows: int,
        dtype: np.dtype,
    ) -> None:
        self.path = path
        self.fd = fd
        self.addresses = addresses
        self.chunk_rows = chunk_rows
        self.num_rows = num_rows
        self.dtype = dtype

    @classmethod
    def open(cls, ds: Any, path: Path) -> _MappedChunks | None:
        h5py = require("h5py", "hdf5", feature="reading top-tagging HDF5 files")
        try:
            dcpl = ds.id.get_create_plist()
            usable = (
                dcpl.get_layout() == h5py.h5d.CHUNKED
                and dcpl.get_nfilters() == 0
                and ds.ndim == 1
                and ds.file.driver == "sec2"
                and ds.file.id.get_create_plist().get_userblock() == 0
                and ds.shape[0] > 0
            )
        except Exception:  # an exotic file: the HDF5 route reads it
            return None
        if not usable:
            return None
        rows, item = int(ds.chunks[0]), ds.dtype.itemsize
        # (first row, address, size, filter mask) of every chunk: 32 bytes a chunk
        found = array.array("q")

        def note(c: Any) -> None:
            found.extend((c.chunk_offset[0], c.byte_offset, c.size, c.filter_mask))

        try:
            if hasattr(ds.id, "chunk_iter"):
                ds.id.chunk_iter(note)
            else:
                for k in range(ds.id.get_num_chunks()):
                    note(ds.id.get_chunk_info(k))
        except Exception:
            return None
        table = np.frombuffer(found, dtype=np.int64).reshape(-1, 4)
        count = -(-int(ds.shape[0]) // rows)
        index = table[:, 0] // rows
        if (
            len(table) != count
            or (table[:, 0] % rows != 0).any()
            or (table[:, 2] != rows * item).any()
            or (table[:, 3] != 0).any()
            or not np.array_equal(np.sort(index), np.arange(count))
        ):
            return None  # unallocated chunks read as fill values: leave those to HDF5
        addresses = np.empty(count, dtype=np.int64)
        addresses[index] = table[:, 1]
        file_size = path.stat().st_size
        end = int(addresses.max()) + rows * item
        if end > file_size:
            raise JetFileError(
                f"{path}: table rows extend to byte {end} but the file has {file_size} bytes "
                "(truncated file?)"
            )
        fd = os.open(path, os.O_RDONLY)
        mapped = cls(path, fd, addresses, rows, int(ds.shape[0]), ds.dtype)
        try:
            n = min(rows, mapped.num_rows)
            expect = np.empty(n, dtype=ds.dtype)
            ds.read_direct(expect, np.s_[0:n], np.s_[0:n])
            same = False
            for _, got in mapped.pieces(0, n):
                same = got.tobytes() == expect.tobytes()
                del got
        except Exception:
            same = False
        if not same:
            mapped.close()
            return None
        return mapped

    def pieces(self, start: int, stop: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, rows)`` for rows ``start:stop``, one per run of adjacent chunks.

        ``rows`` is a read-only view of the mapped file; drop it before asking for the next
        piece (the map is closed then).
        """
        if stop <= start:
            return
        rows, item = self.chunk_rows, self.dtype.itemsize
        c0, c1 = start // rows, (stop - 1) // rows + 1
        addr = self.addresses[c0:c1]
        breaks = (np.flatnonzero(np.diff(addr) != rows * item) + 1).tolist()
        for r0, r1 in zip([0, *breaks], [*breaks, c1 - c0], strict=True):
            a = max(start, (c0 + r0) * rows)
            b = min(stop, (c0 + r1) * rows)
            first = int(addr[r0]) + (a - (c0 + r0) * rows) * item
            base = first - first % mmap.ALLOCATIONGRANULARITY
            size = os.fstat(self.fd).st_size
            if first + (b - a) * item > size:  # a page past the end would be SIGBUS, not an error
                raise JetFileError(
                    f"{self.path}: rows {a}..{b} lie past the end of the file ({size} bytes); "
                    "was it truncated while being read?"
                )
            mm = mmap.mmap(
                self.fd, first + (b - a) * item - base, access=mmap.ACCESS_READ, offset=base
            )
            try:
                yield a, np.frombuffer(mm, dtype=self.dtype, count=b - a, offset=first - base)
            finally:
                try:
                    mm.close()
                except BufferError:  # a view is still alive: the map goes when it does
                    pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _inspect(h5: Any, path: Path, key: str) -> _Layout:
    h5py = require("h5py", "hdf5", feature="reading top-tagging HDF5 files")
    key = key.strip("/")
    if key not in h5:
        raise MissingKeyError(
            f"{path}: no key {key!r} in this HDF5 file (found {sorted(h5.keys())}); the "
            "top-tagging files store their DataFrame under key 'table'"
        )
    group = h5[key]
    if not isinstance(group, h5py.Group):
        raise JetFileError(f"{path}: {key!r} is a dataset, expected a pandas HDFStore group")
    columns: dict[str, tuple[str, int]] = {}
    if "table" in group and isinstance(group["table"], h5py.Dataset):
        ds = group["table"]
        if ds.dtype.names is None:
            raise JetFileError(f"{path}: /{key}/table is not a compound (PyTables table) dataset")
        for block in ds.dtype.names:
            if block == "index":
                continue
            attr = f"{block}_kind"
            if attr not in ds.attrs:
                raise JetFileError(
                    f"{path}: /{key}/table field {block!r} has no attribute {attr!r} naming its "
                    "columns; not a pandas table-format store"
                )
            names = _decode_names(ds.attrs[attr], f"/{key}/table@{attr}", path)
            width = int(np.prod(ds.dtype[block].shape)) if ds.dtype[block].shape else 1
            if len(names) != width:
                raise JetFileError(
                    f"{path}: /{key}/table field {block!r} holds {width} values but its "
                    f"{attr} names {len(names)} columns"
                )
            for j, n in enumerate(names):
                columns[n] = (block, j)
        kind, num_rows = "table", int(ds.shape[0])
    elif "block0_values" in group:
        k = 0
        num_rows = -1
        while f"block{k}_values" in group:
            vals = group[f"block{k}_values"]
            items_key = f"block{k}_items"
            if items_key not in group:
                raise JetFileError(f"{path}: /{key}/{items_key} missing next to block{k}_values")
            names = _decode_names(group[items_key][()], f"/{key}/{items_key}", path)
            if vals.ndim != 2 or vals.shape[1] != len(names):
                raise JetFileError(
                    f"{path}: /{key}/block{k}_values has shape {vals.shape}, expected "
                    f"(rows, {len(names)})"
                )
            num_rows = int(vals.shape[0])
            for j, n in enumerate(names):
                columns[n] = (f"block{k}_values", j)
            k += 1
        kind = "fixed"
    else:
        raise JetFileError(
            f"{path}: /{key} is neither a pandas table-format store (/{key}/table) nor a "
            f"fixed-format one (/{key}/block0_values); found {sorted(group.keys())}"
        )
    indices = sorted({int(m.group(2)) for n in columns if (m := _CONSTITUENT_RE.match(n))})
    n_const = (indices[-1] + 1) if indices else 0
    missing = [f"{c}_{i}" for i in range(n_const) for c in _COMPONENTS if f"{c}_{i}" not in columns]
    if n_const == 0 or missing:
        raise MissingKeyError(
            f"{path}: constituent columns E_i, PX_i, PY_i, PZ_i are missing "
            f"({missing[:8] if missing else 'none found'}); expected the top-tagging layout"
        )
    if "is_signal_new" not in columns:
        raise MissingKeyError(f"{path}: column 'is_signal_new' (the label) is missing")
    layout = _Layout(kind, num_rows, columns, n_const)
    if kind == "table":
        layout.p4_offset = _p4_offset(group["table"], columns, n_const)
    return layout


def _p4_offset(ds: Any, columns: dict[str, tuple[str, int]], m: int) -> int | None:
    """Byte offset of ``E_0`` in a raw row when the fast path applies, else ``None``.

    It applies when ``E_0, PX_0, ..., PZ_{m-1}`` are ``4 m`` consecutive little-endian float32
    values of one block (the published layout) and the numpy dtype h5py reports is the file's
    compound type byte for byte, so that raw rows can be read without any type conversion.
    """
    h5t = require("h5py", "hdf5", feature="reading top-tagging HDF5 files").h5t
    where = [columns[f"{c}_{i}"] for i in range(m) for c in _COMPONENTS]
    block, first = where[0]
    if any(b != block or j != first + k for k, (b, j) in enumerate(where)):
        return None
    field_dtype, field_offset = ds.dtype.fields[block][:2]
    if field_dtype.base != np.dtype("<f4"):
        return None
    try:
        same = h5t.py_create(ds.dtype) == ds.id.get_type()
    except (TypeError, ValueError):
        return None
    return field_offset + 4 * first if same else None


class TopHDF5Reader(JetReader):
    """Reader of Top Quark Tagging Reference Dataset files (pandas HDF5, table or fixed).

    Yields jets with ``part_energy, part_px, part_py, part_pz`` (zero-padding removed: a
    constituent is padding when ``E == px == py == pz == 0``; the stored pT order is kept),
    ``label`` = ``is_signal_new`` (must be 0 or 1), and jet fields ``truth_p4`` ``(B, 4)``
    (``truthE, truthPX, truthPY, truthPZ``, when present) and ``ttv``.

    Args:
        paths: file(s), directory or glob.
        key: pandas key (``"table"`` in the published files).
        threads: reads of a file done at once by :meth:`iter_chunks` / :meth:`iter_batches`
            (each :attr:`read_size` jets, yielded in order; at most ``threads`` pieces in
            memory beyond the one being used). ``None``: ``torch.get_num_threads()`` capped
            at 4, and 1 inside a DataLoader worker. Parallel reads apply to uncompressed
            files in the published layout (read by memory map); other files are read one
            piece at a time.
        dtype, max_open_files, check: see :class:`~jettag.data.formats.JetReader`.
    """

    format = "top-hdf5"
    extensions = (".h5", ".hdf5", ".hdf")

    def __init__(
        self,
        paths: PathLike | Iterable[PathLike],
        *,
        key: str = "table",
        threads: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(paths, **kwargs)
        self.key = key
        if threads is not None and (
            isinstance(threads, bool) or int(threads) != threads or threads < 1
        ):
            raise ValueError(f"threads: expected a positive integer or None, found {threads!r}")
        self.threads = None if threads is None else int(threads)

    def _num_threads(self) -> int:
        if self.threads is not None:
            return self.threads
        if torch.utils.data.get_worker_info() is not None:
            return 1  # DataLoader workers are the parallelism already
        return max(1, min(4, torch.get_num_threads()))

    def _read_pieces(self, i: int, ranges: list[tuple[int, int]]) -> Iterator[JetChunk]:
        """Pieces of file ``i`` read by a few threads at once, yielded in order.

        The memory-mapped fast path spends its time in numpy loops that release the GIL
        (and in page faults taken inside them), so pieces read in threads overlap. Each
        piece is an independent read with its own output; nothing is shared but the
        file's memory map, which is set up here before any thread starts.
        """
        threads = min(self._num_threads(), len(ranges))
        handle = self._handle(i) if threads > 1 else None
        if handle is not None and handle.layout.p4_offset is not None:
            table = handle.file[handle.key]["table"]
            if handle.mapped(table) is None:
                threads = 1
        else:
            threads = 1
        if threads <= 1:
            yield from super()._read_pieces(i, ranges)
            return
        pool = ThreadPoolExecutor(threads, thread_name_prefix="jettag-read")
        pending: deque[Future[JetChunk]] = deque()
        try:
            for a, b in ranges:
                pending.append(pool.submit(self._read_checked, handle, i, a, b))
                if len(pending) >= threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _open(self, path: Path) -> _Handle:
        h5py = require("h5py", "hdf5", feature="reading top-tagging HDF5 files")
        f = h5py.File(path, "r")
        try:
            layout = _inspect(f, path, self.key)
        except BaseException:
            f.close()
            raise
        return _Handle(f, layout, self.key.strip("/"), path)

    def _num_entries(self, handle: _Handle, path: Path) -> int:
        return handle.layout.num_rows

    def iter_batches(
        self,
        batch_size: int = 256,
        *,
        x_fields: Sequence[str] | None = None,
        dtype: torch.dtype | None = None,
        drop_last: bool = False,
        start: int = 0,
        stop: int | None = None,
    ) -> Iterator[JetBatch]:
        """As :meth:`JetReader.iter_batches`, without validating every batch a second time.

        With ``check`` on, :meth:`read_file` has already found every momentum finite and
        the offsets are built from the counts, so the batches are assembled directly rather
        than through ``JetBatch(...)``, whose own finiteness pass over all momenta costs
        about as much as reading them. Narrowing casts (which could overflow to inf) and
        ``x_fields`` (the files have no per-particle fields) take the validated route.
        """
        from jettag.data.batch import JetBatch

        if x_fields or not self.check:
            yield from super().iter_batches(
                batch_size,
                x_fields=x_fields,
                dtype=dtype,
                drop_last=drop_last,
                start=start,
                stop=stop,
            )
            return
        per_read = max(1, -(-self.read_size // batch_size)) if batch_size > 0 else 1
        for chunk in self.iter_chunks(batch_size * per_read, start=start, stop=stop):
            p4 = torch.from_numpy(chunk.p4)
            if not _widening(p4.dtype, dtype):
                batches = (
                    chunk.slice(s, s + batch_size).to_batch(x_fields=[], dtype=dtype)
                    for s in range(0, len(chunk), batch_size)
                )
            else:
                batches = _trusted_batches(JetBatch, chunk, p4.to(dtype or p4.dtype), batch_size)
            for batch in batches:
                if drop_last and len(batch) < batch_size:
                    return
                yield batch

    def _read(self, handle: _Handle, path: Path, start: int, stop: int) -> JetChunk:
        layout = handle.layout
        group = handle.file[handle.key]
        if layout.p4_offset is not None:
            return self._read_raw_rows(handle, group["table"], path, start, stop, layout.p4_offset)
        blocks: dict[str, np.ndarray] = {}
        if layout.kind == "table":
            rows = group["table"][start:stop]
            for name in rows.dtype.names:
                if name != "index":
                    blocks[name] = rows[name].reshape(len(rows), -1)
        else:
            for name in {b for b, _ in layout.columns.values()}:
                blocks[name] = group[name][start:stop]
        n = stop - start
        m = layout.num_constituents
        names = [f"{c}_{i}" for i in range(m) for c in _COMPONENTS]
        dense = _gather_columns(blocks, layout, names).reshape(n, m, 4)
        # padding is all four components zero (an OR of views beats a reduce over 4 values)
        mask = (dense[..., 0] != 0) | (dense[..., 1] != 0) | (dense[..., 2] != 0)
        mask |= dense[..., 3] != 0
        counts = mask.sum(axis=1).astype(np.int64)
        label, jet_fields = _jet_columns(blocks, layout, path, start)
        return JetChunk(dense[mask], counts, label, {}, jet_fields)

    def _read_raw_rows(
        self, handle: _Handle, ds: Any, path: Path, start: int, stop: int, p4_offset: int
    ) -> JetChunk:
        """The fast path: raw rows, piece by piece, packed as they come.

        Rows come from a memory map of the chunks (see :class:`_MappedChunks`) or, when that
        does not apply, from HDF5 reads with the file's own compound type (bytes copied,
        nothing converted) into a reused buffer of whole HDF5 chunks. Either way the raw
        rows in memory stay bounded however many jets are asked for; only the packed
        constituents (about a quarter of the bytes in the published files) are kept.
        """
        layout = handle.layout
        m = layout.num_constituents
        # room for every constituent: only the pages written to are ever backed by memory
        packed = np.empty((stop - start) * m, dtype="V16")
        pos = 0
        counts, labels, fields = [], [], []
        for a, rows in self._raw_pieces(handle, ds, start, stop):
            n = len(rows)
            raw = rows.view(np.uint8).reshape(n, ds.dtype.itemsize)
            c, pos = _pack_constituents(raw, p4_offset, m, packed, pos)
            blocks = {
                name: rows[name].reshape(n, -1) for name in rows.dtype.names if name != "index"
            }
            label, jet_fields = _jet_columns(blocks, layout, path, a)
            del raw, blocks, rows  # views of a map that is closed next
            counts.append(c)
            labels.append(label)
            fields.append(jet_fields)
        if not counts:
            return JetChunk(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0))
        return JetChunk(
            packed[:pos].view("<f4").reshape(-1, 4).astype(np.float32, copy=False),
            _concat(counts),
            _concat(labels),
            {},
            {k: _concat([f[k] for f in fields]) for k in fields[0]},
        )

    @staticmethod
    def _raw_pieces(
        handle: _Handle, ds: Any, start: int, stop: int
    ) -> Iterator[tuple[int, np.ndarray]]:
        chunk_rows = ds.chunks[0] if ds.chunks else 1
        piece = -(-_PIECE_ROWS // chunk_rows) * chunk_rows
        mapped = handle.mapped(ds) if stop > start else None
        if mapped is not None:
            for a in range(start, stop, piece):
                yield from mapped.pieces(a, min(a + piece, stop))
            return
        h5s = require("h5py", "hdf5", feature="reading top-tagging HDF5 files").h5s
        file_type = ds.id.get_type()
        for a in range(start, stop, piece):
            b = min(a + piece, stop)
            rows = handle.rows(b - a, ds.dtype)
            fspace = ds.id.get_space()
            fspace.select_hyperslab((a,), (b - a,))
            ds.id.read(h5s.create_simple((b - a,)), fspace, rows, mtype=file_type)
            yield a, rows


#: Rows read at once by the fast path (rounded up to whole HDF5 chunks): 26 MB of raw rows
#: in the published layout, the only buffer whose size depends on the read.
_PIECE_ROWS = 8192
#: Jets per pass of the padding scan, so that the rows scanned are still in the L2 cache
#: when their constituents are gathered.
_SCAN_ROWS = 512


def _widening(stored: torch.dtype, target: torch.dtype | None) -> bool:
    """Whether casting finite ``stored`` values to ``target`` keeps them finite."""
    if stored not in (torch.float32, torch.float64):
        return False
    return target is None or target == torch.float64 or target == stored


def _trusted_batches(
    cls: type[JetBatch], chunk: JetChunk, p4: torch.Tensor, batch_size: int
) -> Iterator[JetBatch]:
    """Batches of ``batch_size`` jets of a checked chunk, sharing its memory."""
    offsets = chunk.offsets
    label = None if chunk.label is None else torch.from_numpy(chunk.label)
    fields = {}
    for name, arr in chunk.jet_fields.items():
        t = torch.from_numpy(np.ascontiguousarray(arr))
        fields[name] = t.to(p4.dtype) if t.is_floating_point() else t
    for s in range(0, len(chunk), batch_size):
        e = min(s + batch_size, len(chunk))
        a, b = int(offsets[s]), int(offsets[e])
        ptr = torch.from_numpy(offsets[s : e + 1] - a)
        yield cls._trusted(
            p4[a:b],
            ptr,
            None,
            None if label is None else label[s:e],
            {k: v[s:e] for k, v in fields.items()},
        )


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _pack_constituents(
    raw: np.ndarray, offset: int, m: int, out: np.ndarray, pos: int
) -> tuple[np.ndarray, int]:
    """Copy the real constituents of raw table rows to ``out[pos:]``; return counts and end.

    ``raw`` is ``(n, row bytes)``; constituent ``i`` of a row is the 16 bytes at
    ``offset + 16 i`` (``E, PX, PY, PZ`` little-endian float32), copied as one opaque
    16-byte item into ``out``, a ``V16`` array with room for every constituent of the rows
    (written in place: no list of pieces to concatenate afterwards). A constituent is padding
    when all four values compare equal to zero, as in the generic path (``-0.0`` is zero,
    NaN is not). Rows are scanned a few hundred at a time so that they are still in the
    cache when their constituents are gathered.
    """
    n = raw.shape[0]
    region = raw[:, offset : offset + 16 * m]
    items = region.view("V16")  # (n, m)
    values = region.view("<f4")  # (n, 4 m)
    counts = np.empty(n, dtype=np.int64)
    rows = min(n, _SCAN_ROWS)
    nonzero = np.empty((rows, 4 * m), dtype=bool)
    real = np.empty((rows, m), dtype=bool)
    # a row has at most m real constituents: uint8 sums are exact below 256 and cheapest
    count_dtype = np.uint8 if m < 256 else np.int64
    for s in range(0, n, _SCAN_ROWS):
        e = min(s + _SCAN_ROWS, n)
        flags, r = nonzero[: e - s], real[: e - s]
        np.not_equal(values[s:e], 0, out=flags)
        # the 4 flags of a constituent read as one 4-byte word: nonzero iff any flag is set
        np.not_equal(flags.view(np.uint32), 0, out=r)
        c = np.add.reduce(r.view(np.uint8), axis=1, dtype=count_dtype)
        counts[s:e] = c
        k = int(c.sum(dtype=np.int64))
        out[pos : pos + k] = items[s:e][r]
        pos += k
    return counts, pos


def _gather_columns(blocks: dict[str, np.ndarray], layout: _Layout, names: list[str]) -> np.ndarray:
    """``(n, len(names))`` values of the named columns (a view when they are adjacent)."""
    where = [layout.columns[name] for name in names]
    block, first = where[0]
    if all(b == block and j == first + k for k, (b, j) in enumerate(where)):
        return blocks[block][:, first : first + len(names)]
    if len({b for b, _ in where}) == 1:
        return blocks[block][:, [j for _, j in where]]
    return np.stack([blocks[b][:, j] for b, j in where], axis=1)


def _jet_columns(
    blocks: dict[str, np.ndarray], layout: _Layout, path: Path, start: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Checked labels and the jet fields, as new arrays (``blocks`` may be a reused buffer)."""
    block, j = layout.columns["is_signal_new"]
    label_raw = blocks[block][:, j]
    bad = (label_raw != 0) & (label_raw != 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise JetFileError(
            f"{path}: entry {start + i} has is_signal_new = {label_raw[i].item()!r}; "
            "expected 0 (QCD) or 1 (top)"
        )
    jet_fields: dict[str, np.ndarray] = {}
    if all(c in layout.columns for c in TRUTH_COLUMNS):
        jet_fields["truth_p4"] = np.array(_gather_columns(blocks, layout, list(TRUTH_COLUMNS)))
    if "ttv" in layout.columns:
        block, j = layout.columns["ttv"]
        jet_fields["ttv"] = blocks[block][:, j].astype(np.int64)
    return label_raw.astype(np.int64), jet_fields


class TopHDF5Writer(JetWriter):
    """Incremental writer of files in the published top-tagging layout.

    Writes through pandas/PyTables exactly what ``DataFrame.to_hdf(path, key="table",
    format="table")`` writes: the 806 columns ``E_0, PX_0, PY_0, PZ_0, ..., PZ_199,
    truthE, truthPX, truthPY, truthPZ`` (float32, ``values_block_0``) and ``ttv,
    is_signal_new`` (int64, ``values_block_1``), a running integer index, and the index table
    on the ``index`` column. Constituents are written in the order given (the published files
    are pT-ordered, leading first), zero-padded to ``num_constituents``.

    Args:
        path: output file.
        num_constituents: stored constituents per jet (200 in the published files).
        truncate: keep the first ``num_constituents`` of longer jets; otherwise longer jets
            raise ``ValueError``.
        ttv: value of the ``ttv`` column when the jets carry no ``ttv`` field.
        complevel, complib: optional PyTables compression (the published files have none).
        expected_rows: total row estimate passed to PyTables for its chunk shape.
        overwrite: replace an existing ``path``.

    Jets need ``label`` in {0, 1}; ``truth_p4`` ``(B, 4)`` is written when present (zeros
    otherwise, as for QCD jets in the published files).
    """

    format = "top-hdf5"

    def __init__(
        self,
        path: PathLike,
        *,
        num_constituents: int = NUM_CONSTITUENTS,
        truncate: bool = False,
        ttv: int = 0,
        complevel: int | None = None,
        complib: str | None = None,
        expected_rows: int | None = None,
        overwrite: bool = True,
    ) -> None:
        self._pd = require("pandas", "hdf5", feature="writing top-tagging HDF5 files")
        require("tables", "hdf5", feature="writing top-tagging HDF5 files")
        super().__init__(path, overwrite=overwrite)
        self.num_constituents = int(num_constituents)
        self.truncate = truncate
        self.ttv = int(ttv)
        self.expected_rows = expected_rows
        self._columns = top_hdf5_columns(self.num_constituents)
        self._store = self._pd.HDFStore(
            self.partial_path, mode="w", complevel=complevel, complib=complib
        )

    def _frame(self, chunk: JetChunk) -> Any:
        m = self.num_constituents
        n = len(chunk)
        if chunk.label is None:
            raise ValueError(f"{self.path}: jets need a 'label' (is_signal_new, 0 or 1)")
        if not np.isin(chunk.label, (0, 1)).all():
            bad = chunk.label[~np.isin(chunk.label, (0, 1))][0]
            raise ValueError(
                f"{self.path}: label {bad} cannot be stored as is_signal_new; expected 0 or 1"
            )
        counts = chunk.counts
        if len(counts) and counts.max() > m and not self.truncate:
            raise ValueError(
                f"{self.path}: a jet has {int(counts.max())} constituents, more than "
                f"num_constituents={m}; pass truncate=True to keep the first {m}"
            )
        if np.any(np.all(chunk.p4 == 0, axis=1)):
            raise ValueError(
                f"{self.path}: a constituent has E = px = py = pz = 0, which the format "
                "reserves for padding"
            )
        dense = np.zeros((n, m, 4), dtype=np.float32)
        pos = np.arange(chunk.num_particles) - np.repeat(chunk.offsets[:-1], counts)
        sel = pos < m
        rows = chunk.batch_index[sel]
        dense[rows, pos[sel]] = chunk.p4[sel]
        values = np.empty((n, 4 * m + 4), dtype=np.float32)
        values[:, : 4 * m] = dense.reshape(n, 4 * m)
        truth = chunk.jet_fields.get("truth_p4")
        if truth is not None:
            truth = np.asarray(truth).reshape(n, -1)
            if truth.shape[1] != 4:
                raise ValueError(
                    f"{self.path}: jet field 'truth_p4' must be (B, 4), found {truth.shape}"
                )
            values[:, 4 * m :] = truth
        else:
            values[:, 4 * m :] = 0.0
        ttv = chunk.jet_fields.get("ttv")
        ttv = np.full(n, self.ttv, dtype=np.int64) if ttv is None else np.asarray(ttv, np.int64)
        pd = self._pd
        index = pd.RangeIndex(self.num_written, self.num_written + n)
        df = pd.DataFrame(values, columns=self._columns[: 4 * m + 4], index=index)
        df["ttv"] = ttv
        df["is_signal_new"] = chunk.label.astype(np.int64)
        return df

    def _write(self, chunk: JetChunk) -> None:
        df = self._frame(chunk)
        self._store.append(
            "table", df, format="table", index=False, expectedrows=self.expected_rows
        )

    def _finish(self) -> None:
        if self.num_written == 0:
            empty = JetChunk(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0))
            self._store.put("table", self._frame(empty), format="table", index=False)
        self._store.create_table_index("table", columns=["index"])
        self._store.close()

    def _abort(self) -> None:
        if self._store.is_open:
            self._store.close()


def write_top_hdf5(path: PathLike, jets: Any, **kwargs: Any) -> Path:
    """Write jets (one chunk or an iterable of chunks) to ``path`` with :class:`TopHDF5Writer`."""
    with TopHDF5Writer(path, **kwargs) as writer:
        for chunk in iter_jet_chunks(jets):
            writer.write(chunk)
    return writer.path
