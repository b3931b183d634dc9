"""The verdict of a sweep folder: report.md (a summary first), results.csv, comparisons.csv and plots.

Written by a Hydra callback when a multirun ends (`ReportCallback`), or by hand:
`python scripts/report.py SWEEP_DIR`, `lossheads-report SWEEP_DIR` or `python -m lossheads.report SWEEP_DIR`;
`load(SWEEP_DIR)` returns the runs and comparisons as pandas DataFrames. Modules by concern: `sweeps`
(the grid Hydra launched), `collect` (job folders -> runs), `arms` (datasets, arms, replicates, the
control), `panel` (the metrics per task, from each job's files), `stats` (the sign-flip test and its
interval), `verdicts` (comparisons and summary sentences), `settings` (the `report:` node), `markdown`,
`plots`, `load`, `cli`. docs/verdicts.md is the reference.
"""

from lossheads.report.cli import ReportCallback, main
from lossheads.report.collect import collect
from lossheads.report.load import Loaded, load
from lossheads.report.markdown import write_report

__all__ = ["Loaded", "ReportCallback", "collect", "load", "main", "write_report"]
