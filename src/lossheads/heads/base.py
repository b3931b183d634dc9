"""The head contract: everything a head means, in one class per head.

A head turns the network's logits into what the loss, the metrics, the report and distillation
need: the loss's targets, probabilities, predictions (it owns the prediction rule), metric targets,
its class distribution, and another head's logits read in its own form. Nothing outside a head's
class compares head names: the rest of the harness asks these methods and class attributes.

A head registers itself by subclassing `Head` with a `name`; `heads/__init__.py` imports every
module of the package, so a new head is one new file (and one config file), with no edit elsewhere.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lossheads.config.validators import ConfigError

Task = Literal["binary", "multiclass", "multilabel"]
# What the loss sees: `per_logit` heads give each logit its own Bernoulli (0/1 target per logit:
# BCE-type losses); `categorical` heads one distribution over the classes (class-index targets: CE-type).
Form = Literal["per_logit", "categorical"]
Threshold = float | Tensor

HEADS: dict[str, type[Head]] = {}


class Head:
    """Base of every head. Class attributes say what a head fits; instances hold the threshold."""

    name: ClassVar[str] = ""
    tasks: ClassVar[tuple[Task, ...]] = ()  # the data it fits
    default_for: ClassVar[tuple[Task, ...]] = ()  # `head=auto` picks it on these tasks when the loss fits
    form: ClassVar[Form] = "per_logit"
    hard_loss: ClassVar[str] = "bce_logits"  # `loss=auto`, a KD teacher's and a hard-label baseline's loss

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            HEADS[cls.name] = cls

    def __init__(self, num_classes: int, task: Task, threshold: Threshold = 0.5) -> None:
        self.num_classes, self.task = num_classes, task
        self.num_logits = self.logits_for(num_classes, task)
        self.threshold = threshold

    @classmethod
    def logits_for(cls, num_classes: int, task: Task) -> int:
        """How many logits the network must output: one per class or label by default."""
        return num_classes

    # -- what the loss gets ------------------------------------------------------------------
    def logits(self, output: Tensor) -> Tensor:
        """The network's output in the shape the loss expects."""
        return output

    def loss_target(self, targets: Tensor) -> Tensor:
        """The data's targets in the form the loss computes on; idempotent and free when already so,
        since the training loop prepares them once for many steps (a per-step cast is a kernel)."""
        return targets if targets.dtype == torch.float32 else targets.float()

    def class_counts(self, targets: Tensor) -> Tensor:
        """Samples per logit's class (positives per logit for per-logit heads), for `weight=auto`,
        class priors and class-balanced weights, counted on the training split."""
        as_loss = self.loss_target(targets)
        if self.num_logits == 1:
            raise ConfigError(
                f"head={self.name} has one logit, so class weights do not apply: "
                "use loss.pos_weight=auto (negatives / positives) on binary data, or head=softmax"
            )
        return as_loss.reshape(len(as_loss), -1).sum(dim=0)

    # -- what the metrics get ----------------------------------------------------------------
    def probabilities(self, logits: Tensor) -> Tensor:
        """What score-based metrics get: (N,) positive-class probability on binary data, else (N, C)."""
        raise NotImplementedError

    def predict(self, logits: Tensor) -> Tensor:
        """What label-based metrics get: integer labels. The rule of sigmoid-type heads and of every
        binary head is `probability >= threshold`; multi-class heads take the argmax."""
        return self.at_threshold(self.probabilities(logits))

    def at_threshold(self, probabilities: Tensor) -> Tensor:
        threshold = self.threshold
        if isinstance(threshold, Tensor) and threshold.device != probabilities.device:
            threshold = threshold.to(probabilities.device)
        return (probabilities >= threshold).long()

    def metric_target(self, targets: Tensor) -> Tensor:
        """Integer targets for the metrics; class-probability targets count as their argmax."""
        if targets.is_floating_point() and targets.ndim == 2 and self.task != "multilabel":
            return targets.argmax(dim=1)
        return targets.long()

    # -- distillation ------------------------------------------------------------------------
    def log_distribution(self, logits: Tensor) -> Tensor:
        """Log-probabilities of the head's class distribution over the last dimension: a Bernoulli
        pair [log(1 - p), log p] per logit for per-logit heads; categorical heads override it."""
        return torch.stack([F.logsigmoid(-logits), F.logsigmoid(logits)], dim=-1)

    def binary_logit(self, logits: Tensor) -> Tensor | None:
        """On binary data, the log-odds of the positive class if this head's logits define one."""
        return None

    def from_binary_logit(self, logit: Tensor) -> Tensor | None:
        """This head's logits with the given positive-class log-odds, if it has such a form."""
        return None

    def read_logits(self, logits: Tensor, source: Head) -> Tensor:
        """Another head's logits in this head's form (a KD teacher with another head): the same kind
        of head passes them through; on binary data they meet through the positive-class log-odds."""
        if type(source) is type(self) and source.num_logits == self.num_logits:
            return logits
        log_odds = source.binary_logit(logits) if self.task == "binary" else None
        converted = None if log_odds is None else self.from_binary_logit(log_odds)
        if converted is None:
            raise ConfigError(
                f"a teacher with head={source.name} cannot teach head={self.name} on {self.task} data: "
                f"train the teacher with head={self.name}"
            )
        return converted


def build_head(name: str, num_classes: int, task: Task | None = None, threshold: Threshold = 0.5) -> Head:
    """`num_classes` is the number of labels on multi-label data. Without `task`, two classes mean
    binary data where the head fits it, else the head's last task (multi-class or multi-label)."""
    cls = HEADS[name]
    if task is None:
        task = "binary" if num_classes == 2 and "binary" in cls.tasks else cls.tasks[-1]
    return cls(num_classes, task, threshold)
