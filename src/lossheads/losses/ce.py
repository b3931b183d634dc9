"""`loss=ce`: `nn.CrossEntropyLoss`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lossheads.config.validators import require
from lossheads.heads import Head
from lossheads.losses.base import Loss, Weight, as_weight_tensor, class_weight, require_smoothing


class CrossEntropy(Loss):
    """`ce`: `nn.CrossEntropyLoss`: l = -w_y (z_y - log sum_c exp z_c) for class-index targets (N,),
    or -sum_c w_c q_c log softmax(z)_c for class-probability targets (N, C).

    `weight` (one per class, or `auto`: n / (C n_c)) keeps PyTorch's convention: with index targets
    `mean` is the weighted mean sum(w_y l) / sum(w_y), unlike BCE's plain mean. `pos_weight` (binary
    data, a number or `auto` = negatives / positives) multiplies the positive class's weight and
    takes BCE's convention instead, the plain mean of w*l, so that the two-way softmax with
    `ce` + `pos_weight` optimizes exactly what the sigmoid head with `bce_logits` + `pos_weight` does.
    """

    name = "ce"
    forms = ("categorical",)
    takes = ("weight", "pos_weight", "reduction", "label_smoothing")

    def __init__(
        self,
        head: Head,
        train_targets: Tensor,
        weight: Weight = None,
        pos_weight: float | str | None = None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(head, train_targets, reduction)
        self.register_buffer("weight", class_weight(head, train_targets, weight, per_element=False))
        self.plain_mean = pos_weight is not None
        if pos_weight is not None:  # the two-way softmax's counterpart of BCE's pos_weight
            require(head.task == "binary", "loss.pos_weight", pos_weight,
                    "with ce it applies to binary data (two-way softmax); use loss.weight per class")  # fmt: skip
            if pos_weight == "auto":
                counts = head.class_counts(train_targets)
                require(bool(counts[1] > 0), "loss.pos_weight", "auto", "the training split has no positives")
                pos_weight = float(counts[0] / counts[1])
            pos = as_weight_tensor("loss.pos_weight", pos_weight, 1, per_element=True).reshape(-1)
            require(pos.numel() == 1 and bool((pos > 0).all()), "loss.pos_weight", pos_weight, "use a number > 0")
            base = self.weight if self.weight is not None else torch.ones(2)
            self.weight = base * torch.cat([torch.ones(1), pos])
        self.label_smoothing = require_smoothing(label_smoothing)

    @property
    def elementwise(self) -> bool:  # type: ignore[override]
        """Over a member axis without label smoothing (`over_members`); smoothing's weighted term is vmapped."""
        return self.label_smoothing == 0

    def compute(self, logits: Tensor, targets: Tensor) -> Tensor:
        if self.member_axis:
            return self.over_members(logits, targets)
        if self.plain_mean and self.reduction == "mean":
            per_sample = F.cross_entropy(logits, targets, weight=self.weight, reduction="none",
                                         label_smoothing=self.label_smoothing)  # fmt: skip
            return per_sample.mean()
        loss = F.cross_entropy(
            logits, targets, weight=self.weight, reduction=self.reduction, label_smoothing=self.label_smoothing
        )
        return self.finish(loss)

    def over_members(self, logits: Tensor, targets: Tensor) -> Tensor:
        """(K, N, C) logits, each member's weight (K, 1, C): the per-sample terms of `F.cross_entropy`
        (no label smoothing), reduced per member by the same rules: (K,)."""
        log_probs = torch.log_softmax(logits, dim=-1)
        if targets.is_floating_point():  # class probabilities: -sum_c w_c q_c log p_c, a plain mean
            weighted = targets if self.weight is None else targets * self.weight
            return self.reduce(-(weighted * log_probs).sum(dim=-1))
        per_sample = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        if self.weight is None:
            return self.reduce(per_sample)
        w_y = self.weight.expand_as(logits).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        if self.reduction == "mean" and not self.plain_mean:  # PyTorch's weighted mean
            return (w_y * per_sample).sum(dim=1) / w_y.sum(dim=1)
        return self.reduce(w_y * per_sample)
