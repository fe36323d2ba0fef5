"""Assertion helpers for the symmetries of jet-tagging layers and models, usable on your own.

Each helper draws random group elements (or permutations, paddings, soft emissions, ...),
applies them in float64, runs the function or model under test, and raises
:class:`AssertionError` naming the worst violation found: its size, the output element and
the trial with what was done to which jet. When the check passes it returns a
:class:`SymmetryReport` (``print(report)`` summarises the worst deviation).

- :func:`assert_lorentz_invariant`: ``f(L p) == f(p)``, L random in SO+(1,3), one per jet;
- :func:`assert_lorentz_equivariant`: ``f(L p) == L f(p)`` for four-vector outputs;
- :func:`assert_so2_invariant`: invariance under rotations about each jet's axis, in the
  (eta, phi) plane or in 3-D about the jet momentum;
- :func:`assert_so2_equivariant`: the same for (eta, phi), vector and tensor outputs, also
  for layers on scalars, vectors ``(..., 3)`` and tensors ``(..., 3, 3)``;
- :func:`assert_permutation_invariant`, :func:`assert_permutation_equivariant`: reordering
  the particles of a jet changes no jet output, and per-particle outputs follow it;
- :func:`assert_padding_invariant`: longer padding, with garbage in it, changes nothing;
- :func:`assert_batch_independent`: a jet's result does not depend on the rest of the batch;
- :func:`assert_ir_safe`, :func:`assert_collinear_safe`: soft or zero-momentum particles,
  and exact collinear splittings, change no jet output;
- :func:`random_jets`: plausible float64 jets, padded or as a JetBatch, to test with.

Calling convention
------------------
Every helper is ``assert_xxx(fn, inputs, *, ..., generator=None, dtype=torch.float64)``
with ``inputs`` one of:

* **padded tensors**: ``inputs = p4 (..., N, 4)`` with optional keyword arguments
  ``x (..., N, C)`` and ``mask (..., N)`` (True = real particle). ``fn`` is called as
  ``fn(p4)``, ``fn(p4, x)``, ``fn(p4, mask=mask)`` or ``fn(p4, x, mask=mask)`` according to
  what was given. The leading dimensions ``...`` are jets; outputs have those leading
  dimensions too (one result per jet, or ``(..., N, *)`` per particle). A single jet
  ``(N, 4)`` works (no jet dimension). Wrap anything else in a lambda, e.g.
  ``lambda p4, x, mask: layer(x, p4, mask)[0]``.
* **a JetBatch**: ``fn(batch)``; for models taking :class:`jettag.data.JetBatch`. The helper
  transforms ``batch.p4`` (and ``x`` where relevant) and rebuilds the batch; the label and
  jet-level fields are passed unchanged. Outputs have one row per jet ``(B, *)`` or per
  particle ``(P, *)``.
* **a tuple of arguments** (Lorentz and SO(2) helpers only): ``fn(*inputs)``, each argument
  declared in ``in_types`` (``"p4"``, ``"vector"``, ``"tensor"``, ``"axis"``, or
  ``"scalar"``/``None`` for arguments passed unchanged, such as a ``batch`` index). For
  PyG-style layers ``forward(x, p4, batch)`` and SO(2)-about-j layers on vectors and tensors.

Features ``x`` are treated as invariant scalars: features that are computed from the
momenta must be computed inside ``fn``. Outputs may be a tensor, a tuple/list or a dict of
tensors; equivariance helpers take ``out_types`` saying how each transforms.

Inputs are cast to float64 before the transformation and ``fn`` runs in ``dtype``
(float64 by default; ``dtype=None`` keeps the inputs' dtype); an ``nn.Module`` with other
parameters runs as a converted copy, the original is left untouched (including its
train/eval mode: call ``model.eval()`` first, since dropout and batch-norm statistics break
every one of these checks). Outputs are compared in float64: an element passes when
``|got - expected| <= atol + rtol * |expected|``, defaults from :func:`default_tolerance`.
``generator`` is a ``torch.Generator``, an int seed, or None for seed 0 (reproducible).

Example:
    >>> from jettag import physics
    >>> from jettag.testing import assert_lorentz_invariant, random_jets
    >>> p4, _, mask = random_jets(8, 20, generator=0)
    >>> mass = lambda p4, mask: physics.mass(physics.jet_p4(p4, mask=mask))
    >>> print(assert_lorentz_invariant(mass, p4, mask=mask))  # doctest: +ELLIPSIS
    Lorentz invariance holds: worst |got - expected| = ...
"""

from __future__ import annotations

from jettag.testing._batching import assert_batch_independent, assert_padding_invariant
from jettag.testing._common import SymmetryReport, default_tolerance
from jettag.testing._jets import PaddedJets, random_jets
from jettag.testing._lorentz import assert_lorentz_equivariant, assert_lorentz_invariant
from jettag.testing._permutation import (
    assert_permutation_equivariant,
    assert_permutation_invariant,
)
from jettag.testing._safety import assert_collinear_safe, assert_ir_safe
from jettag.testing._so2 import assert_so2_equivariant, assert_so2_invariant

__all__ = [
    "PaddedJets",
    "SymmetryReport",
    "assert_batch_independent",
    "assert_collinear_safe",
    "assert_ir_safe",
    "assert_lorentz_equivariant",
    "assert_lorentz_invariant",
    "assert_padding_invariant",
    "assert_permutation_equivariant",
    "assert_permutation_invariant",
    "assert_so2_equivariant",
    "assert_so2_invariant",
    "default_tolerance",
    "random_jets",
]
