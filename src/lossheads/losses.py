"""Loss arms. Every loss takes the head's logits: the network never ends in a sigmoid or softmax.

`reduction` follows PyTorch (`mean`, `sum`), except that the optimizer needs a scalar, so
`none` is reduced by one documented rule: sum over classes/labels, mean over samples.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from hydra.utils import get_class
from omegaconf import DictConfig
from torch import Tensor, nn

from lossheads.check import ConfigError, instantiate_checked, is_number, require, require_choice, require_fraction
from lossheads.heads import HEADS, Head, Task

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

    def prepare_targets(self, targets: Tensor) -> Tensor:
        """Targets as `forward` will cast them, done once for many steps (a per-step cast is a kernel)."""
        return targets


class _BinaryLoss(_LogitLoss):
    """Base of the per-logit binary losses: `weight` rescales each element, `pos_weight` the positives,
    broadcast over the last (label) dimension as in `BCEWithLogitsLoss`. `label_smoothing` = e moves
    each target toward 0.5, as Keras does: y' = y (1 - e) + e / 2."""

    heads = ("sigmoid", "multilabel")

    def __init__(
        self,
        num_logits: int,
        weight: Weight = None,
        pos_weight: Weight = None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(reduction)
        require_fraction("loss.label_smoothing", label_smoothing, low_open=False, high_open=True)
        self.label_smoothing = float(label_smoothing)
        self.register_buffer("weight", as_weight_tensor("loss.weight", weight, num_logits, per_element=True))
        pos = as_weight_tensor("loss.pos_weight", pos_weight, num_logits, per_element=True)
        require(pos is None or pos.ndim <= 1 and bool((pos > 0).all()), "loss.pos_weight", pos_weight,
                "give one number > 0, or one per label")  # fmt: skip
        self.register_buffer("pos_weight", pos)

    def prepare_targets(self, targets: Tensor) -> Tensor:
        return targets.float()

    def smooth(self, targets: Tensor, dtype: torch.dtype) -> Tensor:
        targets = targets if targets.dtype == dtype else targets.to(dtype)  # already cast: no call at all
        return targets * (1 - self.label_smoothing) + self.label_smoothing / 2 if self.label_smoothing else targets


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
            targets = self.smooth(targets, torch.float32)
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
            self.smooth(targets, logits.dtype),
            weight=self.weight,
            pos_weight=self.pos_weight,
            reduction=self.reduction,
        )
        return self._finish(loss)


class _ClassWeightedLoss(_LogitLoss):
    """Base of the losses whose `weight` is one number per class (or per label)."""

    def __init__(self, num_logits: int, weight: Weight = None, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.register_buffer("weight", as_weight_tensor("loss.weight", weight, num_logits, per_element=False))


class CrossEntropy(_ClassWeightedLoss):
    """`ce`: `nn.CrossEntropyLoss`: l = -w_y (z_y - log sum_c exp z_c) for class-index targets (N,),
    or -sum_c w_c q_c log softmax(z)_c for class-probability targets (N, C).

    With `weight` and index targets, `mean` is the weighted mean sum(w_y l) / sum(w_y), unlike BCE.
    On binary data `pos_weight` (a number or `auto`) multiplies the positive class's weight.
    """

    name = "ce"
    heads = ("softmax",)

    def __init__(
        self,
        num_logits: int,
        weight: Weight = None,
        pos_weight: float | None = None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(num_logits, weight, reduction)
        if pos_weight is not None:  # the two-way softmax's counterpart of BCE's pos_weight
            require(num_logits == 2, "loss.pos_weight", pos_weight,
                    "with ce it applies to binary data (two-way softmax); use loss.weight per class")  # fmt: skip
            pos = as_weight_tensor("loss.pos_weight", pos_weight, 1, per_element=True).reshape(-1)
            require(bool((pos > 0).all()), "loss.pos_weight", pos_weight, "use a number > 0")
            base = self.weight if self.weight is not None else torch.ones(2)
            self.weight = base * torch.cat([torch.ones(1), pos])
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


class _EitherFormLoss(_LogitLoss):
    """Base of the losses with a softmax form and a per-logit (sigmoid/multilabel) form."""

    def __init__(self, head: Head, reduction: str) -> None:
        super().__init__(reduction)
        self.softmax_form = head.name == "softmax"

    def prepare_targets(self, targets: Tensor) -> Tensor:
        return targets if self.softmax_form else targets.float()


class Focal(_EitherFormLoss):
    """`focal` (Lin et al., 2017), down-weighting easy examples by (1 - p_t)^gamma.

    Sigmoid/multilabel heads, torchvision's `sigmoid_focal_loss`: l = -a_t (1 - p_t)^g log p_t with
    p_t = p if y = 1 else 1 - p and a_t = a y + (1 - a)(1 - y); alpha < 0 disables a_t.
    Softmax heads: l = -sum_c q_c (1 - p_c)^g log p_c with p = softmax(z) and q the one-hot (or
    probability) target; alpha does not apply there. gamma = 0 (alpha < 0) gives bce_logits / ce.
    """

    name = "focal"
    heads = ("sigmoid", "multilabel", "softmax")

    def __init__(
        self, num_logits: int, head: Head, gamma: float = 2.0, alpha: float = 0.25, reduction: str = "mean"
    ) -> None:
        super().__init__(head, reduction)
        require(is_number(gamma) and gamma >= 0, "loss.gamma", gamma, "use a number >= 0, e.g. 2")
        require(is_number(alpha) and alpha <= 1, "loss.alpha", alpha, "use a number in [0, 1], or < 0 to disable")
        self.gamma, self.alpha = float(gamma), float(alpha)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        if self.softmax_form:
            log_probs = torch.log_softmax(logits, dim=-1)
            q = targets.to(logits.dtype) if targets.is_floating_point() else one_hot(targets, logits)
            loss = -(q * (1 - log_probs.exp()) ** self.gamma * log_probs).sum(dim=-1)
            return apply_reduction(loss, self.reduction)
        targets = targets.to(logits.dtype)
        probs = torch.sigmoid(logits)
        loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        p_t = probs * targets + (1 - probs) * (1 - targets)
        loss = loss * (1 - p_t) ** self.gamma
        if self.alpha >= 0:
            loss = loss * (self.alpha * targets + (1 - self.alpha) * (1 - targets))
        return apply_reduction(loss, self.reduction)


class NLLOnLogSoftmax(_ClassWeightedLoss):
    """`nll`: `nn.LogSoftmax` then `nn.NLLLoss`: l = -w_y log softmax(z)_y, the two steps that
    CrossEntropyLoss fuses; kept to show they are the same. Class-index targets only."""

    name = "nll"
    heads = ("softmax",)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        log_probs = F.log_softmax(logits, dim=-1)
        return self._finish(F.nll_loss(log_probs, targets.long(), weight=self.weight, reduction=self.reduction))


class MultiLabelSoftMargin(_ClassWeightedLoss):
    """`multilabel_soft_margin`: `nn.MultiLabelSoftMarginLoss`: per sample, the mean over labels of
    -w_l [y log sigmoid(z) + (1 - y) log sigmoid(-z)]: bce_logits with its mean taken over labels."""

    name = "multilabel_soft_margin"
    heads = ("multilabel",)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        loss = F.multilabel_soft_margin_loss(
            logits, targets.to(logits.dtype), weight=self.weight, reduction=self.reduction
        )
        return self._finish(loss)


class SquareLoss(_EitherFormLoss):
    """`mse`: square loss (Hui & Belkin, ICLR 2021): `nn.MSELoss` between the targets and the logits
    (`on=logits`, as in the paper) or the probabilities (`on=probs`). Targets: one-hot (or class
    probabilities) for softmax heads; 0/1 for sigmoid and multilabel heads, encoded as -1/+1 on the
    logits so that z = 0 (p = 0.5) stays the decision boundary of the p >= 0.5 rule."""

    name = "mse"
    heads = ("softmax", "sigmoid", "multilabel")

    def __init__(self, num_logits: int, head: Head, on: str = "logits", reduction: str = "mean") -> None:
        super().__init__(head, reduction)
        require_choice("loss.on", on, ("logits", "probs"))
        self.on = on

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        if targets.shape != logits.shape:
            targets = one_hot(targets, logits)
        targets = targets.to(logits.dtype)
        if self.on == "probs":
            outputs = torch.softmax(logits, dim=-1) if self.softmax_form else torch.sigmoid(logits)
        else:
            outputs = logits
            targets = targets if self.softmax_form else 2 * targets - 1
        return self._finish(F.mse_loss(outputs, targets, reduction=self.reduction))


class Distillation(_LogitLoss):
    """`kd` (Hinton et al., 2015): soft_weight * T^2 * KL(p_teacher(T) || p_student(T)) + (1 - soft_weight) * hard.

    KL is `F.kl_div(log p_student, log p_teacher, reduction="batchmean", log_target=True)`: the true
    KL per sample (`mean` would divide by N*C). p(T) is the head's class distribution of logits / T
    (categorical for softmax, a Bernoulli per logit for sigmoid/multilabel). T^2 keeps the soft
    term's gradients on the hard term's scale. The hard loss is the head's own: CE or BCEWithLogits.
    """

    name = "kd"
    heads = ("softmax", "sigmoid", "multilabel")

    def __init__(self, num_logits: int, head: Head, temperature: float = 4.0, soft_weight: float = 0.5) -> None:
        super().__init__("mean")
        require(is_number(temperature) and temperature > 0, "loss.temperature", temperature, "use a number > 0, e.g. 4")
        require_fraction("loss.soft_weight", soft_weight, low_open=False, high_open=False)
        self.head = head
        self.temperature, self.soft_weight = float(temperature), float(soft_weight)
        self.hard = hard_loss_for(head.name)(num_logits=num_logits)

    def soft(self, logits: Tensor, teacher_logits: Tensor) -> Tensor:
        t = self.temperature
        student = self.head.log_distribution(logits.float() / t)
        teacher = self.head.log_distribution(teacher_logits.float() / t)
        return F.kl_div(student, teacher, reduction="batchmean", log_target=True) * t * t

    def prepare_targets(self, targets: Tensor) -> Tensor:
        return self.hard.prepare_targets(targets)

    def forward(self, logits: Tensor, targets: Tensor, teacher_logits: Tensor) -> Tensor:
        soft = self.soft(logits, teacher_logits)
        return self.soft_weight * soft + (1 - self.soft_weight) * self.hard(logits, targets)


def hard_loss_for(head: str) -> type[_LogitLoss]:
    """The head's own hard-label loss: what a teacher and a hard-label baseline train on."""
    return CrossEntropy if head == "softmax" else BCEWithLogits


def one_hot(labels: Tensor, logits: Tensor) -> Tensor:
    return F.one_hot(labels.long(), logits.shape[-1]).to(logits.dtype)


LOSSES: dict[str, type[_LogitLoss]] = {
    cls.name: cls for cls in (BCEOnProbabilities, BCEWithLogits, CrossEntropy, Focal, NLLOnLogSoftmax,
                              MultiLabelSoftMargin, SquareLoss, Distillation)
}  # fmt: skip


def resolve_head_name(name: str, loss: type[_LogitLoss], task: Task) -> str:
    """`auto` follows the data (multi-label -> multilabel, multi-class -> softmax) and, on binary
    data, the loss (its first listed head); then refuse a head that does not fit the data or the loss."""
    loss_heads = loss.heads
    if name == "auto":
        name = {"multilabel": "multilabel", "multiclass": "softmax"}.get(task, loss_heads[0])
    if task not in HEADS[name].tasks:
        fitting = [h for h, c in HEADS.items() if task in c.tasks and h in loss_heads]
        fix = f"use head={fitting[0]}" if fitting else "use head=auto"
        raise ConfigError(f"head={name} does not fit {task} data: {fix}")
    if name not in loss_heads:
        losses = "|".join(n for n, c in LOSSES.items() if name in c.heads)
        other_head = next((h for h in loss_heads if task in HEADS[h].tasks), None)
        fix = f"use head={other_head} or loss={losses}" if other_head else f"use loss={losses}"
        raise ConfigError(f"loss={loss.name} needs head={'|'.join(loss_heads)}, got head={name}: {fix}")
    return name


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
    if "head" in inspect.signature(get_class(cfg._target_)).parameters:
        resolved["head"] = head  # losses with a softmax and a sigmoid form
    if cfg.get("pos_weight") == "auto":
        resolved["pos_weight"] = pos_weight_from_targets(train_targets)
    return instantiate_checked(cfg, **resolved)
