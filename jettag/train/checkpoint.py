"""Checkpoints: atomic writes, validated reads (``weights_only=True``) and RNG states.

A checkpoint is a dict of tensors and plain Python values, so it loads with
``torch.load(weights_only=True)`` (no arbitrary code runs when reading one):

``format`` (``"jettag-checkpoint"``), ``version``, ``kind`` (``"last"`` or ``"best"``),
``config`` (the :class:`~jettag.train.TrainConfig` as a dict), ``config_hash``, ``model``
(state dict), ``optimizer``, ``scheduler``, ``scaler`` (state dicts), ``epoch`` (the epoch in
progress), ``step_in_epoch`` (batches of it already consumed), ``global_step``,
``world_size``, ``rng`` (one dict of torch/CUDA/NumPy/Python generator states per rank),
``best`` (monitored value and epoch), ``history`` (per-epoch log rows) and ``running``
(partial sums of the epoch in progress).
"""

from __future__ import annotations

import os
import pickle
import random
import re
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "atomic_save",
    "capture_rng_state",
    "check_model_state",
    "load_checkpoint",
    "restore_rng_state",
]

CHECKPOINT_FORMAT = "jettag-checkpoint"
CHECKPOINT_VERSION = 1
_REQUIRED = ("config_hash", "model", "epoch", "step_in_epoch", "global_step")


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically: write a temporary file in the same
    directory, flush and fsync it, ``os.replace`` it over ``path``, fsync the directory.

    A crash at any moment leaves either the previous file or the new one, never a partial
    file under ``path``; the temporary file is removed on error.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(path.parent)
    return path


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(
    path: str | Path,
    *,
    config_hash: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Read and validate a jettag checkpoint (``torch.load(weights_only=True)`` on the CPU).

    Args:
        path: the checkpoint file.
        config_hash: if given, the hash the checkpoint must carry.
        config: the current configuration as a dict, to name the options that differ when
            the hash does not match.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: naming the file and the problem: truncated or corrupt file, not a jettag
            checkpoint, missing entries, or a different configuration hash.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (
        RuntimeError,
        EOFError,
        OSError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        ValueError,
        KeyError,
        IndexError,
        TypeError,
    ) as err:
        size = path.stat().st_size
        match = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if match:
            raise ValueError(
                f"checkpoint {path}: holds Python objects ({match.group(1)}) besides tensors and "
                f"plain values, so it is not a jettag checkpoint and is not loaded "
                f"(weights_only=True)"
            ) from err
        raise ValueError(
            f"checkpoint {path}: cannot be read ({type(err).__name__}: "
            f"{_first_line(err)}); the file "
            f"({size} bytes) is truncated or corrupt. Delete it to start afresh, or resume "
            f"from another checkpoint"
        ) from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = (
            f"keys {sorted(map(str, state))[:8]}"
            if isinstance(state, dict)
            else type(state).__name__
        )
        raise ValueError(
            f"checkpoint {path}: not a jettag checkpoint (expected a dict with "
            f"format={CHECKPOINT_FORMAT!r}, found {found}); to load bare model weights use "
            f"model.load_state_dict(torch.load(path))"
        )
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"checkpoint {path}: format version {state.get('version')!r}, this jettag reads "
            f"version {CHECKPOINT_VERSION}"
        )
    missing = [key for key in _REQUIRED if key not in state]
    if missing:
        raise ValueError(f"checkpoint {path}: entries {missing} are missing; the file is damaged")
    if config_hash is not None and state["config_hash"] != config_hash:
        differing = ""
        saved = state.get("config")
        if config is not None and isinstance(saved, Mapping):
            keys = sorted(set(saved) | set(config))
            diffs = [
                f"{k}: checkpoint {saved.get(k)!r} vs now {config.get(k)!r}"
                for k in keys
                if saved.get(k) != config.get(k)
            ]
            if diffs:
                differing = "; differing options: " + ", ".join(diffs)
        raise ValueError(
            f"checkpoint {path}: written with a different training configuration (config hash "
            f"{state['config_hash']} vs {config_hash} now){differing}. Resume with the "
            f"original configuration, or start a new run in another directory"
        )
    return state


def _first_line(err: BaseException) -> str:
    text = str(err)
    if "WeightsUnpickler error:" in text:  # torch's weights-only unpickler: keep its reason
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def check_model_state(model: nn.Module, state: Mapping[str, Any], path: str | Path) -> None:
    """Raise a ValueError naming ``path`` if ``state`` does not fit ``model`` (keys, shapes)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {path}: the model weights do not match this model: "
            f"{len(missing)} missing key(s) {missing[:5]}, {len(unexpected)} unexpected key(s) "
            f"{unexpected[:5]}; the checkpoint belongs to a different model or configuration"
        )
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if isinstance(v, torch.Tensor)
        and isinstance(state[k], torch.Tensor)
        and state[k].shape != v.shape
    ]
    if shapes:
        raise ValueError(
            f"checkpoint {path}: tensor shapes differ from this model ({'; '.join(shapes[:5])}); "
            f"the checkpoint belongs to a model of another size"
        )


# ---------------------------------------------------------------------- RNG states


def capture_rng_state() -> dict[str, Any]:
    """States of the torch (CPU and CUDA), NumPy (global) and Python generators, as tensors and
    plain values (loadable with ``weights_only=True``)."""
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (global state)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(version),
            "state": torch.tensor(words, dtype=torch.int64),
            "gauss_next": gauss,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(  # noqa: NPY002 (the global state is what user code draws from)
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    random.setstate(
        (
            python_state["version"],
            tuple(int(w) for w in python_state["state"].tolist()),
            python_state["gauss_next"],
        )
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
