"""`loss=class_balanced`: class-balanced cross-entropy (Cui et al., "Class-Balanced Loss Based on
Effective Number of Samples", CVPR 2019)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lossheads.config.validators import is_number, require
from lossheads.heads import Head
from lossheads.losses.base import Loss, require_smoothing


class ClassBalanced(Loss):
    """`class_balanced`: l = w_y CE(z, y) with w_c = (1 - beta) / (1 - beta^n_c), the inverse of class
    c's effective number of samples (n_c counted on the training split), normalized so that the
    weights sum to C as in the paper's code. beta = 0 gives `ce`; beta -> 1 weighs by 1 / n_c. The mean
    is the plain mean of w_y l over samples (each sample's loss reweighted, as in the paper)."""

    name = "class_balanced"
    forms = ("categorical",)
    takes = ("beta", "reduction", "label_smoothing")

    def __init__(
        self, head: Head, train_targets: Tensor, beta: float = 0.999, reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:  # fmt: skip
        super().__init__(head, train_targets, reduction)
        require(is_number(beta) and 0 <= beta < 1, "loss.beta", beta, "use a number in [0, 1), e.g. 0.999")
        self.beta = float(beta)
        self.label_smoothing = require_smoothing(label_smoothing)
        counts = head.class_counts(train_targets).double()
        missing = [c for c, n in enumerate(counts.tolist()) if n <= 0]
        require(not missing, "loss", self.name, f"class {missing[:1]} has no training samples")
        weight = (1 - self.beta) / (1 - self.beta**counts)
        self.register_buffer("weight", (weight / weight.sum() * len(counts)).float())

    def compute(self, logits: Tensor, targets: Tensor) -> Tensor:
        per_sample = F.cross_entropy(logits, targets, weight=self.weight.to(logits.dtype), reduction="none",
                                     label_smoothing=self.label_smoothing)  # fmt: skip
        return self.reduce(per_sample)
