"""The common yardstick: proper scores and calibration computed from a head's probabilities, so that
every arm is measured the same way whatever loss it trained with (each arm's own loss is not).

All three are torchmetrics `Metric`s with sum states (updated per batch on the device, reduced by
summing across DDP processes, computed once per epoch), on the shapes the heads hand over:
binary (N,) positive-class probabilities with 0/1 targets, multi-class (N, C) probabilities with
class indices, multi-label (N, L) per-label probabilities with 0/1 targets.

- `nll`: binary cross-entropy of p (sklearn's `log_loss`), the cross-entropy of the softmax on
  multi-class data, the mean binary cross-entropy over (sample, label) pairs on multi-label data.
  Probabilities are clipped to [eps, 1 - eps] with eps of their dtype, as `log_loss` does.
- `brier`: binary mean (p - y)^2 (sklearn's `brier_score_loss`); multi-class the mean over samples
  of the sum over classes of (p_c - onehot_c)^2 (range [0, 2], sklearn's multi-class convention);
  multi-label the mean over labels of each label's binary Brier score.
- `ece`: top-label expected calibration error, 15 equal-width bins of [0, 1]: the confidence is the
  probability of the most probable label (max(p, 1 - p) on binary data and per label on multi-label
  data, pooled), correct when that label is the true one; ECE = sum_b (n_b / N) |acc_b - conf_b|.
  It does not depend on `threshold`: it measures the probabilities, not a decision rule.
  torchmetrics' `BinaryCalibrationError` is the calibration of the positive-class probability
  instead; we log that one as `positive_ece`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from lossheads.heads import Task

BINS = 15


class _MeanOverSamples(Metric):
    """A sum of per-sample values and their count; `compute` is the mean."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(self, task: Task, **kwargs) -> None:
        super().__init__(**kwargs)
        self.task = task
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def per_sample(self, probabilities: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, probabilities: Tensor, target: Tensor) -> None:
        values = self.per_sample(probabilities, target)
        self.total += values.sum(dtype=torch.float64)
        self.count += values.numel()

    def compute(self) -> Tensor:
        return (self.total / self.count).float()


def _clipped(probabilities: Tensor) -> Tensor:
    eps = torch.finfo(probabilities.dtype).eps
    return probabilities.clamp(eps, 1 - eps)


class NegativeLogLikelihood(_MeanOverSamples):
    """Log-loss of the head's probabilities (see the module docstring for each task)."""

    def per_sample(self, probabilities: Tensor, target: Tensor) -> Tensor:
        if self.task == "multiclass":
            return -_clipped(probabilities).gather(1, target.long().unsqueeze(1)).log().squeeze(1)
        finite = _clipped(probabilities).nan_to_num(0.5)  # BCELoss refuses NaN: a NaN probability gives NaN here
        loss = F.binary_cross_entropy(finite, target.to(probabilities.dtype), reduction="none")
        return loss + (probabilities - probabilities)  # 0, or NaN where the probability is


class BrierScore(_MeanOverSamples):
    """Mean squared error of the probabilities against the one-hot truth (see the module docstring)."""

    def per_sample(self, probabilities: Tensor, target: Tensor) -> Tensor:
        if self.task == "multiclass":
            onehot = F.one_hot(target.long(), probabilities.shape[1]).to(probabilities.dtype)
            return (probabilities - onehot).pow(2).sum(dim=1)
        return (probabilities - target.to(probabilities.dtype)).pow(2)


def top_label(probabilities: Tensor, target: Tensor, task: Task) -> tuple[Tensor, Tensor]:
    """(confidence, correct) of the most probable label, flat: one pair per sample (binary,
    multi-class) or per (sample, label) pair (multi-label). A tie p = 0.5 counts as label 1."""
    if task == "multiclass":
        confidence, predicted = probabilities.max(dim=1)
        return confidence, predicted == target
    positive = probabilities >= 0.5
    confidence = torch.where(positive, probabilities, 1 - probabilities)
    return confidence.reshape(-1), (positive == target.bool()).reshape(-1)


class TopLabelCalibrationError(Metric):
    """Top-label ECE with `n_bins` equal-width bins, kept as per-bin sums (count, confidence,
    correct), so the state is small and reduces by summing. Binned as torchmetrics bins: bin b
    holds confidences in [b / n, (b + 1) / n), and a confidence of exactly 1.0 a slot of its own."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(self, task: Task, n_bins: int = BINS, **kwargs) -> None:
        super().__init__(**kwargs)
        self.task, self.n_bins = task, n_bins
        for name in ("count", "confidence", "correct"):
            self.add_state(name, torch.zeros(n_bins + 1, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, probabilities: Tensor, target: Tensor) -> None:
        confidence, correct = top_label(probabilities, target, self.task)
        boundaries = torch.linspace(0, 1, self.n_bins + 1, dtype=confidence.dtype, device=confidence.device)
        bins = torch.bucketize(confidence, boundaries, right=True) - 1
        ones = torch.ones_like(confidence, dtype=torch.float64)
        self.count.index_add_(0, bins, ones)
        self.confidence.index_add_(0, bins, confidence.double())
        self.correct.index_add_(0, bins, correct.double())

    def compute(self) -> Tensor:
        gap = (self.correct - self.confidence).abs()  # n_b * |acc_b - conf_b|
        return (gap.sum() / self.count.sum()).float()
