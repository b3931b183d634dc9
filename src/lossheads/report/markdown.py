"""report.md, results.csv and comparisons.csv of a sweep folder: one section per dataset and task,
configurations ranked by a validation metric, test metrics shown, verdicts on the test metric."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from lossheads.config.validators import ConfigError
from lossheads.report import stats, thresholds
from lossheads.report.collect import STATUSES, Run, collect, finite, higher_is_better, ranking, sections, summarize

TEST_COLUMNS = ("acc", "f1", "auroc", "ap", "nll", "brier", "ece")
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
)


def check_metric(metric: str) -> str:
    """The ranking metric must be a validation one: ranking on test would select on the test split."""
    if not metric.startswith("val/") or metric == "val/loss":
        fix = (
            "each arm's own loss is not comparable across arms"
            if metric == "val/loss"
            else "selection is on validation"
        )
        raise ConfigError(
            f"report.metric={metric!r} is not valid: {fix}; rank by a validation metric such as "
            "val/auroc, val/nll or val/acc (the verdicts compare its test counterpart)"
        )
    return metric


def md_cell(text: str) -> str:
    """Text safe inside a markdown table cell (refusal reasons list options as a|b)."""
    return text.replace("|", "\\|")


def number(value: float, digits: int = 4, signed: bool = False) -> str:
    return "n/a" if not finite(value) else f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def mean_cell(runs: list[Run], metric: str) -> str:
    """mean ± std over seeds; the count of seeds when some had no defined value."""
    mean, std, n = summarize([r.metrics.get(metric) for r in runs])
    if n == 0:
        return "n/a"
    return f"{mean:.4f} ± {std:.4f}" + (f" (n={n})" if n < len(runs) else "")


def results_table(configs: dict[str, list[Run]], order: list[str], metric: str | None) -> list[str]:
    present = [
        f"test/{m}" for m in TEST_COLUMNS if any(f"test/{m}" in r.metrics for rs in configs.values() for r in rs)
    ]
    columns = ([metric] if metric else []) + present
    lines = ["| rank | configuration | seeds | " + " | ".join(columns) + " |", "|---" * (len(columns) + 3) + "|"]
    for i, config in enumerate(order):
        runs = configs[config]
        cells = [mean_cell(runs, m) for m in columns]
        name = md_cell(config)
        if metric and i == 0:
            name, cells[0] = f"**{name}**", f"**{cells[0]}**"
        lines.append(f"| {i + 1 if metric else '-'} | {name} | {len(runs)} | " + " | ".join(cells) + " |")
    return lines


def compare(dataset: str, configs: dict[str, list[Run]], order: list[str], metric: str) -> list[dict[str, Any]]:
    """The validation-best configuration against each other one on `metric`, paired by replicate."""
    baseline = order[0]
    base = {r.replicate: r.metrics.get(metric) for r in configs[baseline]}
    rows = []
    for config in order[1:]:
        mine = {r.replicate: r.metrics.get(metric) for r in configs[config]}
        common = sorted(k for k in set(mine) & set(base) if finite(mine[k]) and finite(base[k]))
        result = stats.paired([mine[k] for k in common], [base[k] for k in common])
        rows.append({"data": dataset, "config": config, "baseline": baseline, "metric": metric, "result": result})
    for row, adjusted in zip(rows, stats.holm([r["result"].p for r in rows]), strict=True):
        row["result"].p_adjusted = adjusted
        row["verdict"] = stats.verdict(row["result"], higher_is_better(metric))
    return rows


def comparisons_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| configuration | seeds paired | difference vs best | 95% CI | p | p (Holm) | detectable | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        r: stats.Paired = row["result"]
        ci = "n/a" if not finite(r.ci_low) else f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}]"
        lines.append(
            f"| {md_cell(row['config'])} | {r.n} | {number(r.mean_diff, signed=True)} | {ci} | "
            f"{number(r.p, 3)} | {number(r.p_adjusted, 3)} | {number(r.min_detectable)} | "
            f"{row['verdict']} |"
        )
    return lines


def verdict_section(
    dataset: str, configs: dict[str, list[Run]], order: list[str] | None, metric: str, comparisons: list[dict[str, Any]]
) -> list[str]:
    if order is None:
        return [
            f"No run here has {metric} (evaluate-only runs, `train=false`, have no validation metrics): the "
            "configurations are listed in sweep order, not ranked, and no verdict is drawn, since ranking "
            "by a test metric would select on the test split.",
            "",
        ]
    if len(order) < 2:
        return ["One configuration: nothing to compare.", ""]
    test_metric = "test/" + metric.removeprefix("val/")
    rows = compare(dataset, configs, order, test_metric)
    comparisons.extend(rows)
    return [
        f"Each configuration against the validation-best **{md_cell(order[0])}** on {test_metric}, paired "
        f"by seed over the seeds both ran: difference (configuration − best; "
        f"{'higher' if higher_is_better(test_metric) else 'lower'} is better), its 95% t-interval, the "
        f"paired t-test p-value and Holm's adjustment over the comparisons of this dataset ({len(rows)}); "
        "the verdict follows the adjusted p at 0.05, and needs at least 3 common seeds. *detectable*: the "
        "smallest true difference these seeds would detect with 80% power (two-sided paired t-test at "
        "0.05, noncentral t, from the paired differences' sd, before Holm's adjustment).",
        "",
        *comparisons_table(rows),
        "",
    ]


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


def write_results_csv(runs: list[Run], path: Path) -> None:
    keys = sorted({k for r in runs for k in r.overrides})
    metric_keys = sorted({k for r in runs for k in r.metrics if "/" in k})
    with path.open("w", newline="") as handle:
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
                ]
            )


def write_comparisons_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COMPARISON_COLUMNS)
        for row in rows:
            r: stats.Paired = row["result"]
            values = [r.n, r.mean_diff, r.ci_low, r.ci_high, r.p, r.p_adjusted, r.min_detectable]
            writer.writerow(
                [
                    row["data"],
                    row["config"],
                    row["baseline"],
                    row["metric"],
                    *("" if isinstance(v, float) and math.isnan(v) else v for v in values),
                    row["verdict"],
                ]
            )


def write_report(sweep_dir: Path, metric: str = "val/auroc") -> Path:
    """Write report.md, results.csv, comparisons.csv and the plots into `sweep_dir`; returns report.md."""
    check_metric(metric)
    runs = collect(sweep_dir)
    counts = {s: sum(r.status == s for r in runs) for s in STATUSES}
    lines = [
        f"# Sweep report: {sweep_dir}",
        "",
        f"{len(runs)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + ".",
        "",
        f"Within each dataset, configurations are ranked by **{metric}** (mean over seeds): selection on "
        "validation; the validation-best is in bold. The other columns are test metrics, mean ± std over "
        "seeds; n/a where undefined, with (n=k) where only k seeds had a value. `acc` is micro; F1, AUROC "
        "and AP are macro on multi-class and multi-label data. Datasets are never compared.",
        "",
    ]
    comparisons: list[dict[str, Any]] = []
    for (dataset, task), configs in sections(runs).items():
        order = ranking(configs, metric)
        lines += [f"## {dataset} ({task})", "", *results_table(configs, order or list(configs), order and metric), ""]
        lines += ["### Verdicts", "", *verdict_section(dataset, configs, order, metric, comparisons)]
        if task in ("binary", "multilabel"):
            lines += ["### Threshold study", "", *threshold_section(configs, order or list(configs))]
        if task == "multilabel":
            lines += per_label_section(configs, order or list(configs))
        lines += plot_lines(dataset, configs, order or list(configs), sweep_dir)
    if not any(r.status == "ok" for r in runs):
        lines += ["No run finished: nothing to rank.", ""]
    skipped = [r for r in runs if r.status != "ok"]
    if skipped:
        lines += ["## Jobs without a result", "", "| job | overrides | status | reason |", "|---|---|---|---|"]
        for r in skipped:
            overrides = " ".join(f"{k}={v}" for k, v in r.overrides.items())
            lines.append(f"| {r.job} | {md_cell(overrides)} | {r.status} | {md_cell(r.reason)} |")
        lines.append("")
    write_results_csv(runs, sweep_dir / "results.csv")
    write_comparisons_csv(comparisons, sweep_dir / "comparisons.csv")
    lines += ["`results.csv`: one row per run; `comparisons.csv`: the verdicts' numbers, unrounded.", ""]
    report = sweep_dir / "report.md"
    report.write_text("\n".join(lines))
    return report


def plot_lines(dataset: str, configs: dict[str, list[Run]], order: list[str], out: Path) -> list[str]:
    """The dataset's figures, each a markdown image line; matplotlib is optional."""
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        return ["matplotlib is not installed: `pip install lossheads[report]` for the plots.", ""]
    from lossheads.report import plots

    made = plots.dataset_figures(dataset, configs, order, out)
    return ["### Plots", "", *(f"![{p.stem}]({p.name})" for p in made), ""] if made else []
