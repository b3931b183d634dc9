"""`loss=poly1`: Poly-1 (Leng et al., "PolyLoss: A Polynomial Expansion Perspective of Classification
Loss Functions", ICLR 2022)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lossheads.config.validators import is_number, require
from lossheads.heads import Head
from lossheads.losses.base import Loss, Weight, class_weight, one_hot, require_smoothing


class Poly1(Loss):
    """`poly1`: l = CE + epsilon (1 - p_t), with p_t = sum_c q_c softmax(z)_c the probability of the
    (label-smoothed, or probability) target q; epsilon = 0 gives `ce`. Per-class `weight` (or `auto`)
    scales each sample's CE term as in `ce`; as in the paper's code the mean is the plain mean over
    samples."""

    name = "poly1"
    forms = ("categorical",)
    takes = ("epsilon", "weight", "reduction", "label_smoothing")

    def __init__(
        self,
        head: Head,
        train_targets: Tensor,
        epsilon: float = 1.0,
        weight: Weight = None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(head, train_targets, reduction)
        require(is_number(epsilon) and epsilon >= -1, "loss.epsilon", epsilon, "use a number >= -1, e.g. 1")
        self.epsilon = float(epsilon)
        self.label_smoothing = require_smoothing(label_smoothing)
        self.register_buffer("weight", class_weight(head, train_targets, weight, per_element=False))

    def compute(self, logits: Tensor, targets: Tensor) -> Tensor:
        ce = F.cross_entropy(logits, targets, weight=self.weight, reduction="none",
                             label_smoothing=self.label_smoothing)  # fmt: skip
        q = targets.to(logits.dtype) if targets.is_floating_point() else one_hot(targets, logits)
        if self.label_smoothing:
            q = q * (1 - self.label_smoothing) + self.label_smoothing / logits.shape[-1]
        p_t = (q * torch.softmax(logits, dim=-1)).sum(dim=-1)
        return self.reduce(ce + self.epsilon * (1 - p_t))
