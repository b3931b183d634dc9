"""The threshold study: the rule `p >= threshold` at the run's threshold against the threshold that
maximizes validation F1, found exactly over the validation scores' cut points (per label on
multi-label data), then applied to the test split."""

from __future__ import annotations

from typing import Any

import numpy as np


def f1_at(probs: np.ndarray, targets: np.ndarray, threshold: float | np.ndarray) -> float:
    """F1 of `probs >= threshold`; macro over labels (one threshold each, or one for all) on multi-label data."""
    predicted = probs >= threshold
    truth = targets.astype(bool)
    if predicted.ndim == 1:
        predicted, truth = predicted[:, None], truth[:, None]
    tp = (predicted & truth).sum(0)
    denominator = predicted.sum(0) + truth.sum(0)
    return float(np.mean(np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)))


def best_f1_threshold(scores: np.ndarray, targets: np.ndarray) -> float:
    """The cut point t (one of the scores) whose rule `scores >= t` has the highest F1; the largest
    such t on ties. Every distinct rule is one of these cut points, so nothing between them can do
    better. 0.5 when there is no positive (F1 is 0 at every threshold)."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores, truth = scores[order], targets[order].astype(bool)
    positives = truth.sum()
    if positives == 0:
        return 0.5
    tp = np.cumsum(truth)
    predicted = np.arange(1, len(scores) + 1)
    last_of_value = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]  # ties cut together
    f1 = np.where(last_of_value, 2 * tp / (predicted + positives), -1.0)
    return float(sorted_scores[int(np.argmax(f1))])


def best_thresholds(scores: np.ndarray, targets: np.ndarray) -> float | np.ndarray:
    """One threshold for binary scores (N,), one per label for multi-label scores (N, L)."""
    if scores.ndim == 1:
        return best_f1_threshold(scores, targets)
    return np.array([best_f1_threshold(scores[:, j], targets[:, j]) for j in range(scores.shape[1])])


def study(folder_probs: dict[str, np.ndarray], threshold: Any) -> tuple[float, float, float] | None:
    """(mean val-best threshold, test F1 at the run's threshold, test F1 at the val-best one), or
    None where a split is missing (evaluate-only runs have no validation predictions)."""
    if not {"val_probs", "val_targets", "test_probs", "test_targets"} <= set(folder_probs):
        return None
    best = best_thresholds(folder_probs["val_probs"], folder_probs["val_targets"])
    configured = np.asarray(threshold if threshold is not None else 0.5, dtype=float)
    test_probs, test_targets = folder_probs["test_probs"], folder_probs["test_targets"]
    return float(np.mean(best)), f1_at(test_probs, test_targets, configured), f1_at(test_probs, test_targets, best)
