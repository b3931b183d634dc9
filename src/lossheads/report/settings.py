"""The report's settings, the `report:` node of the config: what ranks the table (information only), the
control, the panel and the margins. A sweep folder's multirun.yaml holds the node the sweep ran with, so
a report written later by hand uses the same ones unless told otherwise."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossheads.config.validators import ConfigError
from lossheads.report.panel import METRICS, Metric

DEFAULT_METRIC = "val/auroc"


@dataclass(frozen=True)
class Settings:
    metric: str = DEFAULT_METRIC  # the validation metric of the table's rank column
    baseline: str | None = None  # the control; None: the first value of each swept key
    metrics: list[str] | None = None  # the panel; None: the task's own
    margins: dict[str, float] = field(default_factory=dict)  # per metric name; missing: the kind's default
    margin: float | None = None  # one margin for every metric

    def margin_of(self, metric: Metric) -> float:
        return self.margins.get(metric.name, self.margin if self.margin is not None else metric.margin)


def check_metric(metric: str) -> str:
    """The rank column's metric must be a validation one: ranking on test would select on the test split."""
    if not metric.startswith("val/") or metric == "val/loss":
        fix = (
            "each arm's own loss is not comparable across arms"
            if metric == "val/loss"
            else "selection is on validation"
        )
        raise ConfigError(
            f"report.metric={metric!r} is not valid: {fix}; rank by a validation metric such as "
            "val/auroc, val/nll or val/acc"
        )
    return metric


def settings(metric: str = DEFAULT_METRIC, baseline: Any = None, metrics: Any = None, margin: Any = None) -> Settings:
    """Checked settings from the config's values (or the command line's): one ConfigError line each."""
    check_metric(str(metric))
    if isinstance(metrics, str):
        metrics = [m for m in metrics.replace(",", " ").split() if m]
    if metrics is not None:
        metrics = [str(m) for m in metrics]
        unknown = [m for m in metrics if m not in METRICS]
        if unknown or not metrics:
            raise ConfigError(
                f"report.metrics={metrics}: {', '.join(unknown) or 'empty'} is not a panel metric; "
                f"choose from {', '.join(METRICS)}, e.g. report.metrics=[balanced_acc,worst_recall]"
            )
    one, per_metric = None, {}
    if isinstance(margin, dict):
        per_metric = {str(k): _margin(v, f"report.margin.{k}") for k, v in margin.items()}
        unknown = [k for k in per_metric if k not in METRICS]
        if unknown:
            raise ConfigError(f"report.margin.{unknown[0]}: not a panel metric; choose from {', '.join(METRICS)}")
    elif margin is not None:
        one = _margin(margin, "report.margin")
    return Settings(str(metric), str(baseline) if baseline else None, metrics, per_metric, one)


def _margin(value: Any, key: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise ConfigError(f"{key}={value!r} is not a margin: give a number >= 0, e.g. {key}=0.01")
    return number


def of_sweep(sweep_dir: Path) -> dict[str, Any]:
    """The `report:` node the sweep ran with (multirun.yaml), as plain values; empty where there is none."""
    from lossheads.report.sweeps import multirun_record

    found = (multirun_record(sweep_dir) or {}).get("report")
    if not isinstance(found, dict):
        return {}
    return {k: v for k, v in found.items() if k in ("metric", "baseline", "metrics", "margin") and v is not None}
