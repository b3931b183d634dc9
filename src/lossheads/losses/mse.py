"""`loss=mse`: the square loss for classification (Hui & Belkin, "Evaluation of Neural Architectures
Trained with Square Loss vs Cross-Entropy in Classification Tasks", ICLR 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lossheads.config.validators import require_choice
from lossheads.heads import Head
from lossheads.losses.base import Loss, one_hot


class SquareLoss(Loss):
    """`mse`: `nn.MSELoss` between the targets and the logits (`on=logits`, as in the paper) or the
    probabilities (`on=probs`). Targets: one-hot (or class probabilities) for the softmax head; 0/1
    for per-logit heads, encoded as -1/+1 on the logits so that z = 0 (p = 0.5) stays the decision
    boundary of the p >= 0.5 rule."""

    name = "mse"
    forms = ("per_logit", "categorical")
    takes = ("on", "reduction")

    def __init__(self, head: Head, train_targets: Tensor, on: str = "logits", reduction: str = "mean") -> None:
        super().__init__(head, train_targets, reduction)
        require_choice("loss.on", on, ("logits", "probs"))
        self.on = on
        self.categorical = head.form == "categorical"

    def compute(self, logits: Tensor, targets: Tensor) -> Tensor:
        if targets.shape != logits.shape:
            targets = one_hot(targets, logits)
        targets = targets.to(logits.dtype)
        if self.on == "probs":
            outputs = torch.softmax(logits, dim=-1) if self.categorical else torch.sigmoid(logits)
        else:
            outputs = logits
            targets = targets if self.categorical else 2 * targets - 1
        return self.finish(F.mse_loss(outputs, targets, reduction=self.reduction))
