"""The report's figures, one set per dataset (matplotlib, imported only when a report is written).

Every figure holds one dataset's arms, in sweep order and with one colour each; legends sit outside the
axes. The forest plot shows each arm's difference from the control with its adjusted interval (never
bars from 0, which hide small differences); curves read the common yardstick (`val/nll`, `val/acc`),
never each arm's own loss.
"""

from __future__ import annotations

import functools
import io
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np

if TYPE_CHECKING:
    from lossheads.report.collect import Run
    from lossheads.report.verdicts import Section

BINS = 15  # the bins of the logged ECE
DPI = 110
MOST = 8  # arms drawn in line plots and panels: the first in sweep order
CURVE_TAGS = (("val/nll", "val/brier"), ("val/acc",))  # first of each group that the runs logged
Configs = dict[str, list["Run"]]


def dataset_figures(section: Section, out: Path, slugs: set[str]) -> list[Callable[[], Path | None]]:
    """The dataset's figures to draw, each a call that draws and saves one (None: nothing to show).
    `slugs`: the file-name prefixes taken by the datasets before it, so that two whose names clean to
    the same prefix (`x/a.csv`, `x_a.csv`) draw into files of their own."""
    base = slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", section.dataset)
    number = 1
    while slug in slugs:
        number += 1
        slug = f"{base}-{number}"
    slugs.add(slug)
    order = sorted(section.arms, key=lambda arm: arm != section.control)  # the control first
    colours = {c: plt.get_cmap("tab10")(i % 10) for i, c in enumerate(order)}
    makers = (
        ("curves", validation_curves),
        ("roc_pr", roc_pr),
        ("reliability", reliability),
        ("confusion", confusion),
    )
    calls = [functools.partial(forest, section, colours, out / f"{slug}-forest.png")]
    calls += [functools.partial(maker, section.dataset, section.arms, order, colours, out / f"{slug}-{name}.png")
              for name, maker in makers]  # fmt: skip
    return calls


def warm_up() -> None:
    """Import now what drawing imports late (scikit-learn's curves, TensorBoard's event reader: ~0.5 s
    on 2 cores): a sweep whose process waits for its workers calls this, so that neither of the two
    processes that draw the figures pays it."""
    import sklearn.metrics  # noqa: F401
    import tensorboard.backend.event_processing.event_file_loader  # noqa: F401


def _save(figure: plt.Figure, path: Path) -> Path:
    """Cut to what is drawn: legends right of the axes, and titles wider than the figure that
    `tight_layout` leaves outside it, are kept whole. The box is measured here at the saving dpi, as
    `bbox_inches="tight"` measures it, but without the draw that `savefig` makes first for layouts
    done while drawing (ours is done by then): the same pixels in ~10% less time
    (tests/test_report_files.py)."""
    from lossheads.run.atomic import write_atomic  # a stop while it is drawn leaves the old file, not half of one

    try:
        figure.set_dpi(DPI)
        box = figure.get_tightbbox(figure.canvas.get_renderer()).padded(plt.rcParams["savefig.pad_inches"])
        save = functools.partial(figure.savefig, format="png", dpi=DPI, bbox_inches=box)
        if _held is not None:
            _held[path] = io.BytesIO()
            save(_held[path])
        else:
            write_atomic(path, save, durable=False)
    finally:
        plt.close(figure)
    return path


_held: dict[Path, io.BytesIO] | None = None  # set by `in_memory`: figures kept as PNG bytes, not written


def in_memory(call: Callable[[], Path | None]) -> bytes | None:
    """The PNG bytes of `call`'s figure, not written (None: nothing to show)."""
    global _held
    _held = {}
    try:
        path = call()
        return _held[path].getvalue() if path is not None else None
    finally:
        _held = None


def _legend_right(figure: plt.Figure, axis: plt.Axes) -> None:
    """One legend for the figure, right of the axes, so that it never covers a curve."""
    handles, labels = axis.get_legend_handles_labels()
    figure.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)


def forest(section: Section, colours: dict, path: Path) -> Path | None:
    """Per metric, each arm's difference from the control with its adjusted interval; a line at 0 and the
    ±margin band, so a 0.01 difference is as visible as a 0.1 one. An interval these seeds cannot bound
    runs to the panel's edge with an arrow."""
    rows = [c for c in section.comparisons if c.counted or math.isfinite(c.result.mean_diff)]
    if not rows:
        return None
    metrics = list(dict.fromkeys(c.metric.name for c in rows))
    arms = list(dict.fromkeys(c.config for c in rows))
    columns = min(4, len(metrics))
    lines = -(-len(metrics) // columns)
    figure, axes = plt.subplots(
        lines, columns, figsize=(3.3 * columns, 0.6 + (0.9 + 0.32 * len(arms)) * lines), squeeze=False
    )
    tone = {"better": "tab:green", "worse": "tab:red", "equivalent": "tab:blue"}
    for axis, name in zip(axes.flat, metrics, strict=False):
        found = {c.config: c for c in rows if c.metric.name == name}
        first = next(iter(found.values()))
        ends = [abs(v) for c in found.values() for v in (c.result.ci_low, c.result.ci_high, c.result.mean_diff)]
        reach = max([first.margin * 2, *(v for v in ends if math.isfinite(v))]) * 1.15
        axis.axvspan(-first.margin, first.margin, color="0.9", zorder=0)
        axis.axvline(0, color="black", linewidth=0.8)
        for y, arm in enumerate(arms):
            c = found.get(arm)
            if c is None or math.isnan(c.result.mean_diff):
                continue
            colour = tone.get(c.verdict, "gray")
            low, high = (max(c.result.ci_low, -reach), min(c.result.ci_high, reach)) if c.counted else (0, 0)
            axis.plot([low, high], [y, y], color=colour, linewidth=1.6)
            axis.plot(c.result.mean_diff, y, "o", color=colour, markersize=4)
            for end, edge, marker in ((c.result.ci_low, -reach, "<"), (c.result.ci_high, reach, ">")):
                if c.counted and math.isinf(end):
                    axis.plot(edge, y, marker, color=colour, markersize=5)
        better = "higher" if first.metric.higher_is_better else "lower"
        axis.set(xlim=(-reach, reach), ylim=(-0.7, len(arms) - 0.3), title=f"{first.metric.words} ({better} is better)")
        axis.title.set_fontsize(8)
        axis.set_yticks(range(len(arms)), arms if axis in axes[:, 0] else [""] * len(arms), fontsize=7)
        axis.tick_params(axis="x", labelsize=7)
        axis.locator_params(axis="x", nbins=5)
        axis.invert_yaxis()
    for axis in list(axes.flat)[len(metrics) :]:
        axis.set_visible(False)
    figure.suptitle(
        f"{section.dataset}: arm − control ({section.control}), adjusted intervals; grey band ±margin",
        fontsize=9,
    )
    figure.tight_layout()
    return _save(figure, path)


def _scalars(run: Run, tags: tuple[str, ...]) -> dict[str, list[float]]:
    """Each tag's values in the run's TensorBoard files, by step: a resumed run's later file carries
    on from the step it resumed at, and replaces what an earlier file logged from there on (as
    TensorBoard shows a restarted run). Read event by event: TensorBoard's EventAccumulator costs
    ~3 ms a file, and each run has three (training, hyperparameters, test)."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
    from tensorboard.util.tensor_util import make_ndarray

    points: dict[str, dict[int, float]] = {}
    for events in sorted((run.folder / "tensorboard").glob("**/events.out.tfevents.*")):  # oldest first
        found: dict[str, dict[int, float]] = {}
        for event in LegacyEventFileLoader(str(events)).Load():
            for value in event.summary.value:
                if value.tag in tags:
                    number = value.simple_value if value.HasField("simple_value") else make_ndarray(value.tensor).item()
                    found.setdefault(value.tag, {})[int(event.step)] = float(number)
        for tag, series in found.items():
            first = min(series)
            kept = {step: v for step, v in points.get(tag, {}).items() if step < first}
            points[tag] = kept | series
    return {tag: [series[step] for step in sorted(series)] for tag, series in points.items()}


def validation_curves(dataset: str, configs: Configs, order: list[str], colours: dict, path: Path) -> Path | None:
    """val/nll (or val/brier) and val/acc per epoch: the mean over seeds, the band their min to max."""
    shown = order[:MOST]
    runs = {c: [_scalars(r, sum(CURVE_TAGS, ())) for r in configs[c]] for c in shown}
    tags = [next((t for t in group if any(s.get(t) for rs in runs.values() for s in rs)), None) for group in CURVE_TAGS]
    tags = [t for t in tags if t]
    if not tags:
        return None
    figure, axes = plt.subplots(1, len(tags), figsize=(5.0 * len(tags), 3.8), squeeze=False)
    for axis, tag in zip(axes[0], tags, strict=True):
        for config in shown:
            series = [s[tag] for s in runs[config] if s.get(tag)]
            if not series:
                continue
            length = min(len(s) for s in series)
            stacked = np.array([s[:length] for s in series])
            epochs = np.arange(1, length + 1)
            axis.plot(
                epochs, stacked.mean(0), color=colours[config], marker=".", label=f"{config} ({len(series)} seeds)"
            )
            axis.fill_between(epochs, stacked.min(0), stacked.max(0), color=colours[config], alpha=0.18, linewidth=0)
        axis.set(xlabel="epoch", ylabel=tag, title=f"{tag}: mean over seeds, band min-max")
    _legend_right(figure, axes[0][0])
    figure.suptitle(f"{dataset}: validation curves" + (f" (first {MOST} of the ranking)" if len(order) > MOST else ""))
    figure.tight_layout()
    return _save(figure, path)


def _pooled(runs: list[Run], split: str = "test") -> tuple[np.ndarray, np.ndarray] | None:
    """One split's probabilities and targets of every seed, concatenated."""
    probs, targets = [], []
    for run in runs:
        file = run.folder / "predictions.npz"
        if file.is_file():
            with np.load(file) as arrays:
                if f"{split}_probs" in arrays:
                    probs.append(arrays[f"{split}_probs"])
                    targets.append(arrays[f"{split}_targets"])
    return (np.concatenate(probs), np.concatenate(targets)) if probs else None


def _one_vs_rest(probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Scores and 0/1 truth for ROC/PR: binary as is; multi-class and multi-label micro over classes."""
    if probs.ndim == 1:
        return probs, targets.astype(int), ""
    if targets.ndim == 1:
        targets = np.eye(probs.shape[1], dtype=int)[targets.astype(int)]
    return probs.reshape(-1), targets.reshape(-1).astype(int), ", micro over classes/labels"


def roc_pr(dataset: str, configs: Configs, order: list[str], colours: dict, path: Path) -> Path | None:
    """ROC and PR of the test predictions pooled over seeds, the pooled AUC / AP in the legend."""
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

    pooled = {c: p for c in order[:MOST] if (p := _pooled(configs[c])) is not None}
    if not pooled:
        return None
    figure, (roc_axis, pr_axis) = plt.subplots(1, 2, figsize=(10, 4.2))
    prevalence, how = None, ""
    for config, (probs, targets) in pooled.items():
        scores, truth, how = _one_vs_rest(probs, targets)
        if truth.min() == truth.max():
            continue  # one class only: neither curve is defined
        fpr, tpr, _ = roc_curve(truth, scores)
        precision, recall, _ = precision_recall_curve(truth, scores)
        roc_axis.plot(
            fpr,
            tpr,
            color=colours[config],
            linewidth=1.2,
            label=f"{config} (AUC {auc(fpr, tpr):.3f} | AP {average_precision_score(truth, scores):.3f})",
        )
        pr_axis.plot(recall, precision, color=colours[config], linewidth=1.2)
        prevalence = truth.mean()
    if prevalence is None:
        plt.close(figure)
        return None
    roc_axis.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="chance")
    pr_axis.axhline(prevalence, color="gray", linestyle="--", linewidth=1)
    roc_axis.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC (test, seeds pooled{how})")
    pr_axis.set(
        xlabel="recall", ylabel="precision", ylim=(0, 1.02), title=f"PR (test; chance = prevalence {prevalence:.2f})"
    )
    _legend_right(figure, roc_axis)
    figure.suptitle(f"{dataset}: ROC and precision-recall")
    figure.tight_layout()
    return _save(figure, path)


def _top_label(probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) of the top-label decision; each label a binary decision on multi-label data."""
    if probs.ndim == 2 and targets.ndim == 1:  # multi-class
        return probs.max(1), (probs.argmax(1) == targets).astype(float)
    probs, targets = probs.reshape(-1), targets.reshape(-1)
    positive = probs >= 0.5
    return np.where(positive, probs, 1 - probs), (positive == targets.astype(bool)).astype(float)


def reliability(dataset: str, configs: Configs, order: list[str], colours: dict, path: Path) -> Path | None:
    """Per configuration: accuracy against top-label confidence in the 15 bins of the ECE, and the
    number of test predictions in each bin (seeds pooled)."""
    pooled = {c: p for c in order[:MOST] if (p := _pooled(configs[c])) is not None}
    if not pooled:
        return None
    edges = np.linspace(0, 1, BINS + 1)
    centres, width = (edges[:-1] + edges[1:]) / 2, 1 / BINS
    figure, axes = plt.subplots(
        2,
        len(pooled),
        figsize=(3.2 * len(pooled), 5.2),
        squeeze=False,
        gridspec_kw={"height_ratios": [3, 1]},
        sharex="col",  # the same limits as one shared axis (every column spans [0, 1]), at less layout cost
    )
    for column, (config, (probs, targets)) in enumerate(pooled.items()):
        confidence, correct = _top_label(probs, targets)
        index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, BINS - 1)
        counts = np.bincount(index, minlength=BINS)
        accuracy = np.bincount(index, weights=correct, minlength=BINS) / np.maximum(counts, 1)
        mean_confidence = np.bincount(index, weights=confidence, minlength=BINS) / np.maximum(counts, 1)
        ece = float(np.sum(counts * np.abs(accuracy - mean_confidence)) / counts.sum())
        top, bottom = axes[0][column], axes[1][column]
        top.bar(centres[counts > 0], accuracy[counts > 0], width=width * 0.9, color=colours[config], alpha=0.8)
        top.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1)
        top.set(ylim=(0, 1), title=f"{config}\npooled ECE {ece:.3f}")
        top.title.set_fontsize(8)
        bottom.bar(centres, counts, width=width * 0.9, color="gray")
        for x, n in zip(centres, counts, strict=True):
            if n:
                bottom.text(x, n, str(n), ha="center", va="bottom", fontsize=6, rotation=90)
        bottom.set(xlabel="top-label confidence", ylim=(0, counts.max() * 1.6))
    axes[0][0].set_ylabel("accuracy")
    axes[1][0].set_ylabel("predictions")
    figure.suptitle(f"{dataset}: reliability (test, seeds pooled, {BINS} bins as the ECE)")
    figure.tight_layout()
    return _save(figure, path)


def confusion(dataset: str, configs: Configs, order: list[str], colours: dict, path: Path) -> Path | None:
    """Multi-class data: each configuration's test confusion matrix from per_class.json, summed over
    seeds, coloured by the share of each true class, with the counts written in."""
    matrices = {}
    for config in order[:MOST]:
        records = [json.loads(f.read_text()) for r in configs[config] if (f := r.folder / "per_class.json").is_file()]
        records = [r for r in records if r.get("confusion") and len(r["confusion"]) > 2]
        if records:
            matrices[config] = (np.sum([r["confusion"] for r in records], axis=0), records[0]["labels"], len(records))
    if not matrices:
        return None
    columns = min(4, len(matrices))
    rows = -(-len(matrices) // columns)
    size = len(next(iter(matrices.values()))[1])
    figure, axes = plt.subplots(rows, columns, figsize=(3.4 * columns + 0.8, 3.4 * rows), squeeze=False)
    for axis, (config, (matrix, labels, seeds)) in zip(axes.flat, matrices.items(), strict=False):
        shares = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
        image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        if size <= 12:
            for (i, j), n in np.ndenumerate(matrix):
                axis.text(
                    j, i, str(n), ha="center", va="center", fontsize=6, color="white" if shares[i, j] > 0.5 else "black"
                )
        axis.set_xticks(range(len(labels)), [str(x) for x in labels], fontsize=6)
        axis.set_yticks(range(len(labels)), [str(x) for x in labels], fontsize=6)
        axis.set(xlabel="predicted", ylabel="true", title=f"{config} ({seeds} seeds)")
        axis.title.set_fontsize(8)
    for axis in list(axes.flat)[len(matrices) :]:
        axis.set_visible(False)
    figure.colorbar(image, ax=axes, shrink=0.8, label="share of the true class")
    figure.suptitle(f"{dataset}: test confusion matrices, seeds summed")
    return _save(figure, path)
