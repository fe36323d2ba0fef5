"""Run a tagger over a jet file and write one row of scores per jet (``jettag predict``).

Input: any format :func:`jettag.data.formats.open_dataset` reads (top-tagging HDF5,
quark/gluon npz, parquet) or a ROOT file with jagged per-particle branches, read by
:class:`RootJetReader` with a mapping from the canonical names (``part_px``, ...) to the
file's branch names. The file is streamed in chunks (memory bounded by the chunk size).

Output: a parquet file or a ROOT file (tree ``scores``), chosen by the extension, with one
row per input jet in input order:

=================  ========  =========================================================
column             dtype     meaning
=================  ========  =========================================================
``entry``          int64     the jet's entry number in the input file
``prob_<class>``   float32   probability of each class (NaN for an empty jet)
``score``          float32   probability of the signal class (two-class taggers only)
``empty``          int8      1 for a jet without constituents (its scores are NaN)
=================  ========  =========================================================

The output is written under a temporary name in the target directory and renamed into
place at the end, so an interrupted or failed run leaves no partial file; an existing
output is replaced only with ``overwrite=True``.

Example:
    >>> from jettag.hub import load_pretrained                                # doctest: +SKIP
    >>> from jettag.hub.predict import predict_file                           # doctest: +SKIP
    >>> predict_file(load_pretrained("top-pfn-generated"), "jets.root", "scores.parquet",
    ...              branches={"part_px": "PF_px"})                           # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jettag._optional import require
from jettag.data.formats import JetChunk, JetFileError, JetReader, MissingKeyError
from jettag.data.formats._common import PathLike, _record_columns
from jettag.hub.tagger import Tagger, column_name, readable_mode

__all__ = ["OUTPUT_FORMATS", "PredictSummary", "RootJetReader", "open_jets", "predict_file"]

#: Output formats by file extension.
OUTPUT_FORMATS: dict[str, str] = {".parquet": "parquet", ".pq": "parquet", ".root": "root"}

_CARTESIAN = ("part_px", "part_py", "part_pz", "part_energy")
_CYLINDRICAL = ("part_pt", "part_eta", "part_phi")


class RootJetReader(JetReader):
    """Jets from any ROOT TTree with jagged per-particle branches, renamed to the canonical
    layout (read with uproot; only the needed branches are read).

    The momenta come from ``part_px, part_py, part_pz, part_energy`` or, when ``branches``
    maps any of ``part_pt, part_eta, part_phi``, from ``(pT, eta, phi)`` and ``part_energy``
    or ``part_mass`` (massless when neither is given). ``x_fields`` are read as per-particle
    fields under their canonical names.

    Args:
        paths: the file(s).
        tree: name of the TTree.
        branches: canonical name -> branch name in the file (names not listed are read
            under their canonical name), e.g. ``{"part_px": "PF_px"}``.
        x_fields: further per-particle fields to read (canonical names).
        dtype, max_open_files, check: see :class:`~jettag.data.formats.JetReader`.

    Raises ``MissingKeyError`` naming the file, the tree and the branch for a missing tree
    or branch, ``JetFileError`` for branches that are not jagged or disagree in length.
    """

    format = "root"
    extensions = (".root",)

    def __init__(
        self,
        paths: PathLike | Iterable[PathLike],
        *,
        tree: str = "tree",
        branches: Mapping[str, str] | None = None,
        x_fields: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(paths, **kwargs)
        self.tree = tree
        self.mapping = dict(branches or {})
        for canonical, name in self.mapping.items():
            if not canonical.startswith("part_") or not isinstance(name, str) or not name:
                raise ValueError(
                    f"branches: expected canonical per-particle names (part_px, part_pt, "
                    f"part_pid, ...) mapped to branch names, found {canonical!r} -> {name!r}"
                )
        self.cylindrical = any(k in self.mapping for k in _CYLINDRICAL)
        if self.cylindrical:
            momenta = list(_CYLINDRICAL)
            momenta += [k for k in ("part_energy", "part_mass") if k in self.mapping][:1]
        else:
            momenta = list(_CARTESIAN)
        self.canonical = [*momenta, *(f for f in x_fields if f not in momenta)]

    def _branch(self, canonical: str) -> str:
        return self.mapping.get(canonical, canonical)

    def _open(self, path: Path) -> Any:
        import uproot

        handle = uproot.open(path)
        try:
            names = [k.split(";")[0] for k in handle.keys(recursive=True)]
            if self.tree not in names:
                trees = [
                    n for n, c in handle.classnames(recursive=True).items()
                    if c in ("TTree", "TNtuple") or c.startswith("ROOT::RNTuple")
                ]
                raise MissingKeyError(
                    f"{path}: no tree {self.tree!r} (trees in the file: "
                    f"{sorted({t.split(';')[0] for t in trees})}); choose one with --tree"
                )
            tree = handle[self.tree]
            if not hasattr(tree, "num_entries") or not hasattr(tree, "arrays"):
                raise JetFileError(f"{path}: {self.tree!r} is a {type(tree).__name__}, not a TTree")
            keys = set(tree.keys(recursive=True))
            missing = [c for c in self.canonical if self._branch(c) not in keys]
            if missing:
                wanted = ", ".join(f"{c} (branch {self._branch(c)!r})" for c in missing)
                raise MissingKeyError(
                    f"{path}: tree {self.tree!r} has no branch for {wanted}. Map the canonical "
                    f"names to this file's branches, e.g. --branch {missing[0]}=<branch>; "
                    f"branches in the tree: {sorted(keys)[:40]}"
                )
        except BaseException:
            handle.close()
            raise
        return handle

    def _num_entries(self, handle: Any, path: Path) -> int:
        return int(handle[self.tree].num_entries)

    def _read(self, handle: Any, path: Path, start: int, stop: int) -> JetChunk:
        wanted = {self._branch(c) for c in self.canonical}
        arrays = handle[self.tree].arrays(
            filter_name=lambda name: name in wanted,
            entry_start=start,
            entry_stop=stop,
            library="ak",
        )
        columns = _record_columns(_flat_fields(arrays), str(path))
        values: dict[str, np.ndarray] = {}
        counts: np.ndarray | None = None
        reference = ""
        for canonical in self.canonical:
            branch = self._branch(canonical)
            n, flat = columns[branch]
            if n is None:
                raise JetFileError(
                    f"{path}: branch {branch!r} ({canonical}) holds one value per entry; "
                    "expected a jagged branch with one value per particle"
                )
            if flat.ndim != 1:
                raise JetFileError(
                    f"{path}: branch {branch!r} ({canonical}) has {flat.shape[1:]} values per "
                    "particle; expected one"
                )
            if counts is None:
                counts, reference = n, branch
            elif not np.array_equal(n, counts):
                j = int(np.flatnonzero(n != counts)[0])
                raise JetFileError(
                    f"{path}: entry {start + j}: branch {branch!r} has {n[j]} values but "
                    f"{reference!r} has {counts[j]}; the per-particle branches must match"
                )
            values[canonical] = flat
        assert counts is not None
        p4 = self._momenta(values)
        extra = {k: v for k, v in values.items() if k not in (*_CARTESIAN, *_CYLINDRICAL,
                                                              "part_mass")}
        return JetChunk(p4, counts, None, extra, {})

    def _momenta(self, values: dict[str, np.ndarray]) -> np.ndarray:
        if not self.cylindrical:
            dtype = np.result_type(*(values[k] for k in _CARTESIAN), np.float32)
            return np.stack([values[k].astype(dtype, copy=False) for k in
                             ("part_energy", "part_px", "part_py", "part_pz")], axis=1)
        dtype = np.result_type(*(values[k] for k in _CYLINDRICAL), np.float32)
        pt, eta, phi = (values[k].astype(dtype, copy=False) for k in _CYLINDRICAL)
        px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
        if "part_energy" in values:
            energy = values["part_energy"].astype(dtype, copy=False)
        else:
            mass = values.get("part_mass")
            m2 = 0.0 if mass is None else mass.astype(dtype, copy=False) ** 2
            energy = np.sqrt(px * px + py * py + pz * pz + m2)
        return np.stack([energy, px, py, pz], axis=1)


def _flat_fields(arrays: Any) -> Any:
    """RNTuple reads give record columns ``PF: var * {px, ...}``: name their fields ``PF.px``
    as the tree's keys do (TTree reads are flat already)."""
    import awkward as ak

    flat = {}
    for name in ak.fields(arrays):
        column = arrays[name]
        inner = ak.fields(column)
        if inner:
            flat.update({f"{name}.{field}": column[field] for field in inner})
        else:
            flat[name] = column
    return ak.zip(flat, depth_limit=1)


def open_jets(
    path: PathLike,
    *,
    format: str | None = None,
    tree: str = "tree",
    branches: Mapping[str, str] | None = None,
    x_fields: Sequence[str] = (),
) -> JetReader:
    """A reader of one jet file for prediction (ROOT through :class:`RootJetReader`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: several files match, an unknown format, or ``branches`` for a format
            other than ROOT.
    """
    from jettag.data.formats import detect_format, open_dataset, resolve_paths

    paths = resolve_paths(path)
    if len(paths) != 1:
        raise ValueError(
            f"{path}: matches {len(paths)} files; prediction reads one input file (run it "
            "once per file, so each output row keeps its file's entry number)"
        )
    name = (format or detect_format(paths[0])).lower()
    if name in ("root", "jetclass-root", "jetclass"):
        return RootJetReader(paths, tree=tree, branches=branches, x_fields=x_fields)
    if branches:
        raise ValueError(
            f"{path}: branch mappings apply to ROOT files only; this is a {name} file"
        )
    return open_dataset(paths, format=name)


@dataclass(frozen=True)
class PredictSummary:
    """What :func:`predict_file` did: the output, jets written and empty jets among them."""

    output: Path
    num_jets: int
    num_empty: int


class _ScoreWriter:
    """Columns chunk by chunk into a temporary file, renamed to ``path`` on :meth:`close`."""

    def __init__(self, path: Path, schema: dict[str, np.dtype], *, tree: str) -> None:
        self.path = path
        self.kind = OUTPUT_FORMATS[path.suffix.lower()]
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
        os.close(fd)
        self.tmp = Path(name)
        os.chmod(self.tmp, readable_mode())
        if self.kind == "parquet":
            pa = require("pyarrow", "parquet", feature="writing parquet score files")
            import pyarrow.parquet as pq

            fields = [pa.field(k, pa.from_numpy_dtype(v)) for k, v in schema.items()]
            self._writer = pq.ParquetWriter(str(self.tmp), pa.schema(fields))
            self._pa = pa
        else:
            import uproot

            self._file = uproot.recreate(self.tmp)
            self._tree = self._file.mktree(tree, dict(schema))

    def write(self, columns: dict[str, np.ndarray]) -> None:
        if self.kind == "parquet":
            table = self._pa.Table.from_pydict({k: self._pa.array(v) for k, v in columns.items()})
            self._writer.write_table(table)
        else:
            self._tree.extend(columns)

    def close(self, *, overwrite: bool) -> None:
        if self.kind == "parquet":
            self._writer.close()
        else:
            self._file.close()
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path}: appeared during the run; not replaced")
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            if self.kind == "parquet":
                self._writer.close()
            else:
                self._file.close()
        except Exception:  # closing a half-written file must not hide the original error
            pass
        self.tmp.unlink(missing_ok=True)


def predict_file(
    tagger: Tagger,
    input: PathLike,
    output: PathLike,
    *,
    format: str | None = None,
    tree: str = "tree",
    branches: Mapping[str, str] | None = None,
    output_tree: str = "scores",
    chunk_size: int = 10_000,
    batch_size: int = 1024,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = False,
) -> PredictSummary:
    """Score every jet of ``input`` with ``tagger`` and write the scores to ``output``.

    Args:
        tagger: the tagger.
        input: one jet file (ROOT, top-tagging HDF5, quark/gluon npz or parquet).
        output: ``.parquet`` / ``.pq`` or ``.root`` (tree ``output_tree``).
        format: input format name (default: from the extension or the file's first bytes).
        tree: TTree of a ROOT input.
        branches: for ROOT inputs, canonical name -> branch name (see
            :class:`RootJetReader`).
        output_tree: tree name of a ROOT output.
        chunk_size: jets read per chunk.
        batch_size: jets per forward pass.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        overwrite: replace an existing ``output``.
        progress: show a progress bar over the jets (on stderr).

    Returns:
        A :class:`PredictSummary`.

    Raises:
        FileExistsError: ``output`` exists and ``overwrite`` is False.
        FileNotFoundError: no input file.
        ValueError: an unsupported output extension, an unreadable input, a missing tree,
            branch or field (all naming the file and what is missing).
    """
    output = Path(output).expanduser()
    if output.suffix.lower() not in OUTPUT_FORMATS:
        raise ValueError(
            f"{output}: unsupported output extension {output.suffix!r}; expected one of "
            f"{sorted(OUTPUT_FORMATS)}"
        )
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output}: exists; pass --overwrite (overwrite=True) to replace it")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive integer, found {chunk_size!r}")
    x_fields = list(tagger.inputs.x_fields)
    reader = open_jets(input, format=format, tree=tree, branches=branches, x_fields=x_fields)
    if Path(input).expanduser().resolve() == output.resolve():
        raise ValueError(f"{output}: the output would replace the input file")
    dtype = np.dtype(np.float64 if str(tagger.dtype) == "torch.float64" else np.float32)
    schema: dict[str, np.dtype] = {"entry": np.dtype(np.int64)}
    schema.update({f"prob_{column_name(n)}": dtype for n in tagger.class_names})
    if tagger.signal is not None:
        schema["score"] = dtype
    schema["empty"] = np.dtype(np.int8)
    from tqdm.auto import tqdm

    with reader:
        total = len(reader)
        writer = _ScoreWriter(output, schema, tree=output_tree)
        written = empty = 0
        try:
            with tqdm(total=total, unit="jet", disable=not progress, desc=tagger.name) as bar:
                for chunk in reader.iter_chunks(chunk_size):
                    batch = _to_batch(chunk, x_fields, reader, input)
                    prediction = tagger.predict(batch, batch_size=batch_size, device=device)
                    columns = {"entry": np.arange(written, written + len(chunk), dtype=np.int64)}
                    columns.update(
                        {k: np.asarray(v, dtype=schema[k]) for k, v in prediction.columns().items()}
                    )
                    writer.write(columns)
                    written += len(chunk)
                    empty += int(prediction.empty.sum())
                    bar.update(len(chunk))
            writer.close(overwrite=overwrite)
        except BaseException:
            writer.abort()
            raise
    return PredictSummary(output, written, empty)


def _to_batch(chunk: JetChunk, x_fields: list[str], reader: JetReader, source: PathLike) -> Any:
    try:
        return chunk.to_batch(x_fields=x_fields)
    except KeyError:
        hint = (
            f" (map it with --branch {x_fields[0]}=<branch>)"
            if isinstance(reader, RootJetReader) else ""
        )
        raise MissingKeyError(
            f"{source}: the tagger reads per-particle field(s) {x_fields}, which the file does "
            f"not provide{hint}; fields found: {sorted(chunk.particle_fields)}"
        ) from None
