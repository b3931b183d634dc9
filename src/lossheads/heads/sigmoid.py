"""`head=sigmoid`: one logit on binary data."""

from __future__ import annotations

import torch
from torch import Tensor

from lossheads.heads.base import Head, Task


class SigmoidHead(Head):
    """One logit z per sample: p = sigmoid(z), predict p >= threshold."""

    name = "sigmoid"
    tasks = ("binary",)
    default_for = ("binary",)

    @classmethod
    def logits_for(cls, num_classes: int, task: Task) -> int:
        return 1

    def logits(self, output: Tensor) -> Tensor:
        return output.squeeze(-1)

    def probabilities(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits.float())

    def binary_logit(self, logits: Tensor) -> Tensor:
        return logits

    def from_binary_logit(self, logit: Tensor) -> Tensor:
        return logit
