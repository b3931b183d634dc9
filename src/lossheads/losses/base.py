"""The loss contract: one class per loss, one call signature, options declared next to the formula.

Every loss takes the head's logits (the network never ends in a sigmoid or softmax) and is called
as `loss(logits, targets, teacher_logits=None)`. A loss declares the head forms it fits (`forms`:
per-logit Bernoullis and/or one categorical) and the option keys users may set (`takes`); the
builder refuses any other key in one line. A loss registers itself by subclassing `Loss` with a
`name`; `losses/__init__.py` imports every module of the package, so a new loss is one new file.

`reduction` follows PyTorch (`mean`, `sum`), except that the optimizer needs a scalar, so `none`
is reduced by one documented rule: sum over classes/labels, mean over samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lossheads.config.validators import ConfigError, require, require_choice, require_fraction
from lossheads.heads import Form, Head

REDUCTIONS = ("mean", "sum", "none")
# keys that mean the same for every loss that takes them; every loss config carries them (null),
# so that a loss that does not take one refuses it in one line instead of a Hydra composition error
SHARED_OPTIONS = ("weight", "pos_weight", "reduction", "label_smoothing")
Weight = float | Sequence[float] | str | None

LOSSES: dict[str, type[Loss]] = {}


class Loss(nn.Module):
    """Base of every loss: a `name`, the head `forms` it fits, the option keys it `takes`."""

    name: ClassVar[str] = ""
    forms: ClassVar[tuple[Form, ...]] = ()
    takes: ClassVar[tuple[str, ...]] = ("reduction",)
    needs_teacher: ClassVar[bool] = False  # `teacher_logits` must be given (loss=kd)
    # each sample's loss from its own logits, target and buffers (which broadcast), reduced only by
    # `reduce`, `finish` and `torch_reduction` (or its own `member_axis` branch): a seeds group
    # computes many members' losses in one call over a leading member axis instead of one per member
    elementwise: ClassVar[bool] = False
    member_axis = False  # set on a seeds group's copy: dim 0 is the member, reduced per member

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            LOSSES[cls.name] = cls

    def __init__(self, head: Head, train_targets: Tensor, reduction: str = "mean") -> None:
        super().__init__()
        require_choice("loss.reduction", reduction, REDUCTIONS)
        self.head, self.reduction = head, reduction

    @classmethod
    def fits(cls, head: type[Head]) -> bool:
        return head.form in cls.forms

    def prepare_targets(self, targets: Tensor) -> Tensor:
        """Targets as the loss computes on them, done once for many steps (a per-step cast is a kernel)."""
        return self.head.loss_target(targets)

    def forward(self, logits: Tensor, targets: Tensor, teacher_logits: Tensor | None = None) -> Tensor:
        return self.compute(logits, self.head.loss_target(targets))

    def compute(self, logits: Tensor, targets: Tensor) -> Tensor:
        """The loss on targets already in the head's loss form."""
        raise NotImplementedError

    @property
    def torch_reduction(self) -> str:
        """The `reduction` to hand a PyTorch loss: `none` over a member axis, reduced after by `finish`."""
        return "none" if self.member_axis else self.reduction

    def reduce(self, per_element: Tensor) -> Tensor:
        if self.member_axis:  # (K, N, ...): each member's elements by the rule below, (K,)
            per_sample = per_element.reshape(per_element.shape[0], per_element.shape[1], -1)
            if self.reduction == "mean":
                return per_sample.mean(dim=(1, 2))
            return per_sample.sum(dim=(1, 2)) if self.reduction == "sum" else per_sample.sum(dim=2).mean(dim=1)
        if self.reduction == "mean":
            return per_element.mean()
        return per_element.sum() if self.reduction == "sum" else reduce_none(per_element)

    def finish(self, reduced_by_torch: Tensor) -> Tensor:
        """After a PyTorch loss called with `torch_reduction`: `none` still needs our rule."""
        if self.member_axis:
            return self.reduce(reduced_by_torch)
        return reduce_none(reduced_by_torch) if self.reduction == "none" else reduced_by_torch


def reduce_none(per_element: Tensor) -> Tensor:
    """The `reduction=none` rule: each sample's loss summed over its classes/labels, then averaged."""
    return per_element.reshape(per_element.shape[0], -1).sum(dim=1).mean()


def require_smoothing(value: Any) -> float:
    require_fraction("loss.label_smoothing", value, low_open=False, high_open=True)
    return float(value)


def as_weight_tensor(key: str, value: Weight, length: int, *, per_element: bool) -> Tensor | None:
    """Check a user's weight and return it as a float tensor.

    Categorical losses take one weight per class (a list of `length`). Per-logit losses weigh
    elements, so they also take one number, or rows of `length` that broadcast against the batch
    (as `BCELoss(weight=...)` does).
    """
    if value is None:
        return None
    shape = "one number, a list of" if per_element else "a list of"
    rows = f", rows of {length} ([[...]])" if per_element and length > 1 and key == "loss.weight" else ""
    fix = f"give {shape} {length} (one per {'label' if per_element else 'class'}){rows}, or auto"
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


def balanced_weights(head: Head, train_targets: Tensor) -> list[float]:
    """`weight=auto`: the "balanced" class weights n / (C * n_c) (sklearn's `class_weight="balanced"`),
    one per logit's class, with n the training samples and n_c those of class (or label) c."""
    require(head.num_logits > 1, "loss.weight", "auto",
            f"head={head.name} has one logit, so class weights do not apply: use loss.pos_weight=auto "
            "(negatives / positives) or head=softmax")  # fmt: skip
    counts = head.class_counts(train_targets)
    for c, count in enumerate(counts.tolist()):
        require(count > 0, "loss.weight", "auto",
                f"class {c} has no samples in the training split; give loss.weight numbers")  # fmt: skip
    return (len(train_targets) / (len(counts) * counts)).tolist()


def negatives_per_positive(positives_per_logit: Tensor) -> list[float]:
    """`pos_weight=auto`: negatives / positives per logit (label), counted on the training split."""
    targets = positives_per_logit.float().reshape(positives_per_logit.shape[0], -1)
    positives = targets.sum(dim=0)
    negatives = targets.shape[0] - positives
    for label, count in enumerate(positives.tolist()):
        require(count > 0, "loss.pos_weight", "auto",
                f"label {label} has no positives in the training split; give pos_weight numbers")  # fmt: skip
    return (negatives / positives).tolist()


def class_weight(head: Head, train_targets: Tensor, value: Weight, *, per_element: bool) -> Tensor | None:
    """`loss.weight` as a tensor: numbers as given, or `auto` resolved on the training split."""
    if value == "auto":
        value = balanced_weights(head, train_targets)
    weight = as_weight_tensor("loss.weight", value, head.num_logits, per_element=per_element)
    one_logit = head.logits(torch.zeros(1, head.num_logits)).ndim == 1  # a sample's logit is a number
    require(weight is None or weight.ndim < 2 or not one_logit, "loss.weight", value,
            f"head={head.name} gives each sample one logit, so its weight is one number (rows of weights are "
            "for heads with a logit per label)")  # fmt: skip
    return weight


def one_hot(labels: Tensor, logits: Tensor) -> Tensor:
    return torch.nn.functional.one_hot(labels.long(), logits.shape[-1]).to(logits.dtype)


def register_element_weights(loss: Loss, head: Head, train_targets: Tensor, weight: Weight, pos_weight: Weight) -> None:
    """`weight` per element and `pos_weight` per label as `BCEWithLogitsLoss` takes them (`auto` counted
    on the training split), registered as buffers so that they move with the loss to the device."""
    loss.register_buffer("weight", class_weight(head, train_targets, weight, per_element=True))
    if pos_weight == "auto":
        pos_weight = negatives_per_positive(head.loss_target(train_targets))
    pos = as_weight_tensor("loss.pos_weight", pos_weight, head.num_logits, per_element=True)
    require(pos is None or pos.ndim <= 1 and bool((pos > 0).all()), "loss.pos_weight", pos_weight,
            "give one number > 0, or one per label")  # fmt: skip
    loss.register_buffer("pos_weight", pos)
