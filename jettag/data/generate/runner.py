"""Running a recipe: work units, worker processes, the chunk cache and the output file.

Work is split into units ``(class, chunk index)`` of ``chunk_size`` jets. The Pythia seed
of a unit is derived from ``(seed, recipe, class, chunk index)`` alone, so the jets do not
depend on the number of worker processes or on the order in which units run. Each unit's
jets are saved to the work directory (``<data_dir>/generated/work/<recipe>-<key>/``,
keyed by everything that changes them) under a temporary name and renamed when complete;
an interrupted run leaves only complete chunks there, and the next run with the same
settings reuses them. The output is written from the chunks, class blocks interleaved and
shuffled block by block, to ``<path>.partial`` and renamed into place; a provenance
record ``<path>.json`` is written next to it, and a repeat call with the same arguments
returns the existing file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import multiprocessing as mp
import os
import queue as queue_module
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from jettag.data.generate._engine import derive_seed
from jettag.data.generate.recipes import Recipe, get_recipe

__all__ = ["DEFAULT_CHUNK_SIZE", "default_data_dir", "generate", "generate_jets"]

#: Jets per work unit.
DEFAULT_CHUNK_SIZE = 500


def default_data_dir() -> Path:
    """``$JETTAG_DATA`` if set, else the user cache ``~/.cache/jettag``."""
    env = os.environ.get("JETTAG_DATA")
    return Path(env).expanduser() if env else Path("~/.cache/jettag").expanduser()


@dataclass(frozen=True)
class _Unit:
    recipe: str
    cls: str
    index: int
    n_jets: int
    seed: int
    options: tuple[tuple[str, Any], ...]

    @property
    def stem(self) -> str:
        return f"{self.cls}-{self.index:05d}"


def _units(
    recipe: Recipe, n_jets: int, seed: int, options: Mapping[str, Any], chunk_size: int
) -> list[_Unit]:
    frozen = tuple(sorted(options.items()))
    units = []
    for cls in recipe.classes(options):
        for index in range(math.ceil(n_jets / chunk_size)):
            size = min(chunk_size, n_jets - index * chunk_size)
            unit_seed = derive_seed(seed, recipe.name, cls, index)
            units.append(_Unit(recipe.name, cls, index, size, unit_seed, frozen))
    return units


def _run_unit(unit: _Unit, progress: Callable[[int], None] | None) -> ak.Array:
    impl = get_recipe(unit.recipe).impl
    return impl.generate_class(unit.cls, unit.n_jets, unit.seed, dict(unit.options), progress)


# ---------------------------------------------------------------------------------------
# chunk files


def _save_chunk(jets: ak.Array, path: Path) -> None:
    form, length, container = ak.to_buffers(ak.to_packed(jets))
    tmp = path.with_name(f"{path.name}.{os.getpid()}.partial")
    with open(tmp, "wb") as f:
        np.savez(
            f,
            __form__=np.frombuffer(form.to_json().encode(), dtype=np.uint8),
            __length__=np.array(length, dtype=np.int64),
            **container,
        )
    os.replace(tmp, path)


def _load_chunk(path: Path) -> ak.Array:
    with np.load(path) as z:
        form = ak.forms.from_json(bytes(z["__form__"]).decode())
        length = int(z["__length__"])
        container = {k: z[k] for k in z.files if not k.startswith("__")}
    return ak.from_buffers(form, length, container)


def _find_chunk(workdir: Path, unit: _Unit) -> Path | None:
    """A saved chunk with at least the unit's number of jets (its first jets are the unit's)."""
    for path in sorted(workdir.glob(f"{unit.stem}-*.npz")):
        try:
            n = int(path.stem.rsplit("-", 1)[1])
        except ValueError:
            continue
        if n >= unit.n_jets:
            return path
    return None


def _chunk_jets(workdir: Path, unit: _Unit) -> ak.Array:
    path = _find_chunk(workdir, unit)
    if path is None:
        raise FileNotFoundError(f"{workdir}: chunk {unit.stem} is missing")
    return _load_chunk(path)[: unit.n_jets]


# ---------------------------------------------------------------------------------------
# workers

_QUEUE: Any = None


def _init_worker(progress_queue: Any) -> None:
    global _QUEUE
    # The parent handles Ctrl-C and terminates the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _QUEUE = progress_queue


def _queue_progress(n: int) -> None:
    if _QUEUE is not None:
        _QUEUE.put(n)


def _worker_unit(unit: _Unit, workdir: str | None) -> Any:
    jets = _run_unit(unit, _queue_progress)
    if workdir is None:
        return jets
    _save_chunk(jets, Path(workdir) / f"{unit.stem}-{unit.n_jets}.npz")
    return None


def _progress_bar(total: int, initial: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="jet",
        disable=not enabled,
        dynamic_ncols=True,
        file=sys.stderr,
    )


def _context() -> Any:
    """``fork`` where available: ``spawn`` would re-import the caller's main module in every
    worker, which loops forever when a user script starts generation without an
    ``if __name__ == "__main__"`` guard. The workers use no state of the parent but the
    imported modules."""
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else "spawn")


def _execute(
    units: list[_Unit],
    workers: int,
    workdir: Path | None,
    bar_factory: Callable[[], Any],
    on_unit: Callable[[_Unit], None] | None = None,
) -> dict[_Unit, ak.Array]:
    """Run units, in this process (``workers == 1``) or in a pool of worker processes.

    With a ``workdir`` each unit's jets are saved there and nothing is returned; without,
    the jets are returned per unit. ``bar_factory`` makes the progress bar (a context
    manager with ``update(n)``); ``on_unit`` is called after each completed unit.
    """
    results: dict[_Unit, ak.Array] = {}

    def done(unit: _Unit, jets: Any) -> None:
        if workdir is None:
            results[unit] = jets
        if on_unit is not None:
            on_unit(unit)

    if workers <= 1 or len(units) <= 1:
        with bar_factory() as bar:
            for unit in units:
                jets = _run_unit(unit, bar.update)
                if workdir is not None:
                    _save_chunk(jets, workdir / f"{unit.stem}-{unit.n_jets}.npz")
                done(unit, jets)
        return results

    ctx = _context()
    progress_queue = ctx.Queue()
    # The pool forks its workers now, before the progress bar starts its monitor thread.
    pool = ctx.Pool(min(workers, len(units)), initializer=_init_worker, initargs=(progress_queue,))
    try:
        with bar_factory() as bar:
            bar_start = bar.n
            pending = {
                unit: pool.apply_async(
                    _worker_unit, (unit, None if workdir is None else str(workdir))
                )
                for unit in units
            }
            while pending:
                try:
                    bar.update(progress_queue.get(timeout=0.2))
                except queue_module.Empty:
                    pass
                for unit in [u for u, r in pending.items() if r.ready()]:
                    done(unit, pending.pop(unit).get())
            # Progress messages still in flight when the last result arrived.
            bar.update(sum(u.n_jets for u in units) - (bar.n - bar_start))
        pool.close()
        pool.join()
    finally:
        pool.terminate()
        progress_queue.close()
    return results


# ---------------------------------------------------------------------------------------
# public API


def _check_args(n_jets: int, workers: int, chunk_size: int) -> None:
    for name, value in (("n_jets", n_jets), ("workers", workers), ("chunk_size", chunk_size)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer, found {value!r}")


def _ordered_blocks(
    recipe: Recipe,
    options: Mapping[str, Any],
    units: list[_Unit],
    jets_of: Callable[[_Unit], ak.Array],
    seed: int,
    shuffle: bool,
):
    """Blocks of jets: chunk ``k`` of every class together, shuffled within the block."""
    n_chunks = max(u.index for u in units) + 1
    by_key = {(u.cls, u.index): u for u in units}
    for index in range(n_chunks):
        parts = [
            jets_of(by_key[(cls, index)])
            for cls in recipe.classes(options)
            if (cls, index) in by_key
        ]
        block = ak.concatenate(parts) if len(parts) > 1 else parts[0]
        if shuffle:
            rng = np.random.default_rng(derive_seed(seed, recipe.name, "shuffle", index))
            block = block[rng.permutation(len(block))]
        yield block


def generate_jets(
    recipe: str | Recipe,
    n_jets: int,
    *,
    seed: int = 0,
    workers: int = 1,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    shuffle: bool = False,
    progress: bool = False,
    **options: Any,
) -> ak.Array:
    """Generate ``n_jets`` jets of each class of a recipe in memory (no files, no cache).

    Args:
        recipe: ``"top-tagging"``, ``"quark-gluon"`` or ``"b-tagging"``.
        n_jets: jets per class.
        seed: base seed; the same seed gives identical jets for any ``workers``.
        workers: processes generating in parallel.
        chunk_size: jets per work unit (part of what defines the jets: each unit has its
            own Pythia seed).
        shuffle: mix the classes (chunk by chunk); otherwise class after class.
        progress: show a progress bar of accepted jets.
        **options: the recipe's options (see its module's ``DEFAULTS``).

    Returns:
        Canonical awkward jets (``part_energy, part_px, part_py, part_pz``, further
        ``part_*`` fields, ``label`` and jet-level fields).
    """
    _check_args(n_jets, workers, chunk_size)
    rec = get_recipe(recipe)
    opts = rec.options(options)
    units = _units(rec, n_jets, seed, opts, chunk_size)
    total = n_jets * len(rec.classes(opts))
    results = _execute(units, workers, None, lambda: _progress_bar(total, 0, rec.name, progress))
    if shuffle:
        blocks = list(_ordered_blocks(rec, opts, units, results.__getitem__, seed, True))
    else:
        blocks = [results[u] for u in units]
    return ak.concatenate(blocks) if len(blocks) > 1 else blocks[0]


def _digest(payload: Mapping[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _provenance(recipe: Recipe, options: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    from importlib import metadata

    versions = {}
    for dist in ("jettag", "pythia8mc", "fastjet", "awkward"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "recipe": recipe.name,
        "recipe_version": recipe.version,
        "format": recipe.format,
        "classes": list(recipe.classes(options)),
        "options": dict(options),
        **extra,
        "versions": versions,
    }


def _write_json(path: Path, payload: Mapping[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.partial")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=list) + "\n")
    os.replace(tmp, path)


def _open_writer(recipe: Recipe, path: Path, options: Mapping[str, Any], n_total: int) -> Any:
    from jettag.data import formats

    if recipe.format == "top-hdf5":
        return formats.TopHDF5Writer(
            path, num_constituents=int(options["max_constituents"]), expected_rows=n_total
        )
    if recipe.format == "qg-npz":
        return formats.QGNpzWriter(path)
    labels = sorted(recipe.impl.CLASSES.items(), key=lambda kv: kv[1])
    branches = [f"label_{name}" for name, _ in labels if name in recipe.classes(options)]
    return formats.JetClassWriter(path, label_branches=branches)


def generate(
    recipe: str | Recipe,
    n_jets: int,
    *,
    seed: int = 0,
    workers: int = 1,
    out: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    shuffle: bool = True,
    progress: bool = True,
    force: bool = False,
    keep_chunks: bool = False,
    _on_unit: Callable[[Any], None] | None = None,
    **options: Any,
) -> Path:
    """Generate a dataset file with a recipe, or return the cached file of an earlier call.

    Args:
        recipe: ``"top-tagging"`` (Top Quark Tagging HDF5 layout), ``"quark-gluon"``
            (EnergyFlow npz layout) or ``"b-tagging"`` (JetClass-style ROOT).
        n_jets: jets per class (the classes are balanced).
        seed: base seed; the same arguments give the same file for any ``workers``.
        workers: processes generating in parallel.
        out: output path (replaced unless it holds this exact dataset); default
            ``<data_dir>/generated/<recipe>-<hash><suffix>``.
        data_dir: cache directory; default ``$JETTAG_DATA`` or ``~/.cache/jettag``.
        chunk_size: jets per work unit (and per resumable chunk).
        shuffle: mix the classes in the file (within blocks of one chunk per class).
        progress: show a progress bar of accepted jets on stderr.
        force: regenerate the file even if it exists (completed chunks are still reused).
        keep_chunks: keep the per-chunk files after writing the output (by default they
            are deleted once the output is complete).
        **options: the recipe's options (see its module's ``DEFAULTS``).

    Returns:
        Path of the file. Next to it, ``<file>.json`` records the recipe, its options, the
        seed and the package versions.

    Raises:
        ValueError: unknown recipe or option, non-positive sizes.
    """
    _check_args(n_jets, workers, chunk_size)
    rec = get_recipe(recipe)
    opts = rec.options(options)
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    chunk_key = _digest(
        {
            "recipe": rec.name,
            "version": rec.version,
            "options": opts,
            "seed": seed,
            "chunk_size": chunk_size,
        }
    )
    file_key = _digest({"chunks": chunk_key, "n_jets": n_jets, "shuffle": shuffle})
    path = (
        Path(out).expanduser()
        if out is not None
        else root / "generated" / f"{rec.name}-{file_key}{rec.suffix}"
    )
    meta_path = path.with_name(path.name + ".json")
    if not force and path.exists() and meta_path.exists():
        try:
            if json.loads(meta_path.read_text()).get("key") == file_key:
                return path
        except (OSError, ValueError):
            pass

    workdir = root / "generated" / "work" / f"{rec.name}-{chunk_key}"
    workdir.mkdir(parents=True, exist_ok=True)
    units = _units(rec, n_jets, seed, opts, chunk_size)
    todo = [u for u in units if _find_chunk(workdir, u) is None]
    total = n_jets * len(rec.classes(opts))
    start = time.perf_counter()
    done_jets = sum(u.n_jets for u in units if u not in todo)
    _execute(
        todo,
        workers,
        workdir,
        lambda: _progress_bar(total, done_jets, rec.name, progress),
        on_unit=_on_unit,
    )

    writer = _open_writer(rec, path, opts, total)
    try:
        for block in _ordered_blocks(
            rec, opts, units, lambda u: _chunk_jets(workdir, u), seed, shuffle
        ):
            writer.write(block)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    _write_json(
        meta_path,
        _provenance(
            rec,
            opts,
            key=file_key,
            n_jets_per_class=n_jets,
            n_jets_total=total,
            seed=seed,
            chunk_size=chunk_size,
            shuffle=shuffle,
            generated_units=len(todo),
            seconds=round(time.perf_counter() - start, 3),
        ),
    )
    if not keep_chunks:
        shutil.rmtree(workdir, ignore_errors=True)
        with contextlib.suppress(OSError):  # only when no other run has chunks there
            workdir.parent.rmdir()
    return path
