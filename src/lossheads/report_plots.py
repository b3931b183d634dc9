"""The report's PNG plots (matplotlib, imported only when a report is written)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np

if TYPE_CHECKING:
    from lossheads.report import Job

BINS = 10


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _legend(axis: plt.Axes) -> None:
    axis.legend(fontsize=7, loc="best")


def metric_bars(groups: dict[str, list[Job]], order: list[str], path: Path) -> Path:
    """Mean test metric per configuration, the error bar one std over seeds."""
    metrics = ("test/acc", "test/auroc", "test/ece")
    figure, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 1.5 + 0.4 * len(order)))
    for axis, metric in zip(axes, metrics, strict=True):
        values = [[j.metrics.get(metric, np.nan) for j in groups[c]] for c in order]
        means = [np.nanmean(v) for v in values]
        stds = [np.nanstd(v, ddof=1) if len(v) > 1 else 0.0 for v in values]
        axis.barh(range(len(order)), means, xerr=stds, color="tab:blue", alpha=0.7, capsize=3)
        axis.set_yticks(range(len(order)), order if axis is axes[0] else [""] * len(order), fontsize=7)
        axis.invert_yaxis()
        axis.set_title(f"{metric} ({'lower' if metric.endswith('ece') else 'higher'} is better)")
        low = min(m - s for m, s in zip(means, stds, strict=True))
        if metric != "test/ece":
            axis.set_xlim(max(0.0, low - 0.05), 1.0)
    return _save(figure, path)


def _curves(job: Job) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves: dict[str, list[float]] = {}
    for events in sorted((job.folder / "tensorboard").glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in ("val/loss", "val/acc"):
            if tag in accumulator.Tags()["scalars"]:
                curves[tag] = [e.value for e in accumulator.Scalars(tag)]
    return curves


def validation_curves(groups: dict[str, list[Job]], order: list[str], path: Path) -> Path | None:
    """val/loss and val/acc per epoch, mean over seeds, one line per configuration."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    drawn = False
    for config in order:
        runs = [_curves(j) for j in groups[config]]
        for axis, tag in zip(axes, ("val/loss", "val/acc"), strict=True):
            series = [r[tag] for r in runs if r.get(tag)]
            if series:
                length = min(len(s) for s in series)
                mean = np.mean([s[:length] for s in series], axis=0)
                axis.plot(range(1, length + 1), mean, marker=".", label=config)
                drawn = True
    if not drawn:
        plt.close(figure)
        return None
    for axis, tag in zip(axes, ("val/loss", "val/acc"), strict=True):
        axis.set(xlabel="epoch", title=f"{tag} (mean over seeds)")
        _legend(axis)
    return _save(figure, path)


def _pooled(jobs: list[Job], split: str = "test") -> tuple[np.ndarray, np.ndarray] | None:
    arrays = [np.load(j.folder / "predictions.npz") for j in jobs if (j.folder / "predictions.npz").is_file()]
    arrays = [a for a in arrays if f"{split}_probs" in a]
    if not arrays:
        return None
    return (np.concatenate([a[f"{split}_probs"] for a in arrays]),
            np.concatenate([a[f"{split}_targets"] for a in arrays]))  # fmt: skip


def _confidence(probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) of the top-label decision; each label pooled on multi-label data."""
    if probs.ndim == 2 and targets.ndim == 1:  # multi-class
        return probs.max(1), (probs.argmax(1) == targets).astype(float)
    probs, targets = probs.reshape(-1), targets.reshape(-1)
    positive = probs >= 0.5
    return np.where(positive, probs, 1 - probs), (positive == targets.astype(bool)).astype(float)


def reliability(groups: dict[str, list[Job]], order: list[str], path: Path) -> Path | None:
    """Reliability diagrams, one panel per head: accuracy against confidence in 10 bins."""
    heads = sorted({groups[c][0].metrics.get("head", "?") for c in order})
    figure, axes = plt.subplots(1, len(heads), figsize=(4.5 * len(heads), 4.2), squeeze=False)
    drawn = False
    for axis, head in zip(axes[0], heads, strict=True):
        axis.plot([0.5, 1], [0.5, 1], color="gray", linestyle="--", linewidth=1, label="perfect")
        for config in order:
            pooled = _pooled(groups[config]) if groups[config][0].metrics.get("head") == head else None
            if pooled is None:
                continue
            confidence, correct = _confidence(*pooled)
            edges = np.linspace(confidence.min(), 1, BINS + 1)
            index = np.clip(np.digitize(confidence, edges) - 1, 0, BINS - 1)
            filled = [b for b in range(BINS) if (index == b).any()]
            axis.plot([confidence[index == b].mean() for b in filled], [correct[index == b].mean() for b in filled],
                      marker="o", markersize=3, label=config)  # fmt: skip
            drawn = True
        axis.set(xlabel="confidence", ylabel="accuracy", title=f"reliability: head={head}")
        _legend(axis)
    if not drawn:
        plt.close(figure)
        return None
    return _save(figure, path)


def _binary_curve(kind: str) -> Callable:
    from sklearn.metrics import precision_recall_curve, roc_curve

    if kind == "roc":
        return lambda y, p: roc_curve(y, p)[:2]
    return lambda y, p: precision_recall_curve(y, p)[1::-1]


def roc_pr(groups: dict[str, list[Job]], order: list[str], path: Path) -> Path | None:
    """ROC and PR curves of each configuration on binary data, test predictions pooled over seeds."""
    binary = [c for c in order if (p := _pooled(groups[c])) is not None and p[0].ndim == 1]
    if not binary:
        return None
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for axis, kind, labels in ((axes[0], "roc", ("false positive rate", "true positive rate")),
                               (axes[1], "pr", ("recall", "precision"))):  # fmt: skip
        curve = _binary_curve(kind)
        for config in binary:
            probs, targets = _pooled(groups[config])
            x, y = curve(targets, probs)
            axis.plot(x, y, linewidth=1.2, label=config)
        axis.set(xlabel=labels[0], ylabel=labels[1], title=f"{kind.upper()} (test, pooled over seeds)")
        _legend(axis)
    return _save(figure, path)
