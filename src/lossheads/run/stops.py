"""Every stop is recorded: Ctrl-C and SIGTERM in any phase become one exception the entry point
records (metrics.json with the status, the resume command) before it exits 130 / 143.

Python turns SIGINT into `KeyboardInterrupt` wherever the program is; SIGTERM would kill the process
without a word, so `install` makes it raise Lightning's `SIGTERMException` the same way. Lightning's
own SIGTERM handler (registered while a trainer runs) calls the handler found before it, this one,
so the stop arrives at once in every phase: sanity check, training, validation, test, between runs.
A second signal while the first stop is being recorded is ignored (a SIGKILL still ends it).

A sweep whose jobs run in other processes (`hydra/launcher=joblib`) passes its stop on: each running
job holds its folder's lock with its PID (`lossheads.run.lock`), gets the same signal, records its
stop and lets go of the folder; the sweep waits for that, then exits. A worker that has recorded its
stop starts no other job: it waits for the sweep to end it (`park`).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

from lightning.pytorch.utilities.exceptions import SIGTERMException

from lossheads.run.lock import held_jobs, is_held

EXIT_SIGINT, EXIT_SIGTERM = 130, 143  # 128 + the signal's number, as shells report them
NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}
STOPPING = ".stopping"  # in a sweep folder while its process stops: no worker starts a job there

SWEEP_PID = "LOSSHEADS_SWEEP_PID"  # the sweep process's PID, in its environment and its workers'
WAIT_FOR_JOBS = 120.0  # seconds a stopped sweep waits for its running jobs to record their stop
PARK_SECONDS = 600.0  # the longest a stopped worker waits for its sweep to end it


REPORT_STAGE = "report"  # StopSignals.stage while a sweep's report is written (`report.cli.ReportCallback`)


class StopSignals:
    """Which signal stopped the run (None: none did)."""

    received: signal.Signals | None = None
    trainer: Any = None  # the trainer at work, whose stage names the phase a stop came in
    phase = ""  # that stage when the signal came (Lightning clears it while it handles the stop)
    stage: str | None = None  # the stage at work where no trainer's names it (a seeds group's test pass)
    worker_prepared = False  # a sweep's worker process: `prepare_worker` has run
    deferring = False  # within `deferred_stops`: a stop is raised when the block ends

    @classmethod
    def name(cls) -> str:
        return NAMES.get(cls.received, "a signal") if cls.received else ""

    @classmethod
    def exit_code(cls) -> int:
        return exit_code_of(cls.received)

    @classmethod
    def between_seeds_jobs(cls) -> str:
        """The seeds launcher's line for a stop that came between its jobs (in one process or a worker)."""
        return (f"interrupted by {cls.name()} between the seeds' jobs: run the sweep again to continue it "
                "(finished jobs are kept)")  # fmt: skip


def exit_code_of(stop: signal.Signals | None) -> int:
    """The exit code of a command that a stop ended: 143 for SIGTERM, else 130 (Ctrl-C)."""
    return EXIT_SIGTERM if stop == signal.SIGTERM else EXIT_SIGINT


def _handler(signum: int, frame: Any) -> None:
    if StopSignals.received is not None:
        return  # already stopping: let the first stop finish its records
    StopSignals.received = signal.Signals(signum)
    stage = getattr(getattr(StopSignals.trainer, "state", None), "stage", None)
    StopSignals.phase = stage.value.replace("_", " ") if stage is not None else "set-up or record writing"
    StopSignals.phase = StopSignals.stage or StopSignals.phase
    if StopSignals.deferring:
        return  # raised as `deferred_stops` ends
    _raise_stop()


def _raise_stop() -> NoReturn:
    if StopSignals.received == signal.SIGTERM:
        raise SIGTERMException
    raise KeyboardInterrupt


@contextlib.contextmanager
def deferred_stops() -> Iterator[None]:
    """A stop that comes within (under `caught`) is raised when the block ends, so that what the block
    does (taking a folder's lock: its file, its flock, its registration; a TensorBoard writer's queue,
    whose lock an exception raised inside `Condition.wait` leaves released under the thread holding it,
    after which a write can go unnoticed by the writer thread for up to its `flush_secs`) is done whole
    or not at all. A stop that came before the block (its records being written) is not raised again."""
    outer, before = StopSignals.deferring, StopSignals.received
    StopSignals.deferring = True
    try:
        yield
    finally:
        StopSignals.deferring = outer
    if not outer and before is None and StopSignals.received is not None:
        _raise_stop()


@contextlib.contextmanager
def caught() -> Iterator[None]:
    """Within: SIGINT and SIGTERM raise in the main thread, remembering which one came; after: the
    handlers found before (a caller such as a test process keeps its own)."""
    StopSignals.received, StopSignals.trainer, StopSignals.phase, StopSignals.stage = None, None, "", None
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in before:
        signal.signal(sig, _handler)
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def hydra_string(key: str, value: str) -> str:
    """`key='value'`: Hydra reads a quoted value as one string whatever it holds (`=`, `,`, spaces,
    brackets), where unquoted `a,b` would be a sweep and `a=b` a syntax error."""
    escaped = value.replace("'", "\\'")
    return f"{key}='{escaped}'"


def resume_command(overrides: list[str], output_dir: str, has_checkpoint: bool) -> str:
    """The command that continues this run in its own folder: from its newest checkpoint, or, when it
    stopped before training took a step, the same command again in the same folder."""
    kept = [o for o in overrides if not o.startswith(("ckpt_path=", "hydra.run.dir=", "+ckpt_path="))]
    words = [*kept, hydra_string("hydra.run.dir", output_dir), *(["ckpt_path=last"] if has_checkpoint else [])]
    return " ".join(["python", "train.py", *(shell_word(w) for w in words)])  # the user's overrides as typed


def shell_word(word: str) -> str:
    """`word` as one shell word: bare when safe, in double quotes when that needs no escapes (readable
    around Hydra's single quotes), else as `shlex.quote` makes it."""
    if shlex.quote(word) == word:
        return word
    if not any(c in word for c in '"$`\\!'):
        return f'"{word}"'
    return shlex.quote(word)


# ---- a sweep whose jobs run in other processes --------------------------------------------------------


def in_worker() -> bool:
    """This process runs a job for a sweep process other than itself (a joblib worker)."""
    owner = os.environ.get(SWEEP_PID)
    return owner is not None and owner != str(os.getpid())


def park(code: int) -> NoReturn:
    """A worker with nothing more to record: start no other job; wait until the sweep process ends it
    (or is gone), then exit. Exiting at once instead would make joblib's executor see a crashed worker
    and SIGKILL the others, perhaps before they had recorded their own stop."""
    sweep = os.environ.get(SWEEP_PID)
    deadline = time.monotonic() + PARK_SECONDS
    while sweep == str(os.getppid()) and time.monotonic() < deadline:
        time.sleep(0.2)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def sweep_stopping() -> bool:
    """In a worker: whether its sweep process is stopping (a job taken now would be killed with it)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return (Path(str(HydraConfig.get().sweep.dir)) / STOPPING).exists()
    except ValueError:  # no Hydra job
        return False


def prepare_worker() -> None:
    """Once per worker process: a signal that comes while no job of ours runs parks the worker (see
    `park`; `caught` keeps this as the handler found before, for the time between jobs), and a sweep
    process that is gone (a SIGKILL, which it cannot pass on) stops the worker as a SIGTERM would."""
    if StopSignals.worker_prepared:
        return
    StopSignals.worker_prepared = True
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: park(128 + signum))
    sweep = os.environ.get(SWEEP_PID)

    def watch() -> None:
        while sweep == str(os.getppid()):
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)  # handled in the main thread: the job records its stop

    threading.Thread(target=watch, name="lossheads-sweep-watch", daemon=True).start()


def stop_sweep_on_signal(sweep_dir: Path) -> Callable[[], None]:
    """In the sweep process: SIGINT / SIGTERM outside its in-process jobs reaches the jobs running in
    worker processes, waits until each has recorded its stop, then exits 130 / 143. Returns the
    function that puts the handlers found before back."""

    def handler(signum: int, frame: Any) -> None:
        if StopSignals.received is not None:
            return
        StopSignals.received = signal.Signals(signum)
        with contextlib.suppress(OSError):  # a worker that takes a job from now on gives it up (`sweep_stopping`)
            (sweep_dir / STOPPING).touch()
        jobs: list[tuple[int, Path]] = []
        deadline = time.monotonic() + WAIT_FOR_JOBS
        while time.monotonic() < deadline:  # a worker may take a job's folder after the first look: stop it too
            held = held_jobs(sweep_dir)
            for pid, folder in held:
                if (pid, folder) not in jobs:
                    jobs.append((pid, folder))
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signum)
            if not held:
                break
            time.sleep(0.1)
        late = [str(folder) for _, folder in jobs if is_held(folder)]
        if StopSignals.stage == REPORT_STAGE and not jobs:  # every job is done: only the report was cut short
            print(f"interrupted by {StopSignals.name()} while the sweep's report was written (every job is "
                  f"finished): python -m lossheads.report {sweep_dir} writes it", file=sys.stderr)  # fmt: skip
            sys.exit(StopSignals.exit_code())
        stopped = f"{len(jobs)} running job(s) recorded as interrupted" if jobs else "no job was running"
        if late:
            stopped += f" ({len(late)} did not answer within {WAIT_FOR_JOBS:.0f} s: {', '.join(late)})"
        print(f"interrupted by {StopSignals.name()}: {stopped}; run the same command again to continue the "
              "sweep (finished jobs are kept)", file=sys.stderr)  # fmt: skip
        sys.exit(StopSignals.exit_code())

    StopSignals.received = None
    (sweep_dir / STOPPING).unlink(missing_ok=True)  # a stop of an earlier run of this sweep
    return handle_stops(handler)


def handle_stops(handler: Callable[[int, Any], None]) -> Callable[[], None]:
    """`handler` for SIGINT and SIGTERM; returns the function that puts the handlers found before back."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in before:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in before.items():
            signal.signal(sig, old)

    return restore
