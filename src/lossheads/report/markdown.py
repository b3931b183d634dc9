"""report.md, results.csv and comparisons.csv of a sweep folder: the summary first, then per dataset the
verdicts against the control, the runs' table, the threshold study and the plots."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lossheads.report import stats, thresholds
from lossheads.report.collect import STATUSES, Run, finite, ranking, summarize
from lossheads.report.settings import DEFAULT_METRIC, Settings, settings
from lossheads.report.verdicts import Analysis, Comparison, Section, analyse, interval, signed, summary

COMPARISON_COLUMNS = (
    "data",
    "config",
    "baseline",
    "metric",
    "n",
    "mean_diff",
    "ci_low",
    "ci_high",
    "p",
    "p_adjusted",
    "min_detectable_diff",
    "verdict",
    "margin",
    "family",
    "higher_is_better",
    "arm_mean",
    "control_mean",
    "test",
)
HOW_TO_READ = (
    "Each arm is compared with the control, named in advance (the first value of each swept key as "
    "typed, or `report.baseline`), on every metric of its task's panel, measured on the test split and "
    "paired by seed (and split seed and fold) over the seeds both ran. *difference*: arm − control, "
    "mean over those seeds. *interval*: the interval of the {test}, at level 0.05 / the dataset's "
    "comparisons (Bonferroni, arms × metrics), so that the verdict follows from it: "
    "**equivalent** when it lies within ±margin, **better** / **worse** when it excludes 0, otherwise "
    "**no evidence**. *p (adj.)*: p × comparisons. *detectable*: the smallest true difference found with "
    "80% power at the adjusted level (inf: these seeds cannot reach it). Fewer than 3 common seeds: shown, "
    "not counted."
)


def md_cell(text: str) -> str:
    """Text safe inside a markdown table cell (refusal reasons list options as a|b)."""
    return text.replace("|", "\\|")


def number(value: float, digits: int = 4, signed: bool = False) -> str:
    return "n/a" if not finite(value) else f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def mean_cell(values: list[float]) -> str:
    """mean ± std over seeds; the count of seeds when some had no defined value."""
    mean, std, n = summarize(values)
    if n == 0:
        return "n/a"
    return f"{mean:.4f} ± {std:.4f}" + (f" (n={n})" if n < len(values) else "")


def runs_table(section: Section, metric: str) -> list[str]:
    """One row per arm, best first by the validation metric's paired mean over the seeds all arms share
    (information: the control, not the best, is what arms are judged against)."""
    order = ranking(section.arms, metric)
    names = [m.name for m in section.metrics]
    lines = [
        f"| rank by {metric} | arm | seeds | {metric} | " + " | ".join(names) + " |",
        "|---" * (len(names) + 4) + "|",
    ]
    for i, arm in enumerate(order or list(section.arms)):
        runs = section.arms[arm]
        cells = [mean_cell([r.metrics.get(metric) for r in runs])]
        cells += [mean_cell([section.values[r.job][n] for r in runs]) for n in names]
        name = md_cell(arm) + (" (control)" if arm == section.control else "")
        lines.append(f"| {i + 1 if order else '-'} | {name} | {len(runs)} | " + " | ".join(cells) + " |")
    note = (
        f"Ranked by {metric}, mean over the seeds every arm ran: information only, never the control."
        if order
        else f"Not ranked: no run has {metric} (evaluate-only runs, `train=false`), or no seed is shared by all arms."
    )
    return [note, "", *lines, ""]


def verdict_table(section: Section) -> list[str]:
    if section.control not in section.arms:
        return [
            f"The control `{md_cell(section.control)}` has no finished run here: nothing is judged. Name another "
            "with report.baseline='key=value' (or `--baseline` when writing the report by hand).",
            "",
        ]
    if not section.comparisons:
        return ["One arm: nothing to compare.", ""]
    if not section.family:
        return [
            f"Against the control **{md_cell(section.control)}**: no comparison has {stats.MIN_SEEDS} common "
            "seeds, so none is counted or judged.",
            "",
            *comparison_rows(section),
        ]
    confidence = f"{100 * (1 - stats.ALPHA / section.family):.2f}%"
    return [
        f"Against the control **{md_cell(section.control)}**, {section.family} comparisons counted "
        f"(level 0.05 / {section.family}, {confidence} intervals).",
        "",
        *comparison_rows(section),
    ]


def comparison_rows(section: Section) -> list[str]:
    lines = [
        "| arm | metric | seeds | arm − control | interval (adj.) | p | p (adj.) | detectable | margin | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in section.comparisons:
        r = c.result
        better = "higher" if c.metric.higher_is_better else "lower"
        lines.append(
            f"| {md_cell(c.config)} | {c.metric.words} ({better} is better) | {r.n} | {signed(r.mean_diff, 4)} | "
            f"{interval(r, 4)} | {number(r.p, 3)} | {number(r.p_adjusted, 3)} | "
            f"{'inf' if r.detectable == math.inf else number(r.detectable)} | {c.margin:g} | {c.verdict} |"
        )
    return [*lines, ""]


def threshold_section(configs: dict[str, list[Run]], order: list[str]) -> list[str]:
    lines = [
        "| configuration | runs | val-best threshold | test F1 at the run's threshold | test F1 at the val-best one |",
        "|---|---|---|---|---|",
    ]
    for config in order:
        rows = []
        for run in configs[config]:
            file = run.folder / "predictions.npz"
            if file.is_file():
                with np.load(file) as arrays:
                    found = thresholds.study(dict(arrays), run.metrics.get("threshold"))
                if found is not None:
                    rows.append(found)
        if rows:
            cells = [summarize(list(column)) for column in zip(*rows, strict=True)]
            lines.append(
                f"| {md_cell(config)} | {len(rows)} | " + " | ".join(f"{m:.3f} ± {s:.3f}" for m, s, _ in cells) + " |"
            )
    if len(lines) == 2:
        return ["No run with validation and test predictions: no threshold study.", ""]
    return [
        "`p >= threshold` at the run's threshold against the threshold that maximizes validation F1, found "
        "exactly over the validation scores' cut points (one per label on multi-label data; the column "
        "shows their mean), applied to the test split.",
        "",
        *lines,
        "",
    ]


def per_label_section(configs: dict[str, list[Run]], order: list[str]) -> list[str]:
    """Multi-label data: test F1 per label from each run's per_class.json, mean over seeds."""
    found: dict[str, list[dict[str, Any]]] = {}
    for config in order:
        files = [r.folder / "per_class.json" for r in configs[config]]
        found[config] = [json.loads(f.read_text()) for f in files if f.is_file()]
    labels = next((records[0]["labels"] for records in found.values() if records), None)
    if labels is None:
        return []
    lines = [
        "Test F1 per label (mean over seeds, from each run's per_class.json):",
        "",
        "| configuration | " + " | ".join(md_cell(str(x)) for x in labels) + " |",
        "|---" * (len(labels) + 1) + "|",
    ]
    for config, records in found.items():
        if records:
            means = [summarize([rec["f1"][j] for rec in records])[0] for j in range(len(labels))]
            lines.append(f"| {md_cell(config)} | " + " | ".join(number(m, 3) for m in means) + " |")
    return [*lines, ""]


@contextlib.contextmanager
def atomic_text(path: Path) -> Iterator[io.StringIO]:
    """Text for `path`, written atomically when the block ends: a stop leaves the old file or none."""
    from lossheads.run.atomic import write_bytes

    handle = io.StringIO(newline="")
    yield handle
    write_bytes(path, handle.getvalue().encode(), durable=False)


def write_results_csv(analysis: Analysis, path: Path) -> None:
    """One row per run: its overrides as typed, what it resolved, its logged metrics and its panel values."""
    runs = analysis.runs
    values = {job: v for s in analysis.sections for job, v in s.values.items()}
    panel_keys = sorted({k for v in values.values() for k in v})
    keys = sorted({k for r in runs for k in r.overrides})
    metric_keys = sorted({k for r in runs for k in r.metrics if "/" in k})
    with atomic_text(path) as handle:
        writer = csv.writer(handle)
        overrides = [f"override.{k}" for k in keys]  # as typed; head/loss below are the resolved ones
        writer.writerow(
            [
                "job",
                "status",
                "reason",
                "dataset",
                "configuration",
                *overrides,
                "head",
                "loss",
                "data",
                "task",
                "seed",
                *metric_keys,
                *(f"panel/{k}" for k in panel_keys),
            ]
        )
        for r in runs:
            known = r.status == "ok"
            writer.writerow(
                [
                    r.job,
                    r.status,
                    r.reason,
                    r.dataset,
                    r.config,
                    *(r.overrides.get(k, "") for k in keys),
                    *(r.metrics.get(k, "") for k in ("head", "loss", "data")),
                    r.task if known else "",
                    r.seed_label,
                    *(r.metrics.get(k, "") for k in metric_keys),
                    *(_csv(values.get(r.job, {}).get(k, math.nan)) for k in panel_keys),
                ]
            )


def write_comparisons_csv(rows: list[Comparison], path: Path) -> None:
    with atomic_text(path) as handle:
        writer = csv.writer(handle)
        writer.writerow(COMPARISON_COLUMNS)
        for row in rows:
            writer.writerow([_csv(v) for v in comparison_record(row).values()])


def comparison_record(row: Comparison) -> dict[str, Any]:
    """One comparisons.csv row as a dict, in COMPARISON_COLUMNS order (NaN where undefined)."""
    r = row.result
    values = (
        row.data, row.config, row.baseline, row.metric.name, r.n, r.mean_diff, r.ci_low, r.ci_high, r.p,
        r.p_adjusted, r.detectable, row.verdict, row.margin, r.family, row.metric.higher_is_better,
        row.arm_mean, row.control_mean, stats.test_used(r.n),
    )  # fmt: skip
    return dict(zip(COMPARISON_COLUMNS, values, strict=True))


def _csv(value: Any) -> Any:
    return "" if isinstance(value, float) and math.isnan(value) else value


def write_report(sweep_dir: Path, metric: str = DEFAULT_METRIC, chosen: Settings | None = None) -> Path:
    """Write report.md, results.csv, comparisons.csv and the plots into `sweep_dir`; returns report.md."""
    return write(sweep_dir, chosen or settings(metric))[0]


def write(sweep_dir: Path, chosen: Settings) -> tuple[Path, list[str]]:
    """The report's files, and the summary's lines (the callback prints them at the end of a sweep)."""
    analysis = analyse(sweep_dir, chosen)
    runs = analysis.runs
    counts = {s: sum(r.status == s for r in runs) for s in STATUSES}
    summary_lines = [line for section in analysis.sections for line in [*summary(section), ""]][:-1]
    lines = [
        f"# Sweep report: {sweep_dir}",
        "",
        f"{len(runs)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + ".",
        "",
        "## Summary",
        "",
        *(summary_lines or ["No run finished: nothing to judge."]),
        "",
        HOW_TO_READ.format(test=stats.TEST_NAME),
        "",
    ]
    figures = draw_figures(analysis.sections, sweep_dir, runs)
    for section, drawn in zip(analysis.sections, figures, strict=True):
        lines += [f"## {section.dataset} ({section.task})", "", "### Verdicts", "", *verdict_table(section)]
        lines += ["### Runs", "", *runs_table(section, chosen.metric)]
        order = list(section.arms)
        if section.task in ("binary", "multilabel"):
            lines += ["### Threshold study", "", *threshold_section(section.arms, order)]
        if section.task == "multilabel":
            lines += per_label_section(section.arms, order)
        lines += drawn
    skipped = [r for r in runs if r.status != "ok"]
    if skipped:
        lines += ["## Jobs without a result", "", "| job | overrides | status | reason |", "|---|---|---|---|"]
        for r in skipped:
            overrides = " ".join(f"{k}={v}" for k, v in r.overrides.items())
            lines.append(f"| {r.job} | {md_cell(overrides)} | {r.status} | {md_cell(r.reason)} |")
        lines.append("")
    write_results_csv(analysis, sweep_dir / "results.csv")
    write_comparisons_csv([c for s in analysis.sections for c in s.comparisons], sweep_dir / "comparisons.csv")
    lines += [
        "`results.csv`: one row per run; `comparisons.csv`: the verdicts' numbers, unrounded; "
        "`lossheads.report.load(sweep_dir)` reads both as pandas DataFrames.",
        "",
    ]
    report = sweep_dir / "report.md"
    earlier = linked_figures(report)
    with atomic_text(report) as handle:
        handle.write("\n".join(lines))
    for stale in earlier - linked_figures(report):  # an earlier report's figure that this one does not show
        (sweep_dir / stale).unlink(missing_ok=True)
    return report, summary_lines


def linked_figures(report: Path) -> set[str]:
    """The PNG files a report.md shows (`![name](name.png)`, beside it): those it drew."""
    try:
        text = report.read_text(errors="replace")
    except OSError:
        return set()
    return {name for name in re.findall(r"^!\[[^\]]*\]\(([^()/\\]+\.png)\)$", text, re.MULTILINE)}


def draw_figures(sections: list[Section], out: Path, runs: list[Run]) -> list[list[str]]:
    """Each dataset's figures, drawn together (`drawing.drawn`), as markdown image lines; matplotlib is optional."""
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        return [["matplotlib is not installed: `pip install lossheads[report]` for the plots.", ""]] * len(sections)
    from lossheads.report import drawing, plots

    slugs: set[str] = set()
    calls = [plots.dataset_figures(section, out, slugs) for section in sections]
    of = [section for section, dataset in zip(sections, calls, strict=True) for _ in dataset]
    made = iter(drawing.drawn([call for dataset in calls for call in dataset], of, runs, drawing.draw))
    found = [[p for p in (next(made) for _ in dataset) if p is not None] for dataset in calls]
    return [["### Plots", "", *(f"![{p.stem}]({p.name})" for p in paths), ""] if paths else [] for paths in found]
