"""torchmetrics per task, fed explicitly: label metrics get the head's predictions, score metrics
its probabilities. Never logits: torchmetrics applies sigmoid only to a batch with values outside
[0, 1], so a batch of logits that happen to lie in [0, 1] would be read as probabilities.

Averaging: `acc` is micro (the fraction of correct decisions: samples, or sample-label pairs on
multi-label data); precision, recall, F1, AUROC and AP are macro over classes/labels on
multi-class and multi-label data. `nll`, `brier` and `ece` (top-label, 15 bins) are the common
yardstick of `lossheads.evaluation.scoring`; `positive_ece` is torchmetrics' calibration of the positive-class
probability (binary data; pooled over labels on multi-label data).

Undefined is not zero: AUROC and AP of a class with no positives or no negatives in a split are
NaN (torchmetrics would give 0), with one warning naming the class and the split; the macro average
is the mean over the classes where both are defined (NaN when none is).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from torchmetrics import classification as tmc

from lossheads.evaluation.scoring import BINS, BrierScore, NegativeLogLikelihood, TopLabelCalibrationError
from lossheads.heads import Task


class UndefinedMetricWarning(UserWarning):
    """A metric that has no value on a split (e.g. AUROC of a class absent from it)."""


class PooledCalibrationError(tmc.BinaryCalibrationError):
    """Positive-class calibration error over every (sample, label) probability of a multi-label batch."""

    def update(self, preds: Tensor, target: Tensor) -> None:
        super().update(preds.reshape(-1), target.reshape(-1))


class _DefinedClassesOnly:
    """Mixin for a torchmetrics ranking metric built with `average=None` (or a binary one): counts
    each class's positives and the samples (sum states, no host sync per step), and at `compute`
    sets the classes with no positives or no negatives to NaN and averages over the others."""

    def __init__(self, *args: Any, split: str, labels: list[str] | None = None, warn: bool = True, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.split, self.labels, self.warn = split, labels, warn
        self.warned: set[str] = set()
        self.add_state("positives", self._class_counts(), dist_reduce_fx="sum")
        self.add_state("seen", torch.tensor(0.0), dist_reduce_fx="sum")

    def _class_counts(self) -> Tensor:
        size = getattr(self, "num_classes", None) or getattr(self, "num_labels", None)
        return torch.zeros(size) if size else torch.tensor(0.0)

    def update(self, preds: Tensor, target: Tensor) -> None:
        super().update(preds, target)
        if self.positives.ndim and target.ndim == 1:  # multi-class: class indices
            ones = torch.ones_like(target, dtype=self.positives.dtype)
            self.positives.index_add_(0, target.long(), ones)
        else:
            self.positives += target.reshape(len(target), -1).sum(0).reshape(self.positives.shape)
        self.seen += len(target)

    def compute(self) -> Tensor:
        with warnings.catch_warnings():  # torchmetrics says "returning zero"; we return NaN instead
            warnings.filterwarnings("ignore", message=".*(positive|negative) samples in targets.*")
            warnings.filterwarnings("ignore", message=".*no positive samples.*")
            values = super().compute().float()
        undefined = (self.positives == 0) | (self.positives == self.seen)
        values = torch.where(undefined.to(values.device), torch.nan, values)
        if self.warn and bool(undefined.any()):
            self._warn(undefined)
        if values.ndim == 0:
            return values
        defined = values[~undefined.to(values.device)]
        return defined.mean() if len(defined) else values.new_tensor(torch.nan)

    def _warn(self, undefined: Tensor) -> None:
        """One warning per class and split for the life of the metric, not one per epoch."""
        flags = undefined.reshape(-1).tolist()
        names = self.labels or [str(i) for i in range(len(flags))]
        if undefined.ndim == 0:
            names = ["positive"]
        new = [n for n, bad in zip(names, flags, strict=True) if bad and n not in self.warned]
        if not new:
            return
        self.warned.update(new)
        defined = len(flags) - sum(flags)
        average = f"; the macro averages are over the {defined} other classes" if undefined.ndim else ""
        warnings.warn(
            f"AUROC and AP are undefined (NaN) for class {', '.join(new)} in the {self.split} split: it has "
            f"no positives or no negatives there{average}",
            UndefinedMetricWarning,
            stacklevel=2,
        )


class BinaryAUROC(_DefinedClassesOnly, tmc.BinaryAUROC):
    pass


class BinaryAveragePrecision(_DefinedClassesOnly, tmc.BinaryAveragePrecision):
    pass


class MulticlassAUROC(_DefinedClassesOnly, tmc.MulticlassAUROC):
    pass


class MulticlassAveragePrecision(_DefinedClassesOnly, tmc.MulticlassAveragePrecision):
    pass


class MultilabelAUROC(_DefinedClassesOnly, tmc.MultilabelAUROC):
    pass


class MultilabelAveragePrecision(_DefinedClassesOnly, tmc.MultilabelAveragePrecision):
    pass


def _task_metrics(
    task: Task, num_classes: int, split: str, labels: list[str] | None
) -> tuple[dict[str, Metric], dict[str, Metric]]:
    # the head hands over integer predictions and probabilities it made itself: torchmetrics' input
    # checks (a device sync and a unique() per update) would re-check them on every step
    v = {"validate_args": False}
    ranking = {"split": split, "labels": labels, **v}
    yardstick = {"nll": NegativeLogLikelihood(task), "brier": BrierScore(task),
                 "ece": TopLabelCalibrationError(task, n_bins=BINS)}  # fmt: skip
    if task == "binary":
        by_label = {"acc": tmc.BinaryAccuracy(**v), "precision": tmc.BinaryPrecision(**v),
                    "recall": tmc.BinaryRecall(**v), "f1": tmc.BinaryF1Score(**v)}  # fmt: skip
        by_score = {"auroc": BinaryAUROC(**ranking), "ap": BinaryAveragePrecision(**ranking, warn=False),
                    **yardstick, "positive_ece": tmc.BinaryCalibrationError(n_bins=BINS, **v)}  # fmt: skip
    elif task == "multiclass":
        c = {"num_classes": num_classes, **v}
        by_label = {"acc": tmc.MulticlassAccuracy(**c, average="micro"),
                    "precision": tmc.MulticlassPrecision(**c, average="macro"),
                    "recall": tmc.MulticlassRecall(**c, average="macro"),
                    "f1": tmc.MulticlassF1Score(**c, average="macro")}  # fmt: skip
        r = {"num_classes": num_classes, "average": None, **ranking}
        by_score = {"auroc": MulticlassAUROC(**r), "ap": MulticlassAveragePrecision(**r, warn=False),
                    **yardstick}  # fmt: skip
    else:
        n = {"num_labels": num_classes, **v}
        by_label = {"acc": tmc.MultilabelAccuracy(**n, average="micro"),
                    "precision": tmc.MultilabelPrecision(**n, average="macro"),
                    "recall": tmc.MultilabelRecall(**n, average="macro"),
                    "f1": tmc.MultilabelF1Score(**n, average="macro")}  # fmt: skip
        r = {"num_labels": num_classes, "average": None, **ranking}
        by_score = {"auroc": MultilabelAUROC(**r), "ap": MultilabelAveragePrecision(**r, warn=False),
                    **yardstick, "positive_ece": PooledCalibrationError(n_bins=BINS, **v)}  # fmt: skip
    return by_label, by_score


def _per_class_metrics(task: Task, num_classes: int) -> dict[str, Metric]:
    """Per-class precision, recall and F1 (and the confusion matrix, rows = true class) from the
    head's predictions; binary data counts as the two classes 0 and 1."""
    v = {"validate_args": False, "average": None}
    if task == "multilabel":
        n = {"num_labels": num_classes, **v}
        return {"precision": tmc.MultilabelPrecision(**n), "recall": tmc.MultilabelRecall(**n),
                "f1": tmc.MultilabelF1Score(**n)}  # fmt: skip
    c = {"num_classes": num_classes, **v}
    return {"precision": tmc.MulticlassPrecision(**c), "recall": tmc.MulticlassRecall(**c),
            "f1": tmc.MulticlassF1Score(**c),
            "confusion": tmc.MulticlassConfusionMatrix(num_classes=num_classes, validate_args=False)}  # fmt: skip


class HeadMetrics(nn.Module):
    """A stage's metrics: `update` per step (state only), `compute` and `reset` once per epoch.
    `per_class` adds per-class precision/recall/F1 (and the confusion matrix), read by `per_class()`."""

    def __init__(
        self,
        task: Task,
        num_classes: int,
        prefix: str,
        *,
        full: bool = True,
        per_class: bool = False,
        labels: list[str] | None = None,
    ) -> None:
        super().__init__()
        by_label, by_score = _task_metrics(task, num_classes, prefix.rstrip("/"), labels)
        if not full:  # training logs accuracy only: the rest costs time per step and says little
            by_label, by_score = {"acc": by_label["acc"]}, {}
        self.by_label = MetricCollection(by_label, prefix=prefix, compute_groups=False)
        self.by_score = MetricCollection(by_score, prefix=prefix, compute_groups=False)
        classes = _per_class_metrics(task, num_classes) if per_class else {}
        self.by_class = MetricCollection(classes, compute_groups=False)
        self.labels = labels or [str(i) for i in range(num_classes)]
        self.stage = prefix.rstrip("/")

    def update(self, predictions: Tensor, probabilities: Tensor | None, targets: Tensor) -> None:
        self.by_label.update(predictions, targets)
        if len(self.by_score):
            self.by_score.update(probabilities, targets)
        if len(self.by_class):
            self.by_class.update(predictions, targets)

    def compute(self) -> dict[str, Tensor]:
        values = dict(self.by_label.compute())
        if len(self.by_score):
            values.update(self.by_score.compute())
        return values

    def per_class(self) -> dict[str, list]:
        """`labels`, `precision`, `recall`, `f1` (lists, one per class or label) and, on binary and
        multi-class data, `confusion` (a list of rows: true class, columns: predicted class)."""
        if not len(self.by_class):
            return {}
        values = {k: v.tolist() for k, v in self.by_class.compute().items()}
        return {"labels": self.labels, **values}

    def reset(self) -> None:
        self.by_label.reset()
        self.by_score.reset()
        self.by_class.reset()
