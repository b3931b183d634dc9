"""`loss=logit_adjusted`: logit-adjusted cross-entropy (Menon et al., "Long-tail learning via logit
adjustment", ICLR 2021)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lossheads.config.validators import is_number, require
from lossheads.heads import Head
from lossheads.losses.base import Loss, Weight, class_weight, require_smoothing


class LogitAdjusted(Loss):
    """`logit_adjusted`: l = CE(z + tau log pi, y), pi the class prior counted on the training split.
    Training on adjusted logits makes the unadjusted ones, which the head predicts with, approach the
    balanced-error-optimal classifier on long-tailed data. tau = 0 gives `ce`. `weight` and
    `label_smoothing` as in `ce` (PyTorch's weighted mean)."""

    name = "logit_adjusted"
    forms = ("categorical",)
    takes = ("tau", "weight", "reduction", "label_smoothing")

    def __init__(
        self,
        head: Head,
        train_targets: Tensor,
        tau: float = 1.0,
        weight: Weight = None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(head, train_targets, reduction)
        require(is_number(tau), "loss.tau", tau, "use a number, e.g. 1")
        self.tau = float(tau)
        self.label_smoothing = require_smoothing(label_smoothing)
        self.register_buffer("weight", class_weight(head, train_targets, weight, per_element=False))
        counts = head.class_counts(train_targets)
        missing = [c for c, n in enumerate(counts.tolist()) if n <= 0]
        require(not missing, "loss", self.name, f"class {missing[:1]} has no training samples, so no prior")
        self.register_buffer("log_prior", (counts / counts.sum()).log())

    def compute(self, logits: Tensor, targets: Tensor) -> Tensor:
        adjusted = logits + self.tau * self.log_prior.to(logits.dtype)
        loss = F.cross_entropy(adjusted, targets, weight=self.weight, reduction=self.reduction,
                               label_smoothing=self.label_smoothing)  # fmt: skip
        return self.finish(loss)
