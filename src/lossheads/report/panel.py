"""The metrics an arm is judged on, per task, named as users know them, and their values from a job's own
files: metrics.json for what training logged on the test split, predictions.npz for the rest.

Each arm exists to change something: pos_weight and the threshold move recall and F1 at the decision
threshold; logit adjustment, class weights and the balanced sampler move balanced accuracy on long-tailed
data; focal loss and label smoothing move calibration. So every arm is judged on the whole panel, and
each arm's own training loss (not comparable across arms) is never in it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from lossheads.report.collect import Run

# the default margin (the largest difference called "equivalent") per kind of metric
MARGINS = {"ranking": 0.005, "decision": 0.01, "worst class": 0.02, "nll": 0.01, "brier": 0.005, "ece": 0.01}


@dataclass(frozen=True)
class Metric:
    name: str  # as typed in report.metrics=[...] and written in comparisons.csv
    words: str  # as a sentence says it
    kind: str  # a key of MARGINS
    higher_is_better: bool = True
    logged: str = ""  # the test metric in metrics.json that holds it; empty: computed from predictions.npz

    @property
    def margin(self) -> float:
        return MARGINS[self.kind]

    @property
    def calibration(self) -> bool:
        return self.kind in ("nll", "brier", "ece")


METRICS = {
    m.name: m
    for m in (
        Metric("auroc", "AUROC", "ranking", logged="test/auroc"),
        Metric("ap", "AP", "ranking", logged="test/ap"),
        Metric("map", "mAP", "ranking", logged="test/ap"),
        Metric("acc", "accuracy", "decision", logged="test/acc"),
        Metric("f1", "F1", "decision", logged="test/f1"),
        Metric("macro_f1", "macro F1", "decision", logged="test/f1"),
        Metric("recall", "recall", "decision", logged="test/recall"),
        Metric("precision", "precision", "decision", logged="test/precision"),
        Metric("balanced_acc", "balanced accuracy", "decision"),
        Metric("worst_recall", "worst-class recall", "worst class"),
        Metric("f1_tuned", "F1 at the validation-tuned threshold", "decision"),
        Metric("nll", "NLL", "nll", higher_is_better=False, logged="test/nll"),
        Metric("brier", "Brier", "brier", higher_is_better=False, logged="test/brier"),
        Metric("ece", "ECE", "ece", higher_is_better=False, logged="test/ece"),
    )
}
CALIBRATION = ("nll", "brier", "ece")
PANELS = {
    "binary": ("auroc", "ap", "f1", "recall", "precision", "balanced_acc", "f1_tuned", *CALIBRATION),
    "multiclass": ("acc", "balanced_acc", "macro_f1", "worst_recall", "auroc", *CALIBRATION),
    "multilabel": ("macro_f1", "map", "auroc", *CALIBRATION),
}
# what each metric computed from predictions needs: a label per sample (binary or multi-class)
NEEDS_CLASSES = ("balanced_acc", "worst_recall")


def panel(task: str, chosen: list[str] | None = None) -> list[Metric]:
    """The task's panel, or the metrics of `report.metrics` that the task has (F1 at a tuned threshold
    needs a threshold: not multi-class; per-class recall needs one label per sample: not multi-label)."""
    names = chosen or PANELS.get(task, CALIBRATION)
    return [METRICS[n] for n in names if applies(n, task)]


def applies(name: str, task: str) -> bool:
    if name in NEEDS_CLASSES:
        return task in ("binary", "multiclass")
    if name == "f1_tuned":
        return task in ("binary", "multilabel")
    return True


def threshold_of(run: Run) -> float:
    """The run's decision threshold (metrics.json `threshold`); 0.5 for records older than that key."""
    try:
        return float(run.metrics.get("threshold", 0.5))
    except (TypeError, ValueError):
        return 0.5


def predicted_labels(probs: np.ndarray, threshold: float) -> np.ndarray:
    """The head's rule on saved probabilities: `p >= threshold` on binary data, the top class otherwise."""
    return (probs >= threshold).astype(int) if probs.ndim == 1 else probs.argmax(1)


def class_recalls(probs: np.ndarray, targets: np.ndarray, threshold: float) -> np.ndarray:
    """Recall of each class present in the targets (sklearn's balanced accuracy averages these)."""
    predicted, targets = predicted_labels(probs, threshold), targets.astype(int)
    return np.array([np.mean(predicted[targets == c] == c) for c in np.unique(targets)])


def values(run: Run, metrics: list[Metric]) -> dict[str, float]:
    """The run's value of each metric on the test split; NaN where its files do not hold it."""
    found: dict[str, float] = {}
    arrays = _arrays(run) if any(not m.logged for m in metrics) else {}
    for metric in metrics:
        logged = _finite(run.metrics.get(metric.logged)) if metric.logged else math.nan
        found[metric.name] = logged if metric.logged else _computed(metric, run, arrays)
    return found


def _arrays(run: Run) -> dict[str, np.ndarray]:
    file = run.folder / "predictions.npz"
    if not file.is_file():
        return {}
    with np.load(file) as arrays:
        return dict(arrays)


def _finite(value: Any) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else math.nan


def _computed(metric: Metric, run: Run, arrays: dict[str, np.ndarray]) -> float:
    if "test_probs" not in arrays:
        return math.nan
    probs, targets = arrays["test_probs"], arrays["test_targets"]
    if metric.name == "f1_tuned":
        from lossheads.report.thresholds import study

        found = study(arrays, threshold_of(run))
        return math.nan if found is None else found[2]
    recalls = class_recalls(probs, targets, threshold_of(run))
    return float(recalls.mean() if metric.name == "balanced_acc" else recalls.min())
