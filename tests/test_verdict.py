"""The report's statistics: the sign-flip test against a hand count and scipy, its interval, the
adjustment, the words, the panel's metrics against sklearn, and the exact F1 threshold."""

from __future__ import annotations

import itertools
import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats as scipy_stats
from sklearn.metrics import balanced_accuracy_score, recall_score

from lossheads.report import panel, stats
from lossheads.report.thresholds import f1_at, study

DIFFS = [0.03, 0.01, -0.005, 0.02, 0.04, 0.015, 0.025]


def hand_p(diffs: list[float]) -> float:
    """Every one of the 2^n sign patterns, counted: twice the smaller tail, at most 1."""
    observed = sum(diffs)
    flipped = [
        sum(s * d for s, d in zip(signs, diffs, strict=True)) for signs in itertools.product((1, -1), repeat=len(diffs))
    ]
    up = sum(f >= observed - 1e-12 for f in flipped) / len(flipped)
    down = sum(f <= observed + 1e-12 for f in flipped) / len(flipped)
    return min(1.0, 2 * min(up, down))


def test_sign_flip_p_is_the_hand_count_and_scipys():
    p, _, _ = stats.sign_flip(DIFFS)
    assert p == pytest.approx(hand_p(DIFFS)) == pytest.approx(4 / 128)  # patterns at least as far up: 2 of 128
    exact = scipy_stats.permutation_test(
        (np.array(DIFFS),), np.mean, permutation_type="samples", alternative="two-sided", n_resamples=np.inf
    )
    assert p == pytest.approx(exact.pvalue)
    rng = np.random.default_rng(3)
    for n in (3, 5, 8):
        diffs = list(rng.normal(0.01, 0.02, n))
        assert stats.sign_flip(diffs)[0] == pytest.approx(hand_p(diffs))


def test_the_interval_holds_the_shifts_the_test_keeps():
    """Hartigan's subset means: shift delta is inside the interval iff the test of diffs - delta keeps it."""
    for level in (0.05, 0.05 / 6, 0.2):
        _, low, high = stats.sign_flip(DIFFS, level)
        for delta in np.linspace(-0.02, 0.06, 161):
            shifted = [d - delta for d in DIFFS]
            if not (math.isclose(delta, low, abs_tol=1e-9) or math.isclose(delta, high, abs_tol=1e-9)):
                assert (low <= delta <= high) == (hand_p(shifted) > level), (level, delta)
        p = stats.sign_flip(DIFFS)[0]
        assert (low > 0) == (p <= level)  # "0 outside the interval" and "p <= level" are one statement


def test_a_constant_difference_does_not_get_p_zero():
    control = [0.9000, 0.8000, 0.8500]
    arm = [c - 0.0005 for c in control]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy: "catastrophic cancellation"
        t_test = scipy_stats.ttest_rel(arm, control).pvalue
    assert t_test < 1e-10  # the paired t-test calls it certain
    result = stats.paired(arm, control)
    assert result.p == pytest.approx(0.25)  # 2 of the 8 sign patterns are as far out: 2 / 2^3
    assert (result.ci_low, result.ci_high) == (-math.inf, math.inf)  # 3 seeds cannot reach 0.05 at all
    assert stats.verdict(result, higher_is_better=True, margin=0.005) == "no evidence"
    six = stats.paired([0.9 - 0.0005] * 6, [0.9] * 6)
    assert six.p == pytest.approx(2 / 64)
    assert (six.ci_low, six.ci_high) == (pytest.approx(-0.0005), pytest.approx(-0.0005))
    assert stats.verdict(six, higher_is_better=True, margin=0.005) == "equivalent"  # sure, and below the margin
    assert stats.verdict(six, higher_is_better=True, margin=0.0001) == "worse"


def test_bonferroni_over_the_panel_by_hand():
    arm = [0.81, 0.84, 0.80, 0.83, 0.85, 0.82, 0.86, 0.84, 0.83]
    control = [0.80, 0.80, 0.79, 0.80, 0.81, 0.80, 0.80, 0.79, 0.80]
    one, six = stats.paired(arm, control, family=1), stats.paired(arm, control, family=6)
    assert one.p == six.p == pytest.approx(hand_p(list(np.subtract(arm, control))))
    assert six.p_adjusted == pytest.approx(min(1.0, 6 * one.p))
    assert stats.sign_flip(np.subtract(arm, control), 0.05 / 6)[1:] == (six.ci_low, six.ci_high)
    assert six.ci_low <= one.ci_low and six.ci_high >= one.ci_high  # the adjusted interval is wider
    assert (six.ci_low > 0) == (six.p_adjusted <= 0.05)
    assert six.detectable > one.detectable  # detectable after the adjustment: a larger difference
    # the fewest seeds whose smallest p, 2 / 2^n, reaches 0.05 / m
    assert [stats.seeds_needed(m) for m in (1, 10, 50)] == [6, 9, 11]
    assert stats.paired(arm[:5], control[:5]).detectable == math.inf  # 5 seeds: p >= 0.0625 always


def test_words_follow_the_interval():
    def result(low: float, high: float, n: int = 10) -> stats.Paired:
        return stats.Paired(n, (low + high) / 2, 0.01, low, high, 0.01, 0.01, 0.01, 1)

    assert stats.verdict(result(0.012, 0.075), True, 0.01) == "better"
    assert stats.verdict(result(0.012, 0.075), False, 0.01) == "worse"  # a higher NLL is worse
    assert stats.verdict(result(-0.004, 0.003), True, 0.005) == "equivalent"
    assert stats.verdict(result(-0.004, 0.009), True, 0.005) == "no evidence"
    assert stats.verdict(result(0.1, 0.2, n=2), True, 0.01) == "not counted: 2 common seeds, at least 3 needed"
    assert math.isnan(stats.paired([0.9, 0.8], [0.1, 0.1]).p)  # fewer than 3 seeds: no test at all


def test_panel_values_are_sklearns(tmp_path):
    rng = np.random.default_rng(0)
    targets = np.repeat(np.arange(4), [50, 25, 15, 10])
    probs = rng.dirichlet(np.ones(4), len(targets))
    probs[np.arange(len(targets)), targets] += rng.random(len(targets))
    probs /= probs.sum(1, keepdims=True)
    np.savez(tmp_path / "predictions.npz", test_probs=probs, test_targets=targets)
    run = SimpleNamespace(folder=tmp_path, metrics={"test/acc": 0.5})
    found = panel.values(run, panel.panel("multiclass"))
    predicted = probs.argmax(1)
    assert found["balanced_acc"] == pytest.approx(balanced_accuracy_score(targets, predicted))
    assert found["worst_recall"] == pytest.approx(recall_score(targets, predicted, average=None).min())
    assert found["acc"] == 0.5 and math.isnan(found["nll"])  # logged ones from metrics.json; absent: NaN

    scores = rng.random(200)
    labels = (scores + rng.normal(0, 0.3, 200) > 0.7).astype(int)
    np.savez(tmp_path / "predictions.npz", test_probs=scores, test_targets=labels, val_probs=scores, val_targets=labels)
    run = SimpleNamespace(folder=tmp_path, metrics={"threshold": 0.6})
    found = panel.values(run, panel.panel("binary"))
    assert found["balanced_acc"] == pytest.approx(balanced_accuracy_score(labels, scores >= 0.6))
    arrays = {"val_probs": scores, "val_targets": labels, "test_probs": scores, "test_targets": labels}
    assert found["f1_tuned"] == pytest.approx(study(arrays, 0.6)[2])
    assert [m.name for m in panel.panel("multilabel")] == ["macro_f1", "map", "auroc", "nll", "brier", "ece"]
    assert [m.name for m in panel.panel("multilabel", ["balanced_acc", "auroc"])] == ["auroc"]  # no per-class rule


def test_threshold_study_finds_the_exact_validation_f1_threshold():
    scores = np.array([0.95, 0.614, 0.612, 0.3, 0.1])
    targets = np.array([1, 1, 0, 0, 1])
    arrays = {"val_probs": scores, "val_targets": targets, "test_probs": scores, "test_targets": targets}
    threshold, at_run_threshold, at_best = study(arrays, 0.5)
    assert 0.612 < threshold <= 0.614  # between the cut points: TP 2, FP 0, FN 1
    assert (at_run_threshold, at_best) == (pytest.approx(2 * 2 / (3 + 3)), pytest.approx(0.8))
    grid = np.round(np.linspace(0.05, 0.95, 91), 2)  # the old grid's best rule is worse
    assert max(f1_at(scores, targets, t) for t in grid) == pytest.approx(0.75)
    assert study({"test_probs": scores, "test_targets": targets}, 0.5) is None  # evaluate-only: no val split
