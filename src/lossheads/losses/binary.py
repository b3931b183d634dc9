"""Shared options of the per-logit binary cross-entropies (`bce`, `bce_logits`)."""

from __future__ import annotations

import torch
from torch import Tensor

from lossheads.check import require
from lossheads.heads import Head
from lossheads.losses.base import (
    Loss,
    Weight,
    as_weight_tensor,
    class_weight,
    negatives_per_positive,
    require_smoothing,
)


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
        self.register_buffer("weight", class_weight(head, train_targets, weight, per_element=True))
        if pos_weight == "auto":
            pos_weight = negatives_per_positive(head.loss_target(train_targets))
        pos = as_weight_tensor("loss.pos_weight", pos_weight, head.num_logits, per_element=True)
        require(pos is None or pos.ndim <= 1 and bool((pos > 0).all()), "loss.pos_weight", pos_weight,
                "give one number > 0, or one per label")  # fmt: skip
        self.register_buffer("pos_weight", pos)

    def smooth(self, targets: Tensor, dtype: torch.dtype) -> Tensor:
        targets = targets if targets.dtype == dtype else targets.to(dtype)  # already cast: no call at all
        return targets * (1 - self.label_smoothing) + self.label_smoothing / 2 if self.label_smoothing else targets
