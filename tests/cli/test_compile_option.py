"""``--compile-tiles`` on jettag train / evaluate / predict: parsed, and applied to this
process and (through the environment) to the processes it starts."""

from __future__ import annotations

import os

import pytest

from jettag.cli import build_parser
from jettag.cli._options import apply_compile_option
from jettag.ops import dispatch


@pytest.mark.parametrize("argv", [
    ["train", "--model", "pfn", "--compile-tiles"],
    ["evaluate", "--checkpoint", "run", "--out", "o", "--compile-tiles"],
    ["predict", "--model", "m", "--input", "i.h5", "--output", "o.parquet", "--compile-tiles"],
])
def test_compile_tiles_option(argv, monkeypatch):
    # setenv first so that monkeypatch restores the variable's absence afterwards (a bare
    # delenv of an absent variable records nothing, and the "1" set below would leak into
    # the processes later tests start).
    monkeypatch.setenv("JETTAG_COMPILE_TILES", "0")
    monkeypatch.delenv("JETTAG_COMPILE_TILES")
    parser = build_parser()
    without = parser.parse_args([a for a in argv if a != "--compile-tiles"])
    assert without.compile_tiles is False
    with dispatch.use_compiled_tiles(False):
        apply_compile_option(without)
        assert dispatch.compiled_tiles() is False
        assert "JETTAG_COMPILE_TILES" not in os.environ
        apply_compile_option(parser.parse_args(argv))
        assert dispatch.compiled_tiles() is True
        assert os.environ["JETTAG_COMPILE_TILES"] == "1"
