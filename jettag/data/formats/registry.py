"""One entry point for all formats: `open_dataset`, `open_writer`, `detect_format`."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jettag.data.formats._common import JetFileError, JetReader, JetWriter, PathLike, resolve_paths

__all__ = ["FORMATS", "detect_format", "open_dataset", "open_writer"]

#: Canonical format names -> (reader class path, writer class path, file extensions).
FORMATS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "top-hdf5": ("top_hdf5:TopHDF5Reader", "top_hdf5:TopHDF5Writer", (".h5", ".hdf5", ".hdf")),
    "qg-npz": ("qg_npz:QGNpzReader", "qg_npz:QGNpzWriter", (".npz",)),
    "jetclass-root": (
        "jetclass_root:JetClassReader",
        "jetclass_root:JetClassWriter",
        (".root",),
    ),
    "parquet": ("parquet:ParquetReader", "parquet:ParquetWriter", (".parquet", ".pq")),
}

_ALIASES = {
    "top": "top-hdf5",
    "hdf5": "top-hdf5",
    "h5": "top-hdf5",
    "toptagging": "top-hdf5",
    "qg": "qg-npz",
    "npz": "qg-npz",
    "quark-gluon": "qg-npz",
    "jetclass": "jetclass-root",
    "root": "jetclass-root",
    "pq": "parquet",
}

_MAGIC = (
    (b"\x89HDF\r\n\x1a\n", "top-hdf5"),
    (b"PK\x03\x04", "qg-npz"),
    (b"root", "jetclass-root"),
    (b"PAR1", "parquet"),
)


def _canonical(format: str) -> str:
    name = format.lower().replace("_", "-")
    name = _ALIASES.get(name, name)
    if name not in FORMATS:
        raise ValueError(
            f"format: unknown format {format!r}; expected one of {sorted(FORMATS)} "
            f"(or an alias: {sorted(_ALIASES)})"
        )
    return name


def _load(spec: str) -> Any:
    import importlib

    module, name = spec.split(":")
    return getattr(importlib.import_module(f"jettag.data.formats.{module}"), name)


def detect_format(path: PathLike) -> str:
    """Format name of one file, from its extension or else its first bytes."""
    path = Path(path)
    suffix = path.suffix.lower()
    for name, (_, _, extensions) in FORMATS.items():
        if suffix in extensions:
            return name
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as err:
        raise FileNotFoundError(
            f"{path}: cannot read the file to detect its format: {err}"
        ) from err
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    raise JetFileError(
        f"{path}: cannot tell the format from the extension {suffix!r} or the file contents; "
        f"pass format= one of {sorted(FORMATS)}"
    )


def open_dataset(
    path_or_paths: PathLike | Iterable[PathLike], format: str | None = None, **kwargs: Any
) -> JetReader:
    """Open jet files of any supported format as a :class:`JetReader`.

    Args:
        path_or_paths: a file, a directory, a glob pattern, or a list of them.
        format: ``"top-hdf5"``, ``"qg-npz"``, ``"jetclass-root"`` or ``"parquet"`` (or an
            alias such as ``"top"``, ``"qg"``, ``"jetclass"``); detected from the extensions
            (or the first bytes) when ``None``. All files must have one format.
        **kwargs: options of the reader class (``dtype``, ``key``, ``tree``, ``massless``...).

    Returns:
        A reader with ``len()``, ``read(start, stop)``, ``iter_awkward(chunk_size)`` and
        ``iter_batches(batch_size)``.

    Example:
        >>> from jettag.data.formats import open_dataset          # doctest: +SKIP
        >>> reader = open_dataset("QG_jets*.npz")                   # doctest: +SKIP
        >>> for batch in reader.iter_batches(256): ...             # doctest: +SKIP
    """
    if format is not None:
        name = _canonical(format)
        extensions = FORMATS[name][2]
        items = (
            [path_or_paths] if isinstance(path_or_paths, str | os.PathLike) else list(path_or_paths)
        )
        paths = resolve_paths(items, extensions=extensions)
    else:
        known = tuple(e for _, _, ext in FORMATS.values() for e in ext)
        paths = resolve_paths(path_or_paths, extensions=known)
        names = {detect_format(p) for p in paths}
        if len(names) != 1:
            raise ValueError(
                f"{path_or_paths}: files of several formats {sorted(names)}; open each format "
                "separately"
            )
        name = names.pop()
    return _load(FORMATS[name][0])(paths, **kwargs)


def open_writer(path: PathLike, format: str | None = None, **kwargs: Any) -> JetWriter:
    """An incremental writer for ``path`` (format from the extension unless ``format``)."""
    if format is None:
        suffix = Path(path).suffix.lower()
        matches = [n for n, (_, _, ext) in FORMATS.items() if suffix in ext]
        if not matches:
            raise ValueError(
                f"{path}: cannot tell the format from the extension {suffix!r}; pass format= "
                f"one of {sorted(FORMATS)}"
            )
        name = matches[0]
    else:
        name = _canonical(format)
    return _load(FORMATS[name][1])(path, **kwargs)
