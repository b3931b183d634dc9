"""The report's two doors: a Hydra callback at the end of a multirun, and a command for any sweep folder.

Hydra imports the callback on every `python train.py`; the report's own modules (numpy, scipy,
torch) are imported only when a report is written, so that a refused command is answered quickly."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lossheads.config.validators import ConfigError

DEFAULT_METRIC = "val/auroc"


class ReportCallback(Callback):
    """Hydra callback: when a multirun ends, write the report into its sweep folder. A ranking metric
    that is not a validation metric is refused before the first job runs."""

    def __init__(self, metric: str = DEFAULT_METRIC) -> None:
        self.metric = metric

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from lossheads.report.markdown import check_metric

        try:
            check_metric(self.metric)
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from lossheads.report.markdown import write_report

        report = write_report(Path(config.hydra.sweep.dir), self.metric)
        print(f"report: {report}")


def main(argv: list[str] | None = None) -> None:
    from lossheads.report.markdown import check_metric, write_report

    parser = argparse.ArgumentParser(
        description="Write report.md, results.csv, comparisons.csv and plots for a sweep folder."
    )
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument(
        "--metric",
        default=DEFAULT_METRIC,
        help="the validation metric that ranks configurations; verdicts compare its test counterpart",
    )
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.exit(2, f"error: sweep_dir={args.sweep_dir} is not a folder: give a multirun folder\n")
    try:
        check_metric(args.metric)
    except ConfigError as error:
        parser.exit(2, f"error: {str(error).replace('report.metric=', '--metric=')}\n")
    print(f"report: {write_report(args.sweep_dir, args.metric)}")
