"""`loss=nll`: `nn.LogSoftmax` then `nn.NLLLoss`, the two steps `nn.CrossEntropyLoss` fuses."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lossheads.heads import Head
from lossheads.losses.base import Loss, Weight, class_weight


class NLLOnLogSoftmax(Loss):
    """`nll`: l = -w_y log softmax(z)_y, kept to show it equals `ce`. Class-index targets only;
    `weight` (one per class, or `auto`) makes `mean` PyTorch's weighted mean, as with `ce`."""

    name = "nll"
    forms = ("categorical",)
    takes = ("weight", "reduction")

    def __init__(self, head: Head, train_targets: Tensor, weight: Weight = None, reduction: str = "mean") -> None:
        super().__init__(head, train_targets, reduction)
        self.register_buffer("weight", class_weight(head, train_targets, weight, per_element=False))

    def compute(self, logits: Tensor, targets: Tensor) -> Tensor:
        log_probs = F.log_softmax(logits, dim=-1)
        return self.finish(F.nll_loss(log_probs, targets.long(), weight=self.weight, reduction=self.reduction))
