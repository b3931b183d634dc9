"""A stage's metrics for K stacked members at once: the numbers `HeadMetrics` gives each member,
computed with one tensor pass over the member axis instead of K metric collections.

A group of seeds trains as one stacked model whose outputs come as (K, N, ...). K `HeadMetrics`
cost K x 10 torchmetrics updates per step and K x 10 computes and resets per epoch, which is most of
a small sweep's time. Here the state is one confusion count per member (updated per step, no host
sync) and, on full stages, the probabilities and targets of the epoch (which AUROC and AP need
anyway); `compute` turns them into every member's values in a few batched ops and one host sync.

The conventions are `HeadMetrics`' (see `lossheads.evaluation.metrics`), matched to 1e-6 by
tests/test_member_metrics.py:
- acc, precision, recall, F1 follow torchmetrics: 0/0 is 0; macro averages skip, on multi-class
  data, a class that is neither predicted nor true (torchmetrics' rule), not on multi-label data.
- AUROC and AP are exact with ties (a run of equal scores is one threshold, as on torchmetrics'
  curve): AUROC as the Mann-Whitney statistic with ties counted half, AP as the sum over positives
  of the precision at the end of their tie run, divided by the positives. A class with no positives
  or no negatives is NaN, warned about once per member, class and split, as `HeadMetrics` does.
- nll, brier and ece reuse `lossheads.evaluation.scoring` on the member axis flattened into the
  sample axis; both calibration errors are binned per member by one bincount.
- A member whose probabilities are not finite (a diverged one) gets NaN score metrics; its label
  metrics and the other members' numbers are unaffected.

Time for K = 10 members, 20 epochs, update + compute + reset, medians of interleaved repeats,
measured on a 2-core CPU shared with other jobs (load average 6 to 7), 2026-12-06:

    python scripts/bench_member_metrics.py            # binary, 114 samples (breast_cancer's validation split)
      1 batch:   10 HeadMetrics 0.517 s, MemberMetrics 0.028 s (18.4x)
      4 batches: 10 HeadMetrics 1.071 s, MemberMetrics 0.031 s (34.9x)
    python scripts/bench_member_metrics.py --train --samples 341 --batches 6    # accuracy only
      10 HeadMetrics 0.170 s, MemberMetrics 0.008 s (20.8x)
    python scripts/bench_member_metrics.py --task multiclass --classes 10 --samples 360 --batches 1 --repeats 3
      --threads 1: 1.456 s against 0.167 s (8.7x); two threads: 4.735 s against 0.958 s (4.9x)
    python scripts/bench_member_metrics.py --task multilabel --classes 4 --samples 360 --batches 1 --repeats 3
      --threads 1: 1.030 s against 0.099 s (10.4x); two threads: 4.299 s against 0.503 s (8.5x)

Two threads are slower here because torch runs ops over more than 32768 values on both, and on
busy cores each such op waits milliseconds for the other thread (the same multi-class run took
5.3 s for MemberMetrics half an hour earlier). Ops that thread at any size are avoided here (see
`_equal_width_bin`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lossheads.evaluation.metrics import _DefinedClassesOnly
from lossheads.evaluation.scoring import BINS, BrierScore, NegativeLogLikelihood, top_label
from lossheads.heads import Task


class MemberMetrics:
    """HeadMetrics' numbers for K members at once."""

    def __init__(
        self,
        task: Task,
        num_classes: int,
        size: int,
        prefix: str,
        *,
        full: bool = True,
        labels: list[str] | None = None,
    ) -> None:
        self.task, self.num_classes, self.size, self.prefix, self.full = task, num_classes, size, prefix, full
        self.split, self.labels = prefix.rstrip("/"), labels
        self.nll, self.brier = NegativeLogLikelihood(task), BrierScore(task)
        self.warnings = [_MemberWarnings(self.split, labels) for _ in range(size)]
        self.reset()

    def reset(self) -> None:
        self.confusion: Tensor | None = None  # (K, C, C) or, multi-label, (K, L, 2, 2); rows: true
        self.probabilities: list[Tensor] = []
        self.targets: list[Tensor] = []

    def update(self, predictions: Tensor, probabilities: Tensor | None, targets: Tensor) -> None:
        """predictions/targets (K, N) or (K, N, L) as the head gives them per member (head.predict,
        head.metric_target), probabilities (K, N) / (K, N, C) / (K, N, L) (None when full=False). Called once
        per batch; keep the state cheap (append, or running sums)."""
        counts = _confusion(self.task, self.num_classes, predictions.detach(), targets.detach())
        self.confusion = counts if self.confusion is None else self.confusion + counts
        if self.full:
            self.probabilities.append(probabilities.detach())
            self.targets.append(targets.detach())

    def compute(self) -> list[dict[str, float]]:
        """One dict per member with exactly the keys and values `HeadMetrics(task, num_classes, prefix, full=full,
        labels=labels).compute()` gives for that member's data (values as Python floats)."""
        if self.confusion is None:
            raise RuntimeError("MemberMetrics.compute() before any update()")
        values = _label_metrics(self.task, self.confusion)
        if not self.full:
            values = {"acc": values["acc"]}
        else:
            probabilities, targets = torch.cat(self.probabilities, dim=1), torch.cat(self.targets, dim=1)
            # a diverged member's NaN would stop the scoring of all (binary cross-entropy refuses it):
            # its score metrics are NaN, computed on a stand-in, and the others' stay their own
            finite = probabilities.isfinite().flatten(1).all(1)
            stand_in = 0.5 if self.task != "multiclass" else 1 / self.num_classes
            shape = (-1,) + (1,) * (probabilities.ndim - 1)
            scores = self._score_metrics(torch.where(finite.view(shape), probabilities, stand_in), targets)
            scores = {name: value.masked_fill(~finite, torch.nan) for name, value in scores.items()}
            # HeadMetrics' order: its two MetricCollections sort their keys, the label metrics' first
            values.update(sorted(scores.items()))
        names = [self.prefix + name for name in values]
        rows = torch.stack([v.double() for v in values.values()], dim=1).tolist()  # the one host sync
        return [dict(zip(names, row, strict=True)) for row in rows]

    def _score_metrics(self, probabilities: Tensor, targets: Tensor) -> dict[str, Tensor]:
        k = self.size
        flat_p, flat_t = probabilities.flatten(0, 1), targets.flatten(0, 1)  # members as more samples
        values = {}
        for name, score in (("nll", self.nll), ("brier", self.brier)):
            per_sample = score.per_sample(flat_p, flat_t).reshape(k, -1)
            values[name] = per_sample.sum(1, dtype=torch.float64) / per_sample.shape[1]
        confidence, correct = top_label(flat_p, flat_t, self.task)
        values["ece"] = _binned_calibration_error(confidence.reshape(k, -1), correct.reshape(k, -1))
        if self.task != "multiclass":  # the positive-class probability's calibration, pooled over labels
            values["positive_ece"] = _binned_calibration_error(probabilities.reshape(k, -1), targets.reshape(k, -1))
        auroc, ap, undefined = _ranking_per_class(self.task, self.num_classes, probabilities, targets)
        self._warn(undefined)
        values["auroc"], values["ap"] = _defined_mean(auroc, undefined), _defined_mean(ap, undefined)
        return values

    def _warn(self, undefined: Tensor) -> None:
        if bool(undefined.any()):
            for member, flags in zip(self.warnings, undefined, strict=True):
                member.warn(flags)


class _MemberWarnings:
    """One member's AUROC/AP warning: HeadMetrics' own (`_DefinedClassesOnly._warn`: its words, once
    per class and split for the life of the object), so that the text lives in one place."""

    warn = _DefinedClassesOnly._warn

    def __init__(self, split: str, labels: list[str] | None) -> None:
        self.split, self.labels, self.warned = split, labels, set[str]()


def _confusion(task: Task, num_classes: int, predictions: Tensor, targets: Tensor) -> Tensor:
    """Per-member confusion counts by one bincount: (K, C, C) with rows = true class (binary: C = 2),
    or (K, L, 2, 2) per label on multi-label data."""
    k = predictions.shape[0]
    member = torch.arange(k, device=predictions.device)
    if task == "multilabel":
        label = torch.arange(num_classes, device=predictions.device)
        cell = ((member.view(k, 1, 1) * num_classes + label) * 2 + targets.long()) * 2 + predictions.long()
        return torch.bincount(cell.reshape(-1), minlength=k * num_classes * 4).view(k, num_classes, 2, 2)
    classes = 2 if task == "binary" else num_classes
    cell = (member.view(k, 1) * classes + targets.long()) * classes + predictions.long()
    return torch.bincount(cell.reshape(-1), minlength=k * classes * classes).view(k, classes, classes)


def _ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    """torchmetrics' zero_division=0: a ratio with nothing to count is 0, not NaN."""
    numerator, denominator = numerator.double(), denominator.double()
    return torch.where(denominator != 0, numerator / denominator.clamp_min(1e-300), numerator.new_zeros(()))


def _label_metrics(task: Task, confusion: Tensor) -> dict[str, Tensor]:
    """acc (micro), precision, recall, F1 (binary: of class 1; else macro) per member, from the counts."""
    if task == "multilabel":
        tp, fp, fn, tn = confusion[..., 1, 1], confusion[..., 0, 1], confusion[..., 1, 0], confusion[..., 0, 0]
    else:
        tp = confusion.diagonal(dim1=1, dim2=2)
        fp, fn = confusion.sum(1) - tp, confusion.sum(2) - tp
        tn = confusion.sum((1, 2)).unsqueeze(1) - tp - fp - fn
    scores = {"f1": _ratio(2 * tp, 2 * tp + fp + fn), "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn)}
    if task == "binary":
        acc = _ratio(tp + tn, tp + tn + fp + fn)[:, 1]
        return {"acc": acc, **{name: score[:, 1] for name, score in scores.items()}}
    if task == "multiclass":
        acc = _ratio(tp.sum(1), (tp + fn).sum(1))
        weights = ((tp + fp + fn) != 0).double()  # a class neither true nor predicted is left out
    else:
        acc = _ratio((tp + tn).sum(1), (tp + tn + fp + fn).sum(1))
        weights = torch.ones_like(tp, dtype=torch.float64)
    return {"acc": acc, **{name: _ratio((weights * s).sum(1), weights.sum(1)) for name, s in scores.items()}}


def _binned_calibration_error(confidence: Tensor, hits: Tensor) -> Tensor:
    """sum_b (n_b / N) |acc_b - conf_b| per member (rows), BINS equal-width bins binned as torchmetrics
    bins them: bin b holds [b / n, (b + 1) / n), a confidence of exactly 1.0 a slot of its own."""
    k, slots = confidence.shape[0], BINS + 1
    bins = _equal_width_bin(confidence)
    cell = (bins + slots * torch.arange(k, device=bins.device).unsqueeze(1)).reshape(-1)
    count = torch.bincount(cell, minlength=k * slots).view(k, slots)
    gap = torch.bincount(cell, weights=hits.reshape(-1).double() - confidence.reshape(-1).double(), minlength=k * slots)
    return gap.view(k, slots).abs().sum(1) / count.sum(1)


def _equal_width_bin(confidence: Tensor) -> Tensor:
    """`torch.bucketize(confidence, linspace(0, 1, BINS + 1), right=True) - 1`, the same bins, by
    elementwise ops: bucketize runs threaded on a thousand values, and on 2 busy cores each call
    then waits milliseconds for the other thread. floor(c * BINS) is at most one bin off the
    float32 boundaries; one comparison each way puts it in the boundaries' own bin."""
    boundaries = torch.linspace(0, 1, BINS + 1, dtype=confidence.dtype, device=confidence.device)
    upper = torch.cat([boundaries, boundaries.new_tensor([torch.inf])])
    guess = (confidence * BINS).floor().clamp(0, BINS).long()
    return guess - (confidence < boundaries[guess]).long() + (confidence >= upper[guess + 1]).long()


def _ranking_per_class(task: Task, num_classes: int, probabilities: Tensor, targets: Tensor) -> tuple[Tensor, ...]:
    """AUROC, AP and 'undefined' (no positives or no negatives) per member and class: (K,) on binary
    data, else (K, C); one-vs-rest per class on multi-class data, per label on multi-label data."""
    if task == "binary":
        auroc, ap, positives = _ranking(probabilities, targets.bool())
        return auroc, ap, (positives == 0) | (positives == probabilities.shape[1])
    k, n = probabilities.shape[:2]
    if task == "multiclass":
        positive = targets.unsqueeze(-1) == torch.arange(num_classes, device=targets.device)
    else:
        positive = targets.bool()
    scores = probabilities.transpose(1, 2).reshape(k * num_classes, n)
    auroc, ap, positives = _ranking(scores, positive.transpose(1, 2).reshape(k * num_classes, n))
    undefined = (positives == 0) | (positives == n)
    return auroc.view(k, num_classes), ap.view(k, num_classes), undefined.view(k, num_classes)


def _ranking(scores: Tensor, positive: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Exact AUROC and AP of each row with ties, by one sort, and each row's number of positives.

    Sorted by descending score, a run of equal scores is one threshold: AUROC counts, for each
    negative, the positives above its run plus half of those in it; AP sums, for each positive, the
    precision at the end of its run (the trapezoid and step sums of torchmetrics' exact curves)."""
    n = scores.shape[1]
    order = scores.argsort(dim=1, descending=True)
    ranked, y = scores.gather(1, order), positive.gather(1, order).double()
    index = torch.arange(n, device=scores.device).expand_as(ranked)
    starts = torch.ones_like(ranked, dtype=torch.bool)
    starts[:, 1:] = ranked[:, 1:] != ranked[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, index, 0).cummax(1).values  # where each one's run starts
    last = (n - 1) - torch.where(ends.flip(1), index, 0).cummax(1).values.flip(1)  # and ends
    true_positives = y.cumsum(1)
    positives = true_positives[:, -1]
    above = (true_positives - y).gather(1, first)
    through = true_positives.gather(1, last)
    auroc = ((1 - y) * (above + through)).sum(1) / (2 * positives * (n - positives))
    ap = (y * through / (last + 1)).sum(1) / positives
    return auroc, ap, positives


def _defined_mean(values: Tensor, undefined: Tensor) -> Tensor:
    """NaN where undefined; the macro average over the defined classes (NaN when none is)."""
    values = values.masked_fill(undefined, torch.nan)
    if values.ndim == 1:
        return values
    defined = (~undefined).sum(1)
    return torch.where(defined > 0, values.nan_to_num(0.0).sum(1) / defined.clamp_min(1), torch.nan)
