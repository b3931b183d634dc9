"""Benchmark: the wait for a verdict. `python train.py -m experiment=compare_binary 'seed=range(1,11)'`
(12 arms x 10 seeds = 120 runs, then the report) under Hydra's basic launcher and under
`hydra/launcher=seeds`, in one bench run, each in a fresh process and a fresh sweep folder. Each basic
sweep runs between two vectorized ones (V B V B V ... for --repeats), and its speed-up divides it by
their mean: a machine whose speed drifts during the minutes of a basic sweep moves both alike.

The time is the sweep's own, from Hydra's multirun start to the end of the report (scripts/bench_seeds.py's
SweepTimer). Both sweeps must finish every job (metrics.json status ok) and write report.md; where the two
reports' verdicts (comparisons.csv, per dataset, arm and metric) differ, a warning line says which.
Last line: `bench-verdict: basic=...s vectorized=...s speedup=...` (medians of the times, and the median
of the speed-ups).

    python scripts/bench_verdict.py                   # 10 seeds, about 3 minutes on 2 cores
    python scripts/bench_verdict.py --repeats 3       # 3 basic sweeps, each between two vectorized ones: medians
    python scripts/bench_verdict.py trainer.max_epochs=5 data.n_samples=4000   # overrides for both sweeps
    python scripts/bench_verdict.py 'seed=range(1,21)'   # 20 seeds: an override typed here wins over the default
    python scripts/bench_verdict.py --device cuda     # on a GPU, data resident there
    python scripts/bench_verdict.py --quick           # 8 jobs: keeps the script working
    python scripts/bench.py --verdict                 # the same, from the main benchmark
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench_seeds import compile_project, job_statuses, timed_sweep

LAUNCHERS = {"basic": [], "vectorized": ["hydra/launcher=seeds"]}
FULL = ["seed=range(1,11)"]
# 8 jobs (one dataset, the one-logit arms, 2 seeds, 1 epoch) instead of 120: the script kept working
QUICK = ["seed=1,2", "trainer.max_epochs=1", "data=breast_cancer", "loss=bce_logits,bce"]

Verdicts = dict[tuple[str, str, str], str]  # (dataset, arm, metric) -> verdict, as comparisons.csv has them


@dataclass
class Sweep:
    seconds: float
    jobs: int
    verdicts: Verdicts


def run_sweep(folder: Path, launcher: str, device: str, overrides: list[str]) -> Sweep:
    """One timed sweep of experiment=compare_binary; ends the benchmark where a job did not finish or the
    report is missing."""
    seconds = timed_sweep(folder, ["experiment=compare_binary", "print_config=false",
                                   "callbacks.progress_bar.refresh_rate=0", f"trainer.accelerator={device}",
                                   *LAUNCHERS[launcher], *overrides], launcher)  # fmt: skip
    statuses = job_statuses(folder)
    if not statuses or statuses.count("ok") != len(statuses):
        raise SystemExit(f"the {launcher} sweep finished {statuses.count('ok')} of {len(statuses)} jobs: {folder}")
    report, comparisons = folder / "report.md", folder / "comparisons.csv"
    if not (report.is_file() and comparisons.is_file()):
        raise SystemExit(f"the {launcher} sweep wrote no report.md and comparisons.csv in {folder}")
    if report.stat().st_mtime > (folder / "seconds.json").stat().st_mtime:
        raise SystemExit(f"the {launcher} sweep's timer stopped before its report was written: the time leaves it out")
    with comparisons.open(newline="") as handle:
        verdicts = {(r["data"], r["config"], r["metric"]): r["verdict"] for r in csv.DictReader(handle)}
    return Sweep(seconds, len(statuses), verdicts)


def differences(basic: Verdicts, vectorized: Verdicts) -> list[str]:
    """One warning line per (dataset, arm, metric) whose verdict differs between the two reports."""
    lines = []
    for key in sorted(basic.keys() | vectorized.keys()):
        if basic.get(key) != vectorized.get(key):
            data, arm, metric = key
            lines.append(f"warning: verdicts differ on {data}, {arm}, {metric}: basic {basic.get(key, 'absent')!r}, "
                         f"vectorized {vectorized.get(key, 'absent')!r}")  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (trainer.accelerator)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="basic sweeps, each between two vectorized ones (default 1)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help=f"{' '.join(QUICK)}: seconds, to keep the script working")
    parser.add_argument("overrides", nargs="*", help="train.py overrides for both sweeps, e.g. trainer.max_epochs=5")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"argument --repeats: {args.repeats} is not a whole number >= 1")
    overrides = [*(QUICK if args.quick else FULL), *args.overrides]
    print(f"experiment=compare_binary {' '.join(overrides)} device={args.device} repeats={args.repeats}", flush=True)
    compile_project()
    sweeps: dict[str, list[Sweep]] = {launcher: [] for launcher in LAUNCHERS}
    warnings: list[str] = []

    def run(launcher: str, folder: Path) -> Sweep:
        done = sweeps[launcher]
        done.append(run_sweep(folder / f"{launcher}-{len(done)}", launcher, args.device, overrides))
        print(f"{launcher:>10} launcher, sweep {len(done)}: {done[-1].jobs} jobs ok, report.md with "
              f"{len(done[-1].verdicts)} comparisons, {done[-1].seconds:.1f} s", flush=True)  # fmt: skip
        return done[-1]

    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        before = run("vectorized", Path(tmp))
        for _ in range(args.repeats):  # each basic sweep between two vectorized ones: a drift of speed cancels
            basic = run("basic", Path(tmp))
            after = run("vectorized", Path(tmp))
            if basic.jobs != after.jobs:
                raise SystemExit(f"the basic sweep ran {basic.jobs} jobs, the vectorized one {after.jobs}")
            warnings += [line for line in differences(basic.verdicts, after.verdicts) if line not in warnings]
            ratios.append(basic.seconds / statistics.fmean([before.seconds, after.seconds]))
            before = after
    agree = f"verdicts: the two reports agree on all {len(sweeps['basic'][0].verdicts)} comparisons"
    print("\n".join(warnings) or agree)
    basic_time, vectorized_time = (statistics.median(s.seconds for s in sweeps[launcher]) for launcher in LAUNCHERS)
    for launcher, done in sweeps.items():
        times = [s.seconds for s in done]
        print(f"{launcher}: median of {len(done)} sweeps, {min(times):.1f}-{max(times):.1f} s")
    print(f"speed-ups, each basic sweep against the mean of the vectorized sweeps before and after it: "
          f"{', '.join(f'{r:.2f}' for r in ratios)}")  # fmt: skip
    print(f"bench-verdict: basic={basic_time:.1f}s vectorized={vectorized_time:.1f}s "
          f"speedup={statistics.median(ratios):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
