"""`loss=asl`: asymmetric loss (Ridnik et al., "Asymmetric Loss For Multi-Label Classification",
ICCV 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lossheads.config.validators import is_number, require
from lossheads.heads import Head
from lossheads.losses.base import Loss, Weight, register_element_weights


class AsymmetricLoss(Loss):
    """`asl`: l = -y (1 - p)^gamma_pos log p - (1 - y) p_m^gamma_neg log(1 - p_m), p = sigmoid(z),
    with the probability margin p_m = max(p - clip, 0), which discards easy negatives (p <= clip)
    entirely. gamma_pos = gamma_neg = clip = 0 gives `bce_logits`. For per-logit heads (multilabel,
    ovr, sigmoid). `weight` and `pos_weight` (numbers, or `auto`) scale each element and the positive
    term as in `bce_logits`; `mean` averages over elements as `bce_logits` does (the paper's code sums)."""

    name = "asl"
    elementwise = True
    forms = ("per_logit",)
    takes = ("gamma_pos", "gamma_neg", "clip", "weight", "pos_weight", "reduction")

    def __init__(
        self,
        head: Head,
        train_targets: Tensor,
        gamma_pos: float = 0.0,
        gamma_neg: float = 4.0,
        clip: float = 0.05,
        weight: Weight = None,
        pos_weight: Weight = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(head, train_targets, reduction)
        for key, value in (("loss.gamma_pos", gamma_pos), ("loss.gamma_neg", gamma_neg)):
            require(is_number(value) and value >= 0, key, value, "use a number >= 0")
        require(is_number(clip) and 0 <= clip < 1, "loss.clip", clip, "use a number in [0, 1), e.g. 0.05")
        self.gamma_pos, self.gamma_neg, self.clip = float(gamma_pos), float(gamma_neg), float(clip)
        register_element_weights(self, head, train_targets, weight, pos_weight)

    def compute(self, logits: Tensor, targets: Tensor) -> Tensor:
        targets = targets.to(logits.dtype)
        p = torch.sigmoid(logits)
        if self.clip > 0:
            not_p_m = (1 - p + self.clip).clamp(max=1)  # 1 - p_m
            log_not_p_m = torch.log(not_p_m)
        else:  # 1 - p exactly: the stable form
            not_p_m, log_not_p_m = 1 - p, F.logsigmoid(-logits)
        positive = (1 - p) ** self.gamma_pos * F.logsigmoid(logits)
        negative = (1 - not_p_m) ** self.gamma_neg * log_not_p_m
        if self.pos_weight is not None:
            positive = positive * self.pos_weight
        loss = -(targets * positive + (1 - targets) * negative)
        return self.reduce(loss if self.weight is None else loss * self.weight)
