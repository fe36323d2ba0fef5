"""Shared machinery of the dataset readers and writers.

Every reader turns a range of entries of one file into a :class:`JetChunk`: packed numpy
arrays (constituent four-vectors, CSR counts, labels, per-particle and per-jet fields). A
chunk converts cheaply to both public representations, the canonical awkward layout of jets
(:meth:`JetChunk.to_awkward`) and a :class:`~jettag.data.JetBatch` (:meth:`JetChunk.to_batch`),
so the file formats only ever implement "entries ``start:stop`` of file ``i`` -> chunk".

:class:`JetReader` adds what is common to all formats on top of that: path resolution, the
number of jets from file metadata, reads of global entry ranges across files, chunked
iteration with bounded memory, a small cache of open file handles, pickling for DataLoader
workers, and errors that name the file. :class:`JetWriter` writes to ``path + ".partial"``
and renames into place only on a successful :meth:`~JetWriter.close`.
"""

from __future__ import annotations

import glob
import os
import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import awkward as ak
import numpy as np
import torch

if TYPE_CHECKING:
    from jettag.data.batch import JetBatch

__all__ = [
    "P4_FIELDS",
    "JetChunk",
    "JetFileError",
    "JetReader",
    "JetWriter",
    "MissingKeyError",
    "jet_kinematics",
    "resolve_paths",
]

#: Canonical awkward field names of the four-vector components, in (E, px, py, pz) order.
P4_FIELDS = ("part_energy", "part_px", "part_py", "part_pz")

PathLike = str | os.PathLike


class JetFileError(ValueError):
    """A jet file cannot be read, or holds invalid data; the message names the file."""


class MissingKeyError(JetFileError, KeyError):
    """A key, tree, dataset, branch or column that the format requires is absent."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------------------
# JetChunk: packed numpy jets
# --------------------------------------------------------------------------------------


def offsets_from_counts(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def _gather_index(offsets: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Particle indices of jets ``index`` (in that order) for CSR ``offsets``."""
    starts = offsets[index]
    counts = offsets[index + 1] - starts
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    shift = np.repeat(starts - offsets_from_counts(counts)[:-1], counts)
    return np.arange(total, dtype=np.int64) + shift


@dataclass
class JetChunk:
    """Jets as packed numpy arrays: the internal currency of the readers and writers.

    Args:
        p4: ``(P, 4)`` constituent four-vectors ``(E, px, py, pz)`` in GeV, jets concatenated.
        counts: ``(B,)`` int64 number of constituents of each jet.
        label: ``(B,)`` int64 class labels, or ``None``.
        particle_fields: further per-particle arrays ``(P,)`` or ``(P, C)`` under their
            canonical names (``"part_pid"``, ``"part_charge"``, ...).
        jet_fields: per-jet arrays ``(B, ...)`` under their names (``"truth_p4"``, ``"jet_pt"``).

    Example:
        >>> import numpy as np
        >>> c = JetChunk(np.ones((3, 4), np.float32), np.array([2, 1]), np.array([0, 1]))
        >>> len(c), c.offsets.tolist()
        (2, [0, 2, 3])
        >>> c.to_awkward().fields[:4]
        ['part_energy', 'part_px', 'part_py', 'part_pz']
    """

    p4: np.ndarray
    counts: np.ndarray
    label: np.ndarray | None = None
    particle_fields: dict[str, np.ndarray] = field(default_factory=dict)
    jet_fields: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.counts = np.asarray(self.counts, dtype=np.int64)
        if self.p4.ndim != 2 or self.p4.shape[1] != 4:
            raise ValueError(f"JetChunk: p4 must have shape (P, 4), found {self.p4.shape}")
        if self.counts.ndim != 1 or (len(self.counts) and self.counts.min() < 0):
            raise ValueError("JetChunk: counts must be a 1-d array of non-negative integers")
        num_particles = int(self.counts.sum())
        if num_particles != len(self.p4):
            raise ValueError(
                f"JetChunk: counts sum to {num_particles} but p4 has {len(self.p4)} rows"
            )
        if self.label is not None:
            self.label = np.asarray(self.label, dtype=np.int64)
            if self.label.shape != self.counts.shape:
                raise ValueError(
                    f"JetChunk: label has shape {self.label.shape}, expected {self.counts.shape}"
                )
        for name, arr in self.particle_fields.items():
            if len(arr) != num_particles:
                raise ValueError(
                    f"JetChunk: particle field {name!r} has {len(arr)} rows, expected "
                    f"{num_particles}"
                )
        for name, arr in self.jet_fields.items():
            if len(arr) != len(self.counts):
                raise ValueError(
                    f"JetChunk: jet field {name!r} has {len(arr)} rows, expected {len(self.counts)}"
                )

    # -- basic properties -------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.counts)

    @property
    def num_particles(self) -> int:
        """Total number of constituents ``P``."""
        return len(self.p4)

    @property
    def offsets(self) -> np.ndarray:
        """``(B + 1,)`` int64 CSR offsets (``ptr``)."""
        return offsets_from_counts(self.counts)

    @property
    def batch_index(self) -> np.ndarray:
        """``(P,)`` int64 jet index of every constituent."""
        return np.repeat(np.arange(len(self.counts), dtype=np.int64), self.counts)

    # -- structural operations --------------------------------------------------------
    def slice(self, start: int, stop: int) -> JetChunk:
        """Jets ``start:stop`` (views where possible)."""
        start, stop, _ = slice(start, stop).indices(len(self))
        stop = max(stop, start)
        offsets = self.offsets
        a, b = int(offsets[start]), int(offsets[stop])
        return JetChunk(
            self.p4[a:b],
            self.counts[start:stop],
            None if self.label is None else self.label[start:stop],
            {k: v[a:b] for k, v in self.particle_fields.items()},
            {k: v[start:stop] for k, v in self.jet_fields.items()},
        )

    def take(self, index: Sequence[int] | np.ndarray) -> JetChunk:
        """Jets at ``index`` (any order, repeats allowed)."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        pidx = _gather_index(self.offsets, index)
        return JetChunk(
            self.p4[pidx],
            self.counts[index],
            None if self.label is None else self.label[index],
            {k: v[pidx] for k, v in self.particle_fields.items()},
            {k: v[index] for k, v in self.jet_fields.items()},
        )

    @staticmethod
    def concatenate(chunks: Sequence[JetChunk]) -> JetChunk:
        """Concatenate chunks with the same fields (jets in order)."""
        chunks = list(chunks)
        if not chunks:
            raise ValueError("JetChunk.concatenate: need at least one chunk")
        if len(chunks) == 1:
            return chunks[0]
        first = chunks[0]
        for c in chunks[1:]:
            if (
                (c.label is None) != (first.label is None)
                or set(c.particle_fields) != set(first.particle_fields)
                or set(c.jet_fields) != set(first.jet_fields)
            ):
                raise ValueError(
                    "JetChunk.concatenate: chunks have different fields: "
                    f"{first.field_names()} vs {c.field_names()}"
                )
        return JetChunk(
            np.concatenate([c.p4 for c in chunks]),
            np.concatenate([c.counts for c in chunks]),
            None if first.label is None else np.concatenate([c.label for c in chunks]),
            {
                k: np.concatenate([c.particle_fields[k] for c in chunks])
                for k in first.particle_fields
            },
            {k: np.concatenate([c.jet_fields[k] for c in chunks]) for k in first.jet_fields},
        )

    def field_names(self) -> list[str]:
        """Canonical awkward field names this chunk converts to, in order."""
        names = [*P4_FIELDS, *self.particle_fields]
        if self.label is not None:
            names.append("label")
        return names + list(self.jet_fields)

    def astype(self, dtype: np.dtype | type | None) -> JetChunk:
        """Cast the momenta and every floating-point field to ``dtype`` (``None``: unchanged)."""
        if dtype is None:
            return self
        dtype = np.dtype(dtype)

        def cast(a: np.ndarray) -> np.ndarray:
            return a.astype(dtype, copy=False) if np.issubdtype(a.dtype, np.floating) else a

        return JetChunk(
            self.p4.astype(dtype, copy=False),
            self.counts,
            self.label,
            {k: cast(v) for k, v in self.particle_fields.items()},
            {k: cast(v) for k, v in self.jet_fields.items()},
        )

    # -- validation -------------------------------------------------------------------
    def check_finite(self, source: str, first_entry: int = 0) -> None:
        """Raise :class:`JetFileError` naming ``source`` and the entry of a non-finite momentum."""
        # One cheap pass first: a sum is finite only if every term is (a finite sum that
        # overflows is merely sent to the exact check below).
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(self.p4.sum()):
                return
        finite = np.isfinite(self.p4).all(axis=1)
        if not finite.all():
            bad = int(np.flatnonzero(~finite)[0])
            jet = int(np.searchsorted(self.offsets, bad, side="right") - 1)
            comp = [P4_FIELDS[k] for k in range(4) if not np.isfinite(self.p4[bad, k])]
            raise JetFileError(
                f"{source}: entry {first_entry + jet} has a non-finite constituent momentum "
                f"(constituent {bad - int(self.offsets[jet])}, {', '.join(comp)} = "
                f"{self.p4[bad].tolist()}); expected finite (E, px, py, pz)"
            )

    # -- conversions ------------------------------------------------------------------
    def to_awkward(self) -> ak.Array:
        """The canonical awkward layout: jagged ``part_*`` fields, ``label``, jet fields."""
        offsets = ak.index.Index64(self.offsets)
        names: list[str] = []
        contents: list[ak.contents.Content] = []
        leaf = numpy_content
        for k, name in enumerate(P4_FIELDS):
            names.append(name)
            contents.append(ak.contents.ListOffsetArray(offsets, leaf(self.p4[:, k])))
        for name, arr in self.particle_fields.items():
            names.append(name)
            contents.append(ak.contents.ListOffsetArray(offsets, leaf(arr)))
        if self.label is not None:
            names.append("label")
            contents.append(leaf(self.label))
        for name, arr in self.jet_fields.items():
            names.append(name)
            contents.append(leaf(arr))
        return ak.Array(ak.contents.RecordArray(contents, names, length=len(self)))

    def to_batch(
        self,
        *,
        x_fields: Sequence[str] | None = None,
        dtype: torch.dtype | None = None,
    ) -> JetBatch:
        """A :class:`~jettag.data.JetBatch` (tensors share memory with the arrays when possible).

        Args:
            x_fields: per-particle fields stacked (in this order) into ``JetBatch.x``, cast to
                the momentum dtype. ``None``: ``part_x`` if present, else no ``x`` (as
                :meth:`JetBatch.from_awkward`); ``[]``: no ``x``.
            dtype: floating dtype of ``p4`` and of floating jet fields (default: as stored).
        """
        from jettag.data.batch import JetBatch

        p4 = torch.from_numpy(np.ascontiguousarray(self.p4))
        if dtype is not None:
            p4 = p4.to(dtype)
        if x_fields is None:
            x_fields = ["part_x"] if "part_x" in self.particle_fields else []
        x = None
        if x_fields:
            cols = [_columns(self._particle_field(n)) for n in x_fields]
            x = torch.from_numpy(np.concatenate(cols, axis=1).astype(np.float64, copy=False))
            x = x.to(p4.dtype)
        fields: dict[str, torch.Tensor] = {}
        for name, arr in self.jet_fields.items():
            t = torch.from_numpy(np.ascontiguousarray(arr))
            if t.is_floating_point() and dtype is not None:
                t = t.to(dtype)
            fields[name] = t
        label = None if self.label is None else torch.from_numpy(self.label)
        ptr = torch.from_numpy(self.offsets)
        return JetBatch(p4, ptr, x=x, label=label, fields=fields)

    def jet_dict(
        self,
        i: int,
        *,
        x_fields: Sequence[str] | None = None,
        dtype: torch.dtype | None = None,
        offsets: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Jet ``i`` as a dict for :meth:`JetBatch.collate`: ``p4``, ``x``, ``label``, fields.

        ``x_fields`` and ``dtype`` as in :meth:`to_batch`; pass precomputed ``offsets`` when
        calling this in a loop.
        """
        offsets = self.offsets if offsets is None else offsets
        a, b = int(offsets[i]), int(offsets[i + 1])
        p4 = torch.from_numpy(np.array(self.p4[a:b]))
        if dtype is not None:
            p4 = p4.to(dtype)
        out: dict[str, Any] = {"p4": p4}
        if x_fields is None:
            x_fields = ["part_x"] if "part_x" in self.particle_fields else []
        if x_fields:
            cols = [_columns(self._particle_field(n)[a:b]) for n in x_fields]
            out["x"] = torch.from_numpy(np.concatenate(cols, axis=1).astype(np.float64)).to(
                p4.dtype
            )
        if self.label is not None:
            out["label"] = torch.tensor(int(self.label[i]))
        for name, arr in self.jet_fields.items():
            t = torch.from_numpy(np.array(arr[i]))
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            out[name] = t
        return out

    def _particle_field(self, name: str) -> np.ndarray:
        try:
            return self.particle_fields[name]
        except KeyError:
            raise KeyError(
                f"x_fields: {name!r} is not a per-particle field of these jets; available: "
                f"{sorted(self.particle_fields)}"
            ) from None

    @staticmethod
    def from_awkward(array: ak.Array, *, name: str = "jets") -> JetChunk:
        """Chunk from jets in the canonical awkward layout (see :meth:`to_awkward`).

        Jagged fields other than the four momenta become particle fields, everything else
        (except ``label``) a jet field. Raises ``ValueError`` naming ``name`` for missing
        momenta, mismatched particle counts or non-numeric fields.
        """
        array = ak.Array(array)
        fields = ak.fields(array)
        missing = [f for f in P4_FIELDS if f not in fields]
        if missing:
            raise ValueError(
                f"{name}: missing canonical momentum field(s) {missing}; found fields {fields}"
            )
        columns = _record_columns(array, name)
        counts = columns[P4_FIELDS[0]][0]
        comps = []
        for f in P4_FIELDS:
            n, values = columns[f]
            if n is None or not np.array_equal(n, counts):
                raise ValueError(
                    f"{name}: field {f!r} must be jagged with the particle counts of part_energy"
                )
            comps.append(values)
        dtype = np.result_type(*comps)
        p4 = np.stack([c.astype(dtype, copy=False) for c in comps], axis=1)
        label = None
        particle_fields: dict[str, np.ndarray] = {}
        jet_fields: dict[str, np.ndarray] = {}
        for f in fields:
            if f in P4_FIELDS:
                continue
            n, values = columns[f]
            if f == "label":
                if n is not None or values.ndim != 1:
                    raise ValueError(
                        f"{name}: 'label' must be one integer per jet, found {array[f].type}"
                    )
                if not np.issubdtype(values.dtype, np.integer):
                    if not np.all(np.mod(values, 1) == 0):
                        raise ValueError(f"{name}: 'label' must hold integers, found {values[:5]}")
                label = values
            elif n is not None:
                if not np.array_equal(n, counts):
                    raise ValueError(
                        f"{name}: jagged field {f!r} has different particle counts than the momenta"
                    )
                particle_fields[f] = values
            else:
                jet_fields[f] = values
        return JetChunk(p4, counts, label, particle_fields, jet_fields)

    @staticmethod
    def from_batch(batch: JetBatch, *, x_names: Sequence[str] | None = None) -> JetChunk:
        """Chunk from a :class:`~jettag.data.JetBatch` (``x`` -> ``part_x`` or named columns)."""
        p4 = batch.p4.detach().cpu().numpy()
        counts = (batch.ptr[1:] - batch.ptr[:-1]).detach().cpu().numpy()
        label = None if batch.label is None else batch.label.detach().cpu().numpy()
        particle_fields: dict[str, np.ndarray] = {}
        if batch.x is not None:
            x = batch.x.detach().cpu().numpy()
            if x_names is not None:
                if len(x_names) != x.shape[1]:
                    raise ValueError(
                        f"x_names: {len(x_names)} names for {x.shape[1]} columns of JetBatch.x"
                    )
                particle_fields = {n: x[:, k] for k, n in enumerate(x_names)}
            else:
                particle_fields = {"part_x": x}
        jet_fields = {k: v.detach().cpu().numpy() for k, v in (batch.fields or {}).items()}
        return JetChunk(p4, counts, label, particle_fields, jet_fields)

    @staticmethod
    def coerce(jets: Any, *, name: str = "jets") -> JetChunk:
        """Accept a :class:`JetChunk`, a canonical awkward array or a ``JetBatch``."""
        if isinstance(jets, JetChunk):
            return jets
        if isinstance(jets, ak.Array):
            return JetChunk.from_awkward(jets, name=name)
        if hasattr(jets, "ptr") and hasattr(jets, "p4"):
            return JetChunk.from_batch(jets)
        raise TypeError(
            f"{name}: expected canonical awkward jets, a JetBatch or a JetChunk, "
            f"found {type(jets).__name__}"
        )


def _columns(arr: np.ndarray) -> np.ndarray:
    """``(P,)`` or ``(P, ...)`` -> ``(P, C)`` (works for ``P == 0``)."""
    return arr.reshape(len(arr), int(np.prod(arr.shape[1:], dtype=np.int64)))


def numpy_content(arr: np.ndarray) -> ak.contents.Content:
    """Awkward layout of a numpy array (inner dimensions regular)."""
    content = ak.contents.NumpyArray(np.ascontiguousarray(arr))
    return content.to_RegularArray() if arr.ndim > 1 else content


def _leaf_numpy(content: ak.contents.Content) -> np.ndarray | None:
    """numpy view of a NumpyArray or (nested) RegularArray layout; ``None`` otherwise."""
    if isinstance(content, ak.contents.NumpyArray):
        data = content.data
        return data if isinstance(data, np.ndarray) else None
    if isinstance(content, ak.contents.RegularArray):
        inner = _leaf_numpy(content.content)
        if inner is None:
            return None
        size = content.size
        return inner[: content.length * size].reshape(content.length, size, *inner.shape[1:])
    return None


def _record_columns(array: ak.Array, name: str) -> dict[str, tuple[np.ndarray | None, np.ndarray]]:
    """Every field as ``(counts or None, values)``: jagged fields give per-jet counts and the
    flat values, regular ones ``None`` and the ``(B, ...)`` array. Reads the layout directly
    (fast) and falls back to high-level awkward operations for other layouts."""
    layout = array.layout
    out: dict[str, tuple[np.ndarray | None, np.ndarray]] = {}
    fast = isinstance(layout, ak.contents.RecordArray)
    for f in ak.fields(array):
        got = None
        if fast:
            col = layout.content(f)
            if isinstance(col, ak.contents.ListOffsetArray) and col.length == layout.length:
                offsets = col.offsets.data
                inner = _leaf_numpy(col.content)
                if isinstance(offsets, np.ndarray) and inner is not None:
                    got = (np.diff(offsets).astype(np.int64), inner[offsets[0] : offsets[-1]])
            elif col.length >= layout.length:
                leaf = _leaf_numpy(col)
                if leaf is not None:
                    got = (None, leaf[: layout.length])
        if got is None:
            c = array[f]
            if c.ndim >= 2 and _is_var(c):
                got = (
                    ak.to_numpy(ak.num(c, axis=1)).astype(np.int64),
                    _flat_numpy(c, name, f),
                )
            else:
                got = (None, _numpy(c, name, f))
        if got[1].dtype.kind not in "biuf":
            raise ValueError(f"{name}: field {f!r} has non-numeric dtype {got[1].dtype}")
        out[f] = got
    return out


def _is_var(col: ak.Array) -> bool:
    layout = col.layout
    while isinstance(layout, ak.contents.IndexedArray | ak.contents.UnmaskedArray):
        layout = layout.content
    return isinstance(layout, ak.contents.ListOffsetArray | ak.contents.ListArray)


def _numpy(col: ak.Array, name: str, f: str) -> np.ndarray:
    try:
        out = ak.to_numpy(col, allow_missing=False)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{name}: field {f!r} of type {col.type} is not a numeric array") from err
    if out.dtype.kind not in "biuf":
        raise ValueError(f"{name}: field {f!r} has non-numeric dtype {out.dtype}")
    return out


def _flat_numpy(col: ak.Array, name: str, f: str) -> np.ndarray:
    return _numpy(ak.flatten(col, axis=1), name, f)


# --------------------------------------------------------------------------------------
# kinematics used by the writers (ParT / JetClass conventions)
# --------------------------------------------------------------------------------------


def jet_kinematics(chunk: JetChunk) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Jet and relative-constituent kinematics as the particle_transformer converters write them.

    Returns ``(jet_fields, particle_fields)``: ``jet_pt, jet_eta, jet_phi, jet_energy,
    jet_mass, jet_nparticles`` of the summed constituent four-momentum, and
    ``part_deta = (eta - jet_eta) * sign(jet_eta)`` (sign taken as +1 at 0) and
    ``part_dphi`` = wrapped ``phi - jet_phi``. Computed in float64.
    """
    from jettag import physics

    p4 = torch.from_numpy(chunk.p4.astype(np.float64))
    batch = torch.from_numpy(chunk.batch_index)
    jet = physics.jet_p4(p4, batch=batch, num_jets=len(chunk))
    jet_eta = physics.eta(jet)
    jet_phi = physics.phi(jet)
    sign = torch.where(jet_eta < 0, -1.0, 1.0).to(torch.float64)
    part_deta = (physics.eta(p4) - jet_eta[batch]) * sign[batch]
    part_dphi = physics.delta_phi(physics.phi(p4), jet_phi[batch])
    jets = {
        "jet_pt": physics.pt(jet).numpy(),
        "jet_eta": jet_eta.numpy(),
        "jet_phi": jet_phi.numpy(),
        "jet_energy": jet[:, 0].numpy(),
        "jet_mass": physics.mass(jet).numpy(),
        "jet_nparticles": chunk.counts.copy(),
    }
    return jets, {"part_deta": part_deta.numpy(), "part_dphi": part_dphi.numpy()}


# --------------------------------------------------------------------------------------
# paths
# --------------------------------------------------------------------------------------


def _natural_key(text: str) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def resolve_paths(
    path_or_paths: PathLike | Iterable[PathLike], *, extensions: Sequence[str] | None = None
) -> list[Path]:
    """Expand files, directories and glob patterns into an ordered list of existing files.

    Directories expand to their files with one of ``extensions`` (all files if ``None``);
    globs and directories are sorted in natural order (``f_2`` before ``f_10``). Raises
    ``FileNotFoundError`` naming the path when a file is missing or a pattern matches nothing.
    """
    items = [path_or_paths] if isinstance(path_or_paths, str | os.PathLike) else list(path_or_paths)
    if not items:
        raise FileNotFoundError("no input files given (empty list of paths)")
    out: list[Path] = []
    for item in items:
        text = os.fspath(item)
        path = Path(text).expanduser()
        if path.is_dir():
            found = [
                p
                for p in path.iterdir()
                if p.is_file()
                and not p.name.endswith(".partial")
                and (extensions is None or p.suffix.lower() in extensions)
            ]
            if not found:
                raise FileNotFoundError(
                    f"{path}: directory holds no files with extension {list(extensions or [])}"
                )
            out.extend(sorted(found, key=lambda p: _natural_key(p.name)))
        elif path.is_file():
            out.append(path)
        elif glob.has_magic(text):
            found = [Path(p) for p in glob.glob(os.path.expanduser(text)) if Path(p).is_file()]
            if not found:
                raise FileNotFoundError(f"{text}: pattern matches no files")
            out.extend(sorted(found, key=lambda p: _natural_key(p.name)))
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")
    return out


# --------------------------------------------------------------------------------------
# reader base class
# --------------------------------------------------------------------------------------


class JetReader:
    """Base class of the dataset readers: global entry ranges over a list of files.

    Subclasses implement ``_open(path)``, ``_num_entries(handle, path)`` and
    ``_read(handle, path, start, stop) -> JetChunk``; everything else lives here.

    Args:
        paths: files, directories or glob patterns (see :func:`resolve_paths`).
        dtype: floating dtype of momenta and floating fields (numpy dtype; ``None`` keeps
            the stored dtype). Default float32.
        max_open_files: number of open file handles kept per process.
        check: check that every constituent momentum read is finite (on by default); the
            format-specific checks (labels in range, known ids) always run.
    """

    #: Format name used by :func:`~jettag.data.formats.open_dataset`.
    format: ClassVar[str] = ""
    #: File extensions of this format (lower case, with the dot).
    extensions: ClassVar[tuple[str, ...]] = ()
    #: Jets per file read in :meth:`iter_batches` (rounded up to whole batches).
    read_size: ClassVar[int] = 8192

    def __init__(
        self,
        paths: PathLike | Iterable[PathLike],
        *,
        dtype: Any = np.float32,
        max_open_files: int = 8,
        check: bool = True,
    ) -> None:
        self.paths: list[Path] = resolve_paths(paths, extensions=self.extensions)
        self.dtype = None if dtype is None else np.dtype(dtype)
        if self.dtype is not None and not np.issubdtype(self.dtype, np.floating):
            raise ValueError(f"dtype: expected a floating dtype, found {self.dtype}")
        self.max_open_files = max(1, int(max_open_files))
        self.check = check
        self._lengths: list[int | None] = [None] * len(self.paths)
        self._handles: OrderedDict[int, Any] = OrderedDict()
        self._owner = os.getpid()

    # -- hooks ------------------------------------------------------------------------
    def _open(self, path: Path) -> Any:
        raise NotImplementedError

    def _close(self, handle: Any) -> None:
        close = getattr(handle, "close", None)
        if close is not None:
            close()

    def _num_entries(self, handle: Any, path: Path) -> int:
        raise NotImplementedError

    def _read(self, handle: Any, path: Path, start: int, stop: int) -> JetChunk:
        raise NotImplementedError

    # -- handles ----------------------------------------------------------------------
    def _handle(self, i: int) -> Any:
        if self._owner != os.getpid():
            # A forked DataLoader worker must not share the parent's file descriptors (their
            # read offsets are shared between processes): forget them and reopen.
            self._handles = OrderedDict()
            self._owner = os.getpid()
        if i in self._handles:
            self._handles.move_to_end(i)
            return self._handles[i]
        path = self.paths[i]
        try:
            handle = self._open(path)
        except (JetFileError, FileNotFoundError, ImportError, MemoryError):
            raise
        except Exception as err:
            raise JetFileError(
                f"{path}: cannot open as a {self.format} file (truncated or corrupt?): "
                f"{type(err).__name__}: {err}"
            ) from err
        self._handles[i] = handle
        while len(self._handles) > self.max_open_files:
            _, old = self._handles.popitem(last=False)
            self._close(old)
        return handle

    def close(self) -> None:
        """Close every open file handle (the reader reopens files on demand)."""
        if self._owner != os.getpid():
            self._handles = OrderedDict()
        while self._handles:
            _, h = self._handles.popitem()
            try:
                self._close(h)
            except Exception:  # closing a broken file must not mask the real error
                pass

    def __enter__(self) -> JetReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = OrderedDict()  # file handles do not cross process boundaries
        state["_owner"] = None
        return state

    # -- sizes ------------------------------------------------------------------------
    def num_entries(self, i: int) -> int:
        """Number of jets in file ``i`` (from metadata; cached)."""
        n = self._lengths[i]
        if n is None:
            handle = self._handle(i)
            try:
                n = int(self._num_entries(handle, self.paths[i]))
            except (JetFileError, ImportError, MemoryError):
                raise
            except Exception as err:
                raise JetFileError(
                    f"{self.paths[i]}: cannot read the number of entries: "
                    f"{type(err).__name__}: {err}"
                ) from err
            self._lengths[i] = n
        return n

    @property
    def file_lengths(self) -> list[int]:
        """Number of jets of every file."""
        return [self.num_entries(i) for i in range(len(self.paths))]

    @property
    def num_files(self) -> int:
        return len(self.paths)

    def __len__(self) -> int:
        return sum(self.file_lengths)

    def __repr__(self) -> str:
        files = self.paths[0].name if len(self.paths) == 1 else f"{len(self.paths)} files"
        return f"{type(self).__name__}({files})"

    def _cumulative(self) -> np.ndarray:
        return offsets_from_counts(np.asarray(self.file_lengths, dtype=np.int64))

    def locate(self, index: int) -> tuple[int, int]:
        """``(file index, entry within the file)`` of global jet ``index``."""
        cum = self._cumulative()
        n = int(cum[-1])
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"jet index {index} out of range for {n} jets")
        f = int(np.searchsorted(cum, index, side="right") - 1)
        return f, index - int(cum[f])

    # -- reading ----------------------------------------------------------------------
    def read_file(self, i: int, start: int = 0, stop: int | None = None) -> JetChunk:
        """Entries ``start:stop`` of file ``i`` as a :class:`JetChunk`."""
        n = self.num_entries(i)
        start, stop, _ = slice(start, stop).indices(n)
        return self._read_checked(self._handle(i), i, start, max(stop, start))

    def _read_checked(self, handle: Any, i: int, start: int, stop: int) -> JetChunk:
        """:meth:`read_file` of a valid range with an open handle (may run in a thread)."""
        path = self.paths[i]
        try:
            chunk = self._read(handle, path, start, stop)
        except (JetFileError, ImportError, MemoryError):
            raise
        except Exception as err:
            raise JetFileError(
                f"{path}: failed to read entries {start}..{stop} (truncated or corrupt file?): "
                f"{type(err).__name__}: {err}"
            ) from err
        if len(chunk) != stop - start:
            raise JetFileError(
                f"{path}: expected {stop - start} entries from {start}..{stop}, got {len(chunk)} "
                "(truncated file?)"
            )
        if self.check:
            chunk.check_finite(str(path), start)
        return chunk.astype(self.dtype)

    def read_chunk(self, start: int = 0, stop: int | None = None) -> JetChunk:
        """Global jets ``start:stop`` (across files) as one :class:`JetChunk`."""
        return JetChunk.concatenate(list(self._iter_range(start, stop, None)))

    def read(self, start: int = 0, stop: int | None = None) -> ak.Array:
        """Global jets ``start:stop`` in the canonical awkward layout."""
        return self.read_chunk(start, stop).to_awkward()

    def read_batch(
        self,
        start: int = 0,
        stop: int | None = None,
        *,
        x_fields: Sequence[str] | None = None,
        dtype: torch.dtype | None = None,
    ) -> JetBatch:
        """Global jets ``start:stop`` as a :class:`~jettag.data.JetBatch`."""
        return self.read_chunk(start, stop).to_batch(x_fields=x_fields, dtype=dtype)

    def _iter_range(self, start: int, stop: int | None, step: int | None) -> Iterator[JetChunk]:
        """Pieces of global range ``start:stop``, each within one file and at most ``step`` long."""
        cum = self._cumulative()
        start, stop, _ = slice(start, stop).indices(int(cum[-1]))
        if stop <= start:
            yield (
                self.read_file(0, 0, 0)
                if self.paths
                else JetChunk(np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
            )
            return
        for i in range(len(self.paths)):
            a, b = max(start, int(cum[i])), min(stop, int(cum[i + 1]))
            if a >= b:
                continue
            lo, hi = a - int(cum[i]), b - int(cum[i])
            s = step or (hi - lo)
            yield from self._read_pieces(i, [(pos, min(pos + s, hi)) for pos in range(lo, hi, s)])

    def _read_pieces(self, i: int, ranges: list[tuple[int, int]]) -> Iterator[JetChunk]:
        """Entries ``a:b`` of file ``i`` for each ``(a, b)`` of ``ranges``, in order.

        One after the other here; a reader whose reads can run in parallel overrides this.
        """
        for a, b in ranges:
            yield self.read_file(i, a, b)

    def iter_chunks(
        self, chunk_size: int = 10_000, *, start: int = 0, stop: int | None = None
    ) -> Iterator[JetChunk]:
        """Stream jets ``start:stop`` in chunks of exactly ``chunk_size`` (the last may be shorter).

        Files are read in order, piece by piece, so memory stays bounded by about two chunks.
        """
        if chunk_size <= 0:
            raise ValueError(f"chunk_size: expected a positive integer, found {chunk_size}")
        pending: list[JetChunk] = []
        n_pending = 0
        for piece in self._iter_range(start, stop, chunk_size):
            while len(piece):
                take = min(chunk_size - n_pending, len(piece))
                pending.append(piece.slice(0, take))
                n_pending += take
                piece = piece.slice(take, len(piece))
                if n_pending == chunk_size:
                    yield JetChunk.concatenate(pending)
                    pending, n_pending = [], 0
        if n_pending:
            yield JetChunk.concatenate(pending)

    def iter_awkward(
        self, chunk_size: int = 10_000, *, start: int = 0, stop: int | None = None
    ) -> Iterator[ak.Array]:
        """Stream jets as canonical awkward arrays of ``chunk_size`` jets."""
        for chunk in self.iter_chunks(chunk_size, start=start, stop=stop):
            yield chunk.to_awkward()

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
        """Stream jets as ``JetBatch`` es of ``batch_size`` jets, in file order.

        Files are read in pieces of a whole number of batches of at least
        :attr:`read_size` jets (fewer, larger reads are much faster), then split.
        """
        per_read = max(1, -(-self.read_size // batch_size)) if batch_size > 0 else 1
        for chunk in self.iter_chunks(batch_size * per_read, start=start, stop=stop):
            for s in range(0, len(chunk), batch_size):
                piece = chunk.slice(s, min(s + batch_size, len(chunk)))
                if drop_last and len(piece) < batch_size:
                    return
                yield piece.to_batch(x_fields=x_fields, dtype=dtype)


# --------------------------------------------------------------------------------------
# writer base class
# --------------------------------------------------------------------------------------


class JetWriter:
    """Base class of the incremental writers: ``write`` chunks, then ``close``.

    Data goes to ``path + ".partial"``; :meth:`close` finishes the file and renames it to
    ``path``, so a file under the final name is always complete. Leaving a ``with`` block
    through an exception (or calling :meth:`abort`) deletes the partial file instead.
    """

    format: ClassVar[str] = ""

    def __init__(self, path: PathLike, *, overwrite: bool = True) -> None:
        self.path = Path(path).expanduser()
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path}: exists (pass overwrite=True to replace it)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial_path = self.path.with_name(self.path.name + ".partial")
        if self.partial_path.exists():
            self.partial_path.unlink()
        self.num_written = 0
        self._finished = False

    def write(self, jets: Any) -> None:
        """Append jets (canonical awkward array, ``JetBatch`` or ``JetChunk``)."""
        if self._finished:
            raise ValueError(f"{self.path}: writer is already closed")
        chunk = JetChunk.coerce(jets)
        chunk.check_finite("jets")
        self._write(chunk)
        self.num_written += len(chunk)

    def close(self) -> Path:
        """Finish the file and move it to its final name; returns the final path."""
        if self._finished:
            return self.path
        try:
            self._finish()
        except BaseException:
            self.abort()
            raise
        os.replace(self.partial_path, self.path)
        self._finished = True
        return self.path

    def abort(self) -> None:
        """Discard everything written (the final path is left untouched)."""
        if self._finished:
            return
        self._finished = True
        try:
            self._abort()
        finally:
            if self.partial_path.exists():
                self.partial_path.unlink()

    def __enter__(self) -> JetWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # hooks
    def _write(self, chunk: JetChunk) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def _abort(self) -> None:
        """Release resources without finishing the file."""


def iter_jet_chunks(jets: Any) -> Iterator[JetChunk]:
    """One chunk or an iterable of chunks (awkward arrays, JetBatches, JetChunks)."""
    if isinstance(jets, JetChunk | ak.Array) or (hasattr(jets, "ptr") and hasattr(jets, "p4")):
        yield JetChunk.coerce(jets)
        return
    if isinstance(jets, Mapping) or not isinstance(jets, Iterable):
        raise TypeError(
            "jets: expected canonical awkward jets, a JetBatch, a JetChunk or an iterable of "
            f"them, found {type(jets).__name__}"
        )
    for item in jets:
        yield JetChunk.coerce(item)
