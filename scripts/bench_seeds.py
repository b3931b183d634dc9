"""Benchmark: a K-seed sweep of the default job, one job after another (Hydra's basic launcher, one
process) against the same sweep with `hydra/launcher=seeds` (the seeds trained as one vectorized
model), same epochs, same machine, measured in the same run.

Each sweep runs as `python train.py -m seed=1..K ...` in a fresh process; the time measured is the
sweep's own, from Hydra's multirun start to its end (a Hydra callback records it), so the
interpreter's start-up and imports, which both pay once, are left out. The report is off in both.
Last line: `bench-seeds: speedup@3=... speedup@10=... speedup@20=...` (basic / seeds).

    python scripts/bench_seeds.py               # K = 3, 10, 20 (about 3 minutes on 2 cores)
    python scripts/bench_seeds.py --repeats 3   # medians of 3 sweeps each, interleaved
    python scripts/bench_seeds.py --seeds 10 --device cuda   # on a GPU, data resident there
    python scripts/bench_seeds.py data=synthetic_binary data.n_samples=20000 --seeds 10   # more steps a run
    python scripts/bench.py --seeds              # the same, from the main benchmark
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

ROOT = Path(__file__).resolve().parents[1]


class SweepTimer(Callback):
    """Writes the multirun's wall time (seconds) to `path`: from its start to the end of the command's
    work, the report included. Hydra calls the callbacks' on_multirun_end in reverse order (1.3), so a
    timer added after the report would stop before the report is written; it stops at interpreter exit
    instead, after every callback whatever their order, and before nothing but the interpreter's teardown."""

    def __init__(self, path: str) -> None:
        self.path, self.start = path, 0.0

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        self.start = time.perf_counter()

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        atexit.register(self.stop)

    def stop(self) -> None:
        Path(self.path).write_text(json.dumps(time.perf_counter() - self.start))


def compile_project() -> None:
    """Python's bytecode for the project's modules, as a run finds it after the first: each timed sweep
    is a fresh process that would otherwise compile the modules it imports lazily inside the timed window,
    a cost both launchers pay once that says nothing of either (about 50 ms). Where
    PYTHONDONTWRITEBYTECODE is set, no run writes it, so the benchmark does, once, as `compileall` does."""
    import compileall

    compileall.compile_dir(str(ROOT / "src"), quiet=1)


def timed_sweep(folder: Path, overrides: list[str], name: str) -> float:
    """`python train.py -m OVERRIDES` in a fresh process, its sweep folder `folder`, with SweepTimer on:
    the sweep's seconds, which leave out the interpreter's start-up and imports (both launchers pay them once).
    A sweep that fails or does not stop the timer ends the benchmark with its error."""
    timer = folder / "seconds.json"
    timing = [f"hydra.sweep.dir={folder}", "+hydra.callbacks.timer._target_=bench_seeds.SweepTimer",
              f"+hydra.callbacks.timer.path={timer}"]  # fmt: skip
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT / "scripts"), os.environ.get("PYTHONPATH", "")])}  # and the caller's
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", *timing, *overrides], capture_output=True,
                            text=True, env={**os.environ, **env})  # fmt: skip
    if result.returncode != 0 or not timer.is_file():
        raise SystemExit(f"the {name} sweep failed:\n{result.stderr[-2000:]}")
    return json.loads(timer.read_text())


def job_statuses(folder: Path) -> list[str | None]:
    """Each job folder's metrics.json status (None where a job left none): "ok" for a finished run."""
    jobs = [p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()]
    return [json.loads(m.read_text()).get("status") if (m := p / "metrics.json").is_file() else None for p in jobs]


def sweep_seconds(folder: Path, seeds: int, launcher: str, device: str, epochs: int | None, extra: list[str]) -> float:
    overrides = [
        f"seed=range(1,{seeds + 1})", "~hydra.callbacks.report",
        "print_config=false", "callbacks.progress_bar.refresh_rate=0", f"trainer.accelerator={device}",
        *([f"trainer.max_epochs={epochs}"] if epochs else []),
        *(["hydra/launcher=seeds"] if launcher == "seeds" else []), *extra,
    ]  # fmt: skip
    seconds = timed_sweep(folder, overrides, launcher)
    statuses = job_statuses(folder)
    if statuses.count("ok") != seeds:
        raise SystemExit(f"the {launcher} sweep finished {statuses.count('ok')} of {seeds} jobs")
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 10, 20], metavar="K")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (trainer.accelerator)")
    parser.add_argument("--epochs", type=int, help="trainer.max_epochs (default: the default job's, 20)")
    parser.add_argument("--repeats", type=int, default=1, help="sweeps per launcher and K, interleaved: medians")
    parser.add_argument("--quick", action="store_true", help="K = 2, 2 epochs: seconds, to keep the script working")
    parser.add_argument("overrides", nargs="*", help="more train.py overrides for both sweeps, e.g. data=digits")
    args = parser.parse_args(argv)
    seeds, epochs = ([2], 2) if args.quick else (args.seeds, args.epochs)
    compile_project()
    line = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in seeds:
            times: dict[str, list[float]] = {"basic": [], "seeds": []}
            for repeat in range(args.repeats):  # interleaved: a change of load touches both alike
                for launcher, found in times.items():
                    folder = Path(tmp) / f"{launcher}{k}-{repeat}"
                    found.append(sweep_seconds(folder, k, launcher, args.device, epochs, args.overrides))
            basic, together = statistics.median(times["basic"]), statistics.median(times["seeds"])
            spread = "" if args.repeats == 1 else (
                f" (medians of {args.repeats}: basic {min(times['basic']):.1f}-{max(times['basic']):.1f} s, "
                f"seeds {min(times['seeds']):.1f}-{max(times['seeds']):.1f} s)")  # fmt: skip
            print(f"{k:3d} seeds: basic launcher {basic:6.1f} s ({basic / k:.2f} s a job), "
                  f"hydra/launcher=seeds {together:6.1f} s: {basic / together:.1f}x{spread}", flush=True)  # fmt: skip
            line.append(f"speedup@{k}={basic / together:.2f}")
    print("bench-seeds: " + " ".join(line))


if __name__ == "__main__":
    main()
