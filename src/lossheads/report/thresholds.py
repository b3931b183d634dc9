"""The threshold study: the rule `p >= threshold` at the run's threshold against the threshold that
maximizes validation F1 (`threshold=auto`'s exact search, per label on multi-label data), applied to
the test split."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lossheads.evaluation.threshold import tune_threshold


def f1_at(probs: np.ndarray, targets: np.ndarray, threshold: float | np.ndarray) -> float:
    """F1 of `probs >= threshold`; macro over labels (one threshold each, or one for all) on multi-label data."""
    predicted = probs >= threshold
    truth = targets.astype(bool)
    if predicted.ndim == 1:
        predicted, truth = predicted[:, None], truth[:, None]
    tp = (predicted & truth).sum(0)
    denominator = predicted.sum(0) + truth.sum(0)
    return float(np.mean(np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)))


def study(folder_probs: dict[str, np.ndarray], threshold: Any) -> tuple[float, float, float] | None:
    """(mean val-best threshold, test F1 at the run's threshold, test F1 at the val-best one), or
    None where a split is missing (evaluate-only runs have no validation predictions)."""
    if not {"val_probs", "val_targets", "test_probs", "test_targets"} <= set(folder_probs):
        return None
    best = np.asarray(
        tune_threshold(torch.from_numpy(folder_probs["val_probs"]), torch.from_numpy(folder_probs["val_targets"]))
    )
    try:
        configured = np.asarray(threshold if threshold is not None else 0.5, dtype=float)
    except (TypeError, ValueError):  # not a number: a record older than metrics.json's `threshold`
        configured = np.asarray(0.5)
    test_probs, test_targets = folder_probs["test_probs"], folder_probs["test_targets"]
    return float(np.mean(best)), f1_at(test_probs, test_targets, configured), f1_at(test_probs, test_targets, best)
