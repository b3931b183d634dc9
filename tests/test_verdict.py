"""The report's statistics: paired t-test, t-interval, Holm, the words, and the exact F1 threshold."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from lossheads.report import stats
from lossheads.report.thresholds import f1_at, study


def test_paired_numbers_are_scipys():
    config = [0.91, 0.88, 0.93, 0.90, 0.87]
    baseline = [0.89, 0.88, 0.90, 0.86, 0.88]
    result = stats.paired(config, baseline)
    diffs = np.subtract(config, baseline)
    se = diffs.std(ddof=1) / math.sqrt(5)
    assert result.n == 5
    assert result.mean_diff == pytest.approx(0.016)
    assert result.p == pytest.approx(scipy_stats.ttest_rel(config, baseline).pvalue)
    low, high = scipy_stats.t.interval(0.95, 4, loc=diffs.mean(), scale=se)
    assert (result.ci_low, result.ci_high) == (pytest.approx(low), pytest.approx(high))


def test_three_seeds_at_two_standard_errors_are_not_a_difference():
    result = stats.paired([0.51, 0.51, 0.52], [0.50, 0.50, 0.50])  # differences .01 .01 .02: t = 4.0
    result.p_adjusted = stats.holm([result.p])[0]
    assert result.p == pytest.approx(0.0572, abs=1e-4)  # the old rule (|mean| > 2 se) called this real
    assert stats.verdict(result, higher_is_better=True) == "no evidence of a difference"
    # the smallest difference 3 seeds with this spread detect at 80% power: above 4.30 standard errors
    assert result.min_detectable > scipy_stats.t.ppf(0.975, 2) * result.sd / math.sqrt(3)


def test_words_follow_the_numbers():
    config, baseline = [0.80, 0.81, 0.79, 0.80, 0.82], [0.70, 0.70, 0.71, 0.69, 0.70]
    result = stats.paired(config, baseline)
    result.p_adjusted = result.p
    assert stats.verdict(result, higher_is_better=True) == "better"
    assert stats.verdict(result, higher_is_better=False) == "worse"  # a higher nll is worse
    two = stats.paired([0.9, 0.8], [0.1, 0.1])
    two.p_adjusted = two.p
    assert stats.verdict(two, higher_is_better=True) == "cannot tell: 2 common seeds, at least 3 needed"
    identical = stats.paired([0.9, 0.8, 0.7], [0.9, 0.8, 0.7])
    assert (identical.mean_diff, identical.p) == (0.0, 1.0)


def test_holm_matches_its_formula():
    # sorted 0.01, 0.03, 0.04 of m = 3: 3 * 0.01, max(that, 2 * 0.03), max(that, 1 * 0.04)
    assert stats.holm([0.04, 0.01, 0.03, math.nan])[:3] == pytest.approx([0.06, 0.03, 0.06])
    assert math.isnan(stats.holm([0.04, 0.01, 0.03, math.nan])[3])
    assert stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1


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
