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

Example:
    >>> from jettag.data.formats import TopHDF5Reader   # doctest: +SKIP
    >>> reader = TopHDF5Reader("test.h5")                 # doctest: +SKIP
    >>> len(reader), reader.read(0, 2).fields              # doctest: +SKIP
    (404000, ['part_energy', 'part_px', 'part_py', 'part_pz', 'label', 'truth_p4', 'ttv'])
"""

from __future__ import annotations

import io
import pickle
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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


class _Handle:
    def __init__(self, h5file: Any, layout: _Layout, key: str) -> None:
        self.file = h5file
        self.layout = layout
        self.key = key

    def close(self) -> None:
        self.file.close()


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
    return _Layout(kind, num_rows, columns, n_const)


class TopHDF5Reader(JetReader):
    """Reader of Top Quark Tagging Reference Dataset files (pandas HDF5, table or fixed).

    Yields jets with ``part_energy, part_px, part_py, part_pz`` (zero-padding removed: a
    constituent is padding when ``E == px == py == pz == 0``; the stored pT order is kept),
    ``label`` = ``is_signal_new`` (must be 0 or 1), and jet fields ``truth_p4`` ``(B, 4)``
    (``truthE, truthPX, truthPY, truthPZ``, when present) and ``ttv``.

    Args:
        paths: file(s), directory or glob.
        key: pandas key (``"table"`` in the published files).
        dtype, max_open_files, check: see :class:`~jettag.data.formats.JetReader`.
    """

    format = "top-hdf5"
    extensions = (".h5", ".hdf5", ".hdf")

    def __init__(self, paths: PathLike | Iterable[PathLike], *, key: str = "table", **kwargs: Any):
        super().__init__(paths, **kwargs)
        self.key = key

    def _open(self, path: Path) -> _Handle:
        h5py = require("h5py", "hdf5", feature="reading top-tagging HDF5 files")
        f = h5py.File(path, "r")
        try:
            layout = _inspect(f, path, self.key)
        except BaseException:
            f.close()
            raise
        return _Handle(f, layout, self.key.strip("/"))

    def _num_entries(self, handle: _Handle, path: Path) -> int:
        return handle.layout.num_rows

    def _read(self, handle: _Handle, path: Path, start: int, stop: int) -> JetChunk:
        layout = handle.layout
        group = handle.file[handle.key]
        blocks: dict[str, np.ndarray] = {}
        if layout.kind == "table":
            rows = group["table"][start:stop]
            for name in rows.dtype.names:
                if name != "index":
                    arr = rows[name]
                    blocks[name] = arr.reshape(len(rows), -1)
        else:
            for name in {b for b, _ in layout.columns.values()}:
                blocks[name] = group[name][start:stop]
        n = stop - start

        def column(name: str) -> np.ndarray:
            block, j = layout.columns[name]
            return blocks[block][:, j]

        def columns(names: list[str]) -> np.ndarray:
            # one gather per block (all constituent columns normally live in one block)
            where = [layout.columns[name] for name in names]
            if len({b for b, _ in where}) == 1:
                return blocks[where[0][0]][:, [j for _, j in where]]
            return np.stack([column(name) for name in names], axis=1)

        m = layout.num_constituents
        names = [f"{c}_{i}" for i in range(m) for c in _COMPONENTS]
        where = [layout.columns[name] for name in names]
        first_block, first = where[0]
        if all(b == first_block and j == first + k for k, (b, j) in enumerate(where)):
            # the published layout: E_0, PX_0, PY_0, PZ_0, E_1, ... side by side in one block
            dense = blocks[first_block][:, first : first + 4 * m].reshape(n, m, 4)
        else:
            dense = columns(names).reshape(n, m, 4)
        # padding is all four components zero (an OR of views beats a reduce over 4 values)
        mask = (dense[..., 0] != 0) | (dense[..., 1] != 0) | (dense[..., 2] != 0)
        mask |= dense[..., 3] != 0
        counts = mask.sum(axis=1).astype(np.int64)
        p4 = dense[mask]

        label_raw = column("is_signal_new")
        bad = ~np.isin(label_raw, (0, 1))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise JetFileError(
                f"{path}: entry {start + i} has is_signal_new = {label_raw[i].item()!r}; "
                "expected 0 (QCD) or 1 (top)"
            )
        jet_fields: dict[str, np.ndarray] = {}
        if all(c in layout.columns for c in TRUTH_COLUMNS):
            jet_fields["truth_p4"] = columns(list(TRUTH_COLUMNS))
        if "ttv" in layout.columns:
            jet_fields["ttv"] = column("ttv").astype(np.int64)
        return JetChunk(p4, counts, label_raw.astype(np.int64), {}, jet_fields)


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
