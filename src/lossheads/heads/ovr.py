"""`head=ovr`: one sigmoid per class on single-label data (one-vs-rest)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lossheads.heads.base import Head


class OneVsRestHead(Head):
    """C logits, one independent sigmoid per class, trained against one-hot targets with a per-logit
    loss (`bce_logits`, `focal`, `asl`): timm's `--bce-loss`, used by Wightman et al., "ResNet strikes
    back" (2021). Probabilities are the sigmoids normalized to sum to one, p_c = s_c / sum_k s_k, so that
    NLL, Brier and ECE are defined as for softmax; the prediction is their argmax (the logits'), and on
    binary data (the two-logit sigmoid, distinct from the one-logit `sigmoid` head) p1 >= threshold.
    The metrics are the data's (multi-class or binary), so it is compared with `softmax` on equal terms."""

    name = "ovr"
    tasks = ("binary", "multiclass")

    def loss_target(self, targets: Tensor) -> Tensor:
        # one-hot already, or class probabilities: (N, C), or (K, N, C) over a seeds group's member axis
        if targets.is_floating_point() and targets.ndim >= 2:
            return targets
        return F.one_hot(targets.long(), self.num_logits).float()

    def probabilities(self, logits: Tensor) -> Tensor:
        per_class = torch.sigmoid(logits.float())
        probs = per_class / per_class.sum(dim=-1, keepdim=True)
        return probs[..., 1] if self.task == "binary" else probs

    def predict(self, logits: Tensor) -> Tensor:
        if self.task == "binary":
            return self.at_threshold(self.probabilities(logits))
        return logits.argmax(dim=-1)

    def binary_logit(self, logits: Tensor) -> Tensor | None:
        """log(p1 / p0) of the normalized probabilities: log sigmoid(z1) - log sigmoid(z0)."""
        return F.logsigmoid(logits[..., 1]) - F.logsigmoid(logits[..., 0]) if self.task == "binary" else None
