"""`loss=focal` (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lossheads.config.validators import is_number, require
from lossheads.heads import Head
from lossheads.losses.base import Loss, Weight, class_weight, one_hot


class Focal(Loss):
    """`focal`: down-weights easy examples by (1 - p_t)^gamma.

    Per-logit heads, torchvision's `sigmoid_focal_loss`: l = -a_t (1 - p_t)^g log p_t with
    p_t = p if y = 1 else 1 - p and a_t = a y + (1 - a)(1 - y); alpha < 0 disables a_t.
    Softmax head: l = -sum_c a_c q_c (1 - p_c)^g log p_c with p = softmax(z) and q the one-hot (or
    probability) target. On binary data a_c = (1 - a, a), so the two-way softmax optimizes exactly the
    sigmoid form on z1 - z0; with more classes a_c = 1 (alpha applies to binary data only).
    gamma = 0 with alpha < 0 gives bce_logits / ce. `weight` (or `auto`) multiplies each element's loss
    (per-logit heads, as in `bce_logits`) or each sample's by w_y (softmax); the mean is plain.
    """

    name = "focal"
    elementwise = True
    forms = ("per_logit", "categorical")
    takes = ("gamma", "alpha", "weight", "reduction")

    def __init__(
        self,
        head: Head,
        train_targets: Tensor,
        gamma: float = 2.0,
        alpha: float = 0.25,
        weight: Weight = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(head, train_targets, reduction)
        require(is_number(gamma) and gamma >= 0, "loss.gamma", gamma, "use a number >= 0, e.g. 2")
        require(is_number(alpha) and alpha <= 1, "loss.alpha", alpha, "use a number in [0, 1], or < 0 to disable")
        self.gamma, self.alpha = float(gamma), float(alpha)
        self.categorical = head.form == "categorical"
        self.class_alpha = self.categorical and head.task == "binary" and self.alpha >= 0
        self.register_buffer("weight", class_weight(head, train_targets, weight, per_element=not self.categorical))

    def compute(self, logits: Tensor, targets: Tensor) -> Tensor:
        if self.categorical:
            log_probs = torch.log_softmax(logits, dim=-1)
            q = targets.to(logits.dtype) if targets.is_floating_point() else one_hot(targets, logits)
            if self.class_alpha:
                q = q * torch.tensor([1 - self.alpha, self.alpha], dtype=logits.dtype, device=logits.device)
            if self.weight is not None:
                q = q * self.weight.to(logits.dtype)
            loss = -(q * (1 - log_probs.exp()) ** self.gamma * log_probs).sum(dim=-1)
            return self.reduce(loss)
        targets = targets.to(logits.dtype)
        probs = torch.sigmoid(logits)
        loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        p_t = probs * targets + (1 - probs) * (1 - targets)
        loss = loss * (1 - p_t) ** self.gamma
        if self.alpha >= 0:
            loss = loss * (self.alpha * targets + (1 - self.alpha) * (1 - targets))
        if self.weight is not None:
            loss = loss * self.weight
        return self.reduce(loss)
