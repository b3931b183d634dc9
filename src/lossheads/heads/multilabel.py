"""`head=multilabel`: one independent sigmoid per label on multi-label data."""

from __future__ import annotations

import torch
from torch import Tensor

from lossheads.heads.base import Head


class MultilabelHead(Head):
    """One logit per label: p = sigmoid(z) per label, predict p >= threshold per label (`threshold`
    a number, or one per label)."""

    name = "multilabel"
    tasks = ("multilabel",)
    default_for = ("multilabel",)

    def probabilities(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits.float())
