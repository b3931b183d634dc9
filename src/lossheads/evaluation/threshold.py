"""`threshold=auto`: the decision threshold that maximizes F1 on the validation split, found exactly.

Predicting `score >= t` gives the same validation predictions for every t between two consecutive
distinct validation scores, so the candidates are those cut points: each distinct score s_k (all
scores >= s_k predicted positive). F1 at each follows from cumulative counts in one sort. Of the
cuts with the highest F1 the one with the fewest positive predictions wins (ties: the higher
threshold), and the threshold returned is the midpoint between its score and the next lower
distinct score (half its score when none is lower), so that the chosen validation predictions are
reproduced exactly and test scores between the two are not decided by the edge of either.

On multi-label data each label gets its own threshold: the macro F1 is the mean of the per-label
F1s, so maximizing each maximizes it.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor


def best_f1_threshold(scores: Tensor, targets: Tensor) -> float | None:
    """The F1-maximizing threshold for `scores >= threshold` (1-D), or None when the validation
    split has no positives (F1 is 0 for every threshold)."""
    scores, targets = scores.reshape(-1), targets.reshape(-1).bool()
    positives = int(targets.sum())
    if positives == 0:
        return None
    order = torch.argsort(scores, descending=True, stable=True)
    sorted_scores, hits = scores[order], targets[order].long()
    last_of_value = torch.ones_like(sorted_scores, dtype=torch.bool)  # the last index of each distinct score
    last_of_value[:-1] = sorted_scores[1:] != sorted_scores[:-1]
    true_positives = hits.cumsum(0)[last_of_value].double()
    predicted = (torch.nonzero(last_of_value).squeeze(1) + 1).double()
    f1 = 2 * true_positives / (predicted + positives)
    best = int(torch.nonzero(f1 == f1.max())[0])  # the first cut (highest score) of the best
    cuts = sorted_scores[last_of_value]
    upper = cuts[best]
    lower = cuts[best + 1] if best + 1 < len(cuts) else torch.zeros_like(upper)
    middle = (upper + lower) / 2
    return float(middle if lower < middle <= upper else upper)


def tune_threshold(probabilities: Tensor, targets: Tensor, default: float = 0.5) -> float | list[float]:
    """The validation F1-maximizing threshold: one number for (N,) positive-class probabilities, one per
    label for (N, L) multi-label probabilities. A label without positives keeps `default`, with a warning."""
    if probabilities.ndim == 1:
        columns = [(probabilities, targets)]
    else:
        columns = [(probabilities[:, j], targets[:, j]) for j in range(probabilities.shape[1])]
    chosen = []
    for j, (scores, labels) in enumerate(columns):
        threshold = best_f1_threshold(scores.float().cpu(), labels.cpu())
        if threshold is None:
            where = "the validation split" if probabilities.ndim == 1 else f"label {j} of the validation split"
            warnings.warn(f"threshold=auto: {where} has no positives; keeping {default}", stacklevel=2)
            threshold = default
        chosen.append(threshold)
    return chosen[0] if probabilities.ndim == 1 else chosen
