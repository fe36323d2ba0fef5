"""The generator's recipes: which classes they make, their options and their output format."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["RECIPES", "Recipe", "get_recipe"]


@dataclass(frozen=True)
class Recipe:
    """A jet-generation recipe.

    Attributes:
        name: the recipe's name (``jettag generate NAME``).
        module: module holding ``CLASSES``, ``DEFAULTS``, ``pythia_settings`` and
            ``generate_class`` (and optionally ``classes(options)``).
        format: output format, a name of :data:`jettag.data.formats.FORMATS`.
        suffix: file-name suffix of the output.
        version: bumped whenever the recipe's output changes for the same options, so that
            cached files of an older version are not reused.
        description: one line for ``--help``.
    """

    name: str
    module: str
    format: str
    suffix: str
    version: int
    description: str

    @property
    def impl(self) -> Any:
        return importlib.import_module(self.module)

    @property
    def defaults(self) -> dict[str, Any]:
        return dict(self.impl.DEFAULTS)

    def classes(self, options: Mapping[str, Any]) -> tuple[str, ...]:
        """Class names generated with ``options``, in output order."""
        impl = self.impl
        if hasattr(impl, "classes"):
            return tuple(impl.classes(options))
        return tuple(impl.CLASSES)

    def options(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The recipe's defaults updated with ``overrides``, checked and normalised.

        Values are converted to the type of their default (``bool``, ``int``, ``float``,
        tuples of floats), so that equal settings hash equally.

        Raises:
            ValueError: an unknown option, or a value of the wrong type.
        """
        options = self.defaults
        for key, value in (overrides or {}).items():
            if key not in options:
                raise ValueError(
                    f"recipe {self.name!r} has no option {key!r}; its options are "
                    f"{', '.join(sorted(options))}"
                )
            options[key] = _coerce(self.name, key, value, options[key])
        return options


def _coerce(recipe: str, key: str, value: Any, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if not isinstance(value, bool | int) or value not in (0, 1):
                raise TypeError
            return bool(value)
        if isinstance(default, int):
            if isinstance(value, bool) or int(value) != value:
                raise TypeError
            return int(value)
        if isinstance(default, float):
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if isinstance(default, tuple):
            out = tuple(float(v) for v in value)
            if len(out) != len(default):
                raise TypeError
            return out
    except (TypeError, ValueError):
        raise ValueError(
            f"recipe {recipe!r}: option {key!r} expects a value like {default!r}, found {value!r}"
        ) from None
    return value


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "top-tagging",
            "jettag.data.generate.top",
            "top-hdf5",
            ".h5",
            1,
            "hadronic top vs QCD jets, Top Quark Tagging Reference Dataset layout (HDF5)",
        ),
        Recipe(
            "quark-gluon",
            "jettag.data.generate.quark_gluon",
            "qg-npz",
            ".npz",
            1,
            "Z+quark vs Z+gluon jets, EnergyFlow quark/gluon layout (npz)",
        ),
        Recipe(
            "b-tagging",
            "jettag.data.generate.btag",
            "jetclass-root",
            ".root",
            1,
            "b vs light (and c) jets with track impact parameters, JetClass-style ROOT",
        ),
    )
}


def get_recipe(name: str | Recipe) -> Recipe:
    """The recipe called ``name``; raises ``ValueError`` listing the known recipes."""
    if isinstance(name, Recipe):
        return name
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; expected one of {', '.join(RECIPES)}") from None
