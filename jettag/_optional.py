"""Lazy imports of optional dependencies, with errors that name the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "require"]


class MissingExtraError(ImportError):
    """An optional dependency of jettag is not installed; the message names the extra."""


def require(module: str, extra: str, *, feature: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the ``extra`` to install.

    Args:
        module: importable module name, e.g. ``"pythia8mc"``.
        extra: the jettag extra that provides it, e.g. ``"generate"``.
        feature: what needs it, for the message (defaults to the module name).
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        what = feature or f"`{module}`"
        raise MissingExtraError(
            f"{what} needs the optional dependency `{module}`, which is not installed "
            f"({err}). Install it with: pip install 'jettag[{extra}]'"
        ) from err
