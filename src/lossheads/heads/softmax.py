"""`head=softmax`: one distribution over the classes; on binary data the two-way softmax."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lossheads.heads.base import Head


class SoftmaxHead(Head):
    """C logits: p = softmax(z), predict argmax. With C = 2 (binary data) this is the two-way softmax,
    whose p1 = sigmoid(z1 - z0): the metrics get p1 and the prediction p1 >= threshold, exactly as
    from the sigmoid head, so the two binary heads are compared on equal terms."""

    name = "softmax"
    tasks = ("binary", "multiclass")
    default_for = ("multiclass",)
    form = "categorical"
    hard_loss = "ce"

    def loss_target(self, targets: Tensor) -> Tensor:
        """Class indices (long), or class probabilities (N, C) kept as they are."""
        return targets if targets.is_floating_point() or targets.dtype == torch.long else targets.long()

    def class_counts(self, targets: Tensor) -> Tensor:
        if targets.is_floating_point() and targets.ndim == 2:  # class probabilities: expected counts
            return targets.sum(dim=0)
        return torch.bincount(targets.long().reshape(-1), minlength=self.num_logits).float()

    def probabilities(self, logits: Tensor) -> Tensor:
        probs = torch.softmax(logits.float(), dim=-1)
        return probs[..., 1] if self.task == "binary" else probs

    def predict(self, logits: Tensor) -> Tensor:
        if self.task == "binary":
            return self.at_threshold(self.probabilities(logits))
        return logits.argmax(dim=-1)

    def log_distribution(self, logits: Tensor) -> Tensor:
        return F.log_softmax(logits, dim=-1)

    def binary_logit(self, logits: Tensor) -> Tensor | None:
        return logits[..., 1] - logits[..., 0] if self.task == "binary" else None

    def from_binary_logit(self, logit: Tensor) -> Tensor:
        return torch.stack([torch.zeros_like(logit), logit], dim=-1)
