"""`loss=bce_logits`: `nn.BCEWithLogitsLoss` on the logits."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lossheads.losses.binary import BinaryCrossEntropyBase


class BCEWithLogits(BinaryCrossEntropyBase):
    """`bce_logits`: `nn.BCEWithLogitsLoss`: l = -w [pw y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))],
    fused with the log-sum-exp trick, so stable for any logit. `mean` is a plain mean of w*l."""

    name = "bce_logits"
    elementwise = True

    def compute(self, logits: Tensor, targets: Tensor) -> Tensor:
        loss = F.binary_cross_entropy_with_logits(
            logits,
            self.smooth(targets, logits.dtype),
            weight=self.weight,
            pos_weight=self.pos_weight,
            reduction=self.torch_reduction,
        )
        return self.finish(loss)
