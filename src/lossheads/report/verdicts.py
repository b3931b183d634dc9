"""Each arm against the control on every metric of its dataset's panel, and the sentences that sum it up.

The family a dataset's intervals and p-values are adjusted over is its counted comparisons (arms x
metrics with at least 3 common seeds), so the verdict printed beside an interval follows from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from lossheads.report import panel, stats
from lossheads.report.arms import arm_keys, control
from lossheads.report.collect import Run, collect, sections
from lossheads.report.settings import Settings


@dataclass
class Comparison:
    data: str
    config: str  # the arm
    baseline: str  # the control
    metric: panel.Metric
    result: stats.Paired
    margin: float
    verdict: str
    arm_mean: float  # over the common seeds
    control_mean: float

    @property
    def counted(self) -> bool:
        return self.result.n >= stats.MIN_SEEDS


@dataclass
class Section:
    """One dataset (and task): its arms' runs, the control, the panel and the comparisons."""

    dataset: str
    task: str
    arms: dict[str, list[Run]]
    control: str
    metrics: list[panel.Metric]
    values: dict[str, dict[str, float]]  # run.job -> metric name -> value
    comparisons: list[Comparison] = field(default_factory=list)

    @property
    def family(self) -> int:
        return sum(c.counted for c in self.comparisons)

    @property
    def seeds(self) -> list[int]:
        """The common seeds of the counted comparisons (one number when all share them)."""
        return sorted({c.result.n for c in self.comparisons if c.counted})


@dataclass
class Analysis:
    runs: list[Run]
    control: str  # the control arm's label, the same in every dataset
    sections: list[Section]
    settings: Settings


def analyse(sweep_dir: Path, chosen: Settings) -> Analysis:
    """Read the sweep folder and compare every arm with the control in each dataset."""
    runs = collect(sweep_dir)
    control_arm = control(runs, arm_keys(runs), chosen.baseline)
    found = []
    for (dataset, task), arms in sections(runs).items():
        metrics = panel.panel(task, chosen.metrics)
        values = {r.job: panel.values(r, metrics) for rs in arms.values() for r in rs}
        metrics = [m for m in metrics if any(math.isfinite(v[m.name]) for v in values.values())]  # measured here
        section = Section(dataset, task, arms, control_arm, metrics, values)
        section.comparisons = compare(section, chosen)
        found.append(section)
    return Analysis(runs, control_arm, found, chosen)


def by_replicate(runs: list[Run], values: dict[str, dict[str, float]], metric: str) -> dict[tuple, float]:
    return {r.replicate: v for r in runs if math.isfinite(v := values[r.job][metric])}


def compare(section: Section, chosen: Settings) -> list[Comparison]:
    control_runs = section.arms.get(section.control)
    if not control_runs:
        return []
    pairs = []
    for arm, runs in section.arms.items():
        if arm == section.control:
            continue
        for metric in section.metrics:
            mine = by_replicate(runs, section.values, metric.name)
            base = by_replicate(control_runs, section.values, metric.name)
            common = sorted(mine.keys() & base.keys())
            pairs.append((arm, metric, [mine[k] for k in common], [base[k] for k in common]))
    family = max(1, sum(len(x) >= stats.MIN_SEEDS for _, _, x, _ in pairs))
    rows = []
    for arm, metric, mine, base in pairs:
        result = stats.paired(mine, base, family)
        margin = chosen.margin_of(metric)
        rows.append(
            Comparison(
                section.dataset, arm, section.control, metric, result, margin,
                stats.verdict(result, metric.higher_is_better, margin),
                _mean(mine), _mean(base),
            )
        )  # fmt: skip
    return rows


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def signed(value: float, digits: int = 3) -> str:
    if math.isinf(value):
        return "-inf" if value < 0 else "+inf"
    return "n/a" if math.isnan(value) else f"{value:+.{digits}f}".replace("-", "\u2212")


def interval(result: stats.Paired, digits: int = 3) -> str:
    if math.isnan(result.ci_low):
        return "n/a"
    return f"[{signed(result.ci_low, digits)}, {signed(result.ci_high, digits)}]"


def arm_sentence(comparisons: list[Comparison]) -> str | None:
    """`arm` vs `control`: the metrics that differ with their intervals, then what is equivalent;
    None when the arm neither differs nor is equivalent anywhere."""
    differ = [c for c in comparisons if c.verdict in ("better", "worse")]
    same = [c for c in comparisons if c.verdict == "equivalent"]
    if not differ and not same:
        return None
    head = f"`{comparisons[0].config}` vs `{comparisons[0].baseline}`: "
    if not differ and len(same) == len(comparisons):
        return head + "equivalent on every metric"
    words = [f"{c.metric.words} {signed(c.result.mean_diff)} {interval(c.result)} ({c.verdict})" for c in differ]
    calibration = [c for c in comparisons if c.metric.calibration]
    if calibration and all(c.verdict == "equivalent" for c in calibration):
        same = [c for c in same if not c.metric.calibration]
        words.append("calibration equivalent")
    if same:
        words.append("equivalent on " + ", ".join(c.metric.words for c in same))
    return head + "; ".join(words)


def summary(section: Section) -> list[str]:
    """The dataset's sentences: one per arm that differs from the control (or is equivalent to it),
    after a warning where an arm's run and the control's it is paired with trained on different data."""
    lines = judged(section)
    warning = mixed_data(section)
    return [lines[0], f"- {warning}", *lines[1:]] if warning else lines


def mixed_data(section: Section) -> str | None:
    """A comparison pairs an arm's run with the control's run of the same seed, which read the same data
    unless a `data.*` option is swept as an arm; where their split.json fingerprints differ, the data
    changed while the sweep ran (a table edited before the sweep was run again: finished jobs are
    kept, the others read the new file)."""
    control = {r.replicate: r for r in section.arms.get(section.control, [])}
    by_design = any(word.startswith("data.") for word in section.control.split())
    pairs = []
    for arm, runs in section.arms.items():
        if arm == section.control or by_design or any(word.startswith("data.") for word in arm.split()):
            continue
        for run in runs:
            theirs = control.get(run.replicate)
            if theirs and None not in (run.data_fingerprint, theirs.data_fingerprint) \
                    and run.data_fingerprint != theirs.data_fingerprint:  # fmt: skip
                pairs.append(f"job {run.job} (`{arm}`) against job {theirs.job} "
                             f"(`{run.data_fingerprint[:8]}` against `{theirs.data_fingerprint[:8]}`)")  # fmt: skip
    if not pairs:
        return None
    shown = "; ".join(pairs[:4]) + (f"; and {len(pairs) - 4} more" if len(pairs) > 4 else "")
    return (f"**the data changed during this sweep**: {shown} trained on different data, by split.json's "
            "fingerprints, so their comparisons pair runs on different data; run the sweep again into a new "
            "folder.")  # fmt: skip


def judged(section: Section) -> list[str]:
    """The dataset's verdict sentences, or why nothing is judged."""
    name = f"**{section.dataset}** ({section.task})"
    if section.control not in section.arms:
        return [
            f"{name}: the control `{section.control}` has no finished run here, so nothing is judged; "
            "name another control with report.baseline='key=value'."
        ]
    if len(section.arms) < 2:
        return [f"{name}: one arm, nothing to compare."]
    by_arm: dict[str, list[Comparison]] = {}
    for c in section.comparisons:
        by_arm.setdefault(c.config, []).append(c)
    sentences = [s for rows in by_arm.values() if (s := arm_sentence(rows))]
    seeds = section.seeds
    if not seeds:
        return [f"{name}, control `{section.control}`: fewer than {stats.MIN_SEEDS} common seeds, nothing is judged."]
    at = f"{seeds[0]} seeds" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]} seeds"
    lines = [f"{name}, control `{section.control}`, {section.family} comparisons at {at}:"]
    needed = stats.seeds_needed(section.family)
    if seeds[-1] < needed:
        return [
            *lines,
            f"- nothing is judged: with {seeds[-1]} seeds the exact test cannot reach p <= 0.05 over "
            f"{section.family} comparisons; {needed} seeds can (or fewer metrics, report.metrics=[...]).",
        ]
    if not any(c.verdict in ("better", "worse") for c in section.comparisons):
        lines.append(f"- no arm differs from `{section.control}` on any metric at {at}.")
    lines += [f"- {s}" for s in sentences]
    if seeds[0] < needed:
        lines.append(f"- comparisons with fewer than {needed} seeds cannot reach p <= 0.05 over {section.family}.")
    return lines
