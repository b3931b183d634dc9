"""`loss=multilabel_soft_margin`: `nn.MultiLabelSoftMarginLoss`."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lossheads.heads import Head
from lossheads.losses.base import Loss, Weight, class_weight


class MultiLabelSoftMargin(Loss):
    """`multilabel_soft_margin`: per sample, the mean over labels of -w_l [y log sigmoid(z) +
    (1 - y) log sigmoid(-z)]: `bce_logits` with its mean taken over labels first. `weight`: one per
    label, or `auto`."""

    name = "multilabel_soft_margin"
    forms = ("per_logit",)
    takes = ("weight", "reduction")

    def __init__(self, head: Head, train_targets: Tensor, weight: Weight = None, reduction: str = "mean") -> None:
        super().__init__(head, train_targets, reduction)
        self.register_buffer("weight", class_weight(head, train_targets, weight, per_element=False))

    def compute(self, logits: Tensor, targets: Tensor) -> Tensor:
        if logits.ndim == 1:  # one logit per sample (sigmoid head): one label
            logits, targets = logits.unsqueeze(-1), targets.unsqueeze(-1)
        loss = F.multilabel_soft_margin_loss(
            logits, targets.to(logits.dtype), weight=self.weight, reduction=self.reduction
        )
        return self.finish(loss)
