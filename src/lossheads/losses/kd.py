"""`loss=kd`: knowledge distillation (Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural
Network", 2015)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lossheads.config.validators import is_number, require, require_fraction
from lossheads.heads import Head
from lossheads.losses.base import LOSSES, Loss


class Distillation(Loss):
    """`kd`: soft_weight * T^2 * KL(p_teacher(T) || p_student(T)) + (1 - soft_weight) * hard.

    p(T) is the head's class distribution of logits / T: one categorical per sample for the softmax
    head, one Bernoulli per logit for per-logit heads. The KL is averaged over those distributions,
    i.e. per sample for softmax (`kl_div(..., reduction="batchmean")`, the true KL; `mean` would
    divide by N*C) and per sample and label for per-logit heads, the scale on which the hard BCE
    averages: with L labels, `soft_weight` weighs the two terms as it says, not the soft one L times
    more. T^2 keeps the soft term's gradients on the hard term's scale. The hard loss is the head's
    own (`Head.hard_loss`: CE or BCEWithLogits).
    """

    name = "kd"
    forms = ("per_logit", "categorical")
    takes = ("temperature", "soft_weight")
    needs_teacher = True

    def __init__(self, head: Head, train_targets: Tensor, temperature: float = 4.0, soft_weight: float = 0.5) -> None:
        super().__init__(head, train_targets, "mean")
        require(is_number(temperature) and temperature > 0, "loss.temperature", temperature, "use a number > 0, e.g. 4")
        require_fraction("loss.soft_weight", soft_weight, low_open=False, high_open=False)
        self.temperature, self.soft_weight = float(temperature), float(soft_weight)
        self.hard = LOSSES[head.hard_loss](head, train_targets)

    def soft(self, logits: Tensor, teacher_logits: Tensor) -> Tensor:
        t = self.temperature
        student = self.head.log_distribution(logits.float() / t)
        teacher = self.head.log_distribution(teacher_logits.float() / t)
        distributions = student.numel() // student.shape[-1]  # samples x labels
        return F.kl_div(student, teacher, reduction="sum", log_target=True) / distributions * t * t

    def forward(self, logits: Tensor, targets: Tensor, teacher_logits: Tensor | None = None) -> Tensor:
        require(teacher_logits is not None, "loss", self.name, "it needs a teacher: set teacher.ckpt_path")
        soft = self.soft(logits, teacher_logits)
        return self.soft_weight * soft + (1 - self.soft_weight) * self.hard(logits, targets)
