"""Packaging: `import jettag` with only the core installed, extras named in errors, the CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest

import jettag
from jettag._optional import MissingExtraError, require

# Modules that belong to optional extras; the core package must import without any of them.
OPTIONAL_MODULES = [
    "pythia8mc", "fastjet", "vector", "tables", "pandas", "h5py", "pyarrow", "onnx",
    "onnxruntime", "triton", "matplotlib",
]

_IMPORT_ALL = """
import importlib, pkgutil, sys
for name in {blocked!r}:
    sys.modules[name] = None  # makes `import name` raise ImportError
import jettag
failed = []
for info in pkgutil.walk_packages(jettag.__path__, "jettag."):
    if info.name.endswith("__main__"):
        continue
    try:
        importlib.import_module(info.name)
    except Exception as err:  # report every module that needs an extra at import time
        failed.append(f"{{info.name}}: {{type(err).__name__}}: {{err}}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_with_only_core_dependencies():
    code = _IMPORT_ALL.format(blocked=OPTIONAL_MODULES)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"modules that fail without the optional extras:\n{res.stdout}"


def test_missing_extra_error_names_the_extra():
    with pytest.raises(MissingExtraError, match=r"pip install 'jettag\[generate\]'"):
        require("jettag_module_that_does_not_exist", "generate", feature="The generator")
    assert require("math", "none").sqrt(4.0) == 2.0
    assert issubclass(MissingExtraError, ImportError)


def test_lazy_subpackages():
    assert jettag.physics.pt is not None
    with pytest.raises(AttributeError, match="no attribute"):
        jettag.not_a_module  # noqa: B018


def test_cli_version_and_help():
    res = subprocess.run([sys.executable, "-m", "jettag.cli", "--version"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == f"jettag {jettag.__version__}"
    res = subprocess.run([sys.executable, "-m", "jettag.cli", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "usage: jettag" in res.stdout
