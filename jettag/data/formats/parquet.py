"""Parquet files of awkward jets, as the particle_transformer conversion scripts write them.

``jet-universe/particle_transformer: utils/convert_top_datasets.py`` and
``utils/convert_qg_datasets.py`` write ``ak.to_parquet(ak.Array(v), path,
compression="LZ4", compression_level=4)`` with one record per jet: ``label`` (int),
``jet_pt, jet_eta, jet_phi, jet_energy, jet_mass, jet_nparticles`` (of the summed
constituents), jagged ``part_px, part_py, part_pz, part_energy``, ``part_deta`` (sign-flipped
by the jet's eta sign) and ``part_dphi``; the quark/gluon files add ``part_pid``,
``part_isChargedHadron, part_isNeutralHadron, part_isPhoton, part_isElectron, part_isMuon``
and ``part_charge``. Any file with the four ``part_*`` momenta is read; row groups are read
one at a time, so memory is bounded by the row-group size.

Example:
    >>> from jettag.data.formats import ParquetReader                  # doctest: +SKIP
    >>> reader = ParquetReader("TopLandscape/test_file.parquet")        # doctest: +SKIP
    >>> reader.read(0, 1).fields[:5]                                    # doctest: +SKIP
    ['part_energy', 'part_px', 'part_py', 'part_pz', 'part_deta']
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from jettag._optional import require
from jettag.data.formats._common import (
    P4_FIELDS,
    JetChunk,
    JetFileError,
    JetReader,
    JetWriter,
    MissingKeyError,
    PathLike,
    iter_jet_chunks,
    jet_kinematics,
    numpy_content,
    offsets_from_counts,
)
from jettag.data.formats.jetclass_root import JETCLASS_LABELS

__all__ = ["ParquetReader", "ParquetWriter", "write_parquet"]

#: Row groups kept decoded per open file.
_CACHED_GROUPS = 4


class _ParquetHandle:
    def __init__(self, path: Path, columns: Sequence[str] | None) -> None:
        pq = require("pyarrow.parquet", "parquet", feature="reading Parquet jet files")
        self.file = pq.ParquetFile(path)
        meta = self.file.metadata
        self.offsets = offsets_from_counts(
            np.array([meta.row_group(i).num_rows for i in range(meta.num_row_groups)], np.int64)
        )
        names = self.file.schema_arrow.names
        missing = [f for f in P4_FIELDS if f not in names]
        if missing:
            raise MissingKeyError(
                f"{path}: no column(s) {missing} (found {names}); expected jets with jagged "
                "part_energy, part_px, part_py, part_pz"
            )
        if columns is not None:
            absent = [c for c in columns if c not in names]
            if absent:
                raise MissingKeyError(f"{path}: no column(s) {absent} (found {names})")
            keep = set(columns) | set(P4_FIELDS) | {"label"} | set(JETCLASS_LABELS)
            names = [n for n in names if n in keep]
        self.columns = names
        self.cache: OrderedDict[int, JetChunk] = OrderedDict()
        self.path = path

    def row_group(self, i: int) -> JetChunk:
        if i in self.cache:
            self.cache.move_to_end(i)
            return self.cache[i]
        table = self.file.read_row_group(i, columns=self.columns)
        chunk = _to_chunk(ak.from_arrow(table), self.path, int(self.offsets[i]))
        # consecutive small reads hit the same group; a few groups serve random access
        self.cache[i] = chunk
        while len(self.cache) > _CACHED_GROUPS:
            self.cache.popitem(last=False)
        return chunk

    def close(self) -> None:
        self.cache.clear()
        self.file.close()


class ParquetReader(JetReader):
    """Reader of Parquet jet files (ParT conversions, :func:`write_parquet`, ``ak.to_parquet``).

    Jagged columns become particle fields, the others jet fields. The label is the ``label``
    column (non-negative integers), or the index of the set one-hot ``label_*`` column of
    JetClass when there is no ``label``; files with neither give ``label=None``.

    Args:
        paths: file(s), directory or glob.
        columns: restrict the extra columns read (momenta and labels are always read).
        dtype, max_open_files, check: see :class:`~jettag.data.formats.JetReader`.
    """

    format = "parquet"
    extensions = (".parquet", ".pq")

    def __init__(
        self,
        paths: PathLike | Iterable[PathLike],
        *,
        columns: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(paths, **kwargs)
        self.columns = None if columns is None else tuple(columns)

    def _open(self, path: Path) -> _ParquetHandle:
        return _ParquetHandle(path, self.columns)

    def _num_entries(self, handle: _ParquetHandle, path: Path) -> int:
        return int(handle.offsets[-1])

    def _read(self, handle: _ParquetHandle, path: Path, start: int, stop: int) -> JetChunk:
        offsets = handle.offsets
        pieces = []
        g = max(int(np.searchsorted(offsets, start, side="right")) - 1, 0)
        while g < len(offsets) - 1 and offsets[g] < stop:
            lo, hi = max(start, int(offsets[g])), min(stop, int(offsets[g + 1]))
            if hi > lo:
                group = handle.row_group(g)
                pieces.append(group.slice(lo - int(offsets[g]), hi - int(offsets[g])))
            g += 1
        if not pieces:
            empty = ak.from_arrow(handle.file.schema_arrow.empty_table())
            return _to_chunk(empty, path, start)
        return JetChunk.concatenate(pieces)


def _to_chunk(array: ak.Array, path: Path, first: int) -> JetChunk:
    """Chunk of a row group starting at entry ``first``; one-hot labels become ``label``."""
    onehot = [n for n in JETCLASS_LABELS if n in ak.fields(array)]
    if "label" not in ak.fields(array) and onehot:
        values = np.stack([ak.to_numpy(array[n]).astype(np.float64) for n in onehot], axis=1)
        ok = np.isin(values, (0.0, 1.0)).all(axis=1) & (values.sum(axis=1) == 1)
        if not ok.all():
            j = int(np.flatnonzero(~ok)[0])
            raise JetFileError(
                f"{path}: entry {first + j} has label columns "
                f"{dict(zip(onehot, values[j].tolist(), strict=True))}; expected one-hot"
            )
        label = values.argmax(axis=1)
        array = ak.with_field(
            array[[f for f in ak.fields(array) if f not in onehot]], label, "label"
        )
    chunk = JetChunk.from_awkward(array, name=str(path))
    if chunk.label is not None and len(chunk) and chunk.label.min() < 0:
        j = int(np.flatnonzero(chunk.label < 0)[0])
        raise JetFileError(
            f"{path}: entry {first + j} has label {int(chunk.label[j])}; expected a "
            "non-negative class index"
        )
    return chunk


_STOP = object()


class ParquetWriter(JetWriter):
    """Incremental writer of Parquet jet files in the particle_transformer layout.

    Every :meth:`write` becomes one row group of a file written by
    ``ak.to_parquet_row_groups`` (the same encoding as ``ak.to_parquet``, which ParT's
    converters use), with fields in ParT's order: ``label``, the jet fields, ``part_px,
    part_py, part_pz, part_energy`` and the other per-particle fields. With
    ``fill_kinematics`` (default) the ParT fields ``jet_pt, jet_eta, jet_phi, jet_energy,
    jet_mass, jet_nparticles, part_deta, part_dphi`` are computed from the constituents when
    absent (in the momentum dtype; ``jet_nparticles`` int64).

    Args:
        path: output ``.parquet``.
        fill_kinematics: add the ParT kinematic fields when absent.
        compression, compression_level: Parquet codec (ParT: ``"LZ4"``, level 4).
        overwrite: replace an existing ``path``.
    """

    format = "parquet"

    def __init__(
        self,
        path: PathLike,
        *,
        fill_kinematics: bool = True,
        compression: str = "LZ4",
        compression_level: int | None = 4,
        overwrite: bool = True,
    ) -> None:
        require("pyarrow", "parquet", feature="writing Parquet jet files")
        super().__init__(path, overwrite=overwrite)
        self.fill_kinematics = fill_kinematics
        self._options = {"compression": compression, "compression_level": compression_level}
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._type: str | None = None

    # ak.to_parquet_row_groups pulls arrays from an iterator; a thread turns write() calls
    # into that iterator, so the file is encoded exactly as ak.to_parquet encodes it.
    def _iterate(self) -> Iterator[ak.Array]:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            yield item

    def _run(self) -> None:
        try:
            ak.to_parquet_row_groups(self._iterate(), self.partial_path, **self._options)
        except BaseException as err:
            self._error = err
            while True:  # unblock a producer waiting on the queue
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break

    def _put(self, item: Any) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="jettag-parquet", daemon=True)
            self._thread.start()
        while True:
            if self._error is not None:
                raise JetFileError(f"{self.path}: writing Parquet failed: {self._error}") from (
                    self._error
                )
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                if not self._thread.is_alive():
                    raise JetFileError(f"{self.path}: the Parquet writer stopped") from self._error

    def _array(self, chunk: JetChunk) -> ak.Array:
        if chunk.label is not None and len(chunk) and chunk.label.min() < 0:
            raise ValueError(f"{self.path}: labels must be non-negative class indices")
        particle = dict(chunk.particle_fields)
        jets = dict(chunk.jet_fields)
        if self.fill_kinematics:
            jet_kin, part_kin = jet_kinematics(chunk)
            for k, v in jet_kin.items():
                jets.setdefault(k, v if k == "jet_nparticles" else v.astype(chunk.p4.dtype))
            for k, v in part_kin.items():
                particle.setdefault(k, v.astype(chunk.p4.dtype))
        p4 = dict(zip(P4_FIELDS, chunk.p4.T, strict=True))
        ordered = {n: p4[n] for n in ("part_px", "part_py", "part_pz", "part_energy")}
        ordered.update(particle)
        offsets = ak.index.Index64(chunk.offsets)
        contents: dict[str, ak.contents.Content] = {}
        if chunk.label is not None:
            contents["label"] = numpy_content(chunk.label)
        for k, v in jets.items():
            contents[k] = numpy_content(np.asarray(v))
        for k, v in ordered.items():
            contents[k] = ak.contents.ListOffsetArray(offsets, numpy_content(v))
        record = ak.contents.RecordArray(list(contents.values()), list(contents), length=len(chunk))
        return ak.Array(record)

    def _write(self, chunk: JetChunk) -> None:
        array = self._array(chunk)
        type_ = str(array.type.content)
        if self._type is None:
            self._type = type_
        elif type_ != self._type:
            raise ValueError(
                f"{self.path}: chunk has type {type_}, but the file was started with "
                f"{self._type}; every chunk must carry the same fields and dtypes"
            )
        self._put(array)

    def _finish(self) -> None:
        if self._thread is None:
            empty = JetChunk(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0))
            self._put(self._array(empty))
        self._put(_STOP)
        assert self._thread is not None
        self._thread.join()
        if self._error is not None:
            raise JetFileError(f"{self.path}: writing Parquet failed: {self._error}") from (
                self._error
            )

    def _abort(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            try:
                self._queue.put(_STOP, timeout=5)
            except queue.Full:
                pass
            self._thread.join(timeout=30)


def write_parquet(path: PathLike, jets: Any, **kwargs: Any) -> Path:
    """Write jets (one chunk or an iterable of chunks) with :class:`ParquetWriter`."""
    with ParquetWriter(path, **kwargs) as writer:
        for chunk in iter_jet_chunks(jets):
            writer.write(chunk)
    return writer.path
