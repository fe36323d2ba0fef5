"""Accuracy, multi-class reductions, bootstrap and the per-task summary."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from jettag.metrics import (
    TASKS,
    accuracy,
    background_rejection,
    binary_view,
    bootstrap,
    bootstrap_indices,
    bootstrap_mean,
    one_vs_rest_auc,
    roc_auc,
    summary,
)


def _probs(rng: np.random.Generator, labels: np.ndarray, num_classes: int) -> np.ndarray:
    logits = rng.normal(size=(labels.shape[0], num_classes))
    logits[np.arange(labels.shape[0]), labels] += 1.0
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def test_accuracy_matches_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 500)
    probs = _probs(rng, labels, 3)
    assert accuracy(labels, probs) == accuracy_score(labels, probs.argmax(axis=1))
    binary = rng.integers(0, 2, 500)
    p = rng.uniform(size=500)
    assert accuracy(binary, p) == accuracy_score(binary, (p > 0.5).astype(int))
    assert accuracy([1, 0], [0.5, 0.5]) == 0.5  # a tie is class 0, like argmax of (1-p, p)


def test_one_vs_rest_matches_scikit_learn_macro() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 800)
    probs = _probs(rng, labels, 4)
    per_class = one_vs_rest_auc(labels, probs)
    assert per_class.mean() == pytest.approx(
        roc_auc_score(labels, probs, multi_class="ovr", average="macro"), abs=1e-12
    )
    summary_ = summary(labels, probs, "multiclass", class_names=["a", "b", "c", "d"])
    assert summary_["auc_c"] == pytest.approx(per_class[2])
    assert summary_["auc"] == pytest.approx(per_class.mean())
    assert summary_["accuracy"] == accuracy(labels, probs)


def test_binary_view_one_vs_one() -> None:
    labels = np.array([0, 1, 2, 1, 0])
    probs = np.array(
        [[0.6, 0.3, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [0.0, 0.0, 1.0], [0.5, 0.1, 0.4]]
    )
    is_signal, disc = binary_view(labels, probs, signal=1, background=0)
    assert is_signal.tolist() == [False, True, True, False]
    np.testing.assert_allclose(disc, [1 / 3, 6 / 7, 0.5, 1 / 6])
    is_signal, disc = binary_view(labels, probs, signal=2)
    assert is_signal.tolist() == [False, False, True, False, False]
    np.testing.assert_allclose(disc, probs[:, 2])
    with pytest.raises(ValueError, match="background class 5 out of range"):
        binary_view(labels, probs, signal=1, background=5)


def test_top_summary_conventions() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 3000)
    probs = _probs(rng, labels, 2)
    result = summary(labels, probs, "top", interpolated=True)
    assert list(result) == [
        "accuracy",
        "auc",
        "rejection@0.5",
        "rejection@0.3",
        "rejection_interp@0.5",
        "rejection_interp@0.3",
        "num_jets",
        "num_signal",
        "num_background",
    ]
    # LorentzNet (top_tagging.py): score = softmax probability of class 1, sklearn ROC,
    # nearest point
    fpr, tpr, _ = sk_roc_curve(labels, probs[:, 1])
    for eff in (0.3, 0.5):
        assert result[f"rejection@{eff}"] == 1.0 / fpr[np.argmin(np.abs(tpr - eff))]
    assert result["auc"] == pytest.approx(roc_auc_score(labels, probs[:, 1]), abs=1e-12)
    assert result["num_signal"] + result["num_background"] == 3000
    json.dumps(result)  # plain floats and ints
    # 1-D signal probabilities give the same numbers
    assert summary(labels, probs[:, 1], "top", interpolated=True) == result


def test_task_efficiencies() -> None:
    assert TASKS["top"].signal_efficiencies == (0.5, 0.3)
    assert TASKS["qg"].signal_efficiencies == (0.5, 0.3)
    assert TASKS["btag"].signal_efficiencies == (0.7, 0.85)
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 400)
    p = np.clip(labels * 0.3 + rng.uniform(size=400) * 0.7, 0, 1)
    btag = summary(labels, p, "btag")
    assert btag["rejection@0.7"] == background_rejection(labels, p, 0.7)
    assert btag["rejection@0.85"] == background_rejection(labels, p, 0.85)
    with pytest.raises(ValueError, match="unknown task 'tau'"):
        summary(labels, p, "tau")


def test_bootstrap_replicates_are_resampled_metrics() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 700)
    scores = np.round(labels + rng.normal(size=700), 1)
    reps = bootstrap(
        labels,
        scores,
        signal_efficiencies=[0.3, 0.5],
        methods=("nearest", "interpolate"),
        num_resamples=12,
        seed=5,
        max_elements=2000,
    )
    for r in (0, 7, 11):
        index = bootstrap_indices(700, r, seed=5)
        assert reps["auc"][r] == pytest.approx(
            roc_auc_score(labels[index], scores[index]), abs=1e-12
        )
        fpr, tpr, _ = sk_roc_curve(labels[index], scores[index])
        for eff in (0.3, 0.5):
            assert reps[f"rejection@{eff}"][r] == 1.0 / fpr[np.argmin(np.abs(tpr - eff))]
            assert reps[f"rejection_interp@{eff}"][r] == pytest.approx(
                background_rejection(labels[index], scores[index], eff, method="interpolate")
            )
    # seeded: same seed -> same replicates whatever the memory chunking; other seed differs
    again = bootstrap(
        labels,
        scores,
        signal_efficiencies=[0.3, 0.5],
        methods=("nearest", "interpolate"),
        num_resamples=12,
        seed=5,
    )
    for key in reps:
        np.testing.assert_array_equal(reps[key], again[key])
    other = bootstrap(labels, scores, num_resamples=12, seed=6)
    assert not np.array_equal(other["auc"], reps["auc"])


def test_bootstrap_spread_matches_binomial_error() -> None:
    rng = np.random.default_rng(6)
    correct = rng.uniform(size=4000) < 0.8
    reps = bootstrap_mean(correct, num_resamples=400, seed=1)
    expected = math.sqrt(0.8 * 0.2 / 4000)
    assert reps.std(ddof=1) == pytest.approx(expected, rel=0.15)
    labels = rng.integers(0, 2, 4000)
    scores = labels + rng.normal(size=4000)
    # replicate means of AUC and accuracy sit on the full-sample values
    auc_reps = bootstrap(labels, scores, num_resamples=100)["auc"]
    assert auc_reps.mean() == pytest.approx(roc_auc(labels, scores), abs=3e-3)


def test_summary_with_bootstrap() -> None:
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 2000)
    probs = _probs(rng, labels, 2)
    result = summary(labels, probs, "qg", bootstrap=50, seed=2)
    for key in ("accuracy", "auc", "rejection@0.5", "rejection@0.3"):
        # ~1000 background jets: a few % on AUC and accuracy, tens of % on 1/eps_B(0.3)
        assert 0 < result[f"{key}_std"] < 0.4 * result[key]
    assert result["auc_std"] < 0.02 and result["accuracy_std"] < 0.02
    assert summary(labels, probs, "qg", bootstrap=50, seed=2) == result
    multi = summary(labels, probs, "multiclass", bootstrap=20)
    assert {"accuracy_std", "auc_std", "auc_0_std", "auc_1_std"} <= set(multi)


def test_summary_infinite_rejection() -> None:
    labels = np.array([0, 0, 1, 1])
    probs = np.array([0.1, 0.2, 0.8, 0.9])
    result = summary(labels, probs, "top", bootstrap=10)
    assert result["auc"] == 1.0 and result["rejection@0.5"] == math.inf
    assert math.isnan(result["rejection@0.5_std"])  # no spread can be quoted for inf


def test_summary_errors() -> None:
    with pytest.raises(ValueError, match=r"no signal \(label 1\)"):
        summary([0, 0, 0], [0.1, 0.2, 0.3], "top")
    with pytest.raises(ValueError, match="scores must be"):
        summary([0, 1], [0.1, 0.2, 0.3], "top")
    with pytest.raises(ValueError, match="needs \\(N, C\\) scores"):
        summary([0, 1], [0.1, 0.2], "multiclass")
    with pytest.raises(ValueError, match="integer class indices"):
        summary([0.5, 1.0], [0.1, 0.2], "top")


def test_reproduces_lorentznet_published_qg_result(reference_dir) -> None:
    # LorentzNet-release logs/qg/pretrained/score.npy: (label, softmax p0, softmax p1) of the
    # 200k quark/gluon test jets, float32; test-result.json: the numbers in the paper's table
    scores_path = reference_dir / "lorentznet-release_qg_score.npy"
    if not scores_path.exists():
        pytest.skip(f"{scores_path} not found (LorentzNet-release logs/qg/pretrained/score.npy)")
    scores = np.load(scores_path)
    published = json.loads((reference_dir / "lorentznet-release_qg_test-result.json").read_text())
    result = summary(scores[:, 0].astype(np.int64), scores[:, 1:], "qg")
    assert result["accuracy"] == published["test_acc"]
    assert result["auc"] == pytest.approx(published["test_auc"], rel=1e-12)
    assert result["rejection@0.3"] == published["test_1/eB_0.3"]
    assert result["rejection@0.5"] == published["test_1/eB_0.5"]
