"""ROC curve, AUC and background rejection: closed forms, scikit-learn, LorentzNet's convention."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from jettag.metrics import (
    background_efficiency,
    background_rejection,
    roc_auc,
    roc_curve,
)


def _two_point(n_sig: int, sig_high: int, n_bkg: int, bkg_high: int):
    """Scores 0 or 1: ``sig_high`` of ``n_sig`` signal and ``bkg_high`` of ``n_bkg`` background
    jets score 1. The ROC curve is (0, 0), (b, a), (1, 1) with a = sig_high / n_sig,
    b = bkg_high / n_bkg."""
    labels = np.r_[np.ones(n_sig, int), np.zeros(n_bkg, int)]
    scores = np.r_[np.arange(n_sig) < sig_high, np.arange(n_bkg) < bkg_high].astype(float)
    return labels, scores


def _lorentznet_rejection(labels, scores, eff: float) -> float:
    # LorentzNet-release utils.buildROC: sklearn roc_curve (drop_intermediate=True by default),
    # idx = argmin |tpr - eff|, rejection 1 / fpr[idx]
    fpr, tpr, _ = sk_roc_curve(labels, scores)
    with np.errstate(divide="ignore"):
        return float(1.0 / fpr[np.argmin(np.abs(tpr - eff))])


def test_perfect_separation() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    assert roc_auc(labels, scores) == 1.0
    assert roc_auc(labels, -scores) == 0.0
    for method in ("nearest", "interpolate"):
        rejection = background_rejection(labels, scores, [0.3, 0.5, 1.0], method=method)
        assert np.all(np.isinf(rejection)) and np.all(rejection > 0)
    # all background is accepted once the signal efficiency requires it
    assert background_rejection(labels, -scores, 1.0) == 1.0


def test_two_point_distribution_closed_form() -> None:
    labels, scores = _two_point(100, 50, 100, 25)  # a = 0.5, b = 0.25 (exact in binary)
    curve = roc_curve(labels, scores)
    np.testing.assert_array_equal(curve.tpr, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(curve.fpr, [0.0, 0.25, 1.0])
    np.testing.assert_array_equal(curve.thresholds, [np.inf, 1.0, 0.0])
    assert roc_auc(labels, scores) == 0.5 * 0.25 * 0.5 + 0.75 * (0.5 + 1.0) / 2
    # nearest point: 0.5 hits (0.25, 0.5); 0.25 is exactly as far from the origin as from 0.5
    # and 0.75 as far from 0.5 as from 1: the first point wins (LorentzNet's argmin), so
    # eps_B = 0 (infinite rejection) at 0.25 and 0.25 at 0.75
    assert background_rejection(labels, scores, 0.5) == 4.0
    assert background_rejection(labels, scores, 0.25) == math.inf
    assert background_rejection(labels, scores, 0.75) == 4.0
    # interpolated: along (0, 0)-(0.25, 0.5) and (0.25, 0.5)-(1, 1)
    interpolated = background_efficiency(labels, scores, [0.25, 0.5, 0.75], method="interpolate")
    np.testing.assert_allclose(interpolated, [0.125, 0.25, 0.625])
    for eff in (0.25, 0.5, 0.75):
        assert background_rejection(labels, scores, eff) == _lorentznet_rejection(
            labels, scores, eff
        )


def test_gaussian_scores_match_the_analytic_roc() -> None:
    # background ~ N(0, 1), signal ~ N(d, 1): AUC = Phi(d / sqrt 2); at signal efficiency e
    # the cut is t = d - z_e, eps_B = 1 - Phi(t), z_e = Phi^-1(e)
    from statistics import NormalDist

    rng = np.random.default_rng(0)
    n, d = 200_000, 1.5
    labels = np.r_[np.ones(n, int), np.zeros(n, int)]
    scores = np.r_[rng.normal(d, 1.0, n), rng.normal(0.0, 1.0, n)]
    normal = NormalDist()
    assert roc_auc(labels, scores) == pytest.approx(normal.cdf(d / math.sqrt(2)), abs=3e-3)
    for eff in (0.3, 0.5, 0.7):
        expected = 1.0 / (1.0 - normal.cdf(d - normal.inv_cdf(eff)))
        for method in ("nearest", "interpolate"):
            got = background_rejection(labels, scores, eff, method=method)
            assert got == pytest.approx(expected, rel=0.03), (eff, method)


@pytest.mark.parametrize("seed", range(6))
def test_matches_scikit_learn_and_lorentznet(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 2000))
    labels = rng.integers(0, 2, n)
    # rounding creates ties, which exercise grouping and the dropping of collinear points
    scores = np.round(labels * 0.8 + rng.normal(size=n), int(rng.integers(0, 3)))
    for drop in (True, False):
        fpr, tpr, thresholds = sk_roc_curve(labels, scores, drop_intermediate=drop)
        curve = roc_curve(labels, scores, drop_intermediate=drop)
        np.testing.assert_array_equal(curve.fpr, fpr)
        np.testing.assert_array_equal(curve.tpr, tpr)
        np.testing.assert_array_equal(curve.thresholds, thresholds)
    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    effs = [0.3, 0.5, 0.7, 0.85, 1 / 3]
    got = background_rejection(labels, scores, effs)
    assert got.tolist() == [_lorentznet_rejection(labels, scores, e) for e in effs]
    # interpolation on scikit-learn's full curve
    fpr, tpr, _ = sk_roc_curve(labels, scores, drop_intermediate=False)
    for e, value in zip(
        effs, background_efficiency(labels, scores, effs, method="interpolate"), strict=True
    ):
        i = int(np.searchsorted(tpr, e))
        expected = fpr[i] if tpr[i] == e else np.interp(e, tpr[i - 1 : i + 1], fpr[i - 1 : i + 1])
        assert value == pytest.approx(expected, abs=1e-12)


def test_accepts_torch_and_bool_labels() -> None:
    labels = torch.tensor([False, True, False, True])
    scores = torch.tensor([0.2, 0.9, 0.4, 0.3], dtype=torch.bfloat16)
    assert roc_auc(labels, scores) == 0.75
    assert roc_auc(labels.numpy().astype(int), scores.float().numpy()) == 0.75


def test_input_errors() -> None:
    with pytest.raises(ValueError, match=r"no background \(label 0\)"):
        roc_auc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"no signal \(label 1\)"):
        roc_curve([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"labels must be 0 .* or 1"):
        roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="scores must be 1-D"):
        roc_auc([0, 1], [[0.1, 0.9], [0.3, 0.7]])
    with pytest.raises(ValueError, match="must be finite"):
        roc_auc([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match=r"signal_efficiency must be in \(0, 1\]"):
        background_rejection([0, 1], [0.1, 0.2], 1.5)
    with pytest.raises(ValueError, match="method must be one of"):
        background_rejection([0, 1], [0.1, 0.2], 0.5, method="spline")
    with pytest.raises(ValueError, match="empty"):
        roc_auc([], [])
