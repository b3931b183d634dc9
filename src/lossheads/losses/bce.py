"""`loss=bce`: sigmoid, then `nn.BCELoss` (kept to compare its stability with `bce_logits`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lossheads.losses.binary import BinaryCrossEntropyBase


class BCEOnProbabilities(BinaryCrossEntropyBase):
    """`bce`: p = sigmoid(z), then `nn.BCELoss`: l = -w [pw y log p + (1 - y) log(1 - p)].

    Kept on purpose to compare with the fused `bce_logits`: equal in value, less stable, since
    BCELoss clamps each log at -100 (so the loss saturates at 100 and its gradient vanishes).
    Computed in fp32 with autocast off: PyTorch refuses `binary_cross_entropy` under CUDA autocast.
    A NaN logit (a run diverging) makes the loss NaN, as `bce_logits`'s, so the run is recorded as
    diverged: BCELoss itself refuses a NaN probability with a RuntimeError, which ended the run (and,
    under `hydra/launcher=seeds`, the whole group it trained in) as a crash.
    """

    name = "bce"
    elementwise = True

    def compute(self, logits: Tensor, targets: Tensor) -> Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            probs = torch.sigmoid(logits.float())
            # NaN where any probability is (each member's own, over a member axis); 0 otherwise (no gradient)
            diverged = self.reduce(probs.detach() * 0)
            probs = probs.nan_to_num(nan=0.5)  # what BCELoss accepts; the loss is NaN all the same
            targets = self.smooth(targets, torch.float32)
            if self.pos_weight is None:
                loss = F.binary_cross_entropy(probs, targets, self.weight, reduction=self.torch_reduction)
                return self.finish(loss) + diverged
            # BCELoss has no pos_weight: weigh its two clamped log terms as BCEWithLogitsLoss does.
            log_p = F.binary_cross_entropy(probs, torch.ones_like(probs), reduction="none")
            log_not_p = F.binary_cross_entropy(probs, torch.zeros_like(probs), reduction="none")
            loss = self.pos_weight * targets * log_p + (1 - targets) * log_not_p
            if self.weight is not None:
                loss = loss * self.weight
            return self.reduce(loss) + diverged
