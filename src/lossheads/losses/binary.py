"""Shared options of the per-logit binary cross-entropies (`bce`, `bce_logits`)."""

from __future__ import annotations

import torch
from torch import Tensor

from lossheads.heads import Head
from lossheads.losses.base import Loss, Weight, register_element_weights, require_smoothing


class BinaryCrossEntropyBase(Loss):
    """`weight` rescales each element (one number, one per logit, or `auto`: n / (C n_c) per class
    column), `pos_weight` the positives (one number, one per label, or `auto`: negatives / positives),
    broadcast over the last (label) dimension as in `BCEWithLogitsLoss`. `label_smoothing` = e moves
    each target toward 0.5, as Keras does: y' = y (1 - e) + e / 2. `mean` is a plain mean of w*l."""

    forms = ("per_logit",)
    takes = ("weight", "pos_weight", "reduction", "label_smoothing")

    def __init__(
        self,
        head: Head,
        train_targets: Tensor,
        weight: Weight = None,
        pos_weight: Weight = None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(head, train_targets, reduction)
        self.label_smoothing = require_smoothing(label_smoothing)
        register_element_weights(self, head, train_targets, weight, pos_weight)

    def smooth(self, targets: Tensor, dtype: torch.dtype) -> Tensor:
        targets = targets if targets.dtype == dtype else targets.to(dtype)  # already cast: no call at all
        return targets * (1 - self.label_smoothing) + self.label_smoothing / 2 if self.label_smoothing else targets
