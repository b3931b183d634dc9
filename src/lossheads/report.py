"""The comparison report of a sweep folder: report.md, results.csv and PNG plots.

Written by a Hydra callback when a multirun ends, or by hand: `python scripts/report.py SWEEP_DIR`
(or `python -m lossheads.report SWEEP_DIR`). Reads only the job folders: metrics.json (or
failure.json), .hydra/overrides.yaml, predictions.npz and the TensorBoard event files.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

TABLE_METRICS = ("test/acc", "test/f1", "test/auroc", "test/ap", "test/ece", "val/loss")
LOWER_IS_BETTER = ("ece", "loss")
THRESHOLDS = np.round(np.linspace(0.05, 0.95, 91), 2)
# ok; invalid (refused config); failed (crashed); diverged (non-finite loss); interrupted (Ctrl-C,
# SIGTERM); missing (killed before it wrote anything, or still running)
STATUSES = ("ok", "invalid", "failed", "diverged", "interrupted", "missing")


@dataclass
class Job:
    folder: Path
    overrides: dict[str, str]
    status: str  # one of STATUSES
    metrics: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    config: str = ""  # the swept choices other than the seed, set by `label_configs`


def read_job(folder: Path) -> Job:
    overrides_file = folder / ".hydra" / "overrides.yaml"
    overrides = {}
    if overrides_file.is_file():
        for item in OmegaConf.load(overrides_file):
            key, _, value = str(item).partition("=")
            overrides[key.lstrip("+~")] = value
    for name in ("metrics.json", "failure.json"):
        if (folder / name).is_file():
            record = json.loads((folder / name).read_text())
            status = record.get("status", "ok")
            if status == "ok":
                return Job(folder, overrides, status, record)
            return Job(folder, overrides, status, reason=record.get("reason", ""))
    return Job(folder, overrides, "missing", reason="no metrics.json or failure.json: killed or still running")


def collect(sweep_dir: Path) -> list[Job]:
    folders = [p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir()]
    jobs = [read_job(f) for f in sorted(folders, key=lambda p: (len(p.name), p.name))]
    jobs += never_ran(sweep_dir, {f.name for f in folders})
    label_configs(jobs)
    return jobs


def never_ran(sweep_dir: Path, present: set[str]) -> list[Job]:
    """The grid's jobs (multirun.yaml) that have no folder: the sweep was stopped before them."""
    from lossheads.sweeps import expected_jobs

    return [
        Job(sweep_dir / name, {k.lstrip("+~"): v for k, _, v in (o.partition("=") for o in overrides)}, "missing",
            reason="never ran: the sweep was stopped before it; run the same sweep again to finish it")
        for name, overrides in expected_jobs(sweep_dir) or [] if name not in present
    ]  # fmt: skip


def label_configs(jobs: list[Job]) -> None:
    """A configuration is the set of overrides that vary across the sweep, the seed left out."""
    keys = sorted({k for j in jobs for k in j.overrides})
    varying = [k for k in keys if k != "seed" and len({j.overrides.get(k) for j in jobs}) > 1]
    for job in jobs:
        job.config = " ".join(f"{k}={short(job.overrides.get(k, '-'))}" for k in varying) or "all"


def short(value: str) -> str:
    """Searched floats (Optuna) to 3 significant digits, so labels stay readable."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if "." not in value and "e" not in value.lower() else f"{number:.3g}"


def md_cell(text: str) -> str:
    """Text safe inside a markdown table cell (refusal reasons list options as a|b)."""
    return text.replace("|", "\\|")


def summarize(values: list[float]) -> tuple[float, float, int]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return math.nan, math.nan, 0
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)


def by_config(jobs: list[Job]) -> dict[str, list[Job]]:
    groups: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        if job.status == "ok":
            groups[job.config].append(job)
    return dict(groups)


def better(metric: str) -> int:
    return -1 if metric.endswith(LOWER_IS_BETTER) else 1


def ranking(groups: dict[str, list[Job]], metric: str) -> list[str]:
    means = {c: summarize([j.metrics.get(metric) for j in js])[0] for c, js in groups.items()}
    return sorted(groups, key=lambda c: -better(metric) * (means[c] if not math.isnan(means[c]) else -math.inf))


def results_table(groups: dict[str, list[Job]], order: list[str]) -> list[str]:
    stats = {c: {m: summarize([j.metrics.get(m) for j in groups[c]]) for m in TABLE_METRICS} for c in order}
    best = {}
    for m in TABLE_METRICS:
        means = [stats[c][m][0] for c in order if not math.isnan(stats[c][m][0])]
        best[m] = (max if better(m) > 0 else min)(means) if means else None
    lines = ["| configuration | " + " | ".join(TABLE_METRICS) + " |", "|---" * (len(TABLE_METRICS) + 1) + "|"]
    for c in order:
        cells = []
        for m in TABLE_METRICS:
            mean, std, n = stats[c][m]
            cell = "n/a" if n == 0 else f"{mean:.4f} ± {std:.4f} (n={n})"
            cells.append(f"**{cell}**" if n and mean == best[m] else cell)
        lines.append(f"| {md_cell(c)} | " + " | ".join(cells) + " |")
    return lines


def paired_comparison(groups: dict[str, list[Job]], order: list[str], metric: str) -> list[str]:
    """The top two configurations, paired by seed: the mean difference against its spread."""
    if len(order) < 2:
        return ["Fewer than two valid configurations: nothing to compare."]
    first, second = order[:2]
    a = {j.metrics.get("seed"): j.metrics.get(metric) for j in groups[first]}
    b = {j.metrics.get("seed"): j.metrics.get(metric) for j in groups[second]}
    seeds = sorted(s for s in set(a) & set(b) if a[s] is not None and b[s] is not None)
    if not seeds:
        return [f"`{first}` and `{second}` share no seed: no paired comparison."]
    diffs = [a[s] - b[s] for s in seeds]
    mean, std, n = summarize(diffs)
    if n < 2:
        verdict = "one shared seed: no spread to compare with"
    elif abs(mean) > 2 * std / math.sqrt(n):
        verdict = "larger than the seed noise (|mean| > 2 standard errors of the paired differences)"
    else:
        verdict = "within the seed noise (|mean| <= 2 standard errors of the paired differences)"
    return [
        f"`{first}` vs `{second}` on {metric}, paired over seeds {seeds}:",
        f"difference {mean:+.4f} ± {std:.4f} (std over seeds, n={n}): {verdict}.",
    ]


def f1_at(probs: np.ndarray, targets: np.ndarray, threshold: float) -> float:
    """F1 of `probs >= threshold`; macro over labels for multi-label data."""
    predicted = probs >= threshold
    truth = targets.astype(bool)
    if predicted.ndim == 1:
        predicted, truth = predicted[:, None], truth[:, None]
    tp = (predicted & truth).sum(0)
    denominator = predicted.sum(0) + truth.sum(0)
    return float(np.mean(np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)))


def threshold_study(groups: dict[str, list[Job]], order: list[str]) -> list[str]:
    """Sigmoid and multilabel heads: the threshold that maximizes validation F1, and test F1 there."""
    lines = ["| configuration | val-best threshold | test F1 at 0.5 | test F1 at the val-best threshold |",
             "|---|---|---|---|"]  # fmt: skip
    for c in order:
        rows = []
        for job in groups[c]:
            file = job.folder / "predictions.npz"
            if job.metrics.get("head") not in ("sigmoid", "multilabel") or not file.is_file():
                continue
            p = np.load(file)
            val_f1 = [f1_at(p["val_probs"], p["val_targets"], t) for t in THRESHOLDS]
            best = float(THRESHOLDS[int(np.argmax(val_f1))])
            rows.append((best, f1_at(p["test_probs"], p["test_targets"], 0.5),
                         f1_at(p["test_probs"], p["test_targets"], best)))  # fmt: skip
        if rows:
            cols = [summarize(list(col)) for col in zip(*rows, strict=True)]
            lines.append(f"| {md_cell(c)} | " + " | ".join(f"{m:.3f} ± {s:.3f}" for m, s, _ in cols) + " |")
    return lines if len(lines) > 2 else ["No sigmoid or multilabel head in this sweep."]


def write_csv(jobs: list[Job], path: Path) -> None:
    keys = sorted({k for j in jobs for k in j.overrides})
    metric_keys = sorted({k for j in jobs for k in j.metrics if "/" in k})
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        overrides = [f"override.{k}" for k in keys]  # as typed; head/loss below are the resolved ones
        writer.writerow(["job", "status", "reason", "configuration", *overrides, "head", "loss", "data", *metric_keys])
        for j in jobs:
            writer.writerow([j.folder.name, j.status, j.reason, j.config, *(j.overrides.get(k, "") for k in keys),
                             *(j.metrics.get(k, "") for k in ("head", "loss", "data", *metric_keys))])  # fmt: skip


def write_report(sweep_dir: Path, metric: str = "test/auroc") -> Path:
    """Write report.md, results.csv and the plots into `sweep_dir`; returns the report's path."""
    jobs = collect(sweep_dir)
    groups = by_config(jobs)
    order = ranking(groups, metric)
    write_csv(jobs, sweep_dir / "results.csv")
    counts = {s: sum(j.status == s for j in jobs) for s in STATUSES}
    lines = [f"# Sweep report: {sweep_dir}", "",
             f"{len(jobs)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n),
             f"Configurations ranked by {metric} (mean over seeds); the best value of each column in bold. "
             "`acc` is micro; precision, recall, F1, AUROC and AP are macro on multi-class and multi-label data. "
             "`val/loss` is each arm's own objective: compare it only between runs of the same loss.",
             "", *results_table(groups, order), "", "## Top two, paired by seed", "",
             *paired_comparison(groups, order, metric), "", "## Threshold study", "",
             "The 0.5 rule against the threshold that maximizes validation F1 (grid 0.05 to 0.95).", "",
             *threshold_study(groups, order), ""]  # fmt: skip
    skipped = [j for j in jobs if j.status != "ok"]
    if skipped:
        lines += ["## Jobs without a result", "", "| job | overrides | status | reason |", "|---|---|---|---|"]
        for j in skipped:
            overrides = " ".join(f"{k}={v}" for k, v in j.overrides.items())
            lines.append(f"| {j.folder.name} | {md_cell(overrides)} | {j.status} | {md_cell(j.reason)} |")
        lines.append("")
    lines += ["## Plots", "", *write_plots(groups, order, sweep_dir), ""]
    report = sweep_dir / "report.md"
    report.write_text("\n".join(lines))
    return report


def write_plots(groups: dict[str, list[Job]], order: list[str], out: Path) -> list[str]:
    """Plots a person would rather look at than read; each returns its markdown line."""
    if not order:
        return ["No valid job: nothing to plot."]
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        return ["matplotlib is not installed: `pip install lossheads[report]` for the plots."]
    from lossheads import report_plots

    made = [
        report_plots.metric_bars(groups, order, out / "metrics.png"),
        report_plots.validation_curves(groups, order, out / "curves.png"),
        report_plots.reliability(groups, order, out / "reliability.png"),
        report_plots.roc_pr(groups, order, out / "roc_pr.png"),
    ]
    return [f"![{p.stem}]({p.name})" for p in made if p is not None]


class ReportCallback(Callback):
    """Hydra callback: when a multirun ends, write the report into its sweep folder."""

    def __init__(self, metric: str = "test/auroc") -> None:
        self.metric = metric

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        report = write_report(Path(config.hydra.sweep.dir), self.metric)
        print(f"report: {report}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write report.md, results.csv and plots for a sweep folder.")
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--metric", default="test/auroc", help="the metric that ranks configurations")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.exit(2, f"error: sweep_dir={args.sweep_dir} is not a folder: give a multirun folder\n")
    print(f"report: {write_report(args.sweep_dir, args.metric)}")


if __name__ == "__main__":
    main()
