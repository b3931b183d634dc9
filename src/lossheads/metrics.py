"""torchmetrics per task, fed explicitly: label metrics get the head's predictions, score metrics
its probabilities. Never logits: torchmetrics applies sigmoid only to a batch with values outside
[0, 1], so a batch of logits that happen to lie in [0, 1] would be read as probabilities.

Averaging: `acc` is micro (the fraction of correct decisions: samples, or sample-label pairs on
multi-label data); precision, recall, F1, AUROC and AP are macro over classes/labels on
multi-class and multi-label data; `ece` is top-label calibration error with 15 bins (pooled over
labels on multi-label data).
"""

from __future__ import annotations

from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from torchmetrics import classification as tmc

from lossheads.heads import Task

BINS = 15


class PooledCalibrationError(tmc.BinaryCalibrationError):
    """Calibration error over every (sample, label) probability of a multi-label batch."""

    def update(self, preds: Tensor, target: Tensor) -> None:
        super().update(preds.reshape(-1), target.reshape(-1))


def _task_metrics(task: Task, num_classes: int) -> tuple[dict[str, Metric], dict[str, Metric]]:
    # the head hands over integer predictions and probabilities it made itself: torchmetrics' input
    # checks (a device sync and a unique() per update) would re-check them on every step
    v = {"validate_args": False}
    if task == "binary":
        by_label = {"acc": tmc.BinaryAccuracy(**v), "precision": tmc.BinaryPrecision(**v),
                    "recall": tmc.BinaryRecall(**v), "f1": tmc.BinaryF1Score(**v)}  # fmt: skip
        by_score = {"auroc": tmc.BinaryAUROC(**v), "ap": tmc.BinaryAveragePrecision(**v),
                    "ece": tmc.BinaryCalibrationError(n_bins=BINS, **v)}  # fmt: skip
    elif task == "multiclass":
        c = {"num_classes": num_classes, **v}
        by_label = {"acc": tmc.MulticlassAccuracy(**c, average="micro"),
                    "precision": tmc.MulticlassPrecision(**c, average="macro"),
                    "recall": tmc.MulticlassRecall(**c, average="macro"),
                    "f1": tmc.MulticlassF1Score(**c, average="macro")}  # fmt: skip
        by_score = {"auroc": tmc.MulticlassAUROC(**c, average="macro"),
                    "ap": tmc.MulticlassAveragePrecision(**c, average="macro"),
                    "ece": tmc.MulticlassCalibrationError(**c, n_bins=BINS)}  # fmt: skip
    else:
        n = {"num_labels": num_classes, **v}
        by_label = {"acc": tmc.MultilabelAccuracy(**n, average="micro"),
                    "precision": tmc.MultilabelPrecision(**n, average="macro"),
                    "recall": tmc.MultilabelRecall(**n, average="macro"),
                    "f1": tmc.MultilabelF1Score(**n, average="macro")}  # fmt: skip
        by_score = {"auroc": tmc.MultilabelAUROC(**n, average="macro"),
                    "ap": tmc.MultilabelAveragePrecision(**n, average="macro"),
                    "ece": PooledCalibrationError(n_bins=BINS, **v)}  # fmt: skip
    return by_label, by_score


class HeadMetrics(nn.Module):
    """A stage's metrics: `update` per step (state only), `compute` and `reset` once per epoch."""

    def __init__(self, task: Task, num_classes: int, prefix: str, *, full: bool = True) -> None:
        super().__init__()
        by_label, by_score = _task_metrics(task, num_classes)
        if not full:  # training logs accuracy only: the rest costs time per step and says little
            by_label, by_score = {"acc": by_label["acc"]}, {}
        self.by_label = MetricCollection(by_label, prefix=prefix, compute_groups=False)
        self.by_score = MetricCollection(by_score, prefix=prefix, compute_groups=False)

    def update(self, predictions: Tensor, probabilities: Tensor | None, targets: Tensor) -> None:
        self.by_label.update(predictions, targets)
        if len(self.by_score):
            self.by_score.update(probabilities, targets)

    def compute(self) -> dict[str, Tensor]:
        values = dict(self.by_label.compute())
        if len(self.by_score):
            values.update(self.by_score.compute())
        return values

    def reset(self) -> None:
        self.by_label.reset()
        self.by_score.reset()
