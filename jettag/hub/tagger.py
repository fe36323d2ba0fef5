"""``Tagger``: a trained model ready for analysis, with its configuration and class names.

A :class:`Tagger` wraps a jettag model (an ``nn.Module`` taking a
:class:`~jettag.data.JetBatch` and returning logits) together with everything needed to run
it on someone else's jets and to rebuild it from a file:

- the architecture as a :func:`jettag.models.create` name and its keyword configuration;
- the input preprocessing, :class:`TaggerInputs`: which per-particle fields become
  ``JetBatch.x``, whether constituents are made massless, how many are kept;
- the class names (the order of the outputs) and, for two classes, the signal class whose
  probability is the ``score``;
- a model card (a dict: training data, recipe, metrics, intended use, limitations; see
  :mod:`jettag.hub.zoo`).

:meth:`Tagger.predict` runs it on awkward arrays, ``JetBatch`` es or padded numpy arrays in
batches, on the CPU or a GPU, and returns class probabilities in input order.

Files. :meth:`Tagger.save` writes two files next to each other:

- ``<stem>.safetensors``: the weights (the ``safetensors`` format: a JSON header and raw
  tensor bytes; reading it never runs code) with the tagger description in the header's
  ``__metadata__`` (key ``"jettag"``: JSON of architecture, config, classes, signal,
  inputs, dtype, jettag version), so the file alone is enough to rebuild the tagger;
- ``<stem>.yaml``: the model card, including the same description and the SHA-256 of the
  weights file.

:meth:`Tagger.load` reads them back and refuses, with an error naming the file and the
problem, a file that is not safetensors, a truncated or tampered header, weights whose
keys, shapes or dtypes do not fit the architecture (all differences listed), non-finite
weights, a card that disagrees with the weights file, or a weights file whose checksum is
not the card's.

Example:
    >>> import torch
    >>> from jettag.hub import Tagger
    >>> from jettag.testing import random_jets
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> tagger = Tagger.from_config("efn", {"phi_channels": [16, 16], "f_channels": [16]},
    ...                             class_names=["QCD", "top"], signal="top")
    >>> tagger
    Tagger(efn, classes=['QCD', 'top'], signal='top', params=...)
    >>> jets = random_jets(5, 20, generator=0, layout="batch", dtype=torch.float32)
    >>> prediction = tagger.predict(jets)
    >>> prediction.probabilities.shape, prediction.score.shape
    ((5, 2), (5,))
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from jettag._version import __version__
from jettag.data.batch import JetBatch

if TYPE_CHECKING:
    import awkward as ak

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Prediction",
    "StateDictMismatchError",
    "Tagger",
    "TaggerFileError",
    "TaggerInputs",
    "check_state_dict",
    "resolve_device",
]

#: Value of ``__metadata__["format"]`` in a tagger's safetensors file.
FORMAT = "jettag-tagger"
#: Version of the tagger file layout this jettag writes and reads.
FORMAT_VERSION = 1

#: The momentum convention of every tagger input (documented in cards and ONNX metadata).
MOMENTUM_CONVENTION = (
    "constituent four-momenta (E, px, py, pz) in GeV, metric (+,-,-,-); padded layouts "
    "carry a bool mask, True = real particle"
)

_WEIGHT_SUFFIX = ".safetensors"
_CARD_SUFFIXES = (".yaml", ".yml")
_YAML_LOADER_NAME = "CSafeLoader"
# Header entries of a safetensors file are strings; cap what we parse from one.
_MAX_HEADER_JSON = 1 << 20


class TaggerFileError(ValueError):
    """A tagger file cannot be read, is damaged or inconsistent; the message names the file."""


class StateDictMismatchError(TaggerFileError):
    """Weights that do not fit the architecture.

    Attributes:
        missing: keys the model has and the weights lack.
        unexpected: keys the weights have and the model lacks.
        mismatched: ``(key, expected, found)`` for tensors of another shape or dtype, each
            description like ``"(64, 3) float32"``.
    """

    def __init__(
        self,
        source: str,
        what: str,
        missing: Sequence[str],
        unexpected: Sequence[str],
        mismatched: Sequence[tuple[str, str, str]],
    ) -> None:
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing key(s): {_some(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected key(s): {_some(self.unexpected)}")
        if self.mismatched:
            rows = [f"{k} (file {found}, model {expected})" for k, expected, found in mismatched]
            parts.append(f"{len(rows)} tensor(s) of another shape or dtype: {_some(rows)}")
        super().__init__(
            f"{source}: the weights do not fit {what}: " + "; ".join(parts) + ". The file "
            "belongs to another architecture or configuration (or was altered)"
        )


def _some(items: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... and {len(items) - limit} more" if len(items) > limit else "")


def _describe_tensor(t: Tensor) -> str:
    return f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}"


def check_state_dict(
    model: nn.Module, state: Mapping[str, Tensor], *, source: str, what: str | None = None
) -> None:
    """Check that ``state`` fits ``model`` exactly: same keys, shapes and dtypes, finite values.

    Args:
        model: the module the weights are for.
        state: the tensors read from a file.
        source: the file (or other origin) for the message.
        what: how to name the model in the message (default: its class name).

    Raises:
        StateDictMismatchError: listing all missing and unexpected keys and all tensors of
            another shape or dtype.
        TaggerFileError: a tensor holding NaN or infinity.
    """
    what = what or type(model).__name__
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        (key, _describe_tensor(value), _describe_tensor(state[key]))
        for key, value in own.items()
        if key in state
        and (state[key].shape != value.shape or state[key].dtype != value.dtype)
    ]
    if missing or unexpected or mismatched:
        raise StateDictMismatchError(source, what, missing, unexpected, mismatched)
    bad = [
        key
        for key, value in state.items()
        if value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]
    if bad:
        raise TaggerFileError(
            f"{source}: weight tensor(s) {_some(bad)} hold NaN or infinite values; the file "
            "is damaged"
        )


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` (or ``None``) -> the first CUDA GPU if one is usable, else the CPU."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', found {device!r}"
        ) from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but no CUDA GPU is usable here; use "
                         "'cpu' or 'auto'")
    return resolved


# --------------------------------------------------------------------------------------
# Input preprocessing
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaggerInputs:
    """How a tagger turns a user's jets into the ``JetBatch`` its model was trained on.

    The model itself computes its features from the ``JetBatch`` (see
    :mod:`jettag.data.features`); this covers what comes before.

    Args:
        x_fields: per-particle fields of the canonical awkward layout stacked, in this order,
            as the columns of ``JetBatch.x`` (e.g. ``("part_pid",)`` for quark/gluon taggers
            that read the PDG id). Empty: the model reads no ``x``.
        massless: replace each constituent's energy by ``|p|`` (taggers trained on massless
            constituents, such as the Delphes E-flow objects of the top-tagging dataset).
        max_particles: keep at most this many constituents per jet, the highest-pT ones
            (in their original order); ``None`` keeps all.

    Example:
        >>> TaggerInputs(x_fields=["part_pid"]).to_dict()
        {'x_fields': ['part_pid'], 'massless': False, 'max_particles': None}
    """

    x_fields: tuple[str, ...] = ()
    massless: bool = False
    max_particles: int | None = None

    def __post_init__(self) -> None:
        fields = self.x_fields
        if isinstance(fields, str) or not all(isinstance(f, str) and f for f in fields):
            raise ValueError(
                f"inputs.x_fields: expected a list of field names, found {fields!r}"
            )
        object.__setattr__(self, "x_fields", tuple(fields))
        if not isinstance(self.massless, bool):
            raise ValueError(f"inputs.massless: expected true or false, found {self.massless!r}")
        limit = self.max_particles
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 1):
            raise ValueError(
                f"inputs.max_particles: expected a positive integer or null, found {limit!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-ready form."""
        return {
            "x_fields": list(self.x_fields),
            "massless": self.massless,
            "max_particles": self.max_particles,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, *, source: str = "inputs") -> TaggerInputs:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming ``source``."""
        data = dict(data or {})
        known = {"x_fields", "massless", "max_particles"}
        extra = sorted(set(data) - known - {"description"})
        if extra:
            raise ValueError(f"{source}: unknown input option(s) {extra}; expected {sorted(known)}")
        try:
            return cls(
                x_fields=tuple(data.get("x_fields") or ()),
                massless=data.get("massless", False),
                max_particles=data.get("max_particles"),
            )
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: {err}") from None

    def prepare(self, jets: JetBatch) -> JetBatch:
        """Apply the preprocessing to a batch (returns a new batch; the input is unchanged).

        Raises:
            ValueError: ``x_fields`` are declared and ``jets.x`` is missing or has another
                number of columns.
        """
        x = jets.x
        if self.x_fields:
            width = None if x is None else x.shape[1]
            if width != len(self.x_fields):
                found = "no x" if x is None else f"x with {width} column(s)"
                raise ValueError(
                    f"jets: this tagger reads {len(self.x_fields)} per-particle field(s) "
                    f"{list(self.x_fields)} as JetBatch.x, found {found}; build the batch with "
                    f"JetBatch.from_awkward(jets, x_fields={list(self.x_fields)})"
                )
        p4, ptr = jets.p4, jets.ptr
        if self.massless:
            p4 = torch.cat([torch.linalg.vector_norm(p4[:, 1:], dim=1, keepdim=True),
                            p4[:, 1:]], dim=1)
        if self.max_particles is not None and jets.num_particles > 0:
            keep = _leading_mask(p4, jets, self.max_particles)
            if not bool(keep.all()):
                counts = torch.zeros(jets.num_jets, dtype=torch.int64, device=p4.device)
                counts.index_add_(0, jets.batch[keep], torch.ones_like(jets.batch[keep]))
                ptr = torch.zeros_like(jets.ptr)
                torch.cumsum(counts, 0, out=ptr[1:])
                p4 = p4[keep]
                x = None if x is None else x[keep]
        if p4 is jets.p4 and ptr is jets.ptr:
            return jets
        return JetBatch(p4, ptr, x=x, label=jets.label, fields=jets.fields)


def _leading_mask(p4: Tensor, jets: JetBatch, limit: int) -> Tensor:
    """Bool ``(P,)``: the ``limit`` highest-pT particles of each jet (ties: first stored)."""
    pt = torch.hypot(p4[:, 1], p4[:, 2])
    order = torch.sort(pt, descending=True, stable=True).indices
    order = order[torch.sort(jets.batch[order], stable=True).indices]
    # order now lists each jet's particles, jet after jet, by decreasing pT
    rank = torch.arange(order.numel(), device=p4.device) - jets.ptr[:-1][jets.batch[order]]
    keep = torch.zeros_like(pt, dtype=torch.bool)
    keep[order] = rank < limit
    return keep


# --------------------------------------------------------------------------------------
# Predictions
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    """Class probabilities of jets, in input order.

    Jets without constituents are not run through the model: their probabilities (and
    score) are NaN and ``empty`` is True.

    Attributes:
        probabilities: ``(B, K)`` softmax of the logits, columns in ``class_names`` order.
        class_names: the K class names.
        empty: ``(B,)`` bool, True for jets without constituents.
        signal: index of the signal class (two-class taggers), else ``None``.

    ``np.asarray(prediction)`` gives ``probabilities``.
    """

    probabilities: np.ndarray
    class_names: tuple[str, ...]
    empty: np.ndarray
    signal: int | None = None

    @property
    def score(self) -> np.ndarray | None:
        """``(B,)`` probability of the signal class (two-class taggers), else ``None``."""
        if self.signal is None:
            return None
        return self.probabilities[:, self.signal]

    def __len__(self) -> int:
        return self.probabilities.shape[0]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self.probabilities if dtype is None else self.probabilities.astype(dtype)
        return out.copy() if copy else out

    def columns(self) -> dict[str, np.ndarray]:
        """Output columns: ``prob_<class>`` per class, ``score`` (two classes), ``empty`` (0/1).

        Class names are made column-safe (characters other than letters, digits and ``_``
        become ``_``).
        """
        out: dict[str, np.ndarray] = {}
        for k, name in enumerate(self.class_names):
            out[f"prob_{column_name(name)}"] = self.probabilities[:, k]
        if self.signal is not None:
            out["score"] = self.probabilities[:, self.signal]
        out["empty"] = self.empty.astype(np.int8)
        return out


def column_name(name: str) -> str:
    """A class name as a column/branch-safe identifier."""
    return "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in name)


# --------------------------------------------------------------------------------------
# Jets of any supported kind, in batches
# --------------------------------------------------------------------------------------


class _Jets:
    """Uniform batched access to awkward arrays, JetBatches, JetChunks and padded arrays."""

    def __init__(
        self,
        jets: Any,
        x_fields: tuple[str, ...],
        mask: Any = None,
        features: Any = None,
    ) -> None:
        self.x_fields = x_fields
        self.kind, self.data = self._classify(jets, mask, features)

    def _classify(self, jets: Any, mask: Any, features: Any) -> tuple[str, Any]:
        if isinstance(jets, np.ndarray | Tensor):
            return "padded", self._padded(jets, mask, features)
        if mask is not None or features is not None:
            raise ValueError(
                "predict: mask= and features= go with padded (B, N, 4) arrays, found "
                f"{type(jets).__name__}"
            )
        if isinstance(jets, JetBatch):
            return "batch", jets
        from jettag.data.formats import JetChunk

        if isinstance(jets, JetChunk):
            return "batch", jets.to_batch(x_fields=list(self.x_fields))
        if type(jets).__module__.split(".")[0] == "awkward":
            return "awkward", jets
        raise ValueError(
            "predict: expected jets as an awkward Array in the canonical layout "
            "(part_energy, part_px, part_py, part_pz), a JetBatch, a JetChunk, or padded "
            f"four-momenta (B, N, 4) as a numpy array or tensor; found {type(jets).__name__}"
        )

    def _padded(self, p4: Any, mask: Any, features: Any) -> tuple[Tensor, Tensor, Tensor | None]:
        p4 = torch.as_tensor(p4)
        if p4.ndim != 3 or p4.shape[2] != 4 or not p4.is_floating_point():
            raise ValueError(
                f"predict: padded jets must be floating-point (B, N, 4) four-momenta "
                f"(E, px, py, pz) in GeV, found shape {tuple(p4.shape)} ({p4.dtype})"
            )
        if mask is None:
            # the top-tagging convention: an all-zero four-vector is padding
            mask = (p4 != 0).any(dim=-1)
        mask = torch.as_tensor(mask)
        if mask.shape != p4.shape[:2]:
            raise ValueError(
                f"predict: mask must have shape (B, N) = {tuple(p4.shape[:2])}, found "
                f"{tuple(mask.shape)}"
            )
        if mask.dtype != torch.bool:
            if mask.is_floating_point() and not bool(((mask == 0) | (mask == 1)).all()):
                raise ValueError("predict: mask must be bool or 0/1 (True = real particle)")
            mask = mask != 0
        x = None
        if features is not None:
            x = torch.as_tensor(features)
            if x.ndim != 3 or x.shape[:2] != p4.shape[:2]:
                raise ValueError(
                    f"predict: features must have shape (B, N, C) with (B, N) = "
                    f"{tuple(p4.shape[:2])}, found {tuple(x.shape)}"
                )
            x = x.to(p4.dtype)
        return p4, mask, x

    def __len__(self) -> int:
        if self.kind == "padded":
            return self.data[0].shape[0]
        return len(self.data)

    def batches(self, batch_size: int) -> Iterator[JetBatch]:
        n = len(self)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            if self.kind == "batch":
                yield self.data[start:stop]
            elif self.kind == "padded":
                p4, mask, x = self.data
                yield JetBatch.from_padded(
                    p4[start:stop], mask[start:stop], x=None if x is None else x[start:stop]
                )
            else:
                yield JetBatch.from_awkward(
                    self.data[start:stop],
                    x_fields=list(self.x_fields),
                    label_field=None,
                    jet_fields=[],
                )


# --------------------------------------------------------------------------------------
# Tagger
# --------------------------------------------------------------------------------------


class Tagger(nn.Module):
    r"""A trained tagger: model, configuration, input preprocessing, class names, card.

    Always used in evaluation mode. ``tagger(jets)`` returns the logits of a
    :class:`~jettag.data.JetBatch` after the input preprocessing; :meth:`predict` returns
    probabilities for any supported kind of jets.

    Args:
        model: a module taking a ``JetBatch`` and returning logits ``(B, K)``.
        architecture: its :func:`jettag.models.create` name (needed to save and reload).
        config: the keyword arguments of ``create`` that rebuild it (JSON-ready values).
        class_names: names of the K outputs, in order (default ``class_0 ... class_{K-1}``,
            K from ``model.num_classes``).
        signal: the signal class (name or index) whose probability is the score; default
            the second class of a two-class tagger, none for more classes.
        inputs: the input preprocessing (:class:`TaggerInputs` or its dict).
        card: the model card (see :mod:`jettag.hub.zoo`); its ``name`` names the tagger.
        name: the tagger's name (default: the card's ``name``, else the architecture).

    Example:
        >>> from jettag.models import create
        >>> model = create("pfn", phi_channels=[8, 8], f_channels=[8])
        >>> tagger = Tagger.from_model(model, architecture="pfn",
        ...                            config={"phi_channels": [8, 8], "f_channels": [8]})
        >>> tagger.class_names, tagger.signal_name
        (('class_0', 'class_1'), 'class_1')
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        architecture: str | None = None,
        config: Mapping[str, Any] | None = None,
        class_names: Sequence[str] | None = None,
        signal: str | int | None = None,
        inputs: TaggerInputs | Mapping[str, Any] | None = None,
        card: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ValueError(f"Tagger: model must be an nn.Module, found {type(model).__name__}")
        if isinstance(model, Tagger):
            raise ValueError("Tagger: model is already a Tagger; use it directly")
        self.model = model
        self.architecture = architecture
        self.config = _json_ready(dict(config or {}), "config")
        if class_names is None:
            num = getattr(model, "num_classes", None)
            if not isinstance(num, int) or num < 1:
                raise ValueError(
                    f"Tagger: class_names not given and {type(model).__name__} has no "
                    "num_classes; pass class_names=[...]"
                )
            class_names = [f"class_{k}" for k in range(num)]
        self.class_names = _check_class_names(class_names)
        num_model = getattr(model, "num_classes", None)
        if isinstance(num_model, int) and num_model != len(self.class_names):
            raise ValueError(
                f"Tagger: {len(self.class_names)} class names {list(self.class_names)} for a "
                f"model with num_classes={num_model}"
            )
        self.signal = _signal_index(signal, self.class_names)
        if not isinstance(inputs, TaggerInputs):
            inputs = TaggerInputs.from_dict(inputs)
        self.inputs = inputs
        self.card = _json_ready(dict(card or {}), "card")
        self.name = name or self.card.get("name") or architecture or type(model).__name__.lower()
        self.eval()

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        *,
        architecture: str | None = None,
        config: Mapping[str, Any] | None = None,
        class_names: Sequence[str] | None = None,
        signal: str | int | None = None,
        inputs: TaggerInputs | Mapping[str, Any] | None = None,
        card: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> Tagger:
        """Wrap an existing model (trained here, or built by an importer of external weights).

        Same arguments as :class:`Tagger`. Give ``architecture`` and ``config`` (the
        :func:`jettag.models.create` call that rebuilds the model) to be able to
        :meth:`save` it.
        """
        return cls(
            model,
            architecture=architecture,
            config=config,
            class_names=class_names,
            signal=signal,
            inputs=inputs,
            card=card,
            name=name,
        )

    @classmethod
    def from_config(
        cls,
        architecture: str,
        config: Mapping[str, Any] | None = None,
        *,
        state_dict: Mapping[str, Tensor] | None = None,
        dtype: torch.dtype | None = None,
        **kwargs: Any,
    ) -> Tagger:
        """Build the model with :func:`jettag.models.create`, optionally load weights.

        Args:
            architecture: registry name (``"pfn"``, ``"efn"``, ``"particlenet"``, ...).
            config: keyword arguments of ``create``.
            state_dict: weights to load (checked with :func:`check_state_dict`).
            dtype: floating dtype of the model (default: as created, float32).
            **kwargs: the other arguments of :class:`Tagger`.
        """
        model = _build_model(architecture, config or {}, source="from_config")
        if dtype is not None:
            model = model.to(dtype)
        if state_dict is not None:
            check_state_dict(model, state_dict, source="state_dict", what=architecture)
            model.load_state_dict(state_dict, strict=True)
        return cls(model, architecture=architecture, config=config, **kwargs)

    # ------------------------------------------------------------------ properties

    @property
    def num_classes(self) -> int:
        """Number of outputs K."""
        return len(self.class_names)

    @property
    def signal_name(self) -> str | None:
        """Name of the signal class, or ``None``."""
        return None if self.signal is None else self.class_names[self.signal]

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the weights (float32 unless converted)."""
        for p in self.model.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.get_default_dtype()

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        for p in self.model.parameters():
            return p.device
        return torch.device("cpu")

    def description(self) -> dict[str, Any]:
        """The machine-readable description stored with the weights (JSON-ready)."""
        return {
            "name": self.name,
            "model": {
                "architecture": self.architecture,
                "config": copy.deepcopy(self.config),
                "parameters": sum(p.numel() for p in self.model.parameters()),
            },
            "classes": list(self.class_names),
            "signal": self.signal_name,
            "inputs": self.inputs.to_dict(),
            "dtype": str(self.dtype).removeprefix("torch."),
            "jettag_version": __version__,
        }

    def __repr__(self) -> str:
        params = sum(p.numel() for p in self.model.parameters())
        signal = "" if self.signal is None else f", signal={self.signal_name!r}"
        arch = self.architecture or type(self.model).__name__
        name = "" if self.name == arch else f"{self.name!r}, "
        return (
            f"Tagger({name}{arch}, classes={list(self.class_names)}{signal}, params={params:,})"
        )

    # ------------------------------------------------------------------ running

    def prepare(self, jets: JetBatch) -> JetBatch:
        """The batch the model sees: :meth:`TaggerInputs.prepare` of ``jets``."""
        return self.inputs.prepare(jets)

    def forward(self, jets: JetBatch) -> Tensor:
        """Logits ``(B, K)`` of a ``JetBatch`` (after the input preprocessing)."""
        logits = self.model(self.prepare(jets))
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"Tagger {self.name!r}: the model returned shape {tuple(logits.shape)}, "
                f"expected (B, {self.num_classes}) logits for classes {list(self.class_names)}"
            )
        return logits

    def predict(
        self,
        jets: ak.Array | JetBatch | np.ndarray | Tensor | Any,
        *,
        mask: np.ndarray | Tensor | None = None,
        features: np.ndarray | Tensor | None = None,
        batch_size: int = 1024,
        device: str | torch.device | None = "auto",
        progress: bool = False,
    ) -> Prediction:
        """Class probabilities of jets, batch by batch, in input order.

        Args:
            jets: an awkward Array of jets in the canonical layout (``part_energy, part_px,
                part_py, part_pz`` in GeV and the tagger's ``x_fields``), a
                :class:`~jettag.data.JetBatch` (with ``x`` holding the ``x_fields``
                columns), a :class:`~jettag.data.formats.JetChunk`, or padded four-momenta
                ``(B, N, 4)`` as a numpy array or tensor.
            mask: for padded jets, ``(B, N)`` bool, True = real particle; default: every
                slot whose four-momentum is not all zero.
            features: for padded jets, ``(B, N, C)`` per-particle features, the
                ``x_fields`` columns in order.
            batch_size: jets per forward pass.
            device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda:0"``, ...;
                the tagger is moved there and stays there.
            progress: show a progress bar (tqdm) over the jets.

        Returns:
            A :class:`Prediction`: probabilities ``(B, K)`` (NaN for jets without
            constituents, flagged in ``empty``) and, for two classes, ``score``.

        Models whose output depends on the batch (LorentzNet's ``"padded_mean"`` readout
        without a fixed ``pad_to``) give results that depend on ``batch_size``.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, found {batch_size!r}")
        source = _Jets(jets, self.inputs.x_fields, mask, features)
        target = resolve_device(device)
        self.to(target)
        self.eval()
        total = len(source)
        dtype = self.dtype
        probabilities = np.full((total, self.num_classes), np.nan, dtype=_numpy_dtype(dtype))
        empty = np.zeros(total, dtype=bool)
        from tqdm.auto import tqdm

        start = 0
        with torch.inference_mode(), tqdm(
            total=total, unit="jet", disable=not progress, desc=f"{self.name}"
        ) as bar:
            for batch in source.batches(batch_size):
                stop = start + batch.num_jets
                counts = batch.counts
                filled = counts > 0
                empty[start:stop] = (~filled).numpy()
                if bool(filled.any()):
                    run = batch if bool(filled.all()) else batch[filled]
                    logits = self(run.to(target, dtype))
                    probs = torch.softmax(logits, dim=-1).cpu().numpy()
                    rows = np.arange(start, stop)[filled.numpy()]
                    probabilities[rows] = probs
                start = stop
                bar.update(batch.num_jets)
        return Prediction(probabilities, self.class_names, empty, self.signal)

    # ------------------------------------------------------------------ files

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = True) -> Path:
        """Write ``<stem>.safetensors`` (weights + description) and ``<stem>.yaml`` (card).

        ``path`` may end in ``.safetensors`` or ``.yaml`` or be the stem. Each file is
        written under a temporary name and renamed into place. The saved tagger is named
        by its card's ``name``, else by the file stem. Before writing, the model
        is rebuilt from ``architecture`` and ``config`` and must accept the weights, so a
        saved tagger always loads.

        Returns:
            The path of the weights file.

        Raises:
            ValueError: no ``architecture`` (a model not from :func:`jettag.models.create`),
                a ``config`` that does not rebuild this model, or a card that contradicts
                the tagger.
            FileExistsError: a file exists and ``overwrite`` is False.
        """
        import yaml
        from safetensors.torch import save as safetensors_save

        weights_path, card_path = _paths(path)
        if self.architecture is None:
            raise ValueError(
                f"Tagger.save: tagger {self.name!r} has no architecture (a jettag.models.create "
                "name); build it with Tagger.from_model(model, architecture=..., config=...) "
                "to save it"
            )
        for p in (weights_path, card_path):
            if p.exists() and not overwrite:
                raise FileExistsError(f"{p}: exists (pass overwrite=True to replace it)")
        state = {
            k: v.detach().cpu().contiguous().clone() for k, v in self.model.state_dict().items()
        }
        self._check_rebuild(state)
        description = self.description()
        # the saved tagger is named by its card, else by its file
        description["name"] = self.card.get("name") or weights_path.name.removesuffix(
            _WEIGHT_SUFFIX
        )
        card = _merge_card(self.card, description, source="Tagger.save card")
        header = {
            "format": FORMAT,
            "format_version": str(FORMAT_VERSION),
            "jettag": json.dumps(description, sort_keys=True),
            "card": json.dumps(_strip_machine_sections(card), sort_keys=True),
        }
        blob = safetensors_save(state, metadata=header)
        card["weights"] = {
            "file": weights_path.name,
            "format": "safetensors",
            "sha256": hashlib.sha256(blob).hexdigest(),
            "bytes": len(blob),
        }
        text = yaml.safe_dump(card, sort_keys=False, allow_unicode=True)
        _atomic_write(weights_path, blob)
        _atomic_write(card_path, text.encode("utf-8"))
        return weights_path

    def _check_rebuild(self, state: Mapping[str, Tensor]) -> None:
        assert self.architecture is not None
        source = f"Tagger.save({self.name!r})"
        rebuilt = _build_model(self.architecture, self.config, source=source).to(self.dtype)
        check_state_dict(rebuilt, state, source=source, what=f"{self.architecture} {self.config}")
        rebuilt.load_state_dict(state, strict=True)
        rebuilt.eval()
        jets = _probe_jets(self.inputs, self.dtype)
        original_device, training = self.device, self.model.training
        try:
            with torch.inference_mode():
                expected = self.model.to("cpu").eval()(self.prepare(jets))
                found = rebuilt(self.prepare(jets))
        except Exception:  # models that cannot run on the probe jets: keys/shapes suffice
            return
        finally:
            self.model.to(original_device).train(training)
        if expected.shape != found.shape or not torch.allclose(
            expected, found, rtol=1e-5, atol=1e-6, equal_nan=True
        ):
            raise ValueError(
                f"{source}: jettag.models.create({self.architecture!r}, **config) with "
                f"config={self.config} builds a model that gives other outputs with these "
                "weights; the config misses an option that changes the computation (e.g. "
                "coords, axis, inputs). Pass the full config to Tagger.from_model"
            )

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        device: str | torch.device | None = "cpu",
        card: Mapping[str, Any] | None = None,
    ) -> Tagger:
        """Read a tagger written by :meth:`save` (never runs code from the files).

        Args:
            path: the ``.safetensors`` file, its ``.yaml`` card, or their common stem. The
                card is optional: the weights file alone describes the tagger; when a card
                sits next to it, the two must agree and the weights must have the card's
                SHA-256.
            device: where to put the model (``"auto"``: CUDA if available).
            card: an already parsed card to use instead of reading the ``.yaml`` (the zoo
                passes its validated card).

        Raises:
            FileNotFoundError: no such file.
            TaggerFileError: not a tagger file, a damaged or tampered file (bad header,
                truncated, checksum), weights that do not fit the architecture
                (:class:`StateDictMismatchError`), or a card that disagrees with them.
        """
        weights_path, card_path = _paths(path)
        if card is None and card_path.is_file():
            card = read_card(card_path)
        if not weights_path.is_file():
            if Path(path).suffix.lower() not in (_WEIGHT_SUFFIX, *_CARD_SUFFIXES, ""):
                raise TaggerFileError(
                    f"{path}: not a jettag tagger file; expected <name>.safetensors with its "
                    "<name>.yaml card. External checkpoints (.pt) load through "
                    "jettag.hub.load_weaver_particlenet / load_lorentznet_release"
                )
            raise FileNotFoundError(f"{weights_path}: no such tagger weights file")
        if card is not None:
            _verify_checksum(weights_path, card, card_path)
        header, state = _read_safetensors(weights_path)
        description = _parse_header(header, weights_path)
        if card is not None:
            _check_agreement(card, description, weights_path, card_path)
        else:
            card = _parse_card_header(header, weights_path)
        model_section = description["model"]
        architecture = model_section.get("architecture")
        if not isinstance(architecture, str):
            raise TaggerFileError(
                f"{weights_path}: the description names no architecture; not loadable"
            )
        config = model_section.get("config") or {}
        dtype = _torch_dtype(description.get("dtype", "float32"), weights_path)
        model = _build_model(architecture, config, source=str(weights_path)).to(dtype)
        check_state_dict(model, state, source=str(weights_path), what=f"{architecture} {config}")
        model.load_state_dict(state, strict=True)
        parameters = model_section.get("parameters")
        actual = sum(p.numel() for p in model.parameters())
        if parameters is not None and parameters != actual:
            raise TaggerFileError(
                f"{weights_path}: the description lists {parameters} parameters, the "
                f"rebuilt {architecture} has {actual}"
            )
        try:
            tagger = cls(
                model,
                architecture=architecture,
                config=config,
                class_names=description.get("classes"),
                signal=description.get("signal"),
                inputs=TaggerInputs.from_dict(description.get("inputs"), source=str(weights_path)),
                card=_strip_machine_sections(card),
                name=description.get("name"),
            )
        except ValueError as err:
            raise TaggerFileError(f"{weights_path}: invalid tagger description: {err}") from None
        return tagger.to(resolve_device(device))


# --------------------------------------------------------------------------------------
# Helpers: models, cards, files
# --------------------------------------------------------------------------------------


def _build_model(architecture: str, config: Mapping[str, Any], *, source: str) -> nn.Module:
    from jettag.models import available, create

    if architecture not in available():
        raise TaggerFileError(
            f"{source}: unknown architecture {architecture!r}; this jettag provides "
            f"{available()} (a newer jettag may be needed)"
        )
    if not isinstance(config, Mapping):
        raise TaggerFileError(f"{source}: model config must be a mapping, found {config!r}")
    try:
        return create(architecture, **dict(config))
    except (TypeError, ValueError) as err:
        raise TaggerFileError(
            f"{source}: cannot build {architecture} from config {dict(config)}: {err}"
        ) from None


def _probe_jets(inputs: TaggerInputs, dtype: torch.dtype) -> JetBatch:
    from jettag.testing import random_jets

    # massive constituents, so that options such as rapidity versus pseudorapidity show
    jets = random_jets(4, 12, generator=0, min_particles=2, massive=True, layout="batch",
                       dtype=dtype)
    if inputs.x_fields:
        # plausible values for every column: a charged pion where a PDG id is expected
        columns = [
            torch.full((jets.num_particles,), 211.0 if "pid" in name else 0.5, dtype=dtype)
            for name in inputs.x_fields
        ]
        jets = JetBatch(jets.p4, jets.ptr, x=torch.stack(columns, dim=1))
    return jets


def _check_class_names(names: Sequence[str]) -> tuple[str, ...]:
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ValueError(f"class_names: expected a list of names, found {names!r}")
    out = tuple(names)
    if not out or not all(isinstance(n, str) and n for n in out):
        raise ValueError(f"class_names: expected non-empty strings, found {list(out)}")
    if len(set(out)) != len(out) or len({column_name(n) for n in out}) != len(out):
        raise ValueError(f"class_names: names must be distinct (as columns too), found {list(out)}")
    return out


def _signal_index(signal: str | int | None, names: tuple[str, ...]) -> int | None:
    if signal is None:
        return 1 if len(names) == 2 else None
    if isinstance(signal, bool):
        raise ValueError(f"signal: expected a class name or index, found {signal!r}")
    if isinstance(signal, int):
        if not 0 <= signal < len(names):
            raise ValueError(f"signal: index {signal} out of range for classes {list(names)}")
        return signal
    if signal not in names:
        raise ValueError(f"signal: {signal!r} is not one of the classes {list(names)}")
    return names.index(signal)


def _iso_date(value: Any) -> str:
    # YAML reads unquoted dates as date objects
    if isinstance(value, datetime.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _json_ready(value: Any, where: str) -> Any:
    """Deep copy of ``value`` with tuples as lists and dates as ISO strings; anything else
    that is not JSON-ready is an error."""
    try:
        return json.loads(json.dumps(value, allow_nan=False, default=_iso_date))
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{where}: must hold only JSON-ready values (numbers, strings, lists, dicts), "
            f"found {value!r} ({err})"
        ) from None


_MACHINE_SECTIONS = ("model", "classes", "signal", "inputs", "weights", "jettag_version")


def _strip_machine_sections(card: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in card.items() if k not in _MACHINE_SECTIONS and k != "dtype"}


def _merge_card(
    card: Mapping[str, Any], description: Mapping[str, Any], *, source: str
) -> dict[str, Any]:
    """The card to write: the user's sections with the description's machine sections."""
    merged: dict[str, Any] = {"schema_version": card.get("schema_version", 1)}
    merged["name"] = card.get("name", description["name"])
    for key, value in card.items():
        if key in ("schema_version", "name") or key in _MACHINE_SECTIONS:
            continue
        merged[key] = copy.deepcopy(value)
    merged["model"] = description["model"]
    merged["classes"] = description["classes"]
    merged["signal"] = description["signal"]
    merged["inputs"] = dict(description["inputs"], description=MOMENTUM_CONVENTION)
    merged["dtype"] = description["dtype"]
    merged["jettag_version"] = description["jettag_version"]
    _check_agreement(card, description, source, None, partial=True)
    return merged


def _check_agreement(
    card: Mapping[str, Any],
    description: Mapping[str, Any],
    weights: str | Path,
    card_path: Path | None,
    *,
    partial: bool = False,
) -> None:
    """The card's machine sections must equal the weights file's description."""
    where = f"{card_path} and {weights}" if card_path is not None else str(weights)
    differences = []
    model = card.get("model")
    if model is not None or not partial:
        model = model if isinstance(model, Mapping) else {}
        for key in ("architecture", "config"):
            if model.get(key) != description["model"].get(key):
                differences.append(
                    f"model.{key}: card {model.get(key)!r}, weights {description['model'][key]!r}"
                )
    for key in ("classes", "signal"):
        if (key in card or not partial) and card.get(key) != description.get(key):
            differences.append(f"{key}: card {card.get(key)!r}, weights {description.get(key)!r}")
    if "inputs" in card or not partial:
        inputs = card.get("inputs") if isinstance(card.get("inputs"), Mapping) else {}
        try:
            card_inputs = TaggerInputs.from_dict(inputs, source="card inputs").to_dict()
        except ValueError as err:
            differences.append(str(err))
        else:
            if card_inputs != description["inputs"]:
                differences.append(f"inputs: card {card_inputs}, weights {description['inputs']}")
    if differences:
        raise TaggerFileError(f"{where}: the card disagrees with the weights: " +
                              "; ".join(differences))


def read_card(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a model card YAML with the safe loader (plain data only, no Python objects)."""
    import yaml

    path = Path(path)
    loader = getattr(yaml, _YAML_LOADER_NAME, yaml.SafeLoader)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise TaggerFileError(f"{path}: cannot read the model card YAML: {err}") from None
    if not isinstance(data, dict):
        raise TaggerFileError(
            f"{path}: a model card must be a YAML mapping, found {type(data).__name__}"
        )
    return data


def _paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix == _WEIGHT_SUFFIX:
        stem = path.with_suffix("")
    elif suffix in _CARD_SUFFIXES:
        stem = path.with_suffix("")
        return stem.with_name(stem.name + _WEIGHT_SUFFIX), path
    else:
        stem = path
    return stem.with_name(stem.name + _WEIGHT_SUFFIX), stem.with_name(stem.name + ".yaml")


def _verify_checksum(weights: Path, card: Mapping[str, Any], card_path: Path) -> None:
    section = card.get("weights")
    expected = section.get("sha256") if isinstance(section, Mapping) else None
    if expected is None:
        return
    digest = hashlib.sha256()
    with open(weights, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != str(expected).lower():
        raise TaggerFileError(
            f"{weights}: SHA-256 {digest.hexdigest()} differs from {expected} in its card "
            f"{card_path}; the weights were altered, truncated or replaced. Restore the "
            "file, or re-save the tagger to write a matching card"
        )


def _read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, Tensor]]:
    from safetensors import SafetensorError, safe_open

    size = path.stat().st_size
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            header = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except SafetensorError as err:
        raise TaggerFileError(
            f"{path}: not a readable safetensors file ({err}; {size} bytes); the file is "
            "truncated, damaged or of another format"
        ) from None
    except (OSError, RuntimeError, ValueError, TypeError) as err:
        raise TaggerFileError(
            f"{path}: cannot read the tensors ({type(err).__name__}: {err}); the file is "
            "damaged"
        ) from None
    return dict(header), state


def _parse_header(header: Mapping[str, str], path: Path) -> dict[str, Any]:
    if header.get("format") != FORMAT:
        raise TaggerFileError(
            f"{path}: a safetensors file but not a jettag tagger (header format "
            f"{header.get('format')!r}, expected {FORMAT!r}); bare weights load with "
            "Tagger.from_config(architecture, config, state_dict=safetensors.torch.load_file(...))"
        )
    version = header.get("format_version")
    if version != str(FORMAT_VERSION):
        raise TaggerFileError(
            f"{path}: tagger file format version {version!r}; this jettag reads version "
            f"{FORMAT_VERSION}"
        )
    description = _header_json(header, "jettag", path)
    problems = []
    if not isinstance(description.get("model"), Mapping):
        problems.append("'model' must be a mapping")
    elif not isinstance(description["model"].get("config", {}), Mapping):
        problems.append("'model.config' must be a mapping")
    if not isinstance(description.get("classes"), list):
        problems.append("'classes' must be a list")
    if problems:
        raise TaggerFileError(f"{path}: malformed tagger description: {'; '.join(problems)}")
    return description


def _parse_card_header(header: Mapping[str, str], path: Path) -> dict[str, Any]:
    return _header_json(header, "card", path) if "card" in header else {}


def _header_json(header: Mapping[str, str], key: str, path: Path) -> dict[str, Any]:
    text = header.get(key)
    if not isinstance(text, str) or len(text) > _MAX_HEADER_JSON:
        raise TaggerFileError(f"{path}: header entry {key!r} is missing or too large")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise TaggerFileError(f"{path}: header entry {key!r} is not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise TaggerFileError(f"{path}: header entry {key!r} must be a JSON object")
    return value


def _torch_dtype(name: Any, path: Path) -> torch.dtype:
    dtypes = {"float32": torch.float32, "float64": torch.float64}
    if name not in dtypes:
        raise TaggerFileError(f"{path}: dtype {name!r} not supported; expected {sorted(dtypes)}")
    return dtypes[name]


def _numpy_dtype(dtype: torch.dtype) -> type:
    return np.float64 if dtype == torch.float64 else np.float32


def readable_mode() -> int:
    """Permission bits of a new regular file under the current umask (mkstemp gives 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, readable_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise

