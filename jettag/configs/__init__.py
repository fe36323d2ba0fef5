"""Run configurations per (model, task): YAML files shipped with the package.

Each file ``<model>-<task>.yaml`` in this directory describes one training run::

    name: particlenet-lite        # jettag.models.create name
    task: top                     # "top", "qg" or "btag" (jettag.metrics.TASKS)
    description: one line
    model: {...}                  # keyword arguments of jettag.models.create(name, ...)
    train: {...}                  # fields of jettag.train.TrainConfig (all but task, extra)
    data: {...}                   # x_fields, massless, max_particles, format

``data`` says how jets become the :class:`~jettag.data.JetBatch` the model reads:
``x_fields`` are the per-particle fields stacked into ``JetBatch.x`` (``[part_pid]`` for
quark/gluon taggers that read the PDG id), ``massless`` replaces every energy by ``|p|``,
``max_particles`` keeps the highest-pT constituents, ``format`` forces a reader
(:func:`jettag.data.formats.open_dataset`; ``null`` = from the file). The first three are the
options of :class:`jettag.hub.TaggerInputs`, so a trained run exports as a tagger unchanged.

Overrides use dotted keys, ``section.key=value`` (the value is parsed as YAML:
``train.lr=1e-3``, ``model.phi_channels=[64,64]``, ``train.grad_clip=null``).

Example:
    >>> from jettag.configs import load_config
    >>> run = load_config("pfn", "qg", overrides=["train.epochs=3"])
    >>> run.train["epochs"], run.data["x_fields"]
    (3, ['part_pid'])
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CONFIG_DIR",
    "DATA_DEFAULTS",
    "RunConfig",
    "available_configs",
    "config_path",
    "load_config",
    "parse_overrides",
    "parse_value",
    "read_yaml",
]

#: Directory holding the shipped ``<model>-<task>.yaml`` files.
CONFIG_DIR = Path(__file__).resolve().parent

#: Options of the ``data`` section and their defaults.
DATA_DEFAULTS: dict[str, Any] = {
    "x_fields": [],
    "massless": False,
    "max_particles": None,
    "format": None,
}

_SECTIONS = ("model", "train", "data")
_TOP_LEVEL = ("name", "task", "description", *_SECTIONS)
_TASKS = ("top", "qg", "btag")
# TrainConfig fields the run sets itself: the task comes from the top level, ``extra``
# records the model and data options (so a resume with other ones is refused).
_TRAIN_RESERVED = ("task", "extra")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


@dataclass
class RunConfig:
    """A resolved run configuration: the model, its training and its data options.

    Attributes:
        name: model name for :func:`jettag.models.create`.
        task: ``"top"`` or ``"qg"``.
        model: keyword arguments of ``create``.
        train: :class:`~jettag.train.TrainConfig` fields (without ``task`` and ``extra``).
        data: the data options (see the module docstring and :data:`DATA_DEFAULTS`).
        description: one line on the recipe.
        sources: files and overrides this configuration was built from, in order.
    """

    name: str
    task: str
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(DATA_DEFAULTS))
    description: str = ""
    sources: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-ready form (what ``run.yaml`` of a training run holds)."""
        return {
            "name": self.name,
            "task": self.task,
            "description": self.description,
            "model": copy.deepcopy(self.model),
            "train": copy.deepcopy(self.train),
            "data": copy.deepcopy(self.data),
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "config") -> RunConfig:
        """Build and check a configuration from the dict of a YAML file.

        Raises:
            ValueError: naming ``source`` and the offending key.
        """
        raw = _check_layout(values, source)
        for key in ("name", "task"):
            if not raw.get(key):
                raise ValueError(f"{source}: missing {key!r} (the model name and the task)")
        run = cls(
            name=str(raw["name"]),
            task=str(raw["task"]),
            model=dict(raw.get("model") or {}),
            train=dict(raw.get("train") or {}),
            data={**copy.deepcopy(DATA_DEFAULTS), **dict(raw.get("data") or {})},
            description=str(raw.get("description") or ""),
            sources=[source],
        )
        run.check(source)
        return run

    # ------------------------------------------------------------------ checks

    def check(self, source: str = "config") -> None:
        """Check every section (model options are checked by :meth:`build_model`).

        Raises:
            ValueError: naming ``source`` and the offending key.
        """
        if self.task not in _TASKS:
            raise ValueError(f"{source}: task must be one of {list(_TASKS)}, found {self.task!r}")
        import jettag.models

        if self.name not in jettag.models.available():
            raise ValueError(
                f"{source}: unknown model {self.name!r}; available models are "
                f"{', '.join(jettag.models.available())}"
            )
        reserved = sorted(set(self.train) & set(_TRAIN_RESERVED))
        if reserved:
            raise ValueError(
                f"{source}: train.{reserved[0]} is set by the run itself (task from the "
                f"top-level 'task', extra from the model and data options); remove it"
            )
        try:
            self.train_config()
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None
        unknown = sorted(set(self.data) - set(DATA_DEFAULTS))
        if unknown:
            raise ValueError(
                f"{source}: unknown data option(s) {['data.' + k for k in unknown]}; known "
                f"options are {['data.' + k for k in DATA_DEFAULTS]}"
            )
        fields = self.data["x_fields"]
        if not isinstance(fields, list) or not all(isinstance(f, str) and f for f in fields):
            raise ValueError(
                f"{source}: data.x_fields must be a list of per-particle field names (e.g. "
                f"[part_pid], or [] for none), found {fields!r}"
            )
        fmt = self.data["format"]
        if fmt is not None and not isinstance(fmt, str):
            raise ValueError(f"{source}: data.format must be a format name or null, "
                             f"found {fmt!r}")
        self.tagger_inputs(source)

    def tagger_inputs(self, source: str = "config") -> Any:
        """The data options as :class:`jettag.hub.TaggerInputs` (x_fields, massless,
        max_particles)."""
        from jettag.hub.tagger import TaggerInputs

        values = {k: self.data[k] for k in ("x_fields", "massless", "max_particles")}
        return TaggerInputs.from_dict(values, source=f"{source}: data")

    # ------------------------------------------------------------------ builders

    def train_config(self, *, extra: Mapping[str, Any] | None = None, **overrides: Any) -> Any:
        """The :class:`~jettag.train.TrainConfig` of this run; ``extra`` records the model
        name, its options and the data options (so a resume with other ones is refused),
        plus the JSON-ready entries of ``extra`` (e.g. the data files).

        Raises:
            ValueError: an unknown ``train`` option, naming it and listing the known ones.
        """
        from jettag.train import TrainConfig

        values = {**self.train, **overrides}
        known = {f.name for f in dataclasses.fields(TrainConfig)} - set(_TRAIN_RESERVED)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown training option(s) {['train.' + k for k in unknown]}; known options "
                f"are {sorted('train.' + k for k in known)}"
            )
        record = {"model": self.name, "model_config": self.model, "data": self.data,
                  "task": self.task, **(extra or {})}
        try:
            return TrainConfig(**values, task=self.task, extra=copy.deepcopy(record))
        except TypeError as err:
            raise ValueError(f"training options: {err}") from None

    def build_model(self) -> Any:
        """``jettag.models.create(name, **model)``.

        Raises:
            ValueError: an option the model does not take (named, with the options it
                takes) or a bad value.
        """
        import jettag.models

        try:
            return jettag.models.create(self.name, **self.model)
        except TypeError as err:
            match = re.search(r"unexpected keyword argument '(\w+)'", str(err))
            if match is None:
                raise ValueError(f"model {self.name!r}: bad options {self.model}: {err}") from None
            options = ", ".join(f"model.{k}" for k in _model_options(self.name))
            raise ValueError(
                f"model {self.name!r}: unknown option 'model.{match.group(1)}'; its options "
                f"are {options}"
            ) from None

    def merged(self, values: Mapping[str, Any], *, source: str) -> RunConfig:
        """A copy with the sections of ``values`` (a possibly partial config dict) merged
        in key by key; ``name``/``task``/``description`` replaced when given."""
        raw = _check_layout(values, source)
        out = copy.deepcopy(self)
        for key in ("name", "task", "description"):
            if raw.get(key) is not None:
                setattr(out, key, str(raw[key]))
        for section in _SECTIONS:
            update = raw.get(section) or {}
            if not isinstance(update, Mapping):
                raise ValueError(f"{source}: {section!r} must be a mapping, found {update!r}")
            getattr(out, section).update(copy.deepcopy(dict(update)))
        out.sources.append(source)
        out.check(" + ".join(out.sources))
        return out

    def with_overrides(self, overrides: Iterable[str]) -> RunConfig:
        """A copy with ``section.key=value`` overrides applied (see :func:`parse_overrides`)."""
        items = list(overrides)
        if not items:
            return copy.deepcopy(self)
        return self.merged(parse_overrides(items), source="--set " + " ".join(items))


# ---------------------------------------------------------------------- files


def config_path(model: str, task: str) -> Path:
    """Path of the shipped configuration of ``model`` for ``task``.

    Raises:
        FileNotFoundError: no such configuration, listing the shipped ones.
    """
    path = CONFIG_DIR / f"{model}-{task}.yaml"
    if not path.is_file():
        shipped = ", ".join(f"{m}/{t}" for m, t in available_configs()) or "none"
        raise FileNotFoundError(
            f"no shipped configuration for model {model!r} and task {task!r} (looked for "
            f"{path}); shipped (model/task): {shipped}. Pass --config FILE with your own"
        )
    return path


def available_configs() -> list[tuple[str, str]]:
    """``(model, task)`` of every shipped configuration, sorted."""
    out = []
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        stem = path.stem
        for task in _TASKS:
            if stem.endswith(f"-{task}"):
                out.append((stem[: -len(task) - 1], task))
    return out


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML mapping from ``path``, with errors naming the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {path}: no such file")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"config {path}: not valid YAML: {err}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(
            f"config {path}: expected a mapping with keys {list(_TOP_LEVEL)}, found "
            f"{type(values).__name__}"
        )
    return values


def load_config(
    model: str | None = None,
    task: str | None = None,
    *,
    path: str | os.PathLike[str] | None = None,
    overrides: Iterable[str] = (),
) -> RunConfig:
    """The run configuration of ``model`` for ``task``, from the shipped file and/or ``path``.

    With ``model`` and ``task`` the shipped ``<model>-<task>.yaml`` is the base and ``path``
    (if given) is merged over it, section by section, so a partial file works. With only
    ``path``, it must be complete (name, task, sections). ``overrides`` come last.

    Args:
        model: a :func:`jettag.models.create` name.
        task: ``"top"`` or ``"qg"``.
        path: a YAML file in the same layout.
        overrides: ``section.key=value`` strings.

    Raises:
        FileNotFoundError: no shipped configuration for (model, task) and no ``path``.
        ValueError: unknown keys or bad values, naming them.
    """
    user = read_yaml(path) if path is not None else None
    if user is not None:
        model = model or user.get("name")
        task = task or user.get("task")
    if not model or not task:
        raise ValueError(
            "choose the model and the task (--model NAME --task top|qg), or give a --config "
            "file that names them ('name:' and 'task:')"
        )
    if task not in _TASKS:
        raise ValueError(f"task must be one of {list(_TASKS)}, found {task!r}")
    if user is None or (CONFIG_DIR / f"{model}-{task}.yaml").is_file():
        shipped = config_path(model, task)
        run = RunConfig.from_dict(read_yaml(shipped), source=str(shipped))
        if user is not None:
            run = run.merged({**user, "name": model, "task": task}, source=str(path))
    else:
        run = RunConfig.from_dict({**user, "name": model, "task": task}, source=str(path))
    return run.with_overrides(overrides)


# ---------------------------------------------------------------------- overrides


def parse_value(text: str) -> Any:
    """A command-line value: YAML (numbers, true/false, null, [lists], {maps}) with
    ``1e-3``-style floats and ``None`` accepted too; anything else stays a string."""
    import yaml

    stripped = text.strip()
    if stripped in ("None", "none"):
        return None
    if _FLOAT.match(stripped):
        number = float(stripped)
        if number.is_integer() and re.fullmatch(r"[+-]?\d+", stripped):
            return int(stripped)
        return number
    try:
        return yaml.safe_load(stripped)
    except yaml.YAMLError:
        return text


def parse_overrides(items: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``["train.lr=1e-3", "model.k=8"]`` -> ``{"train": {"lr": 0.001}, "model": {"k": 8}}``.

    Raises:
        ValueError: an item without ``=``, or whose key is not ``section.option`` with a
            section among model, train, data.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        section, dot, option = key.partition(".")
        if not sep or not dot or not option or "." in option:
            raise ValueError(
                f"--set {item!r}: expected SECTION.OPTION=VALUE with SECTION one of "
                f"{list(_SECTIONS)}, e.g. train.lr=1e-3 or model.phi_channels=[64,64]"
            )
        if section not in _SECTIONS:
            raise ValueError(
                f"--set {item!r}: unknown section {section!r}; expected one of "
                f"{list(_SECTIONS)} (the model and task are chosen with --model and --task)"
            )
        out.setdefault(section, {})[option] = parse_value(value)
    return out


# ---------------------------------------------------------------------- helpers


def _check_layout(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    if not isinstance(values, Mapping):
        raise ValueError(f"{source}: expected a mapping, found {type(values).__name__}")
    unknown = sorted(set(values) - set(_TOP_LEVEL))
    if unknown:
        raise ValueError(
            f"{source}: unknown key(s) {unknown}; a run configuration has {list(_TOP_LEVEL)}"
        )
    for section in _SECTIONS:
        if values.get(section) is not None and not isinstance(values[section], Mapping):
            raise ValueError(
                f"{source}: {section!r} must be a mapping of options, found "
                f"{type(values[section]).__name__}"
            )
    return dict(values)


def _model_options(name: str) -> list[str]:
    """Keyword options of the model class that ``create(name)`` builds."""
    import jettag.models

    params = inspect.signature(type(jettag.models.create(name)).__init__).parameters
    skip = (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    return [p for p, v in params.items() if p != "self" and v.kind not in skip]
