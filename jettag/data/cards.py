"""Data cards: one machine-readable YAML description per dataset, and its Markdown rendering.

A card says where a dataset comes from (record, DOI, files with sizes and checksums), how it
is laid out on disk, what its labels mean, how it was generated, its licence and citation,
its known caveats, and the canonical feature preprocessing of the models trained on it
(per-variable centre, scale, clip and pad length, as the weaver / Particle Transformer data
YAMLs declare them). The downloader (:mod:`jettag.data.download`) and the feature
:class:`~jettag.data.features.Preprocessor` read their numbers from the cards, never from
code.

The canonical YAML files live in the package (``jettag/data/cards/*.yaml``) so that they are
installed with it; the repository's ``data_cards/`` directory holds their Markdown
renderings and the JSON schema, regenerated with ``jettag data render --out data_cards``.

Example:
    >>> from jettag.data.cards import list_cards, load_card
    >>> "top-tagging" in list_cards()
    True
    >>> card = load_card("top-tagging")
    >>> card.source["record"]
    2603256
"""

from __future__ import annotations

import copy
import functools
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CARD_DIR",
    "CHECKSUM_ALGORITHMS",
    "SCHEMA",
    "CardError",
    "Checksum",
    "DataCard",
    "FileEntry",
    "list_cards",
    "load_card",
    "render_all",
    "render_markdown",
    "schema_json",
    "validate_card",
]

#: Directory of the canonical card YAMLs (installed as package data).
CARD_DIR = Path(__file__).resolve().parent / "cards"

#: Checksum algorithms a card may list, strongest first (the downloader verifies the first
#: one present).
CHECKSUM_ALGORITHMS = ("sha256", "md5")


# The C loader is about five times faster; both accept exactly the same (safe) YAML.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class CardError(ValueError):
    """A data card is missing, malformed, or does not follow the schema."""


# --------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------

_STR = {"type": "string", "minLength": 1}
_NULLABLE_STR = {"type": ["string", "null"]}
_NUMBER = {"type": "number"}
_STR_LIST = {"type": "array", "items": _STR}

_VARIABLE = {
    "type": "object",
    "description": (
        "One model input variable. With centre null the value is passed through unchanged "
        "(no scaling, no clipping), as weaver does for `[name, null]`; otherwise it becomes "
        "clip((value - centre) * scale, clip[0], clip[1])."
    ),
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": _STR,
        "centre": {"type": ["number", "null"]},
        "scale": _NUMBER,
        "clip": {
            "type": ["array", "null"],
            "items": _NUMBER,
            "minItems": 2,
            "maxItems": 2,
        },
        "pad_value": _NUMBER,
        "note": _STR,
    },
}

_GROUP = {
    "type": "object",
    "required": ["length", "pad_mode", "vars"],
    "additionalProperties": False,
    "properties": {
        "length": {"type": "integer", "minimum": 1},
        "pad_mode": {"enum": ["wrap", "constant"]},
        "vars": {"type": "array", "minItems": 1, "items": _VARIABLE},
    },
}

_FEATURE_SET = {
    "type": "object",
    "required": ["description", "reference", "jet_axis", "groups"],
    "additionalProperties": False,
    "properties": {
        "description": _STR,
        "reference": _STR,
        "jet_axis": {"enum": ["p4", "centroid"]},
        "requires": _STR_LIST,
        "groups": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": _GROUP,
        },
    },
}

_FILE = {
    "type": "object",
    "required": ["name", "url", "size", "checksum", "default"],
    "additionalProperties": False,
    "properties": {
        "name": _STR,
        "url": _STR,
        "split": _NULLABLE_STR,
        "variant": _STR,
        "jets": {"type": ["integer", "null"], "minimum": 0},
        "size": {"type": ["integer", "null"], "minimum": 0},
        "checksum": {
            "type": ["object", "null"],
            "minProperties": 1,
            "additionalProperties": False,
            "properties": {
                "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "md5": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
            },
        },
        "default": {"type": "boolean"},
        "archive": {"enum": [None, "tar"]},
        "note": _STR,
    },
}

_FIELD = {
    "type": "object",
    "required": ["name", "dtype", "description"],
    "additionalProperties": False,
    "properties": {
        "name": _STR,
        "dtype": _STR,
        "shape": {"type": "array", "items": {"type": ["integer", "string"]}},
        "unit": _NULLABLE_STR,
        "description": _STR,
    },
}

_JETS = {
    "type": "object",
    "required": ["algorithm", "radius", "pt_min_gev", "pt_max_gev"],
    "additionalProperties": False,
    "properties": {
        "algorithm": _STR,
        "radius": _NUMBER,
        "inputs": _STR,
        "pt_min_gev": _NUMBER,
        "pt_max_gev": {"type": ["number", "null"]},
        "abs_eta_max": _NUMBER,
        "abs_rapidity_max": _NUMBER,
        "selection": _STR,
        "max_constituents": {"type": ["integer", "null"]},
        "constituent_pt_min_gev": _NUMBER,
        "massless_constituents": {"type": ["boolean", "null"]},
        "ordering": _STR,
    },
    "anyOf": [{"required": ["abs_eta_max"]}, {"required": ["abs_rapidity_max"]}],
}

#: JSON schema (draft 2020-12) of a data card.
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://github.com/jettag/jettag/data_cards/schema.json",
    "title": "jettag data card",
    "type": "object",
    "required": [
        "schema_version",
        "name",
        "title",
        "kind",
        "summary",
        "source",
        "licence",
        "files",
        "splits",
        "layout",
        "labels",
        "recipe",
        "citation",
        "caveats",
        "features",
        "provenance",
    ],
    "additionalProperties": False,
    "properties": {
        "schema_version": {"const": 1},
        "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]*$"},
        "title": _STR,
        "kind": {"enum": ["public", "generated"]},
        "summary": _STR,
        "source": {
            "type": "object",
            "required": ["publisher", "record", "doi", "url", "papers"],
            "additionalProperties": False,
            "properties": {
                "publisher": _STR,
                "record": {"type": ["integer", "null"]},
                "doi": {"type": ["string", "null"], "pattern": "^10\\.[0-9]+/.+$"},
                "url": _NULLABLE_STR,
                "version": _STR,
                "generator_module": _STR,
                "command": _STR,
                "papers": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["arxiv"],
                        "additionalProperties": False,
                        "properties": {"arxiv": _STR, "title": _STR, "journal": _STR, "note": _STR},
                    },
                },
            },
        },
        "licence": {
            "type": "object",
            "required": ["id", "source"],
            "additionalProperties": False,
            "properties": {"id": _NULLABLE_STR, "source": _STR},
        },
        "files": {"type": "array", "items": _FILE},
        "splits": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "description"],
                "additionalProperties": False,
                "properties": {
                    "name": _STR,
                    "jets": {"type": ["integer", "null"], "minimum": 0},
                    "files": _STR_LIST,
                    "description": _STR,
                },
            },
        },
        "layout": {
            "type": "object",
            "required": ["format", "description", "keys"],
            "additionalProperties": False,
            "properties": {
                "format": _STR,
                "description": _STR,
                "keys": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "description", "fields"],
                        "additionalProperties": False,
                        "properties": {
                            "name": _STR,
                            "description": _STR,
                            "fields": {"type": "array", "items": _FIELD},
                        },
                    },
                },
            },
        },
        "labels": {
            "type": "object",
            "required": ["encoding", "classes"],
            "additionalProperties": False,
            "properties": {
                "field": _NULLABLE_STR,
                "encoding": {"enum": ["integer", "one-hot"]},
                "classes": {
                    "type": "array",
                    "minItems": 2,
                    "items": {
                        "type": "object",
                        "required": ["value", "name", "description"],
                        "additionalProperties": False,
                        "properties": {
                            "value": {"type": "integer", "minimum": 0},
                            "name": _STR,
                            "field": _STR,
                            "description": _STR,
                        },
                    },
                },
            },
        },
        "recipe": {
            "type": "object",
            "required": [
                "summary",
                "status",
                "generator",
                "detector",
                "sqrt_s_tev",
                "processes",
                "jets",
            ],
            "additionalProperties": False,
            "properties": {
                "summary": _STR,
                "status": {"enum": ["verified", "doc", "unverified"]},
                "generator": _STR,
                "detector": _STR,
                "sqrt_s_tev": {"type": ["number", "null"]},
                "mpi": {"type": ["boolean", "null"]},
                "pileup": {"type": ["boolean", "null"]},
                "processes": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["label", "description"],
                        "additionalProperties": False,
                        "properties": {
                            "label": {"type": "integer"},
                            "description": _STR,
                            "pythia": _STR_LIST,
                        },
                    },
                },
                "jets": _JETS,
                "matching": _STR,
                "tracks": {"type": "object"},
                "pythia": _STR_LIST,
                "steps": _STR_LIST,
                "unpublished": _STR_LIST,
            },
        },
        "citation": {
            "type": "object",
            "required": ["bibtex"],
            "additionalProperties": False,
            "properties": {"bibtex": _STR, "note": _STR},
        },
        "caveats": _STR_LIST,
        "features": {
            "type": "object",
            "required": ["default", "sets"],
            "additionalProperties": False,
            "properties": {
                "default": _STR,
                "sets": {
                    "type": "object",
                    "minProperties": 1,
                    "additionalProperties": _FEATURE_SET,
                },
                "other_inputs": _STR_LIST,
            },
        },
        "provenance": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["what", "source", "status"],
                "additionalProperties": False,
                "properties": {
                    "what": _STR,
                    "source": _STR,
                    "status": {"enum": ["verified", "doc", "unverified", "read"]},
                },
            },
        },
    },
}


def _format_path(path: Iterable[Any]) -> str:
    parts = [f"[{p}]" if isinstance(p, int) else f".{p}" for p in path]
    return "card" + "".join(parts)


@functools.cache
def _validator() -> Any:
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    return jsonschema.Draft202012Validator(SCHEMA)


def validate_card(data: Mapping[str, Any], *, source: str = "card") -> None:
    """Check a card against :data:`SCHEMA` and its cross-references.

    Beyond the schema: split file lists must name files of the card, the default feature
    set must exist, label values must be ``0..K-1`` in order, and generated cards list no
    files.

    Args:
        data: the parsed YAML card.
        source: where it came from, for the error message (a path or a name).

    Raises:
        CardError: naming ``source``, the offending key path, and what was expected.
    """
    errors = sorted(_validator().iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        lines = [f"{_format_path(e.absolute_path)}: {e.message}" for e in errors[:10]]
        more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise CardError(
            f"{source}: data card does not follow the schema "
            f"(jettag.data.cards.SCHEMA):\n  " + "\n  ".join(lines) + more
        )
    problems: list[str] = []
    names = [f["name"] for f in data["files"]]
    if len(set(names)) != len(names):
        problems.append("files: file names must be unique")
    for split in data["splits"]:
        for fname in split.get("files", []):
            if fname not in names:
                problems.append(f"splits[{split['name']}]: file {fname!r} is not in files")
    features = data["features"]
    if features["default"] not in features["sets"]:
        problems.append(
            f"features.default: {features['default']!r} is not one of the feature sets "
            f"{sorted(features['sets'])}"
        )
    values = [c["value"] for c in data["labels"]["classes"]]
    if values != list(range(len(values))):
        problems.append(f"labels.classes: values must be 0..K-1 in order, found {values}")
    if data["kind"] == "generated" and data["files"]:
        problems.append("files: a generated card lists no files to download")
    for set_name, fset in features["sets"].items():
        for group_name, group in fset["groups"].items():
            for var in group["vars"]:
                clip = var.get("clip")
                if clip is not None and clip[0] > clip[1]:
                    problems.append(
                        f"features.sets.{set_name}.groups.{group_name}: clip of "
                        f"{var['name']} must be [min, max], found {clip}"
                    )
    if problems:
        raise CardError(f"{source}: inconsistent data card:\n  " + "\n  ".join(problems))


# --------------------------------------------------------------------------------------
# Card objects
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checksum:
    """A published checksum of a file: ``algorithm`` (``"sha256"`` or ``"md5"``) and hex."""

    algorithm: str
    value: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.value}"


@dataclass(frozen=True)
class FileEntry:
    """One downloadable file of a card.

    ``checksums`` maps algorithm to hex digest (empty when none was published);
    :attr:`checksum` is the strongest one, the one the downloader verifies.
    """

    name: str
    url: str
    size: int | None
    checksums: Mapping[str, str]
    default: bool
    split: str | None = None
    jets: int | None = None
    archive: str | None = None
    variant: str | None = None

    @property
    def checksum(self) -> Checksum | None:
        for algorithm in CHECKSUM_ALGORITHMS:
            if algorithm in self.checksums:
                return Checksum(algorithm, self.checksums[algorithm])
        return None


class DataCard:
    """A validated data card.

    Attributes mirror the top-level keys of the YAML (``name``, ``title``, ``kind``,
    ``summary``, ``source``, ``licence``, ``splits``, ``layout``, ``labels``, ``recipe``,
    ``citation``, ``caveats``, ``features``, ``provenance``); :attr:`files` holds
    :class:`FileEntry` objects. :attr:`data` is a deep copy of the parsed YAML.
    """

    def __init__(self, data: Mapping[str, Any], *, path: Path | None = None) -> None:
        validate_card(data, source=str(path) if path is not None else "card")
        self.data: dict[str, Any] = copy.deepcopy(dict(data))
        self.path = path
        self.files: tuple[FileEntry, ...] = tuple(
            FileEntry(
                name=f["name"],
                url=f["url"],
                size=f["size"],
                checksums=dict(f["checksum"] or {}),
                default=f["default"],
                split=f.get("split"),
                jets=f.get("jets"),
                archive=f.get("archive"),
                variant=f.get("variant"),
            )
            for f in self.data["files"]
        )

    def __getattr__(self, key: str) -> Any:
        data = self.__dict__.get("data")
        if data is not None and key in data and key != "files":
            return data[key]
        raise AttributeError(f"{type(self).__name__} has no attribute {key!r}")

    def __repr__(self) -> str:
        d = self.data
        return f"DataCard({d['name']!r}, kind={d['kind']!r}, files={len(self.files)})"

    def file(self, name: str) -> FileEntry:
        """The file entry called ``name``; ``KeyError`` listing the card's files otherwise."""
        for entry in self.files:
            if entry.name == name:
                return entry
        raise KeyError(
            f"data card {self.data['name']!r} has no file {name!r}; "
            f"its files are {[f.name for f in self.files]}"
        )

    def feature_set(self, name: str | None = None) -> dict[str, Any]:
        """The feature-set specification ``name`` (default: the card's default set)."""
        sets = self.data["features"]["sets"]
        key = self.data["features"]["default"] if name is None else name
        if key not in sets:
            raise KeyError(
                f"data card {self.data['name']!r} has no feature set {key!r}; "
                f"its feature sets are {sorted(sets)}"
            )
        return copy.deepcopy(sets[key])

    def to_markdown(self) -> str:
        """Readable Markdown rendering (see :func:`render_markdown`)."""
        return render_markdown(self)


def list_cards() -> list[str]:
    """Names of the cards shipped with jettag, sorted."""
    return sorted(p.stem for p in CARD_DIR.glob("*.yaml"))


def load_card(name: str | os.PathLike[str]) -> DataCard:
    """Load and validate a card by name (``"top-tagging"``) or from a YAML file path.

    Raises:
        FileNotFoundError: no card of that name (the message lists the available ones) or
            no such file.
        CardError: the YAML does not parse or does not follow the schema.
    """
    text = os.fspath(name)
    is_path = text.endswith((".yaml", ".yml")) or os.sep in text or "/" in text
    path = Path(text) if is_path else CARD_DIR / f"{text}.yaml"
    if not path.is_file():
        if is_path:
            raise FileNotFoundError(f"data card file {path} does not exist")
        raise FileNotFoundError(
            f"no data card named {text!r}; available cards: {', '.join(list_cards())}"
        )
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)
    except yaml.YAMLError as err:
        raise CardError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(data, dict):
        raise CardError(
            f"{path}: expected a YAML mapping at the top level, found {type(data).__name__}"
        )
    card = DataCard(data, path=path)
    if not is_path and card.data["name"] != text:
        raise CardError(f"{path}: card name {card.data['name']!r} does not match the file name")
    return card


# --------------------------------------------------------------------------------------
# Markdown rendering
# --------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return out


def _size(n: int | None) -> str:
    if n is None:
        return "not recorded"
    return f"{n:,} B"


def _checksum_cell(checksum: Mapping[str, str] | None) -> str:
    if not checksum:
        return "not recorded"
    return "<br>".join(
        f"{alg}: `{checksum[alg]}`" for alg in CHECKSUM_ALGORITHMS if alg in checksum
    )


def _format_number(x: Any) -> str:
    if x is None:
        return "—"
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def _count(n: int | None) -> str:
    return "—" if n is None else f"{n:,}"


def _variable_row(var: Mapping[str, Any]) -> list[Any]:
    centre = var.get("centre")
    if centre is None:
        return [
            f"`{var['name']}`",
            "—",
            "—",
            "none (passed through)",
            _format_number(var.get("pad_value", 0)),
            var.get("note", ""),
        ]
    clip = var.get("clip", [-5, 5])
    clip_text = (
        "none" if clip is None else f"[{_format_number(clip[0])}, {_format_number(clip[1])}]"
    )
    return [
        f"`{var['name']}`",
        _format_number(centre),
        _format_number(var.get("scale", 1)),
        clip_text,
        _format_number(var.get("pad_value", 0)),
        var.get("note", ""),
    ]


def render_markdown(card: DataCard | Mapping[str, Any]) -> str:
    """Render a card as Markdown (deterministic: the committed renderings are compared to it).

    Args:
        card: a :class:`DataCard` or a card mapping (validated first).
    """
    if not isinstance(card, DataCard):
        card = DataCard(card)
    d = card.data
    src = d["source"]
    out: list[str] = [
        f"# {d['title']} (`{d['name']}`)",
        "",
        f"<!-- Generated from jettag/data/cards/{d['name']}.yaml by `jettag data render`; "
        "do not edit by hand. -->",
        "",
        d["summary"].strip(),
        "",
        "## Source",
        "",
    ]
    rows = [["kind", d["kind"]], ["publisher", src["publisher"]]]
    if src.get("record") is not None:
        rows.append(["record", src["record"]])
    rows.append(
        ["DOI", f"[{src['doi']}](https://doi.org/{src['doi']})" if src.get("doi") else None]
    )
    rows.append(["URL", src.get("url") or "—"])
    for key in ("version", "generator_module", "command"):
        if key in src:
            rows.append([key.replace("_", " "), f"`{src[key]}`" if key == "command" else src[key]])
    for paper in src["papers"]:
        text = f"arXiv:{paper['arxiv']}"
        if "title" in paper:
            text += f", {paper['title']}"
        if "journal" in paper:
            text += f", {paper['journal']}"
        if "note" in paper:
            text += f" ({paper['note']})"
        rows.append(["paper", text])
    lic = d["licence"]
    rows.append(["licence", f"{lic['id'] or 'not recorded'} ({lic['source']})"])
    out += _table(["", ""], rows)

    out += ["", "## Files", ""]
    if card.files:
        out += _table(
            ["file", "split", "jets", "size", "checksum", "default", "notes"],
            [
                [
                    f"`{f['name']}`",
                    f.get("split"),
                    _count(f.get("jets")),
                    _size(f["size"]),
                    _checksum_cell(f["checksum"]),
                    f["default"],
                    "; ".join(
                        x
                        for x in (
                            f.get("variant", ""),
                            f"{f['archive']} archive" if f.get("archive") else "",
                            f.get("note", ""),
                        )
                        if x
                    ),
                ]
                for f in d["files"]
            ],
        )
        out += ["", "URLs:", ""]
        out += [f"- `{f['name']}`: <{f['url']}>" for f in d["files"]]
        missing = [f["name"] for f in d["files"] if not f["checksum"]]
        if missing:
            out += [
                "",
                f"No checksum recorded for {len(missing)} file(s): `jettag data "
                "download` refuses them unless `--no-verify` is given.",
            ]
    else:
        out += ["Generated locally; nothing to download (see the recipe below)."]

    out += ["", "## Splits", ""]
    out += _table(
        ["split", "jets", "files", "description"],
        [
            [
                s["name"],
                _count(s.get("jets")),
                ", ".join(f"`{x}`" for x in s.get("files", [])) or "—",
                s["description"],
            ]
            for s in d["splits"]
        ],
    )

    lay = d["layout"]
    out += ["", "## Layout", "", f"Format: {lay['format']}.", "", lay["description"].strip()]
    for key in lay["keys"]:
        out += ["", f"### `{key['name']}`", "", key["description"].strip(), ""]
        if key["fields"]:
            out += _table(
                ["field", "dtype", "shape", "unit", "description"],
                [
                    [
                        f"`{f['name']}`",
                        f["dtype"],
                        "(" + ", ".join(str(s) for s in f.get("shape", [])) + ")"
                        if "shape" in f
                        else "scalar",
                        f.get("unit") or "—",
                        f["description"],
                    ]
                    for f in key["fields"]
                ],
            )

    lab = d["labels"]
    out += [
        "",
        "## Labels",
        "",
        f"Encoding: {lab['encoding']}"
        + (f", field `{lab['field']}`." if lab.get("field") else "."),
        "",
    ]
    out += _table(
        ["value", "name", "field", "description"],
        [
            [c["value"], c["name"], f"`{c['field']}`" if "field" in c else "—", c["description"]]
            for c in lab["classes"]
        ],
    )

    rec = d["recipe"]
    out += [
        "",
        "## Generation recipe",
        "",
        f"Status: {rec['status']}.",
        "",
        rec["summary"].strip(),
        "",
    ]
    rows = [
        ["generator", rec["generator"]],
        ["detector", rec["detector"]],
        [
            "sqrt(s)",
            "not recorded"
            if rec["sqrt_s_tev"] is None
            else f"{_format_number(rec['sqrt_s_tev'])} TeV",
        ],
    ]
    if "mpi" in rec:
        rows.append(["multi-parton interactions", rec["mpi"]])
    if "pileup" in rec:
        rows.append(["pile-up", rec["pileup"]])
    jets = rec["jets"]
    rows.append(
        [
            "jets",
            f"{jets['algorithm']}, R = {_format_number(jets['radius'])}"
            + (f", from {jets['inputs']}" if "inputs" in jets else ""),
        ]
    )
    if jets["pt_max_gev"] is None:
        rows.append(["jet pT", f"> {_format_number(jets['pt_min_gev'])} GeV"])
    else:
        rows.append(
            [
                "jet pT",
                f"{_format_number(jets['pt_min_gev'])} < pT < "
                f"{_format_number(jets['pt_max_gev'])} GeV",
            ]
        )
    if "abs_eta_max" in jets:
        rows.append(["jet |eta|", f"< {_format_number(jets['abs_eta_max'])}"])
    if "abs_rapidity_max" in jets:
        rows.append(["jet |y|", f"< {_format_number(jets['abs_rapidity_max'])}"])
    for key in (
        "selection",
        "max_constituents",
        "constituent_pt_min_gev",
        "massless_constituents",
        "ordering",
    ):
        if key in jets:
            value = jets[key]
            if key == "max_constituents" and value is None:
                value = "all"
            rows.append([key.replace("_", " "), value])
    if "matching" in rec:
        rows.append(["truth matching", rec["matching"]])
    out += _table(["", ""], rows)
    out += ["", "Processes:", ""]
    for proc in rec["processes"]:
        line = f"- label {proc['label']}: {proc['description']}"
        if "pythia" in proc:
            line += " (" + ", ".join(f"`{s}`" for s in proc["pythia"]) + ")"
        out.append(line)
    if "pythia" in rec:
        out += ["", "Pythia settings common to all processes:", "", "```"]
        out += rec["pythia"]
        out += ["```"]
    if "tracks" in rec:
        out += ["", "Tracks:", ""]
        out += [f"- {k.replace('_', ' ')}: {_cell(v)}" for k, v in rec["tracks"].items()]
    if "steps" in rec:
        out += ["", "Steps:", ""]
        out += [f"{i}. {s}" for i, s in enumerate(rec["steps"], 1)]
    if "unpublished" in rec:
        out += ["", "Not published: " + "; ".join(rec["unpublished"]) + "."]

    out += ["", "## Known caveats", ""]
    out += [f"- {c.strip()}" for c in d["caveats"]]

    feats = d["features"]
    out += [
        "",
        "## Feature preprocessing",
        "",
        "Each transformed variable becomes `clip((value - centre) * scale, min, max)`; "
        "a variable without a centre is passed through unchanged (no clipping), as in "
        "weaver. Jets are truncated to `length` particles (in stored order) and padded "
        "to it: `wrap` repeats the jet's own particles, `constant` fills `pad value`.",
        "",
        f"Default feature set: `{feats['default']}`.",
    ]
    for set_name, fset in feats["sets"].items():
        out += [
            "",
            f"### `{set_name}`",
            "",
            fset["description"].strip(),
            "",
            f"Reference: {fset['reference']}. Jet axis: `{fset['jet_axis']}`.",
        ]
        if fset.get("requires"):
            out += [
                "",
                "Requires per-particle inputs: "
                + ", ".join(f"`{r}`" for r in fset["requires"])
                + ".",
            ]
        for group_name, group in fset["groups"].items():
            out += [
                "",
                f"`{group_name}` (length {group['length']}, pad mode `{group['pad_mode']}`):",
                "",
            ]
            out += _table(
                ["variable", "centre", "scale", "clip", "pad value", "note"],
                [_variable_row(v) for v in group["vars"]],
            )
    if feats.get("other_inputs"):
        out += ["", "Other model inputs:", ""]
        out += [f"- {x.strip()}" for x in feats["other_inputs"]]

    out += ["", "## Citation", ""]
    if "note" in d["citation"]:
        out += [d["citation"]["note"].strip(), ""]
    out += ["```bibtex", d["citation"]["bibtex"].strip(), "```"]

    out += ["", "## Where the numbers come from", ""]
    out += _table(
        ["what", "source", "status"],
        [[p["what"], p["source"], p["status"]] for p in d["provenance"]],
    )
    return "\n".join(out) + "\n"


def render_all(out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write ``<name>.md`` for every card and ``schema.json`` into ``out_dir``.

    Returns:
        The paths written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in list_cards():
        path = out / f"{name}.md"
        path.write_text(render_markdown(load_card(name)), encoding="utf-8")
        written.append(path)
    schema_path = out / "schema.json"
    schema_path.write_text(schema_json(), encoding="utf-8")
    written.append(schema_path)
    return written


def schema_json() -> str:
    """:data:`SCHEMA` as indented JSON text (what ``data_cards/schema.json`` holds)."""
    return json.dumps(SCHEMA, indent=2, sort_keys=False) + "\n"
