"""One writer per folder: no command writes over a file it did not create in a run folder, a folder
being written refuses a second writer (a lock naming its PID, free again once that process is gone),
and stopping a sweep stops the jobs it runs in other processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import QUIET, ROOT
from lossheads.cli import predict as predict_cli
from lossheads.config.validators import ConfigError
from lossheads.run.lock import LOCK_NAME, FolderBusy, acquire
from test_durability import pause, start
from test_predict import churn_file

HOLD = "import sys, time; from pathlib import Path; from lossheads.run.lock import acquire; " \
       "acquire(Path(sys.argv[1]), 'hydra.run.dir'); print('held', flush=True); time.sleep(120)"  # fmt: skip


def files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


# ---- the lock ---------------------------------------------------------------------------------------


def test_a_held_folder_names_its_holder_and_a_killed_holder_blocks_nothing(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderBusy, match=rf"it is being written by PID {holder.pid} on .*, since "):
            acquire(folder, "hydra.run.dir")
        # a folder inside it (a run into a job folder of a sweep being written) is refused as well
        with pytest.raises(FolderBusy, match=rf"the folder '{folder}' above it is being written by PID {holder.pid}"):
            acquire(folder / "0" / "inner", "hydra.run.dir")
        assert not (folder / "0").exists()
    finally:
        holder.kill()  # SIGKILL: no chance to clean up; its lock file stays, with its PID inside
        holder.wait()
    assert json.loads((folder / LOCK_NAME).read_text())["pid"] == holder.pid
    lock = acquire(folder, "hydra.run.dir")  # stale: its process is gone
    assert json.loads((folder / LOCK_NAME).read_text())["pid"] != holder.pid
    lock.release()
    assert not (folder / LOCK_NAME).exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="hydra.run.dir='.*file' is not valid: it is a file, not a folder"):
        acquire(tmp_path / "file", "hydra.run.dir")
    (tmp_path / "link").symlink_to(tmp_path / "gone" / "run")
    with pytest.raises(ConfigError, match="hydra.run.dir='.*link' is not valid: it is a link to '.*gone/run', which"):
        acquire(tmp_path / "link", "hydra.run.dir")
    assert not (tmp_path / "gone").exists()


# ---- predict's output ---------------------------------------------------------------------------------


def test_predict_never_writes_over_a_run_its_input_or_a_file_without_overwrite(train, tmp_path, monkeypatch):
    churn_file(tmp_path / "churn.csv", n=120)
    train("data=table", f"data.path={tmp_path / 'churn.csv'}", "data.label_columns=[churn]", "data.id_column=id")
    run = tmp_path / "run"
    pd.read_csv(tmp_path / "churn.csv", sep=";", encoding="latin-1").drop(columns=["churn"]).to_csv(
        tmp_path / "new.csv", sep=";", index=False, encoding="latin-1"
    )
    (tmp_path / "mine.csv").write_text("my own notes\n")
    (tmp_path / "alias.csv").symlink_to(run / "metrics.json")  # a link that leads into the run
    kept = files(tmp_path)
    refused = {
        run / "checkpoints" / "last.ckpt": "it is a file of the run folder .* which predict never writes over",
        run / "metrics.json": "it is a file of the run folder",
        run / ".hydra" / "config.yaml": "it is a file of the run folder",
        tmp_path / "alias.csv": "it is a file of the run folder",
        run / "checkpoints" / "last-v9.ckpt": r"it lies in the run folder .* writes only a new .csv file",
        run / "notes.json": r"it lies in the run folder .* beside the run's own: name it \*.csv",
        tmp_path / "new.csv": r"it is the input file \(data.path\)",
        run: "it is a folder: give a file name, e.g. output=.*predictions.csv",
        tmp_path / "missing" / "p.csv": "its folder .*missing does not exist",
        tmp_path / "mine.csv": "the file exists: add overwrite=true to replace it",
    }
    calls = []
    monkeypatch.setattr(predict_cli, "load_run", lambda *a: calls.append(a))  # scoring starts here
    for output, message in refused.items():
        with pytest.raises(ConfigError, match=f"output='{output}' is not valid: {message}"):
            predict_cli.main([f"ckpt_path={run}", f"data.path={tmp_path / 'new.csv'}", f"output={output}"])
    assert not calls and files(tmp_path) == kept  # refused before any work; nothing written
    monkeypatch.undo()
    args = [f"ckpt_path={run}", f"data.path={tmp_path / 'new.csv'}"]
    predict_cli.main([*args, f"output={tmp_path / 'mine.csv'}", "overwrite=true"])
    predict_cli.main([*args, f"output={run / 'scored.csv'}"])  # a new .csv file inside the run: allowed
    assert len(pd.read_csv(tmp_path / "mine.csv")) == len(pd.read_csv(run / "scored.csv")) == 120


# ---- a second writer, through the real entry point ------------------------------------------------------


def wait_for(marker: Path, process: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists(), process.communicate()[1][-3000:]


def train_py(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides], cwd=cwd, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


@pytest.mark.slow
def test_a_run_folder_being_written_refuses_a_second_writer_until_its_process_is_gone(tmp_path):
    """A second run into the folder, and a sweep into a folder inside it, are refused in one line naming
    the PID, with nothing written; after a kill -9 of the first, the same command runs."""
    command = ["trainer.max_epochs=1", *QUIET, "hydra.run.dir=run"]
    first = start(tmp_path, *command, *pause("on_train_epoch_start", tmp_path / "p"), "+callbacks.pause.seconds=300")
    try:
        wait_for(tmp_path / "p", first)
        before = files(tmp_path / "run")
        second = train_py(tmp_path, *command, "seed=7")
        assert second.returncode == 2
        assert f"error: hydra.run.dir='run' is not valid: it is being written by PID {first.pid} on " in one_error_line(
            second.stderr
        )
        sweep = train_py(tmp_path, "-m", "seed=1,2", *QUIET, "hydra.sweep.dir=run/sweep")
        assert sweep.returncode == 2 and f"above it is being written by PID {first.pid}" in one_error_line(sweep.stderr)
        assert files(tmp_path / "run") == before and not (tmp_path / "run" / "sweep").exists()
    finally:
        first.kill()
        first.communicate()
    again = train_py(tmp_path, *command)  # the killed run's lock is stale: the same command starts afresh
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "ok"
    assert not (tmp_path / "run" / LOCK_NAME).exists()


@pytest.mark.slow
def test_a_sweep_folder_being_written_refuses_a_second_sweep_under_every_launcher(tmp_path):
    """Two sweeps into one hydra.sweep.dir: the second is refused whatever its launcher; a run into a job
    folder of the sweep as well; the sweep's own jobs are not refused by its lock."""
    sweep = ["-m", "seed=1", "trainer.max_epochs=1", *QUIET, "hydra.sweep.dir=sweep"]
    first = start(tmp_path, *sweep, *pause("on_train_epoch_start", tmp_path / "p"), "+callbacks.pause.seconds=300")
    try:
        wait_for(tmp_path / "p", first)
        before = files(tmp_path / "sweep")
        for launcher in ("hydra/launcher=joblib", "hydra/launcher=seeds"):
            second = train_py(tmp_path, *sweep, launcher)
            assert second.returncode == 2
            line = one_error_line(second.stderr)
            assert f"hydra.sweep.dir='sweep' is not valid: it is being written by PID {first.pid}" in line
        into_job = train_py(tmp_path, "trainer.max_epochs=1", *QUIET, "hydra.run.dir=sweep/0")
        assert into_job.returncode == 2 and "the folder" in one_error_line(into_job.stderr)
        assert files(tmp_path / "sweep") == before
    finally:
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 143 and "refused job" not in stderr, stderr[-3000:]
    assert json.loads((tmp_path / "sweep" / "0" / "metrics.json").read_text())["status"] == "interrupted"


@pytest.mark.slow
def test_an_evaluation_or_a_refused_run_in_a_runs_folder_leaves_the_runs_files_alone(tmp_path):
    """An evaluation's Hydra files go to .hydra-eval-<time>/, its CSV logger's to a version of their
    own (it would rewrite the run's csv/hparams.yaml and csv/metrics.csv); a refused run writes none."""
    command = ["trainer.max_epochs=1", *QUIET, "hydra.run.dir=run", "logger=csv"]
    trained = train_py(tmp_path, *command)
    assert trained.returncode == 0, trained.stderr[-3000:]
    run = tmp_path / "run"
    before = files(run)
    refused = train_py(tmp_path, *command, "seed=7")
    assert refused.returncode == 2 and "it holds another run" in one_error_line(refused.stderr)
    assert files(run) == before  # refused before its data or its Trainer: not a line in the run's log
    before = files(run)
    evaluated = train_py(tmp_path, *command, "train=false", "ckpt_path=last")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    after = files(run)
    changed = sorted(str(p.relative_to(run)) for p in before if after.get(p) != before[p])
    assert changed == ["train.log"]  # Hydra's log: appended to, as Hydra does
    assert after[run / "train.log"].startswith(before[run / "train.log"])
    (own,) = run.glob(".hydra-eval-*")  # the evaluation's own Hydra files
    assert "train=false" in (own / "overrides.yaml").read_text()
    (record,) = run.glob("eval-*.json")
    (logged,) = run.glob("csv/eval-*/metrics.csv")
    assert "test/acc" in logged.read_text()
    assert json.loads(record.read_text())["test/acc"] == json.loads((run / "metrics.json").read_text())["test/acc"]


# ---- stopping a sweep stops its workers ---------------------------------------------------------------


JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]


def descendants(pid: int) -> set[int]:
    """The processes `pid` started, theirs, and so on (read from /proc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # gone while listed
            continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pids: set[int]) -> set[int]:
    """Those of `pids` that still run (a zombie has exited: it writes nothing more)."""
    running = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            running.add(pid)
    return running


@pytest.mark.slow
@pytest.mark.parametrize(
    ("launcher", "sig"),
    [(JOBLIB, signal.SIGTERM), (JOBLIB, signal.SIGKILL), (["hydra/launcher=seeds"], signal.SIGTERM)],
    ids=["joblib", "joblib-kill-9", "seeds"],
)  # fmt: skip  (the basic launcher's stop: test_durability's killed sweep)
def test_a_stopped_sweep_stops_its_jobs_and_no_ok_record_comes_after(tmp_path, launcher, sig):
    """A stop once training has saved its first checkpoint: every job that trained is recorded as
    interrupted (or was ok before the stop), and no process of the sweep writes anything afterwards.
    A SIGKILL cannot be passed on: the workers notice that their sweep is gone and stop themselves."""
    folder = tmp_path / "sweep"
    command = ["-m", "seed=1,2", "trainer.max_epochs=300", *QUIET, f"hydra.sweep.dir={folder}", *launcher]
    process = start(tmp_path, *command)
    deadline = time.monotonic() + 240

    def saved() -> bool:  # a run's checkpoint, or a seeds group's file (its members get theirs when it ends)
        return bool(list(folder.glob("*/checkpoints/*.ckpt")) or list(folder.glob(".seeds/*.ckpt")))

    while not saved() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    workers = descendants(process.pid)  # a SIGKILL orphans them: name them while they are still its children
    stopped_at = time.time()
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=200)
    assert process.returncode == (-9 if sig == signal.SIGKILL else 143), stderr[-3000:]
    trained = [job.parent for job in folder.glob("*/.hydra") if (job.parent / "checkpoints").exists()]
    deadline = time.monotonic() + 60
    while not all((job / "metrics.json").exists() for job in trained) and time.monotonic() < deadline:
        time.sleep(0.2)  # after a SIGKILL the workers record their stop on their own
    records = {job: json.loads((job / "metrics.json").read_text()) for job in trained}
    statuses = sorted(r["status"] for r in records.values())
    assert "interrupted" in statuses and set(statuses) <= {"ok", "interrupted"}, statuses
    assert all((job / "metrics.json").stat().st_mtime < stopped_at for job, r in records.items() if r["status"] == "ok")
    deadline = time.monotonic() + 60
    while alive(workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(workers)  # no process of the sweep is left that could write
    written = files(folder)
    time.sleep(0.5)
    assert files(folder) == written
    assert not [p for p in folder.rglob(LOCK_NAME) if p.parent != folder]  # (a SIGKILL leaves the sweep's own)


def test_a_process_that_ran_a_sweep_starts_no_worker_of_it_afterwards(tmp_path, monkeypatch):
    """The sweep process marks its environment so that the processes it starts know they are its
    workers (a signal parks them); when the sweep ends, the mark goes with it."""
    from omegaconf import OmegaConf

    from lossheads.run.stops import SWEEP_PID, in_worker
    from lossheads.run.writers import OneWriter

    monkeypatch.delenv(SWEEP_PID, raising=False)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}})
    writer = OneWriter()
    writer.on_multirun_start(config)
    assert os.environ[SWEEP_PID] == str(os.getpid()) and not in_worker()
    writer.on_multirun_end(config)
    assert SWEEP_PID not in os.environ


def test_a_stop_inside_taking_a_job_lock_leaves_the_lock_to_release(tmp_path, monkeypatch):
    """A stop that lands while a job takes its folder's lock (after the flock, before its record is
    written) leaves the lock findable, so that the job's stop handling releases it and no lock file stays."""
    import lossheads.run.lock as lock_module
    from lossheads.run.lock import LOCK_NAME, acquire, held_in

    def stopped() -> dict:
        raise KeyboardInterrupt

    monkeypatch.setattr(lock_module, "owner_record", stopped)
    folder = tmp_path / "job"
    with pytest.raises(KeyboardInterrupt):
        acquire(folder, "hydra.sweep.dir", inside_own=True)
    held = held_in(folder)
    assert held is not None and (folder / LOCK_NAME).exists()
    held.release()
    assert not (folder / LOCK_NAME).exists() and held_in(folder) is None


@pytest.mark.slow
def test_a_joblib_worker_runs_every_job_it_is_given(tmp_path):
    """Hydra's joblib launcher puts its parent's OmegaConf resolvers back before each job a worker
    runs: a worker's second job still names its logs (`${lossheads.run_name:}`) and trains."""
    folder = tmp_path / "sweep"
    done = train_py(tmp_path, "-m", "seed=1,2,3", "trainer.max_epochs=1", *QUIET, *JOBLIB, f"hydra.sweep.dir={folder}",
                    "~hydra.callbacks.report")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert [json.loads((folder / job / "metrics.json").read_text())["status"] for job in "012"] == ["ok"] * 3


def test_a_stop_while_the_sweeps_report_is_written_says_only_the_report_is_left(tmp_path, capsys):
    """Every job finished: a Ctrl-C during the end-of-sweep report names the command that writes it."""
    from lossheads.run.stops import REPORT_STAGE, StopSignals, stop_sweep_on_signal

    restore = stop_sweep_on_signal(tmp_path)
    StopSignals.stage = REPORT_STAGE
    try:
        with pytest.raises(SystemExit) as stopped:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs at the next bytecode
    finally:
        restore()
        StopSignals.stage, StopSignals.received = None, None
    assert stopped.value.code == 130
    assert capsys.readouterr().err.strip() == (
        f"interrupted by Ctrl-C (SIGINT) while the sweep's report was written (every job is finished): "
        f"python -m lossheads.report {tmp_path} writes it"
    )


def test_a_stop_during_a_deferred_block_is_raised_when_the_block_ends():
    """A job takes its folder's lock inside `deferred_stops`: a SIGTERM that lands meanwhile (a worker
    whose sweep is already gone signals itself at once) is raised once the lock is held whole."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from lossheads.run.stops import StopSignals, caught, deferred_stops

    steps = []
    with caught(), pytest.raises(SIGTERMException), deferred_stops():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)  # the handler has run by now, and raised nothing
        steps.append("lock taken")
    assert steps == ["lock taken"] and StopSignals.received == signal.SIGTERM and not StopSignals.deferring
    StopSignals.received = None


# ---- a sweep run again --------------------------------------------------------------------------------


def job_files(sweep: Path) -> dict[Path, bytes]:
    """Every file of the sweep's job folders but Hydra's job log, which each command appends to."""
    return {p: data for p, data in files(sweep).items() if p.parent != sweep and p.name != "train.log"}


@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=seeds"]], ids=["basic", "seeds"])
def test_a_sweep_run_again_leaves_its_finished_runs_as_they_were(tmp_path: Path, launcher: list[str]) -> None:
    """Run again with other logging (a key a resume may change), its finished jobs keep their `.hydra/`,
    which Hydra rewrote; with fewer epochs, each job is refused in one line and keeps its record, no
    failure.json beside it; a damaged last.ckpt of a finished job is no reason to touch it."""
    from conftest import train_py_in_process

    sweep = tmp_path / "sweep"
    command = ["-m", *QUIET, *launcher, "~hydra.callbacks.report", f"hydra.sweep.dir={sweep}", "seed=1,2",
               "trainer.max_epochs=2"]  # fmt: skip
    first = train_py_in_process(*command)
    assert first.returncode == 0, first.stderr[-3000:]
    with open(sweep / "1" / "checkpoints" / "last.ckpt", "r+b") as damaged:
        damaged.truncate(100)
    before = job_files(sweep)
    other_logging = train_py_in_process(*command, "logger=csv")
    assert other_logging.returncode == 0, other_logging.stderr[-3000:]
    assert job_files(sweep) == before
    shorter = train_py_in_process(*command, "trainer.max_epochs=1")
    assert shorter.returncode == 0, shorter.stderr[-3000:]
    log = shorter.stdout + shorter.stderr
    assert log.count("refused job: trainer.max_epochs=1 is not valid") == 1, log[-3000:]  # job 1 is finished
    assert job_files(sweep) == before


def test_a_run_stopped_by_max_steps_trains_on_when_its_sweep_runs_again_without_it(tmp_path: Path) -> None:
    from conftest import train_py_in_process

    command = ["-m", *QUIET, "~hydra.callbacks.report", f"hydra.sweep.dir={tmp_path}", "seed=1",
               "trainer.max_epochs=3"]  # fmt: skip
    assert train_py_in_process(*command, "trainer.max_steps=5").returncode == 0
    assert json.loads((tmp_path / "0" / "metrics.json").read_text())["steps"] == 5
    again = train_py_in_process(*command)
    assert again.returncode == 0, again.stderr[-3000:]
    record = json.loads((tmp_path / "0" / "metrics.json").read_text())
    assert record["epochs"] == 3 and record["steps"] > 5 and record["resumed_from"]["step"] == 5


def test_a_distillation_sweep_run_again_keeps_its_finished_recipes(tmp_path: Path) -> None:
    """Its steps are found finished (as a recipe's `ckpt_path=last` finds them): none is refused or
    trained again, and every step's files stay as they were. Run again longer, it is refused before its
    teacher trains on under the KD student distilled from it."""
    from conftest import train_py_in_process

    command = ["-m", *QUIET, "~hydra.callbacks.report", f"hydra.sweep.dir={tmp_path}", "experiment=distill",
               "seed=1", "trainer.max_epochs=1"]  # fmt: skip
    first = train_py_in_process(*command)
    assert first.returncode == 0, first.stderr[-3000:]
    hydra = {".hydra", ".hydra-run"}  # the recipe's: the latest command's that finished it
    steps = {p: data for p, data in job_files(tmp_path).items() if not hydra & set(p.parts)}
    assert {p.relative_to(tmp_path).parts[1] for p in steps} >= {"teacher", "kd", "hard", "metrics.json"}
    again = train_py_in_process(*command, "logger=csv")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "refused job" not in again.stdout + again.stderr
    assert {p: data for p, data in job_files(tmp_path).items() if not hydra & set(p.parts)} == steps
    before = job_files(tmp_path)
    longer = train_py_in_process(*command, "trainer.max_epochs=2")  # its teacher would change under its student
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert "refused job: trainer.max_epochs=2 is not valid: this recipe's teacher finished 1 epoch and" in longer.stdout
    assert job_files(tmp_path) == before


@pytest.mark.parametrize(
    ("record", "trainer", "done"),
    [
        ({"max_epochs": 5, "max_steps": -1, "epochs": 2, "steps": 12}, {"max_epochs": 5}, True),  # stopped early
        ({"max_epochs": 5, "epochs": 5, "steps": 30}, {"max_epochs": 5, "max_steps": -1}, True),  # an older record
        ({"max_epochs": 3, "max_steps": -1, "epochs": 3, "steps": 18}, {"max_epochs": 5}, False),  # trains on
        ({"max_epochs": 3, "max_steps": 8, "epochs": 2, "steps": 8}, {"max_epochs": 3, "max_steps": -1}, False),
        ({"max_epochs": 3, "max_steps": -1, "epochs": 3, "steps": 18}, {"max_epochs": 1}, False),  # refused later
        # other length settings: a fresh run of the command could end elsewhere, so the resume decides
        ({"max_epochs": 30, "max_steps": -1, "epochs": 2, "steps": 12}, {"max_epochs": 40}, False),
        ({"max_epochs": 10, "epochs": 2, "steps": 12}, {"max_epochs": 10, "min_epochs": 6}, False),
        ({"max_epochs": 400, "max_time": "00:00:00:02", "epochs": 120}, {"max_epochs": 400}, False),
    ],
)
def test_a_run_is_finished_when_it_ran_under_the_same_length_settings(record: dict, trainer: dict, done: bool) -> None:
    from lossheads.run.folder import finished

    assert finished({"status": "ok", **record}, {"trainer": trainer}) is done
    assert not finished({"status": "interrupted", **record}, {"trainer": trainer})


@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=seeds"]], ids=["basic", "seeds"])
def test_a_sweep_that_types_out_a_default_to_add_an_arm_keeps_its_finished_runs(tmp_path: Path, launcher) -> None:
    """`seed=1,2` (AdamW's default learning rate, 1e-3), then `optimizer.lr=0.001,0.01 seed=1,2`: jobs 0
    and 1 are the same runs, named otherwise; they stay finished, their folders name them as the new
    sweep does, and the report reads them as its `optimizer.lr=0.001` arm, beside the two new runs."""
    from conftest import train_py_in_process
    from lossheads.report.collect import collect

    command = ["-m", *QUIET, *launcher, "~hydra.callbacks.report", f"hydra.sweep.dir={tmp_path}",
               "trainer.max_epochs=1"]  # fmt: skip
    assert train_py_in_process(*command, "seed=1,2").returncode == 0
    before = {job: (tmp_path / job / "metrics.json").read_bytes() for job in ("0", "1")}
    again = train_py_in_process(*command, "optimizer.lr=0.001,0.01", "seed=1,2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "refused" not in again.stdout + again.stderr
    assert {job: (tmp_path / job / "metrics.json").read_bytes() for job in ("0", "1")} == before
    runs = collect(tmp_path)
    assert [(r.job, r.status, r.config) for r in runs] == [
        ("0", "ok", "optimizer.lr=0.001"), ("1", "ok", "optimizer.lr=0.001"), ("2", "ok", "optimizer.lr=0.01"),
        ("3", "ok", "optimizer.lr=0.01"),
    ]  # fmt: skip
