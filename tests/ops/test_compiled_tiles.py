"""Compiled CPU tiles (``dispatch.set_compiled_tiles``): the Lorentz operator's tiles run
through torch.compile give the reference's outputs and gradients; a failing compiler falls
back to the eager tiles with one warning; the switch is validated."""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch
from test_fused import F32, F64, _check_lorentz, _lorentz_grads, _lorentz_inputs

from jettag.ops import _cpu, _native, dispatch, fused

needs_compiler = pytest.mark.skipif(
    not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
    reason="torch.compile's CPU backend needs a C++ compiler")


@pytest.fixture
def compiled_only(monkeypatch):
    """Compiled tiles on (the native kernel, which takes precedence, off), and any tile
    that would run eagerly while it could have been compiled (a fallback) raises, so the
    comparison below is of the compiled tiles."""
    monkeypatch.setattr(_native, "_enabled", False)
    for name in ("_LORENTZ_FORWARD", "_LORENTZ_BACKWARD"):
        tile = getattr(_cpu, name)
        eager = tile.fn

        def guard(*args, eager=eager, tile=tile):
            if tile.failed:
                raise AssertionError(f"{tile.source.__name__} fell back to eager")
            return eager(*args)

        monkeypatch.setattr(tile, "fn", guard)
    with dispatch.use_backend("cpu"), dispatch.use_compiled_tiles():
        yield


@needs_compiler
def test_compiled_lorentz_equals_reference_f32(compiled_only):
    # Jets of 0 to 9 particles: 1-particle tiles run eagerly, the others compiled; the
    # clamp of the coordinate update is active for some pairs.
    _check_lorentz(F32, True, clamp=0.5)
    assert _cpu._LORENTZ_FORWARD.compiled is not None
    assert _cpu._LORENTZ_BACKWARD.compiled is not None


@needs_compiler
@pytest.mark.slow
@pytest.mark.parametrize(("dtype", "update_x", "clamp"),
                         [(F64, True, 0.5), (F64, False, 100.0), (F32, False, 100.0),
                          (F32, True, 100.0)])
def test_compiled_lorentz_equals_reference(compiled_only, dtype, update_x, clamp):
    _check_lorentz(dtype, update_x, clamp=clamp)


@needs_compiler
def test_compiled_lorentz_under_inference_mode(compiled_only):
    hu, hv, x, ptr, params, phi_x = _lorentz_inputs(F32, True)
    with torch.no_grad():
        want = fused.lorentz_messages(hu, hv, x, ptr, *params, *phi_x, clamp=0.5)
    with torch.inference_mode():
        got = fused.lorentz_messages(hu, hv, x, ptr, *params, *phi_x, clamp=0.5)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


def test_failed_compilation_warns_once_and_runs_eagerly(monkeypatch):
    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no C++ compiler found\nmore detail")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(_native, "_enabled", False)
    for name in ("_LORENTZ_FORWARD", "_LORENTZ_BACKWARD"):
        old = getattr(_cpu, name)
        monkeypatch.setattr(_cpu, name, _cpu._Tile(old.fn, old.source, jets=old.jets,
                                                   weights=old.weights))
    inputs = _lorentz_inputs(F64, True)
    with dispatch.use_backend("cpu"):
        want = _lorentz_grads(fused.lorentz_messages, *inputs, 100.0)
        with dispatch.use_compiled_tiles(), pytest.warns(RuntimeWarning) as record:
            got = _lorentz_grads(fused.lorentz_messages, *inputs, 100.0)
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # no second warning
                again = _lorentz_grads(fused.lorentz_messages, *inputs, 100.0)
    messages = [str(w.message) for w in record]
    assert len(messages) == 2  # forward and backward tile functions, once each
    assert all("no C++ compiler found" in m and "eagerly" in m for m in messages)
    assert "more detail" not in messages[0]
    assert _cpu._LORENTZ_FORWARD.failed and _cpu._LORENTZ_BACKWARD.failed
    for a, b, c in zip([*want[0], *want[1]], [*got[0], *got[1]], [*again[0], *again[1]],
                       strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)
        torch.testing.assert_close(c, a, rtol=0, atol=0)


def test_compiled_tiles_switch():
    initial = dispatch.compiled_tiles()
    with dispatch.use_compiled_tiles():
        assert dispatch.compiled_tiles() is True
        with dispatch.use_compiled_tiles(False):
            assert dispatch.compiled_tiles() is False
        assert dispatch.compiled_tiles() is True
    assert dispatch.compiled_tiles() is initial
    with pytest.raises(TypeError, match="expected True or False, found 'yes'"):
        dispatch.set_compiled_tiles("yes")
    assert dispatch._flag(" On ", "X") is True and dispatch._flag("0", "X") is False
    with pytest.raises(ValueError, match="JETTAG_COMPILE_TILES: expected 0 or 1, found 'maybe'"):
        dispatch._flag("maybe", "JETTAG_COMPILE_TILES")
