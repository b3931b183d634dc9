"""An arm against the control on one metric, paired by seed: an exact sign-flip test, the interval that
inverts it, the adjustment over a dataset's panel, and the words.

Why a sign-flip test: if the arm changes nothing, each seed's difference (arm - control) is as likely
+d as -d, so the 2^n sign patterns of n seeds are equally likely. It assumes no normal distribution, and
it stays valid when the difference is the same on every seed, where the paired t-test's standard error
is 0 and its p-value 0. Its price: with n seeds the smallest two-sided p-value is 2 / 2^n (5 seeds: 0.0625).

The interval holds the shifts the test does not reject: its ends are order statistics of the means of
the 2^n - 1 non-empty subsets of the differences (Hartigan 1969), so "0 lies outside the interval" and
"p <= level" are one statement. Bonferroni's adjustment (level 0.05 / m, p times m) is the one whose
intervals match its p-values; Holm's step-down has no such intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

ALPHA = 0.05
POWER = 0.8
MIN_SEEDS = 3  # fewer common seeds: shown, not counted in the adjustment, no verdict
EXACT_UP_TO = 20  # seeds; above, 2^18 random sign patterns from a fixed generator stand in for all of them
RANDOM_PATTERNS = 2**18
ROUNDING = 1e-9  # relative to the largest difference: a subset mean this close to 0 is 0
TEST_NAME = "exact sign-flip permutation test on the paired differences (two-sided)"
VERDICTS = ("better", "worse", "equivalent", "no evidence")


@dataclass(frozen=True)
class Paired:
    """`arm` minus `control` on one metric, over the seeds both ran; interval and p at one level."""

    n: int
    mean_diff: float
    sd: float
    ci_low: float  # -inf / +inf where n seeds cannot reach the level at all
    ci_high: float
    p: float  # unadjusted two-sided p-value
    p_adjusted: float
    detectable: float  # smallest true difference found with 80% power at the adjusted level; inf: none
    family: int  # comparisons the level was divided by


def subset_means(diffs: np.ndarray) -> np.ndarray:
    """Means of the non-empty subsets of `diffs`, sorted: all 2^n - 1 of them up to EXACT_UP_TO seeds.
    A sign pattern flips a subset A; it moves the mean as far up as the observed one iff mean(A) <= 0.
    A mean that is 0 up to rounding is 0: discrete metrics (recall over 42 positives) cancel exactly,
    and a sum's last bit must not decide which tail a pattern falls in."""
    n = len(diffs)
    if n <= EXACT_UP_TO:
        sums, sizes = np.zeros(1), np.zeros(1)
        for d in diffs:
            sums, sizes = np.concatenate([sums, sums + d]), np.concatenate([sizes, sizes + 1])
        means = sums[1:] / sizes[1:]  # the empty subset is first
    else:
        members = np.random.default_rng(0).random((RANDOM_PATTERNS, n)) < 0.5
        members = members[members.any(1)]
        means = members @ diffs / members.sum(1)
    means[np.abs(means) <= ROUNDING * np.abs(diffs).max(initial=0.0)] = 0.0
    return np.sort(means)


def sign_flip(diffs: Sequence[float], level: float = ALPHA) -> tuple[float, float, float]:
    """(two-sided p, interval low, interval high) of the sign-flip test of `mean(diffs) = 0`; the
    interval at confidence 1 - level. p is twice the smaller one-sided p, at most 1."""
    means = subset_means(np.asarray(diffs, dtype=float))
    total = len(means) + 1  # sign patterns (2^n), the identity included
    up = (1 + np.searchsorted(means, 0.0, side="right")) / total  # P(flipped mean >= observed)
    down = (total - np.searchsorted(means, 0.0, side="left")) / total  # P(flipped mean <= observed)
    p = float(min(1.0, 2 * min(up, down)))
    k = math.floor(level / 2 * total + 1e-9)  # patterns each tail may hold
    if k == 0:
        return p, -math.inf, math.inf
    return p, float(means[k - 1]), float(means[total - 1 - k])


def test_used(n: int) -> str:
    """What comparisons.csv's `test` column says for a comparison over n common seeds."""
    if n < MIN_SEEDS:
        return "none"
    return "exact sign-flip" if n <= EXACT_UP_TO else f"sign-flip, {RANDOM_PATTERNS} random patterns"


def seeds_needed(family: int, alpha: float = ALPHA) -> int:
    """The fewest seeds whose smallest p-value, 2 / 2^n, reaches alpha / family."""
    return math.ceil(math.log2(2 * family / alpha) - 1e-9)


def paired(values: Sequence[float], control: Sequence[float], family: int = 1, alpha: float = ALPHA) -> Paired:
    """The comparison at level alpha / family (Bonferroni): interval, p and p x family agree."""
    diffs = np.asarray(values, dtype=float) - np.asarray(control, dtype=float)
    n = len(diffs)
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, family)
    mean = float(diffs.mean())
    sd = float(diffs.std(ddof=1)) if n > 1 else math.nan
    if n < MIN_SEEDS:
        return Paired(n, mean, sd, math.nan, math.nan, math.nan, math.nan, math.nan, family)
    level = alpha / family
    p, low, high = sign_flip(diffs, level)
    return Paired(n, mean, sd, low, high, p, min(1.0, p * family), detectable(sd, n, level), family)


def detectable(sd: float, n: int, level: float, power: float = POWER) -> float:
    """The true difference found with probability `power` at `level`: inf where n seeds cannot reach the
    level at all; otherwise the paired t-test's (noncentral t, this sd), which the exact test approaches."""
    if 2 / 2**n > level + 1e-12:
        return math.inf
    if sd == 0:
        return 0.0
    df, se = n - 1, sd / math.sqrt(n)
    critical = stats.t.ppf(1 - level / 2, df)

    def shortfall(noncentrality: float) -> float:
        return float(stats.nct.sf(critical, df, noncentrality)) - power

    high = 1.0
    while shortfall(high) < 0:
        high *= 2
    return float(optimize.brentq(shortfall, 0.0, high) * se)


def verdict(result: Paired, higher_is_better: bool, margin: float) -> str:
    """Equivalent when the whole interval lies within +-margin (a sure difference smaller than the
    margin included); better / worse when it excludes 0; otherwise no evidence."""
    if result.n < MIN_SEEDS:
        return f"not counted: {result.n} common seed{'s' if result.n != 1 else ''}, at least {MIN_SEEDS} needed"
    if -margin <= result.ci_low and result.ci_high <= margin:
        return "equivalent"
    if result.ci_low > 0 or result.ci_high < 0:
        return "better" if (result.mean_diff > 0) == higher_is_better else "worse"
    return "no evidence"
