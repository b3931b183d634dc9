"""The report's two doors: a Hydra callback at the end of a multirun, and a command for any sweep folder.
Hydra imports the callback on every command, so what writes the report (scipy, torch) loads only to write it."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from lossheads.config.validators import EXIT_BAD_INPUT, ConfigError
from lossheads.report.arms import check_baseline
from lossheads.report.drawing import expect
from lossheads.report.settings import DEFAULT_METRIC, of_sweep, settings
from lossheads.report.sweeps import swept_values


class ReportCallback(Callback):
    """Hydra callback: when a multirun ends, write the report into its sweep folder and print its summary.
    Settings that cannot work (a test metric to rank by, an unknown panel metric) are refused before the
    first job runs."""

    def __init__(self, metric: str = DEFAULT_METRIC, baseline: Any = None, metrics: Any = None, margin: Any = None):
        plain = [OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for v in (metrics, margin)]
        self.values = {"metric": metric, "baseline": baseline, "metrics": plain[0], "margin": plain[1]}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            chosen = settings(**self.values)
            if config is not None:
                swept = swept_values(OmegaConf.to_container(config.hydra, resolve=False))
                check_baseline(self.values["baseline"], swept or {})
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        if config is not None:  # the seeds launcher may draw some of its figures ahead (`drawing`)
            expect(Path(config.hydra.sweep.dir), chosen)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from lossheads.report.markdown import write  # scipy and torch: not on every command's path
        from lossheads.run.stops import REPORT_STAGE, StopSignals

        StopSignals.stage = REPORT_STAGE  # a stop now says that only the report is left to write
        try:
            report, summary = write(Path(config.hydra.sweep.dir), settings(**self.values))
        except ConfigError as error:  # a baseline that names no arm: the jobs' folders are kept
            print(f"error: {error}; write the report with python -m lossheads.report SWEEP_DIR --baseline ...")
            return
        finally:
            StopSignals.stage = None
        print("\n".join(["", *summary, "", f"report: {report}"]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Write report.md, results.csv, comparisons.csv and plots for a sweep folder. Settings "
        "default to the sweep's own (the report: node of its multirun.yaml)."
    )
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--metric", help=f"validation metric of the rank column (default {DEFAULT_METRIC})")
    parser.add_argument("--baseline", help="the control, e.g. 'loss=ce' (default: the first value of each swept key)")
    parser.add_argument("--metrics", help="the panel, comma-separated, e.g. balanced_acc,worst_recall")
    parser.add_argument("--margin", type=float, help="one equivalence margin for every metric")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.exit(EXIT_BAD_INPUT, f"error: sweep_dir={args.sweep_dir} is not a folder: give a multirun folder\n")
    if not (args.sweep_dir / "multirun.yaml").is_file() and any(
        (args.sweep_dir / mark).exists() for mark in (".hydra", "metrics.json", "failure.json")
    ):
        reason = (f"error: sweep_dir={args.sweep_dir} is a run folder, not a sweep folder: give the folder of a "
                  "multirun (it holds multirun.yaml and one folder per job); a run's own numbers are in its "
                  "metrics.json\n")  # fmt: skip
        parser.exit(EXIT_BAD_INPUT, reason)
    given = {k: v for k in ("metric", "baseline", "metrics", "margin") if (v := getattr(args, k)) is not None}
    stopped_by: list[signal.Signals] = []

    def stop(signum: int, frame: object) -> None:  # Ctrl-C or SIGTERM: the files being written are whole
        stopped_by.append(signal.Signals(signum))
        raise KeyboardInterrupt

    before = {stop_signal: signal.signal(stop_signal, stop) for stop_signal in (signal.SIGINT, signal.SIGTERM)}
    try:
        from lossheads.report.markdown import write  # torch and scipy: seconds, which a Ctrl-C may cut short

        report, summary = write(args.sweep_dir, settings(**{**of_sweep(args.sweep_dir), **given}))
    except KeyboardInterrupt:  # each file is whole or not written: the command again writes them all
        name = (stopped_by or [signal.SIGINT])[0]
        parser.exit(128 + name, f"interrupted by {name.name}: run `python -m lossheads.report {args.sweep_dir}` "
                                "again for the whole report\n")  # fmt: skip
    except ConfigError as error:
        message = getattr(error, "short", None) or str(error)  # a full disk: no run folder to choose here
        for key in given:
            message = message.replace(f"report.{key}=", f"--{key}=")
        parser.exit(EXIT_BAD_INPUT, f"error: {message}\n")
    finally:
        for stop_signal, handler in before.items():
            signal.signal(stop_signal, handler)
    print("\n".join([*summary, f"report: {report}"]))
    if stopped_by:  # the stop landed where Python ignores an exception (a finalizer): the report ran to its end
        parser.exit(128 + stopped_by[0], f"interrupted by {stopped_by[0].name} as the report ended: it is written "
                                         "whole\n")  # fmt: skip
