"""Quark/gluon jets of the EnergyFlow package (Zenodo 3164691 / 3066475): ``.npz`` files.

Each file (``QG_jets.npz``, ``QG_jets_1.npz`` ... ``QG_jets_19.npz``, ``QG_jets_withbc_<k>.npz``
and the Herwig variants) holds ``X`` of shape ``(N, M, 4)`` with columns ``(pt, rapidity,
phi, pdgid)``, zero-padded after the last particle (padding has ``pt == 0``; ``M`` differs
between files), and ``y`` of shape ``(N,)``, 1 = quark, 0 = gluon. Particles are not sorted.

The reader never loads a whole file: an ``X.npy`` member stored without compression is
memory-mapped, a compressed one is decompressed as a stream, chunk by chunk. Four-vectors
are built with :func:`jettag.physics.from_ptyphim` and the PDG mass of each particle's
``|pdgid|`` (or massless); the id is kept as ``part_pid``.

Example:
    >>> from jettag.data.formats import QGNpzReader      # doctest: +SKIP
    >>> reader = QGNpzReader("QG_jets*.npz")               # doctest: +SKIP
    >>> reader.read(0, 1).fields                           # doctest: +SKIP
    ['part_energy', 'part_px', 'part_py', 'part_pz', 'part_pid', 'label']
"""

from __future__ import annotations

import math
import struct
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from jettag.data.formats._common import (
    JetChunk,
    JetFileError,
    JetReader,
    JetWriter,
    MissingKeyError,
    PathLike,
    iter_jet_chunks,
)

__all__ = ["PDG_MASSES", "QGNpzReader", "QGNpzWriter", "pdg_mass", "write_qg_npz"]

#: Masses in GeV (PDG Review of Particle Physics 2024) by ``|pdgid|``: the final-state ids
#: of the quark/gluon samples (photon, e, mu, pi+, K+, K_L, n, p) and, in case a generator
#: keeps them stable, K_S and the weakly decaying hyperons.
PDG_MASSES: dict[int, float] = {
    22: 0.0,
    11: 0.51099895000e-3,
    13: 0.1056583755,
    211: 0.13957039,
    321: 0.493677,
    130: 0.497611,
    310: 0.497611,
    2112: 0.93956542052,
    2212: 0.93827208816,
    3122: 1.115683,
    3112: 1.197449,
    3222: 1.18937,
    3312: 1.32171,
    3322: 1.31486,
    3334: 1.67245,
}

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")


def pdg_mass(pid: np.ndarray) -> np.ndarray:
    """PDG masses (GeV) for integer ids (by ``|pid|``); raises ``KeyError`` naming unknown ids."""
    absid = np.abs(np.asarray(pid, dtype=np.int64))
    keys = np.array(sorted(PDG_MASSES), dtype=np.int64)
    values = np.array([PDG_MASSES[k] for k in keys], dtype=np.float64)
    pos = np.clip(np.searchsorted(keys, absid), 0, len(keys) - 1)
    known = keys[pos] == absid
    if not known.all():
        unknown = sorted(set(np.asarray(pid).reshape(-1)[~known.reshape(-1)].tolist()))
        raise KeyError(f"no mass for PDG id(s) {unknown[:10]}; known |pid|: {sorted(PDG_MASSES)}")
    return values[pos]


def _read_npy_header(fp: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fp)
    return np.lib.format.read_array_header_2_0(fp)


class _NpyMember:
    """Rows ``start:stop`` of a ``.npy`` member of a zip, memory-mapped or streamed."""

    def __init__(self, zf: zipfile.ZipFile, path: Path, name: str) -> None:
        self.zf, self.path, self.name = zf, path, name
        info = zf.getinfo(name)
        with zf.open(info) as fp:
            self.shape, self.fortran, self.dtype = _read_npy_header(fp)
            self.header_len = fp.tell()
        if self.dtype.hasobject:
            raise JetFileError(f"{path}: member {name} holds Python objects, expected numbers")
        self.row_bytes = self.dtype.itemsize * math.prod(self.shape[1:])
        self.memmap: np.ndarray | None = None
        self.stream: IO[bytes] | None = None
        self.full: np.ndarray | None = None
        if self.fortran:
            # Column-major rows are not contiguous on disk; such a member is read whole.
            with zf.open(info) as fp:
                self.full = np.lib.format.read_array(fp)
        elif info.compress_type == zipfile.ZIP_STORED and self.shape[0] > 0:
            with open(path, "rb") as raw:
                raw.seek(info.header_offset)
                fields = _LOCAL_HEADER.unpack(raw.read(_LOCAL_HEADER.size))
            if fields[0] != b"PK\x03\x04":
                raise JetFileError(f"{path}: corrupt zip local header for member {name}")
            offset = info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1]
            offset += self.header_len
            if offset + self.row_bytes * self.shape[0] > path.stat().st_size:
                raise JetFileError(
                    f"{path}: member {name} needs {self.row_bytes * self.shape[0]} bytes of data "
                    "but the file is shorter (truncated file)"
                )
            self.memmap = np.memmap(
                path, dtype=self.dtype, mode="r", offset=offset, shape=self.shape
            )

    def read(self, start: int, stop: int) -> np.ndarray:
        if self.full is not None:
            return self.full[start:stop]
        if self.memmap is not None:
            return np.array(self.memmap[start:stop])
        if self.stream is None:
            self.stream = self.zf.open(self.name)
        # ZipExtFile seeks forward by decompressing and backward by restarting the member;
        # sequential chunked reads therefore decompress every byte once.
        self.stream.seek(self.header_len + start * self.row_bytes)
        want = (stop - start) * self.row_bytes
        data = self.stream.read(want)
        if len(data) != want:
            raise JetFileError(
                f"{self.path}: member {self.name} ended after {len(data)} of {want} bytes of "
                f"rows {start}..{stop} (truncated file)"
            )
        return np.frombuffer(data, dtype=self.dtype).reshape((stop - start, *self.shape[1:]))

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        self.memmap = None
        self.full = None


class _NpzHandle:
    def __init__(self, path: Path) -> None:
        self.zf = zipfile.ZipFile(path)
        try:
            names = set(self.zf.namelist())
            for key in ("X", "y"):
                if f"{key}.npy" not in names:
                    found = sorted(n.removesuffix(".npy") for n in names)
                    raise MissingKeyError(
                        f"{path}: no array {key!r} in this .npz (found {found}); the quark/gluon "
                        "files hold X (jets) and y (labels)"
                    )
            self.X = _NpyMember(self.zf, path, "X.npy")
            if len(self.X.shape) != 3 or self.X.shape[2] < 4:
                raise JetFileError(
                    f"{path}: X has shape {self.X.shape}, expected (N, M, 4) with columns "
                    "(pt, rapidity, phi, pdgid)"
                )
            with self.zf.open("y.npy") as fp:
                y = np.lib.format.read_array(fp)
            if y.ndim == 2 and y.shape[1] == 1:
                y = y[:, 0]
            if y.shape != (self.X.shape[0],):
                raise JetFileError(
                    f"{path}: y has shape {y.shape}, expected ({self.X.shape[0]},) like X"
                )
            self.y = y
        except BaseException:
            self.zf.close()
            raise

    def close(self) -> None:
        self.X.close()
        self.zf.close()


class QGNpzReader(JetReader):
    """Reader of the EnergyFlow quark/gluon ``.npz`` files (``X``: pt, y, phi, pid; ``y``).

    Yields ``part_energy, part_px, part_py, part_pz`` (from ``pt, rapidity, phi`` and the
    PDG mass of ``|pid|``, or zero mass with ``massless=True``), ``part_pid`` (int64) and
    ``label`` (1 = quark, 0 = gluon). Padding (``pt == 0``) is dropped; the stored particle
    order is kept unless ``sort_by_pt`` (descending pT, as ParT's converter does).

    Args:
        paths: file(s), directory or glob (``"QG_jets*.npz"``).
        massless: build massless four-vectors (ParT's convention) instead of PDG masses.
        sort_by_pt: sort each jet's particles by decreasing pT.
        dtype, max_open_files, check: see :class:`~jettag.data.formats.JetReader`.

    Raises ``JetFileError`` naming the file and entry for an unknown or non-integer pid
    (unless ``massless``), labels other than 0/1 and non-finite values.
    """

    format = "qg-npz"
    extensions = (".npz",)

    def __init__(
        self,
        paths: PathLike | Iterable[PathLike],
        *,
        massless: bool = False,
        sort_by_pt: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("max_open_files", 32)
        super().__init__(paths, **kwargs)
        self.massless = massless
        self.sort_by_pt = sort_by_pt

    def _open(self, path: Path) -> _NpzHandle:
        return _NpzHandle(path)

    def _num_entries(self, handle: _NpzHandle, path: Path) -> int:
        return int(handle.X.shape[0])

    def _read(self, handle: _NpzHandle, path: Path, start: int, stop: int) -> JetChunk:
        X = handle.X.read(start, stop)[:, :, :4]
        y = handle.y[start:stop]
        finite = np.isfinite(X).all(axis=(1, 2))
        if not finite.all():
            i = int(np.flatnonzero(~finite)[0])
            raise JetFileError(
                f"{path}: entry {start + i} of X has non-finite values; expected finite "
                "(pt, rapidity, phi, pdgid)"
            )
        bad = ~np.isin(y, (0, 1))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise JetFileError(
                f"{path}: entry {start + i} has y = {y[i].item()!r}; expected 0 or 1"
            )
        pt = X[:, :, 0]
        if self.sort_by_pt:
            order = np.argsort(-pt, axis=1, kind="stable")
            X = np.take_along_axis(X, order[:, :, None], axis=1)
            pt = X[:, :, 0]
        mask = pt > 0
        counts = mask.sum(axis=1).astype(np.int64)
        parts = X[mask].astype(np.float64)  # (P, 4)
        pid_f = parts[:, 3]
        pid = np.rint(pid_f).astype(np.int64)
        if np.any(pid != pid_f):
            k = int(np.flatnonzero(pid != pid_f)[0])
            entry = start + int(np.searchsorted(np.cumsum(counts), k, side="right"))
            raise JetFileError(f"{path}: entry {entry} has non-integer pdgid {pid_f[k].item()!r}")
        if self.massless:
            mass = np.zeros(len(pid))
        else:
            try:
                mass = pdg_mass(pid)
            except KeyError as err:
                unknown = ~np.isin(np.abs(pid), list(PDG_MASSES))
                k = int(np.flatnonzero(unknown)[0])
                entry = start + int(np.searchsorted(np.cumsum(counts), k, side="right"))
                raise JetFileError(
                    f"{path}: entry {entry} has a particle with PDG id {int(pid[k])} of unknown "
                    f"mass (known |pid|: {sorted(PDG_MASSES)}); pass massless=True to ignore "
                    "masses"
                ) from err
        from jettag.physics import from_ptyphim

        t = torch.from_numpy(parts)
        p4 = from_ptyphim(t[:, 0], t[:, 1], t[:, 2], torch.from_numpy(mass)).numpy()
        return JetChunk(p4, counts, y.astype(np.int64), {"part_pid": pid}, {})


class QGNpzWriter(JetWriter):
    """Incremental writer of ``.npz`` files in the EnergyFlow quark/gluon layout.

    ``X`` ``(N, M, 4)`` float64 with ``(pt, rapidity, phi, pdgid)`` per particle, zero-padded,
    and ``y`` ``(N,)`` (the jets' ``label``, 0 or 1), as ``numpy.savez(path, X=X, y=y)``
    writes them. ``M`` is ``num_particles`` or the largest multiplicity written. Chunks are
    spooled to a temporary file next to the output until :meth:`close`, so memory stays
    bounded. Each particle's ``phi`` is written within pi of its jet's azimuth (no
    wrap-around inside a jet). The PDG id comes from the per-particle field ``part_pid``.
    The format stores no masses: a reader rebuilds them from the ids, so a four-vector whose
    mass differs from the PDG mass of its id does not round-trip exactly.

    Args:
        path: output ``.npz``.
        num_particles: ``M``; longer jets raise unless ``truncate`` (keep the first ``M``).
        compressed: deflate the members (``numpy.savez_compressed``); default stored.
        label_dtype: dtype of ``y`` (float64 by default; the published dtype is unverified).
        overwrite: replace an existing ``path``.
    """

    format = "qg-npz"

    def __init__(
        self,
        path: PathLike,
        *,
        num_particles: int | None = None,
        truncate: bool = False,
        compressed: bool = False,
        label_dtype: Any = np.float64,
        overwrite: bool = True,
    ) -> None:
        super().__init__(path, overwrite=overwrite)
        self.num_particles = num_particles
        self.truncate = truncate
        self.compressed = compressed
        self.label_dtype = np.dtype(label_dtype)
        self._spool = tempfile.TemporaryFile(dir=self.path.parent, prefix=".qg_spool_")
        self._counts: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    def _write(self, chunk: JetChunk) -> None:
        from jettag import physics

        if chunk.label is None:
            raise ValueError(f"{self.path}: jets need a 'label' (y: 1 = quark, 0 = gluon)")
        if not np.isin(chunk.label, (0, 1)).all():
            raise ValueError(f"{self.path}: labels must be 0 (gluon) or 1 (quark)")
        pid = chunk.particle_fields.get("part_pid")
        if pid is None:
            raise ValueError(
                f"{self.path}: jets need the per-particle field 'part_pid' (PDG id), which the "
                "quark/gluon format stores in X[..., 3]"
            )
        p4 = torch.from_numpy(chunk.p4.astype(np.float64))
        batch = torch.from_numpy(chunk.batch_index)
        pt = physics.pt(p4)
        if bool((pt <= 0).any()):
            raise ValueError(
                f"{self.path}: a particle has pT = 0, which the quark/gluon format reserves for "
                "padding"
            )
        jet_phi = physics.phi(physics.jet_p4(p4, batch=batch, num_jets=len(chunk)))[batch]
        phi = jet_phi + physics.delta_phi(physics.phi(p4), jet_phi)
        rows = np.stack(
            [pt.numpy(), physics.rapidity(p4).numpy(), phi.numpy(), np.asarray(pid, np.float64)],
            axis=1,
        )
        self._spool.write(np.ascontiguousarray(rows).tobytes())
        self._counts.append(chunk.counts.copy())
        self._labels.append(chunk.label.copy())

    def _finish(self) -> None:
        counts = np.concatenate(self._counts) if self._counts else np.zeros(0, np.int64)
        labels = np.concatenate(self._labels) if self._labels else np.zeros(0, np.int64)
        m = self.num_particles if self.num_particles is not None else int(counts.max(initial=0))
        if len(counts) and counts.max() > m and not self.truncate:
            raise ValueError(
                f"{self.path}: a jet has {int(counts.max())} particles, more than "
                f"num_particles={m}; pass truncate=True to keep the first {m}"
            )
        n = len(counts)
        compression = zipfile.ZIP_DEFLATED if self.compressed else zipfile.ZIP_STORED
        self._spool.seek(0)
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype("<f8")),
            "fortran_order": False,
            "shape": (n, m, 4),
        }
        block = 4096
        with zipfile.ZipFile(self.partial_path, "w", compression=compression) as zf:
            with zf.open("X.npy", "w", force_zip64=True) as fp:
                np.lib.format.write_array_header_1_0(fp, header)
                for a in range(0, n, block):
                    c = counts[a : a + block]
                    rows = np.frombuffer(self._spool.read(int(c.sum()) * 32), dtype="<f8")
                    rows = rows.reshape(-1, 4)
                    dense = np.zeros((len(c), m, 4), dtype="<f8")
                    pos = np.arange(len(rows)) - np.repeat(np.cumsum(c) - c, c)
                    keep = pos < m
                    dense[np.repeat(np.arange(len(c)), c)[keep], pos[keep]] = rows[keep]
                    fp.write(dense.tobytes())
            with zf.open("y.npy", "w", force_zip64=True) as fp:
                np.lib.format.write_array(fp, labels.astype(self.label_dtype))
        self._spool.close()

    def _abort(self) -> None:
        self._spool.close()


def write_qg_npz(path: PathLike, jets: Any, **kwargs: Any) -> Path:
    """Write jets (one chunk or an iterable of chunks) to ``path`` with :class:`QGNpzWriter`."""
    with QGNpzWriter(path, **kwargs) as writer:
        for chunk in iter_jet_chunks(jets):
            writer.write(chunk)
    return writer.path
