"""The verdict of a sweep folder: report.md (a summary first), results.csv, comparisons.csv and plots.

Written by a Hydra callback when a multirun ends (`ReportCallback`), or by hand:
`python scripts/report.py SWEEP_DIR`, `lossheads-report SWEEP_DIR` or `python -m lossheads.report SWEEP_DIR`;
`load(SWEEP_DIR)` returns the runs and comparisons as pandas DataFrames. Modules by concern: `sweeps`
(the grid Hydra launched), `collect` (job folders -> runs), `arms` (datasets, arms, replicates, the
control), `panel` (the metrics per task, from each job's files), `stats` (the sign-flip test and its
interval), `verdicts` (comparisons and summary sentences), `settings` (the `report:` node), `markdown`,
`plots`, `frames` (`load`), `cli`. docs/verdicts.md is the reference.


Hydra imports this package for its callback on every `python train.py`, so only `cli` is imported
here; `load`, `collect` and `write_report` (pandas, scipy, torch) load when first used.
"""

from typing import Any

from lossheads.report.cli import ReportCallback, main

__all__ = ["Loaded", "ReportCallback", "collect", "load", "main", "write_report"]
LAZY = {"Loaded": "lossheads.report.frames", "load": "lossheads.report.frames", "collect": "lossheads.report.collect",
        "write_report": "lossheads.report.markdown"}  # fmt: skip


def __getattr__(name: str) -> Any:
    """`lossheads.report.load` and friends, imported on first use (PEP 562)."""
    if name in LAZY:
        import importlib

        return getattr(importlib.import_module(LAZY[name]), name)
    raise AttributeError(f"module 'lossheads.report' has no attribute {name!r}")
