"""The comparison report of a sweep folder: report.md, results.csv, comparisons.csv and PNG plots.

Written by a Hydra callback when a multirun ends (`ReportCallback`), or by hand:
`python scripts/report.py SWEEP_DIR` or `python -m lossheads.report SWEEP_DIR`. Modules by
concern: `collect` (job folders -> runs, datasets, configurations), `stats` (paired verdicts),
`thresholds`, `markdown` (report.md and the CSV files), `plots`, `cli` (the callback and the command).

Hydra imports this package for its callback on every `python train.py`, so it imports only `cli`,
which loads the report's modules (numpy, scipy, torch) when a report is written.
"""

from lossheads.report.cli import ReportCallback, main

__all__ = ["ReportCallback", "main"]
