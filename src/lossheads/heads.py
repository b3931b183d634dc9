"""Heads turn the network's logits into probabilities and predictions: the head owns the prediction rule.

On binary data the sigmoid head and the two-way softmax head hand the metrics the same thing (the
positive-class probability and a 0/1 prediction), so the two are compared on equal terms.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Task = Literal["binary", "multiclass", "multilabel"]


class Head:
    """Base: `name`, the number of logits the network must output, and the prediction rule."""

    name: str = ""
    tasks: tuple[str, ...] = ()

    def __init__(self, num_logits: int, threshold: float = 0.5) -> None:
        self.num_logits = num_logits
        self.threshold = threshold

    def logits(self, output: Tensor) -> Tensor:
        """The network's output in the shape the loss expects."""
        return output

    def probabilities(self, logits: Tensor) -> Tensor:
        """What score-based metrics (AUROC, AP, ECE) get: (N,) on binary data, else (N, C)."""
        raise NotImplementedError

    def predict(self, logits: Tensor) -> Tensor:
        """What label-based metrics (acc, precision, recall, F1) get: integer labels."""
        raise NotImplementedError

    def log_distribution(self, logits: Tensor) -> Tensor:
        """Log-probabilities of the class distribution over the last dimension, for distillation:
        a categorical for softmax, a Bernoulli pair [log(1 - p), log p] per logit for sigmoid heads."""
        return torch.stack([F.logsigmoid(-logits), F.logsigmoid(logits)], dim=-1)

    def metric_target(self, targets: Tensor) -> Tensor:
        """Integer targets for the metrics; class-probability targets count as their argmax."""
        if targets.is_floating_point() and targets.ndim == 2 and self.name == "softmax":
            return targets.argmax(dim=1)
        return targets.long()


class SigmoidHead(Head):
    """One logit z per sample: p = sigmoid(z), predict p >= threshold."""

    name = "sigmoid"
    tasks = ("binary",)

    def logits(self, output: Tensor) -> Tensor:
        return output.squeeze(-1)

    def probabilities(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits.float())

    def predict(self, logits: Tensor) -> Tensor:
        return (self.probabilities(logits) >= self.threshold).long()


class SoftmaxHead(Head):
    """C logits: p = softmax(z), predict argmax. With C = 2 this is the two-way softmax,
    whose p1 = sigmoid(z1 - z0); the metrics then get p1, as from the sigmoid head."""

    name = "softmax"
    tasks = ("binary", "multiclass")

    def probabilities(self, logits: Tensor) -> Tensor:
        probs = torch.softmax(logits.float(), dim=-1)
        return probs[..., 1] if self.num_logits == 2 else probs

    def predict(self, logits: Tensor) -> Tensor:
        return logits.argmax(dim=-1)

    def log_distribution(self, logits: Tensor) -> Tensor:
        return F.log_softmax(logits, dim=-1)


class MultilabelHead(Head):
    """One logit per label: p = sigmoid(z) per label, predict p >= threshold per label."""

    name = "multilabel"
    tasks = ("multilabel",)

    def probabilities(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits.float())

    def predict(self, logits: Tensor) -> Tensor:
        return (self.probabilities(logits) >= self.threshold).long()


HEADS: dict[str, type[Head]] = {h.name: h for h in (SigmoidHead, SoftmaxHead, MultilabelHead)}


def build_head(name: str, num_classes: int, threshold: float = 0.5) -> Head:
    """`num_classes` is the number of labels on multi-label data; a sigmoid head has one logit."""
    num_logits = 1 if name == "sigmoid" else num_classes
    return HEADS[name](num_logits, threshold)


def logits_as(logits: Tensor, source: Head, target: Head) -> Tensor:
    """Another head's logits in this head's form, for a teacher with another head on binary data:
    a sigmoid logit z is the two-way softmax [0, z], and a two-way softmax [z0, z1] the sigmoid z1 - z0."""
    if source.name == target.name:
        return logits
    if (source.name, target.name) == ("sigmoid", "softmax"):
        return torch.stack([torch.zeros_like(logits), logits], dim=-1)
    if (source.name, target.name) == ("softmax", "sigmoid") and source.num_logits == 2:
        return logits[..., 1] - logits[..., 0]
    raise ValueError(f"no {source.name} -> {target.name} logit map")
