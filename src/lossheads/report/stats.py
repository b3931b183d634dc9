"""Paired comparisons of two configurations over the seeds both ran: the numbers and the words.

A configuration is compared with the validation-best one of its dataset on the test metric,
seed by seed: mean difference, 95% t-interval, paired t-test p-value (scipy), Holm's adjustment
over the comparisons of one dataset, and the smallest difference those seeds could have detected.
With 3 seeds a difference needs 4.30 standard errors for p < 0.05, not 2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

ALPHA = 0.05
POWER = 0.8
MIN_SEEDS = 3  # fewer common seeds: the report says it cannot tell


@dataclass
class Paired:
    """`config` minus `baseline` on one metric, paired by seed."""

    n: int
    mean_diff: float
    sd: float
    ci_low: float
    ci_high: float
    p: float
    min_detectable: float
    p_adjusted: float = math.nan


def paired(values: Sequence[float], baseline: Sequence[float]) -> Paired:
    """Differences `values[i] - baseline[i]` (same seed); NaN where the seeds are too few to say."""
    diffs = np.asarray(values, dtype=float) - np.asarray(baseline, dtype=float)
    n = len(diffs)
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
    mean = float(diffs.mean())
    if n < 2:
        return Paired(1, mean, math.nan, math.nan, math.nan, math.nan, math.nan)
    sd = float(diffs.std(ddof=1))
    se = sd / math.sqrt(n)
    if se == 0:  # the same difference on every seed: scipy's t is 0/0 or x/0
        return Paired(n, mean, 0.0, mean, mean, 1.0 if mean == 0 else 0.0, 0.0)
    low, high = stats.t.interval(1 - ALPHA, n - 1, loc=mean, scale=se)
    p = float(stats.ttest_rel(values, baseline).pvalue)
    return Paired(n, mean, sd, float(low), float(high), p, min_detectable_difference(se, n))


def min_detectable_difference(se: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The true mean difference a two-sided paired t-test at `alpha` detects with probability
    `power`, for this standard error and n seeds (noncentral t; before any multiplicity adjustment).
    The far tail (a significant result of the wrong sign) is left out: under 1e-3 at this power."""
    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)

    def shortfall(noncentrality: float) -> float:
        return float(stats.nct.sf(critical, df, noncentrality)) - power

    high = 1.0
    while shortfall(high) < 0:
        high *= 2
    return float(optimize.brentq(shortfall, 0.0, high) * se)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: the i-th smallest of m p-values becomes
    max over j <= i of min(1, (m - j + 1) p_(j)). NaN p-values are left out of m and stay NaN."""
    adjusted = [math.nan] * len(pvalues)
    order = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m, running = len(order), 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def verdict(result: Paired, higher_is_better: bool) -> str:
    """Words that follow the numbers: better / worse than the baseline, no evidence, or cannot tell."""
    if result.n < MIN_SEEDS:
        return f"cannot tell: {result.n} common seed{'s' if result.n != 1 else ''}, at least {MIN_SEEDS} needed"
    if math.isnan(result.p_adjusted) or result.p_adjusted >= ALPHA:
        return "no evidence of a difference"
    return "better" if (result.mean_diff > 0) == higher_is_better else "worse"
