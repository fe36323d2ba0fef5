"""The model zoo: pretrained taggers shipped with jettag, each with a model card.

An entry is two files in a zoo directory: ``<name>.safetensors`` (weights and the tagger
description, written by :meth:`~jettag.hub.Tagger.save`) and ``<name>.yaml``, its model
card. Adding an entry means dropping those two files in ``jettag/hub/zoo/`` (the package's
zoo) or in a directory listed in the environment variable ``JETTAG_ZOO_PATH``
(``os.pathsep``-separated, searched after the package's zoo).

The card says what the tagger is and how far to trust it (schema :data:`MODEL_CARD_SCHEMA`,
checked by :func:`validate_model_card` before any entry is loaded):

- ``model`` (architecture, config, parameter count), ``classes``, ``signal``, ``inputs``
  and ``weights`` (file, SHA-256): written by ``Tagger.save``;
- ``training``: the data (data card name, description, number of jets per split), the
  recipe and the exact command that trained it;
- ``evaluation``: the held-out test split it was measured on (data card, split, size) and
  its metrics, each with an uncertainty;
- ``intended_use`` and ``limitations`` (e.g. trained on particle-level Pythia jets, not
  on detector data).

Loading an entry checks the card against the schema, the weights file against the card's
SHA-256, and the weights against the architecture (see :meth:`~jettag.hub.Tagger.load`).

Example:
    >>> from jettag.hub import list_pretrained, load_pretrained
    >>> names = list_pretrained()                 # e.g. ['top-pfn-generated', ...]
    >>> tagger = load_pretrained(names[0])        # doctest: +SKIP
    >>> tagger.predict(jets).score                # doctest: +SKIP
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from jettag.hub.tagger import Tagger, TaggerFileError, read_card

__all__ = [
    "MODEL_CARD_SCHEMA",
    "ZOO_DIR",
    "ModelCardError",
    "UnknownTaggerError",
    "list_pretrained",
    "load_pretrained",
    "pretrained_card",
    "validate_model_card",
    "zoo_directories",
]

#: The package's zoo directory (weights and cards installed with jettag).
ZOO_DIR = Path(__file__).resolve().parent / "zoo"
#: Environment variable listing more zoo directories (``os.pathsep``-separated).
ZOO_PATH_VARIABLE = "JETTAG_ZOO_PATH"

_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,99}$"
_NAME_RE = re.compile(_NAME_PATTERN)


class ModelCardError(ValueError):
    """A model card is malformed or incomplete; the message names the card and the keys."""


class UnknownTaggerError(ModelCardError, KeyError):
    """No zoo entry of that name."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------

_STR = {"type": "string", "minLength": 1}
_COUNT = {"type": "integer", "minimum": 0}
_TEXT = {
    "description": "free text, or a list of statements",
    "anyOf": [_STR, {"type": "array", "items": _STR, "minItems": 1}],
}
_DATA = {
    "type": "object",
    "required": ["description"],
    "properties": {
        "card": {
            **_STR,
            "description": "name of the jettag data card (jettag.data.cards.list_cards())",
        },
        "description": _STR,
        "generator_seed": {"type": ["integer", "null"]},
    },
}
_METRIC = {
    "type": "object",
    "required": ["name", "value", "uncertainty"],
    "properties": {
        "name": {**_STR, "description": "e.g. accuracy, auc, rejection@30%"},
        "value": {"type": "number"},
        "uncertainty": {
            "type": "number",
            "minimum": 0,
            "description": "one standard deviation (e.g. bootstrap or over training seeds)",
        },
        "description": _STR,
    },
    "additionalProperties": False,
}

#: JSON schema (draft 2020-12) of a complete model card, what every zoo entry must satisfy.
MODEL_CARD_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "jettag model card",
    "type": "object",
    "required": [
        "schema_version",
        "name",
        "title",
        "summary",
        "model",
        "classes",
        "signal",
        "inputs",
        "weights",
        "training",
        "evaluation",
        "intended_use",
        "limitations",
    ],
    "properties": {
        "schema_version": {"const": 1},
        "name": {"type": "string", "pattern": _NAME_PATTERN},
        "title": _STR,
        "summary": _STR,
        "model": {
            "type": "object",
            "required": ["architecture", "config", "parameters"],
            "properties": {
                "architecture": {**_STR, "description": "jettag.models.create name"},
                "config": {"type": "object"},
                "parameters": _COUNT,
            },
        },
        "classes": {"type": "array", "items": _STR, "minItems": 1, "uniqueItems": True},
        "signal": {"type": ["string", "null"]},
        "inputs": {
            "type": "object",
            "properties": {
                "x_fields": {"type": "array", "items": _STR},
                "massless": {"type": "boolean"},
                "max_particles": {"type": ["integer", "null"], "minimum": 1},
                "description": _STR,
            },
            "additionalProperties": False,
        },
        "dtype": {"enum": ["float32", "float64"]},
        "jettag_version": _STR,
        "weights": {
            "type": "object",
            "required": ["file", "sha256"],
            "properties": {
                "file": _STR,
                "format": {"const": "safetensors"},
                "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "bytes": _COUNT,
            },
        },
        "training": {
            "type": "object",
            "required": ["data", "size", "recipe", "command"],
            "properties": {
                "data": _DATA,
                "size": {
                    "type": "object",
                    "description": "number of jets per split used in training",
                    "required": ["train", "validation"],
                    "properties": {"train": _COUNT, "validation": _COUNT},
                    "additionalProperties": _COUNT,
                },
                "recipe": _TEXT,
                "command": _STR,
                "epochs": _COUNT,
                "seed": {"type": "integer"},
                "hardware": _STR,
            },
        },
        "evaluation": {
            "type": "object",
            "required": ["data", "split", "size", "metrics"],
            "properties": {
                "data": _DATA,
                "split": {**_STR, "description": "the held-out split, e.g. 'test'"},
                "size": _COUNT,
                "metrics": {"type": "array", "items": _METRIC, "minItems": 1},
            },
        },
        "intended_use": _TEXT,
        "limitations": _TEXT,
        "authors": {"type": "array", "items": _STR},
        "citation": _STR,
        "licence": _STR,
    },
}


@functools.cache
def _validator() -> Any:
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(MODEL_CARD_SCHEMA)
    return jsonschema.Draft202012Validator(MODEL_CARD_SCHEMA)


def _format_path(path: Sequence[Any]) -> str:
    return "card" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def validate_model_card(card: Mapping[str, Any], *, source: str = "model card") -> None:
    """Check a complete model card: the schema, then its cross-references.

    Beyond :data:`MODEL_CARD_SCHEMA`: ``signal`` must be one of ``classes`` (or null for
    more than two classes), ``weights.file`` must be ``<name>.safetensors``, and the data
    cards named in ``training.data.card`` / ``evaluation.data.card`` must exist.

    Args:
        card: the parsed YAML.
        source: the file or name, for the message.

    Raises:
        ModelCardError: naming ``source`` and every offending key.
    """
    errors = sorted(_validator().iter_errors(dict(card)), key=lambda e: list(map(str, e.path)))
    if errors:
        lines = [f"{_format_path(list(e.absolute_path))}: {e.message}" for e in errors[:12]]
        more = f"\n  ... and {len(errors) - 12} more" if len(errors) > 12 else ""
        raise ModelCardError(
            f"{source}: model card does not follow the schema (jettag.hub.zoo."
            "MODEL_CARD_SCHEMA):\n  " + "\n  ".join(lines) + more
        )
    problems = []
    classes = list(card["classes"])
    signal = card["signal"]
    if signal is None and len(classes) == 2:
        problems.append("signal: a two-class tagger names its signal class")
    if signal is not None and signal not in classes:
        problems.append(f"signal: {signal!r} is not one of the classes {classes}")
    expected_file = f"{card['name']}.safetensors"
    if card["weights"]["file"] != expected_file:
        problems.append(f"weights.file: expected {expected_file!r}, found "
                        f"{card['weights']['file']!r}")
    from jettag.data.cards import list_cards

    known = set(list_cards())
    for section in ("training", "evaluation"):
        data_card = card[section]["data"].get("card")
        if data_card is not None and data_card not in known:
            problems.append(
                f"{section}.data.card: {data_card!r} is not a jettag data card "
                f"(known: {sorted(known)})"
            )
    if problems:
        raise ModelCardError(f"{source}: inconsistent model card:\n  " + "\n  ".join(problems))


# --------------------------------------------------------------------------------------
# Entries
# --------------------------------------------------------------------------------------


def zoo_directories(directory: str | os.PathLike[str] | None = None) -> list[Path]:
    """Directories searched for zoo entries, in order.

    ``directory`` alone when given; else the package's :data:`ZOO_DIR` followed by those
    of ``$JETTAG_ZOO_PATH``.
    """
    if directory is not None:
        return [Path(directory).expanduser()]
    extra = os.environ.get(ZOO_PATH_VARIABLE, "")
    return [ZOO_DIR, *(Path(p).expanduser() for p in extra.split(os.pathsep) if p)]


def list_pretrained(*, directory: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of the zoo entries (a card ``<name>.yaml`` with its ``<name>.safetensors``).

    Args:
        directory: search only this directory (default: :func:`zoo_directories`).
    """
    names: set[str] = set()
    for folder in zoo_directories(directory):
        if not folder.is_dir():
            continue
        for card in folder.glob("*.yaml"):
            name = card.stem
            if _NAME_RE.match(name) and card.with_suffix(".safetensors").is_file():
                names.add(name)
    return sorted(names)


def _find(name: str, directory: str | os.PathLike[str] | None) -> Path:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise UnknownTaggerError(
            f"pretrained tagger name {name!r}: expected lower-case letters, digits, '.', '_' "
            "or '-' (see jettag.hub.list_pretrained())"
        )
    for folder in zoo_directories(directory):
        path = folder / f"{name}.yaml"
        if path.is_file():
            return path
    available = list_pretrained(directory=directory)
    listed = ", ".join(available) if available else "none are installed yet"
    searched = ", ".join(str(d) for d in zoo_directories(directory))
    raise UnknownTaggerError(
        f"no pretrained tagger {name!r} (available: {listed}; searched {searched}). A tagger "
        "file of your own loads with jettag.hub.Tagger.load(path)"
    )


def pretrained_card(
    name: str, *, directory: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """The validated model card of zoo entry ``name``.

    Raises:
        UnknownTaggerError: no entry of that name.
        ModelCardError: the card is malformed or incomplete.
    """
    path = _find(name, directory)
    try:
        card = read_card(path)
    except TaggerFileError as err:
        raise ModelCardError(str(err)) from None
    validate_model_card(card, source=str(path))
    if card["name"] != name:
        raise ModelCardError(f"{path}: card name {card['name']!r} differs from its file name")
    return card


def load_pretrained(
    name: str,
    *,
    device: str | torch.device | None = "cpu",
    directory: str | os.PathLike[str] | None = None,
) -> Tagger:
    """Load zoo entry ``name`` as a ready :class:`~jettag.hub.Tagger` in evaluation mode.

    Args:
        name: an entry of :func:`list_pretrained`.
        device: where to put it (``"auto"``: CUDA if available, else CPU).
        directory: look only in this directory.

    Raises:
        UnknownTaggerError: no entry of that name (the message lists the available ones).
        ModelCardError: the card is malformed or incomplete.
        FileNotFoundError: the card's weights file is missing.
        TaggerFileError: the weights do not match the card's checksum, the card's
            description, or the architecture.
    """
    card = pretrained_card(name, directory=directory)
    card_path = _find(name, directory)
    weights = card_path.with_name(card["weights"]["file"])
    if not weights.is_file():
        raise FileNotFoundError(
            f"{weights}: weights of pretrained tagger {name!r} are missing (its card is "
            f"{card_path}); reinstall jettag or restore the file"
        )
    return Tagger.load(weights, device=device, card=card)
