"""`lossheads.report.load(sweep_dir)`: a sweep's runs and comparisons as pandas DataFrames, for a notebook.

Computed from the job folders as the report is (nothing is read back from report.md or the CSV files),
with the sweep's own report settings unless others are given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from lossheads.report.markdown import COMPARISON_COLUMNS, comparison_record
from lossheads.report.settings import of_sweep, settings
from lossheads.report.verdicts import analyse


class Loaded(NamedTuple):
    runs: pd.DataFrame  # one row per run: job, status, dataset, arm, seed, task, overrides, metrics, panel
    comparisons: pd.DataFrame  # one row per (dataset, arm, metric): comparisons.csv's columns


def load(sweep_dir: str | Path, **report: Any) -> Loaded:
    """`runs, comparisons = load("outputs/multirun/...")`; keyword arguments as the `report:` node
    (`baseline="loss=ce"`, `metrics=["balanced_acc"]`, `margin=0.02`, `metric="val/nll"`)."""
    sweep_dir = Path(sweep_dir)
    analysis = analyse(sweep_dir, settings(**{**of_sweep(sweep_dir), **report}))
    values = {job: v for s in analysis.sections for job, v in s.values.items()}
    rows = []
    for run in analysis.runs:
        row = {
            "job": run.job, "status": run.status, "reason": run.reason, "dataset": run.dataset,
            "arm": run.config, "seed": run.seed_label, "task": run.task if run.status == "ok" else "",
            "control": run.config == analysis.control,
        }  # fmt: skip
        row |= {f"override.{k}": v for k, v in run.overrides.items()}
        row |= {k: v for k, v in run.metrics.items() if "/" in k}
        row |= {f"panel/{k}": v for k, v in values.get(run.job, {}).items()}
        rows.append(row)
    comparisons = [comparison_record(c) for s in analysis.sections for c in s.comparisons]
    return Loaded(pd.DataFrame(rows), pd.DataFrame(comparisons, columns=list(COMPARISON_COLUMNS)))
