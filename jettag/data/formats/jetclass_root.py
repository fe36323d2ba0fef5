"""JetClass (Zenodo 6619768): ROOT files with a TTree ``tree``, read and written with uproot.

Per jet: jagged ``part_*`` branches (``part_px, part_py, part_pz, part_energy, part_deta,
part_dphi, part_d0val, part_d0err, part_dzval, part_dzerr, part_charge`` as float32 and the
``part_is*`` flags as int32), scalar ``jet_*`` float32 branches, ten one-hot ``label_*``
branches with mixed dtypes (``label_QCD`` float32; ``label_Hbb ... label_Hqql`` bool;
``label_Zqq ... label_Tbl`` int32) and ``aux_*`` truth branches ("should not be used in
training"). Files are read range by range with ``tree.arrays(entry_start=, entry_stop=)``
(what ``tree.iterate(step_size=...)`` does), so memory is bounded by the chunk size.

Example:
    >>> from jettag.data.formats import JetClassReader              # doctest: +SKIP
    >>> reader = JetClassReader("val_5M/*.root")                    # doctest: +SKIP
    >>> next(reader.iter_batches(512)).label[:4]                    # doctest: +SKIP
    tensor([1, 1, 1, 1])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from jettag.data.formats._common import (
    P4_FIELDS,
    JetChunk,
    JetFileError,
    JetReader,
    JetWriter,
    MissingKeyError,
    PathLike,
    _record_columns,
    iter_jet_chunks,
    jet_kinematics,
)

__all__ = [
    "BTAG_LABELS",
    "JETCLASS_LABELS",
    "JETCLASS_LABEL_DTYPES",
    "JetClassReader",
    "JetClassWriter",
    "write_jetclass_root",
]

#: The ten one-hot label branches, in the canonical class order (label = index here).
JETCLASS_LABELS: tuple[str, ...] = (
    "label_QCD",
    "label_Hbb",
    "label_Hcc",
    "label_Hgg",
    "label_H4q",
    "label_Hqql",
    "label_Zqq",
    "label_Wqq",
    "label_Tbqq",
    "label_Tbl",
)

#: One-hot label branches of the generator's b-tagging files (:mod:`jettag.data.generate.btag`,
#: data card ``generated-b-tagging``) in class order: light (0), b (1), c (2, only when
#: generated with charm). The reader uses them by default for files that have them and no
#: JetClass label branch.
BTAG_LABELS: tuple[str, ...] = ("label_light", "label_b", "label_c")

#: Branch dtypes of the label branches in the published files.
JETCLASS_LABEL_DTYPES: dict[str, np.dtype] = {
    "label_QCD": np.dtype(np.float32),
    **{n: np.dtype(np.bool_) for n in JETCLASS_LABELS[1:6]},
    **{n: np.dtype(np.int32) for n in JETCLASS_LABELS[6:]},
}

_P4_BRANCHES = ("part_px", "part_py", "part_pz", "part_energy")


class _TreeHandle:
    def __init__(self, file: Any, tree: Any, branches: list[str], labels: list[str]) -> None:
        self.file, self.tree, self.branches, self.labels = file, tree, branches, labels

    def close(self) -> None:
        self.file.close()


class JetClassReader(JetReader):
    """Reader of JetClass ROOT files (and others with jagged ``part_*`` branches).

    Yields ``part_energy, part_px, part_py, part_pz``, every other jagged branch (the
    ``part_*`` branches) as a particle field, every other scalar or fixed-size branch
    (``jet_*``; ``aux_*`` only with ``aux=True``) as a jet field, and ``label`` = index of the
    one set branch among ``label_branches``. Other ``label_*`` branches and the counter
    branches of jagged arrays are skipped.

    Args:
        paths: file(s), directory or glob.
        tree: name of the TTree (``"tree"``).
        label_branches: one-hot label branches in class order (default
            :data:`JETCLASS_LABELS`, or :data:`BTAG_LABELS` for a file that has
            ``label_light`` and ``label_b`` and no JetClass label, as the generator's
            b-tagging files); ``None`` or ``()`` reads no label.
        branches: restrict the extra ``part_*`` / ``jet_*`` branches to these names
            (the four momenta and the labels are always read).
        aux: also read the ``aux_*`` truth branches.
        dtype, max_open_files, check: see :class:`~jettag.data.formats.JetReader`.

    Raises ``JetFileError`` naming the file (and entry) for a missing tree or branch, jagged
    branches of unequal lengths, or a label row that is not one-hot.
    """

    format = "jetclass-root"
    extensions = (".root",)

    def __init__(
        self,
        paths: PathLike | Iterable[PathLike],
        *,
        tree: str = "tree",
        label_branches: Sequence[str] | None = JETCLASS_LABELS,
        branches: Sequence[str] | None = None,
        aux: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(paths, **kwargs)
        self.tree = tree
        self.label_branches = tuple(label_branches or ())
        self._default_labels = label_branches is JETCLASS_LABELS
        self.branches = None if branches is None else tuple(branches)
        self.aux = aux

    def _open(self, path: Path) -> _TreeHandle:
        import uproot

        f = uproot.open(path)
        try:
            if self.tree not in f:
                found = [k.split(";")[0] for k in f.keys(recursive=False)]
                raise MissingKeyError(
                    f"{path}: no tree {self.tree!r} in this ROOT file (found {found}); JetClass "
                    "files hold a TTree named 'tree'"
                )
            tree = f[self.tree]
            if not hasattr(tree, "num_entries") or not hasattr(tree, "arrays"):
                raise JetFileError(
                    f"{path}: {self.tree!r} is a {type(tree).__name__}, expected a TTree"
                )
            keys = _flat_keys(tree)
            labels = self._labels_of(keys)
            missing = [b for b in (*_P4_BRANCHES, *labels) if b not in keys]
            if missing:
                raise MissingKeyError(
                    f"{path}: tree {self.tree!r} lacks branch(es) {missing} (found {sorted(keys)})"
                )
            counters = _counter_branches(tree)
            wanted = {*_P4_BRANCHES}
            for k in keys:
                if k in counters or k in labels or k.startswith("label_"):
                    continue
                if k.startswith("aux_") and not self.aux:
                    continue
                if self.branches is None or k in self.branches:
                    wanted.add(k)
            if self.branches is not None:
                absent = [b for b in self.branches if b not in keys]
                if absent:
                    raise MissingKeyError(
                        f"{path}: tree {self.tree!r} lacks requested branch(es) {absent}"
                    )
                wanted.update(self.branches)
            ordered = [k for k in keys if k in wanted]
        except BaseException:
            f.close()
            raise
        return _TreeHandle(f, tree, ordered, list(labels))

    def _labels_of(self, keys: Sequence[str]) -> tuple[str, ...]:
        """The label branches of a file with branches ``keys``: those asked for, or with the
        default, the b-tagging ones for a file with those and no JetClass label."""
        names = set(keys)
        if (self._default_labels and names.isdisjoint(JETCLASS_LABELS)
                and {"label_light", "label_b"} <= names):
            return tuple(b for b in BTAG_LABELS if b in names)
        return self.label_branches

    def _num_entries(self, handle: _TreeHandle, path: Path) -> int:
        return int(handle.tree.num_entries)

    def _read(self, handle: _TreeHandle, path: Path, start: int, stop: int) -> JetChunk:
        arrays = handle.tree.arrays(
            _read_names(handle.tree, handle.branches + handle.labels),
            entry_start=start,
            entry_stop=stop,
            library="ak",
        )
        if _is_rntuple(handle.tree):
            arrays = _flatten_records(arrays)
        columns = _record_columns(arrays, str(path))
        counts = columns["part_px"][0]
        if counts is None:
            raise JetFileError(f"{path}: branch 'part_px' is not jagged (one value per particle)")
        particle: dict[str, np.ndarray] = {}
        jets: dict[str, np.ndarray] = {}
        for name in handle.branches:
            n, values = columns[name]
            if n is not None:
                if not np.array_equal(n, counts):
                    j = int(np.flatnonzero(n != counts)[0])
                    raise JetFileError(
                        f"{path}: entry {start + j}: branch {name!r} has {n[j]} values but "
                        f"part_px has {counts[j]}"
                    )
                particle[name] = values
            else:
                jets[name] = values
        for name in _P4_BRANCHES:
            if name not in particle:
                raise JetFileError(f"{path}: branch {name!r} is not jagged like part_px")
        p4 = np.stack(
            [particle.pop(n) for n in ("part_energy", "part_px", "part_py", "part_pz")], 1
        )
        label = None
        if handle.labels:
            onehot = np.stack([columns[n][1].astype(np.float64) for n in handle.labels], 1)
            ok = np.isin(onehot, (0.0, 1.0)).all(axis=1) & (onehot.sum(axis=1) == 1)
            if not ok.all():
                j = int(np.flatnonzero(~ok)[0])
                values = dict(zip(handle.labels, onehot[j].tolist(), strict=True))
                raise JetFileError(
                    f"{path}: entry {start + j} has label branches {values}; expected exactly "
                    "one of them to be 1 (one-hot)"
                )
            label = onehot.argmax(axis=1).astype(np.int64)
        return JetChunk(p4, counts, label, particle, jets)


def _flat_keys(tree: Any) -> list[str]:
    """Branch names, with the fields of a record (RNTuple) column named ``outer_inner``."""
    if not _is_rntuple(tree):
        return list(tree.keys())
    keys: list[str] = []
    for k in tree.keys(recursive=False):
        sub = tree[k]
        inner = list(sub.keys(recursive=False)) if hasattr(sub, "keys") else []
        if inner:
            keys.extend(f"{k}_{s}" for s in inner)
        else:
            keys.append(k)
    return keys


def _counter_branches(tree: Any) -> set[str]:
    """Names of the branches that only count the entries of jagged branches (``npart``)."""
    if _is_rntuple(tree):
        return set()
    out = set()
    for branch in tree.itervalues():
        counter = getattr(branch, "count_branch", None)
        if counter is not None:
            out.add(counter.name)
    return out


def _is_rntuple(tree: Any) -> bool:
    return type(tree).__name__.endswith("RNTuple")


def _read_names(tree: Any, names: list[str]) -> list[str]:
    if not _is_rntuple(tree):
        return names
    tops = set(tree.keys(recursive=False))
    out = []
    for n in names:
        top = n if n in tops else n.split("_", 1)[0]
        if top not in out:
            out.append(top)
    return out


def _flatten_records(arrays: ak.Array) -> ak.Array:
    """Turn jagged record columns ``part: var * {px, ...}`` into ``part_px, ...``."""
    out = {}
    for name in ak.fields(arrays):
        col = arrays[name]
        inner = ak.fields(col)
        if inner:
            for f in inner:
                out[f"{name}_{f}"] = col[f]
        else:
            out[name] = col
    return ak.Array(out) if out else arrays


class JetClassWriter(JetWriter):
    """Incremental writer of ROOT files in the JetClass layout (uproot, TTree ``tree``).

    Branches, in JetClass order: ``part_px, part_py, part_pz, part_energy`` and the other
    per-particle fields (floating -> float32, integer/bool -> int32, as in JetClass), then
    the ten ``label_*`` one-hot branches with the published dtypes (float32 / bool / int32),
    then the jet-level fields (``jet_*`` and ``aux_*`` as float32 like JetClass, including
    ``jet_nparticles``; other floating -> float32, integer -> int32; fixed-size arrays such
    as ``truth_p4`` become ``float[4]`` branches). With ``fill_kinematics`` (default) the
    ``jet_pt, jet_eta, jet_phi, jet_energy, jet_mass, jet_nparticles`` and ``part_deta,
    part_dphi`` branches are computed from the constituents when the jets lack them.
    uproot writes jagged branches as ``float[]`` with a counter branch ``npart`` where
    the published files have ``std::vector<float>``; readers see the same arrays. A
    per-particle field with several columns (``part_x`` of a ``JetBatch``) is written as one
    branch per column, ``part_x_0, part_x_1, ...``.

    Args:
        path: output ``.root``.
        tree: tree name (``"tree"``).
        label_branches: one-hot label branches in class order (:data:`JETCLASS_LABELS`).
        fill_kinematics: add the derived jet/particle kinematics when absent.
        overwrite: replace an existing ``path``.
    """

    format = "jetclass-root"

    def __init__(
        self,
        path: PathLike,
        *,
        tree: str = "tree",
        label_branches: Sequence[str] = JETCLASS_LABELS,
        fill_kinematics: bool = True,
        overwrite: bool = True,
    ) -> None:
        import uproot

        super().__init__(path, overwrite=overwrite)
        self.tree_name = tree
        self.label_branches = tuple(label_branches)
        self.fill_kinematics = fill_kinematics
        self._file = uproot.recreate(self.partial_path)
        self._tree: Any = None
        self._schema: tuple[list[str], list[str]] | None = None

    def _data(self, chunk: JetChunk) -> dict[str, Any]:
        if chunk.label is None:
            raise ValueError(f"{self.path}: jets need a 'label' (index into {self.label_branches})")
        nl = len(self.label_branches)
        if len(chunk) and (chunk.label.min() < 0 or chunk.label.max() >= nl):
            bad = chunk.label[(chunk.label < 0) | (chunk.label >= nl)][0]
            raise ValueError(f"{self.path}: label {bad} out of range for {nl} label branches")
        particle = dict(chunk.particle_fields)
        jets = dict(chunk.jet_fields)
        if self.fill_kinematics:
            jet_kin, part_kin = jet_kinematics(chunk)
            for k, v in part_kin.items():
                particle.setdefault(k, v)
            for k, v in jet_kin.items():
                jets.setdefault(k, v)
        names = dict(zip(P4_FIELDS, chunk.p4.T, strict=True))
        ordered = {n: names[n] for n in _P4_BRANCHES}
        for k, v in particle.items():
            if v.ndim == 1:
                ordered[k] = v
            else:  # uproot cannot read back var * n branches: one branch per column
                columns = v.reshape(len(v), -1)
                ordered.update({f"{k}_{j}": columns[:, j] for j in range(columns.shape[1])})
        part = ak.zip(
            {
                n.removeprefix("part_"): ak.unflatten(_root_dtype(v), chunk.counts)
                for n, v in ordered.items()
            },
            depth_limit=2,
        )
        data: dict[str, Any] = {"part": part}
        for k, n in enumerate(self.label_branches):
            dtype = JETCLASS_LABEL_DTYPES.get(n, np.dtype(np.int32))
            data[n] = (chunk.label == k).astype(dtype)
        for n, v in jets.items():
            v = np.asarray(v)
            # every jet_* / aux_* branch of JetClass is float32, jet_nparticles included
            data[n] = v.astype(np.float32) if n.startswith(("jet_", "aux_")) else _root_dtype(v)
        return data

    def _write(self, chunk: JetChunk) -> None:
        data = self._data(chunk)
        names = (list(data["part"].fields), [k for k in data if k != "part"])
        if self._tree is None:
            types = {k: (v.type if k == "part" else _branch_type(v)) for k, v in data.items()}
            types["part"] = data["part"].type.content
            self._tree = self._file.mktree(
                self.tree_name,
                types,
                counter_name=lambda counted: "n" + counted,
                field_name=lambda outer, inner: f"{outer}_{inner}" if outer else inner,
            )
            self._schema = names
        elif names != self._schema:
            raise ValueError(
                f"{self.path}: chunk has fields {names}, but the tree was created with "
                f"{self._schema}; every chunk must carry the same fields"
            )
        self._tree.extend(data)

    def _finish(self) -> None:
        if self._tree is None:
            empty = JetChunk(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0))
            self._write(empty)
        self._file.close()

    def _abort(self) -> None:
        self._file.close()


def _root_dtype(v: np.ndarray) -> np.ndarray:
    if np.issubdtype(v.dtype, np.floating):
        return v.astype(np.float32, copy=False)
    if v.dtype == np.bool_ or np.issubdtype(v.dtype, np.integer):
        return v.astype(np.int32, copy=False)
    raise ValueError(f"cannot write a field of dtype {v.dtype} to ROOT")


def _branch_type(v: np.ndarray) -> Any:
    return v.dtype if v.ndim == 1 else np.dtype((v.dtype, v.shape[1:]))


def write_jetclass_root(path: PathLike, jets: Any, **kwargs: Any) -> Path:
    """Write jets (one chunk or an iterable of chunks) with :class:`JetClassWriter`."""
    with JetClassWriter(path, **kwargs) as writer:
        for chunk in iter_jet_chunks(jets):
            writer.write(chunk)
    return writer.path
