"""Loss arms. Every loss takes the head's logits: the network never ends in a sigmoid or softmax.

`reduction` follows PyTorch (`mean`, `sum`), except that the optimizer needs a scalar, so
`none` is reduced by one documented rule: sum over classes/labels, mean over samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from lossheads.check import ConfigError, instantiate_checked, require, require_choice, require_fraction
from lossheads.heads import Head

REDUCTIONS = ("mean", "sum", "none")
Weight = float | Sequence[float] | None


def reduce_none(per_element: Tensor) -> Tensor:
    """The `reduction=none` rule: each sample's loss summed over its classes/labels, then averaged."""
    return per_element.reshape(per_element.shape[0], -1).sum(dim=1).mean()


def apply_reduction(per_element: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_element.mean()
    return per_element.sum() if reduction == "sum" else reduce_none(per_element)


def as_weight_tensor(key: str, value: Weight, length: int, *, per_element: bool) -> Tensor | None:
    """Check a user's weight and return it as a float tensor.

    CE takes one weight per class (a list of `length`). BCE weights elements, so it also takes one
    number, or rows of `length` that broadcast against the batch (as `BCELoss(weight=...)` does).
    """
    if value is None:
        return None
    shape = "one number, a list of" if per_element else "a list of"
    fix = f"give {shape} {length} (one per {'label' if per_element else 'class'})"
    try:
        weight = torch.tensor(value, dtype=torch.float32)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r} is not valid: {fix}") from None
    fits = weight.ndim == 1 and len(weight) == length
    if per_element:
        fits = fits or weight.ndim == 0 or (weight.ndim == 2 and weight.shape[1] == length)
    require(fits, key, value, fix)
    require(bool(torch.isfinite(weight).all() and (weight >= 0).all()), key, value, "weights must be numbers >= 0")
    require(bool((weight > 0).any()), key, value, "at least one weight must be > 0")
    return weight


class _LogitLoss(nn.Module):
    """Shared checks and buffers: `weight` and `pos_weight` move with the module to the device."""

    name: ClassVar[str] = ""
    heads: ClassVar[tuple[str, ...]] = ()

    def __init__(self, reduction: str) -> None:
        super().__init__()
        require_choice("loss.reduction", reduction, REDUCTIONS)
        self.reduction = reduction

    def _finish(self, loss: Tensor) -> Tensor:
        return reduce_none(loss) if self.reduction == "none" else loss


class _BinaryLoss(_LogitLoss):
    """Base of the per-logit binary losses: `weight` rescales each element, `pos_weight` the positives,
    broadcast over the last (label) dimension as in `BCEWithLogitsLoss`."""

    heads = ("sigmoid", "multilabel")

    def __init__(
        self, num_logits: int, weight: Weight = None, pos_weight: Weight = None, reduction: str = "mean"
    ) -> None:
        super().__init__(reduction)
        self.register_buffer("weight", as_weight_tensor("loss.weight", weight, num_logits, per_element=True))
        pos = as_weight_tensor("loss.pos_weight", pos_weight, num_logits, per_element=True)
        require(pos is None or pos.ndim <= 1 and bool((pos > 0).all()), "loss.pos_weight", pos_weight,
                "give one number > 0, or one per label")  # fmt: skip
        self.register_buffer("pos_weight", pos)


class BCEOnProbabilities(_BinaryLoss):
    """`bce`: p = sigmoid(z), then `nn.BCELoss`: l = -w [pw y log p + (1 - y) log(1 - p)].

    Kept on purpose to compare with the fused `bce_logits`: equal in value, less stable, since
    BCELoss clamps each log at -100 (so the loss saturates at 100 and its gradient vanishes).
    Computed in fp32 with autocast off: PyTorch refuses `binary_cross_entropy` under CUDA autocast.
    """

    name = "bce"

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            probs = torch.sigmoid(logits.float())
            targets = targets.float()
            if self.pos_weight is None:
                loss = F.binary_cross_entropy(probs, targets, self.weight, reduction=self.reduction)
                return self._finish(loss)
            # BCELoss has no pos_weight: weigh its two clamped log terms as BCEWithLogitsLoss does.
            log_p = F.binary_cross_entropy(probs, torch.ones_like(probs), reduction="none")
            log_not_p = F.binary_cross_entropy(probs, torch.zeros_like(probs), reduction="none")
            loss = self.pos_weight * targets * log_p + (1 - targets) * log_not_p
            if self.weight is not None:
                loss = loss * self.weight
            return apply_reduction(loss, self.reduction)


class BCEWithLogits(_BinaryLoss):
    """`bce_logits`: `nn.BCEWithLogitsLoss`: l = -w [pw y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))],
    fused with the log-sum-exp trick, so stable for any logit. `mean` is a plain mean of w*l."""

    name = "bce_logits"

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        loss = F.binary_cross_entropy_with_logits(
            logits,
            targets.to(logits.dtype),
            weight=self.weight,
            pos_weight=self.pos_weight,
            reduction=self.reduction,
        )
        return self._finish(loss)


class CrossEntropy(_LogitLoss):
    """`ce`: `nn.CrossEntropyLoss`: l = -w_y (z_y - log sum_c exp z_c) for class-index targets (N,),
    or -sum_c w_c q_c log softmax(z)_c for class-probability targets (N, C).

    With `weight` and index targets, `mean` is the weighted mean sum(w_y l) / sum(w_y), unlike BCE.
    """

    name = "ce"
    heads = ("softmax",)

    def __init__(
        self,
        num_logits: int,
        weight: Weight = None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(reduction)
        self.register_buffer("weight", as_weight_tensor("loss.weight", weight, num_logits, per_element=False))
        require_fraction("loss.label_smoothing", label_smoothing, low_open=False, high_open=True)
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        if not targets.is_floating_point():
            targets = targets.long()
        loss = F.cross_entropy(
            logits,
            targets,
            weight=self.weight,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )
        return self._finish(loss)


def pos_weight_from_targets(targets: Tensor) -> list[float]:
    """`pos_weight=auto`: negatives / positives per label, counted on the training split."""
    targets = targets.float().reshape(targets.shape[0], -1)
    positives = targets.sum(dim=0)
    negatives = targets.shape[0] - positives
    for label, count in enumerate(positives.tolist()):
        require(count > 0, "loss.pos_weight", "auto",
                f"label {label} has no positives in the training split; give pos_weight numbers")  # fmt: skip
    return (negatives / positives).tolist()


def build_loss(cfg: DictConfig, head: Head, train_targets: Tensor) -> nn.Module:
    """Instantiate `cfg.loss` for this head: its number of logits, and `pos_weight=auto` resolved."""
    resolved: dict = {"num_logits": head.num_logits}
    if cfg.get("pos_weight") == "auto":
        resolved["pos_weight"] = pos_weight_from_targets(train_targets)
    return instantiate_checked(cfg, **resolved)
