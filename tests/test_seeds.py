"""hydra/launcher=seeds: seeds of one configuration trained as one vectorized model, each member
leaving the run folder its own run would, with the same numbers."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hydra.experimental.callback import Callback

from conftest import QUIET, ROOT, compose_config, compose_with_hydra, train_py_in_process
from lossheads.models.mlp import MLP
from lossheads.run.execute import run as run_in_process

TOLERANCE = 1e-4  # measured: 3e-8 (float32 rounding of batched vs single matrix products)
TESTS = Path(__file__).resolve().parent


def with_test_nets() -> dict[str, str]:
    """The environment of a sweep whose `model._target_` may name a network in tests/seeded_nets.py."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


def sweep(folder: Path, *overrides: str, seeds: bool = True, report: bool = False) -> subprocess.CompletedProcess:
    """`python train.py -m` into `folder`, run in this process (a stop or a kill needs a process of its
    own: those tests start one); the report (matplotlib, plots: seconds) only where a test reads it."""
    launcher = ["hydra/launcher=seeds"] if seeds else []
    launcher += [] if report or "~hydra.callbacks.report" in overrides else ["~hydra.callbacks.report"]
    return train_py_in_process("-m", *QUIET, *launcher, f"hydra.sweep.dir={folder}", *overrides)


def records(folder: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(folder.glob("*/metrics.json"))}


def assert_same_runs(ours: dict[str, dict], theirs: dict[str, dict]) -> None:
    assert ours.keys() == theirs.keys() and ours
    for job, record in ours.items():
        other = theirs[job]
        numbers = [k for k in record if "/" in k]
        assert numbers and set(numbers) == {k for k in other if "/" in k}
        for key in numbers:
            assert record[key] == pytest.approx(other[key], abs=TOLERANCE), (job, key)
        plain = {k: v for k, v in record.items() if "/" not in k}
        assert plain == {k: v for k, v in other.items() if "/" not in k}  # seed, steps, fingerprint, ...
        assert list(record) == list(other), job  # metrics.json in its run alone's order


def hydra_files(sweep_folder: Path, job: str) -> dict[str, str]:
    """A job's `.hydra/` files as Hydra wrote them, but for what names the launcher and the sweep folder."""
    folder = sweep_folder / job / ".hydra"
    files = {p.name: p.read_text().replace(str(sweep_folder), "<sweep>") for p in folder.iterdir()}
    hydra = yaml.safe_load(files["hydra.yaml"])["hydra"]
    hydra.pop("launcher")
    hydra["runtime"]["choices"].pop("hydra/launcher")
    launcher = ("hydra/launcher=", "hydra.launcher.")
    hydra["overrides"]["hydra"] = [o for o in hydra["overrides"]["hydra"] if not o.startswith(launcher)]
    return {**files, "hydra.yaml": json.dumps(hydra, sort_keys=True)}


def test_hydra_files_text_is_omegaconfs() -> None:
    """The seeds launcher writes a prepared job's `.hydra/` files with libyaml: the text of
    `OmegaConf.to_yaml`, awkward strings included."""
    from omegaconf import OmegaConf

    from hydra_plugins.lossheads_seeds.prepared_jobs import hydra_file_text

    config = compose_with_hydra(["seed=3", "loss=focal"])
    odd = {"null": "null", "number": "1.0", "yes": "yes", "colon": "a: b", "quote": "it's \"x\"", "empty": "",
           "unicode": "naïve — ok", "lines": "one\ntwo", "long": "word " * 40, "interp": "${seed}",
           "list": ["1", 2, None, True, "~"], "nested": {"x": {"y": [1.5, "2.5", 1e-8]}}}  # fmt: skip
    for node in (config, OmegaConf.create(odd), config.hydra.overrides.task):
        assert hydra_file_text(node) == OmegaConf.to_yaml(node)


def test_a_prepared_jobs_hydra_config_is_set_configs() -> None:
    """The Hydra config a prepared job makes current shares the job's `hydra` node instead of copying
    it, and is otherwise what `HydraConfig.set_config` makes: the same YAML, types, flags and parent
    (interpolations from the `hydra` node resolve in the job's config). Fails the day OmegaConf's
    `no_deepcopy_set_nodes` or `_set_parent` changes."""
    import pickle

    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from hydra_plugins.lossheads_seeds.prepared_jobs import job_hydra_config

    config = compose_with_hydra(["seed=3", "loss=focal"])
    shared = pickle.loads(pickle.dumps(config))
    HydraConfig.instance().set_config(config)
    hydras = HydraConfig.instance().cfg, job_hydra_config(shared)
    assert hydras[1].hydra is shared.hydra
    assert OmegaConf.to_yaml(hydras[1]) == OmegaConf.to_yaml(hydras[0])
    for node, job in ((hydras[0].hydra, config), (hydras[1].hydra, shared)):
        assert node._get_parent() is job
        assert node._get_flag("readonly") and OmegaConf.get_type(node).__name__ == "HydraConf"
        assert node._key() == "hydra" and node._metadata.ref_type == hydras[0].hydra._metadata.ref_type
    assert hydras[1]._get_flag("no_deepcopy_set_nodes") is None and hydras[1]._metadata == hydras[0]._metadata
    assert OmegaConf.select(hydras[1], "hydra.job.name") == OmegaConf.select(hydras[0], "hydra.job.name")


def saved_state(path: Path, sweep_folder: Path) -> str:
    """A checkpoint's loops, epoch, step and callback records (numbers to 4 decimals; the sweep folder
    left out of paths), to compare a member's file with its run's."""

    def rounded(value: object) -> object:
        if isinstance(value, torch.Tensor):
            return rounded(value.tolist())
        if isinstance(value, dict):
            return {str(k): rounded(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [rounded(v) for v in value]
        return round(value, 4) if isinstance(value, float) else value

    saved = torch.load(path, weights_only=True)
    kept = {key: saved[key] for key in ("loops", "epoch", "global_step", "callbacks")}
    return json.dumps(rounded(kept), sort_keys=True).replace(str(sweep_folder), "<sweep>")


@pytest.mark.slow
def test_each_member_equals_its_separate_run_and_the_report_agrees(tmp_path: Path) -> None:
    """Arms of one network shape train in one group (bce_logits and bce: one logit), each member with
    its own loss and its own pos_weight=auto (from its own split); ce (two logits) forms its own."""
    overrides = ["loss=bce_logits,bce,ce", "loss.pos_weight=auto", "seed=1,2,3", "trainer.max_epochs=2"]
    together = sweep(tmp_path / "together", *overrides, report=True)
    alone = sweep(tmp_path / "alone", *overrides, seeds=False, report=True)
    assert together.returncode == 0, together.stderr[-3000:]
    assert alone.returncode == 0, alone.stderr[-3000:]
    log = together.stdout + together.stderr
    assert "6 runs: seeds [1, 2, 3] of 2 arms (loss=bce_logits, loss=bce) train as one vectorized model" in log
    assert "seeds [1, 2, 3] of one configuration train as one vectorized model" in log  # ce
    # one config composed per loss; the other jobs (seeds, loss.pos_weight) are copies of it
    assert "job configs: 3 composed, 15 copied from a composed one" in log
    assert "`Trainer.fit` stopped" not in log  # Lightning's info lines stay in the job logs
    assert_same_runs(records(tmp_path / "together"), records(tmp_path / "alone"))
    for job in ("0", "3", "6"):
        files = sorted(p.name for p in (tmp_path / "together" / job / "checkpoints").iterdir())
        assert files == sorted(p.name for p in (tmp_path / "alone" / job / "checkpoints").iterdir())
        for name in files:  # saved at the same moment as its run's: the same loop counters and callback records
            ours, theirs = (saved_state(tmp_path / run / job / "checkpoints" / name, tmp_path / run)
                            for run in ("together", "alone"))  # fmt: skip
            assert ours == theirs, (job, name)
            state = torch.load(tmp_path / "together" / job / "checkpoints" / name, weights_only=True)["state_dict"]
            reference = torch.load(tmp_path / "alone" / job / "checkpoints" / name, weights_only=True)["state_dict"]
            assert state.keys() == reference.keys() and any(key.startswith("loss.") for key in state)
            for key in [k for k in state if k.startswith("loss.")]:  # pos_weight=auto: its own split's
                assert torch.equal(state[key], reference[key]), (job, key)
        assert (tmp_path / "together" / job / "predictions.npz").is_file()
        assert hydra_files(tmp_path / "together", job) == hydra_files(tmp_path / "alone", job)
        assert list((tmp_path / "together" / job / "tensorboard").rglob("events.out.tfevents.*"))
        job_log = (tmp_path / "together" / job / "train.log").read_text()  # its group's lines, no other job's
        assert "train as one vectorized model" in job_log and not re.search(r"#\d+ : ", job_log)
        assert "`Trainer.fit` stopped" in job_log
        assert "GPU available: " in job_log  # the Trainer's lines, in every member's log as in its run alone's

    def rows(folder: str) -> list[dict[str, str]]:
        return list(csv.DictReader((tmp_path / folder / "comparisons.csv").open()))

    ours, theirs = rows("together"), rows("alone")
    assert len(ours) == len(theirs) == 20  # bce and ce vs bce_logits on breast_cancer, the binary panel, 3 seeds
    for mine, alone in zip(ours, theirs, strict=True):
        assert (mine["metric"], mine["verdict"]) == (alone["metric"], alone["verdict"])
        for column in ("mean_diff", "ci_low", "ci_high", "p"):
            if mine[column] or alone[column]:
                assert float(mine[column]) == pytest.approx(float(alone[column]), abs=TOLERANCE, nan_ok=True)

    # a member's folder is a run's folder: resumed on its own with ckpt_path, it trains on exactly
    # (as `python train.py ... hydra.run.dir=together/0 ckpt_path=last`, in-process)
    one_run = [*QUIET, "loss=bce_logits", "loss.pos_weight=auto", "seed=1", "trainer.max_epochs=3"]
    run_in_process(compose_config([*one_run, "ckpt_path=last"], tmp_path / "together" / "0"))
    run_in_process(compose_config(one_run, tmp_path / "fresh"))
    continued = json.loads((tmp_path / "together" / "0" / "metrics.json").read_text())
    reference = json.loads((tmp_path / "fresh" / "metrics.json").read_text())
    assert continued["resumed_from"]["epochs"] == 2 and continued["epochs"] == 3
    for key in [k for k in reference if "/" in k]:
        assert continued[key] == pytest.approx(reference[key], abs=TOLERANCE), key


@pytest.mark.slow
def test_cnn_members_with_batchnorm_equal_their_separate_runs(tmp_path: Path) -> None:
    overrides = ["data=digits_images", "model=cnn", "model.channels=[4,8]", "seed=1,2", "trainer.max_epochs=2",
                 "+trainer.limit_train_batches=3", "loss=ce"]  # fmt: skip
    together, alone = sweep(tmp_path / "together", *overrides), sweep(tmp_path / "alone", *overrides, seeds=False)
    assert together.returncode == 0, together.stderr[-3000:]
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert "train as one vectorized model" in together.stdout + together.stderr
    assert_same_runs(records(tmp_path / "together"), records(tmp_path / "alone"))


@pytest.mark.slow
def test_frozen_and_tied_parameters_stay_frozen_and_tied_and_clipping_is_per_member(tmp_path: Path) -> None:
    overrides = ["model=custom", "model._target_=seeded_nets.FrozenAndTied", "seed=1,2", "trainer.max_epochs=2",
                 "trainer.gradient_clip_val=0.05"]  # small: most steps clip  # fmt: skip
    together, alone = sweep(tmp_path / "together", *overrides), sweep(tmp_path / "alone", *overrides, seeds=False)
    assert together.returncode == 0, together.stderr[-3000:]
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert "train as one vectorized model" in together.stdout + together.stderr
    assert_same_runs(records(tmp_path / "together"), records(tmp_path / "alone"))
    state = torch.load(tmp_path / "together" / "0" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert torch.equal(state["net.b.weight"], state["net.c.weight"])


@pytest.mark.slow
def test_members_record_their_last_validation_and_log_what_runs_alone_log(tmp_path: Path) -> None:
    """Validated every 2nd of 3 epochs, a run records epoch 2's val numbers and tests epoch 3's
    weights; every 4th, no val numbers at all. So does each member, and its logger holds the same
    rows (none from its re-validation)."""
    overrides = ["+trainer.check_val_every_n_epoch=2,4", "seed=1,2", "trainer.max_epochs=3", "logger=csv",
                 "~hydra.callbacks.report"]  # fmt: skip
    together, alone = sweep(tmp_path / "together", *overrides), sweep(tmp_path / "alone", *overrides, seeds=False)
    assert together.returncode == 0, together.stderr[-3000:]
    assert alone.returncode == 0, alone.stderr[-3000:]
    found = records(tmp_path / "together")
    assert_same_runs(found, records(tmp_path / "alone"))
    assert "val/auroc" in found["0"] and not any(k.startswith("val/") for k in found["2"])  # no validation: none
    for job, steps in [("0", ["6", "12", "12", "18", "18"]), ("1", ["6", "12", "12", "18", "18"]),
                       ("2", ["6", "12", "18", "18"]), ("3", ["6", "12", "18", "18"])]:  # fmt: skip
        ours, theirs = ([row for row in csv.DictReader((tmp_path / run / job / "csv" / "metrics.csv").open())]
                        for run in ("together", "alone"))  # fmt: skip
        assert [r["step"] for r in ours] == [r["step"] for r in theirs] == steps
        for name in [p.name for p in (tmp_path / "alone" / job / "checkpoints").glob("*.ckpt")]:
            mine, its = (
                [float(state["step"]) for state in torch.load(tmp_path / run / job / "checkpoints" / name,
                                                              weights_only=True)["optimizer_states"][0]["state"].values()]
                for run in ("together", "alone")
            )  # fmt: skip
            assert mine == its, (job, name)  # Adam's step count as of that save (a best file's is not the last's)
        for mine, its in zip(ours, theirs, strict=True):
            assert mine.keys() == its.keys()
            for key, value in mine.items():
                assert (value == "") == (its[key] == ""), (job, key)
                assert value == "" or float(value) == pytest.approx(float(its[key]), abs=TOLERANCE), (job, key)


@pytest.mark.parametrize("failing", [1, 2])
def test_a_full_disk_while_the_group_file_is_written_stops_the_sweep_in_one_line(
    tmp_path: Path, monkeypatch, failing: int
) -> None:
    """The group file is written by a thread while the group trains on; its error stops the group at
    its next save, as a save that fails in place would: one line, exit 2, each member `failed`. The
    previous epoch's file stays to resume from; where there is none, no listing of members stays either."""
    import lossheads.seeds.checkpoints as checkpoints
    from lossheads.run.atomic import StorageError

    real, calls = checkpoints.write_group_file, []

    def full(path: Path, payload: memoryview) -> None:
        calls.append(path)
        if len(calls) == failing:  # epoch 1's or 2's file
            raise StorageError(f"cannot write {path}: the disk is full: free space")
        real(path, payload)

    monkeypatch.setattr(checkpoints, "write_group_file", full)
    folder = tmp_path / "sweep"
    stopped = sweep(folder, "seed=1,2", "trainer.max_epochs=4")
    assert stopped.returncode == 2, stopped.stderr[-3000:]
    assert stopped.stderr.strip().splitlines()[-1].startswith(f"error: cannot write {folder}/.seeds/group-")
    assert "Traceback" not in stopped.stdout + stopped.stderr and len(calls) == failing
    assert {json.loads((folder / job / "failure.json").read_text())["status"] for job in ("0", "1")} == {"failed"}
    left = sorted(p.suffix for p in (folder / ".seeds").iterdir())
    assert left == ([".ckpt", ".members"] if failing == 2 else [])


def test_a_full_disk_as_the_group_opens_its_logs_stops_the_sweep_in_one_line(tmp_path: Path, monkeypatch) -> None:
    """The members' loggers write their first files as the group starts; a full disk there is the
    error line of a run alone (exit 2, each member `failed`), not a traceback."""
    import errno

    from lightning.pytorch.loggers import TensorBoardLogger

    def full(self) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(TensorBoardLogger, "save", full)
    folder = tmp_path / "sweep"
    stopped = sweep(folder, "seed=1,2", "trainer.max_epochs=1")
    assert stopped.returncode == 2, stopped.stderr[-3000:]
    assert stopped.stderr.strip().splitlines()[-1].startswith(f"error: cannot write {folder}/0: the disk is full")
    assert "Traceback" not in stopped.stdout + stopped.stderr
    assert {json.loads((folder / job / "failure.json").read_text())["status"] for job in ("0", "1")} == {"failed"}


@pytest.mark.slow
def test_a_full_disk_while_the_group_trains_stops_the_sweep_in_one_line_and_loses_nothing(tmp_path: Path) -> None:
    """As under the basic launcher: each member a `failed` record, the error in one line, exit 2; the
    sweep run again (space freed) finishes every member from its checkpoints."""
    folder = tmp_path / "sweep"
    overrides = ["-m", *QUIET, "hydra/launcher=seeds", f"hydra.sweep.dir={folder}", "seed=1,2,3",
                 "trainer.max_epochs=3", "~hydra.callbacks.report"]  # fmt: skip
    full = f"""
import errno, os, runpy, sys
real = os.replace
def replace(source, target, *args, **kwargs):  # job 1's last.ckpt finds the disk full
    if str(target).endswith("/checkpoints/last.ckpt") and "{folder}/1/" in str(target):
        raise OSError(errno.ENOSPC, "No space left on device")
    return real(source, target, *args, **kwargs)
os.replace = replace
sys.argv = ["train.py", *{overrides!r}]
runpy.run_path("train.py", run_name="__main__")
"""
    stopped = subprocess.run([sys.executable, "-c", full], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert stopped.returncode == 2, stopped.stderr[-3000:]
    line = stopped.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: cannot write {folder}/1/checkpoints/last.ckpt: the disk is full: free space")
    assert "Traceback" not in stopped.stdout + stopped.stderr
    reasons = {job: json.loads((folder / job / "failure.json").read_text()) for job in ("0", "1", "2")}
    assert {r["status"] for r in reasons.values()} == {"failed"} and not records(folder)
    error = line.removeprefix("error: ")
    assert reasons["1"]["reason"] == error
    assert reasons["0"]["reason"] == reasons["2"]["reason"] == f"its seeds group stopped: {error}"
    again = subprocess.run([sys.executable, "train.py", *overrides], capture_output=True, text=True, timeout=300,
                           cwd=ROOT)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert [r["status"] for r in records(folder).values()] == ["ok", "ok", "ok"]
    assert not list(folder.glob("*/failure.json"))  # the full disk's records went with the results


@pytest.mark.slow
@pytest.mark.parametrize("subdir", ["null", "cfg"])
def test_without_hydra_files_a_member_writes_its_config_as_its_run_alone(tmp_path: Path, subdir: str) -> None:
    """hydra.output_subdir=null or another name: Hydra writes no .hydra/, the run writes its
    .hydra/config.yaml itself, unresolved (`${seed}`, `${paths.output_dir}`), under either launcher."""
    overrides = ("seed=1,2", "trainer.max_epochs=1", f"hydra.output_subdir={subdir}")
    for name, seeds in (("together", True), ("alone", False)):
        result = sweep(tmp_path / name, *overrides, seeds=seeds)
        assert result.returncode == 0, result.stderr[-3000:]
    assert_same_runs(records(tmp_path / "together"), records(tmp_path / "alone"))
    for job in ("0", "1"):
        ours, theirs = ((tmp_path / run / job / ".hydra" / "config.yaml").read_text() for run in ("together", "alone"))
        assert "split_seed: ${seed}" in ours and "default_root_dir: ${paths.output_dir}" in ours
        assert ours == theirs


@pytest.mark.slow
def test_a_diverging_member_is_recorded_and_its_siblings_finish(tmp_path: Path) -> None:
    result = sweep(tmp_path / "sweep", "model=custom", "model._target_=seeded_nets.BlowsUpForSeed2", "seed=1,2,3",
                   "trainer.max_epochs=2")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "train as one vectorized model" in result.stdout + result.stderr
    found = records(tmp_path / "sweep")
    assert [found[j]["status"] for j in ("0", "1", "2")] == ["ok", "diverged", "ok"]
    assert "before any update" in found["1"]["reason"]
    diverged = [line for line in (result.stdout + result.stderr).splitlines() if "diverged job:" in line]
    assert len(diverged) == 1 and found["1"]["reason"] in diverged[0]  # its line, as its job's under the basic launcher
    assert not list((tmp_path / "sweep" / "1" / "checkpoints").glob("*.ckpt"))  # as its run alone: none saved
    assert list((tmp_path / "sweep" / "1" / "tensorboard").rglob("hparams.yaml"))  # as its run alone's folder
    assert found["0"]["test/auroc"] > 0.9 and found["2"]["test/auroc"] > 0.9


@pytest.mark.slow
def test_members_whose_outputs_blow_up_are_recorded_diverged_as_their_runs_alone(tmp_path: Path) -> None:
    """bce saturates (its log is clamped), so the training loss can stay finite while the weights blow
    up: NaN outputs at the test (on some CPUs the loss turns NaN first). Each member is then `diverged`,
    as its run alone, not a crash of the group; and its best checkpoint is kept as ModelCheckpoint keeps
    a NaN score (its first)."""
    overrides = ("data=synthetic_multiclass", "head=ovr", "loss=bce", "seed=1,2", "optimizer=sgd",
                 "optimizer.lr=1e15", "trainer.max_epochs=2")  # fmt: skip
    for name, seeds in (("together", True), ("alone", False)):
        result = sweep(tmp_path / name, *overrides, seeds=seeds, report=True)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Traceback" not in result.stdout + result.stderr
        assert (tmp_path / name / "report.md").is_file()
    ours, theirs = records(tmp_path / "together"), records(tmp_path / "alone")
    assert [r["status"] for r in ours.values()] == ["diverged", "diverged"]
    assert ours == theirs
    # which comes first depends on the CPU's arithmetic at lr=1e15: the outputs at the test, or the loss
    assert re.search(r"outputs are not finite \(NaN or inf\) after 2 epochs|the loss became nan", ours["0"]["reason"])
    at_the_test = "outputs are not finite" in ours["0"]["reason"]
    for run in ("together", "alone"):  # the run's own warning line, named as under the basic launcher
        assert "[lossheads.run.execute][WARNING] - diverged job: " in (tmp_path / run / "0" / "train.log").read_text()
    for job in ("0", "1"):
        files = [sorted(p.name for p in (tmp_path / run / job / "checkpoints").iterdir())
                 for run in ("together", "alone")]  # fmt: skip
        assert files[0] == files[1] == (["best-epoch000.ckpt", "last.ckpt"] if at_the_test else [])
    binary = sweep(tmp_path / "binary", "loss=bce", "seed=1,2", "optimizer=sgd", "optimizer.lr=1e15",
                   "trainer.max_epochs=2")  # fmt: skip
    assert binary.returncode == 0, binary.stderr[-3000:]
    assert [r["status"] for r in records(tmp_path / "binary").values()] == ["diverged", "diverged"]


@pytest.mark.slow
def test_a_group_that_crashes_is_recorded_for_each_member_and_the_sweep_goes_on(tmp_path: Path) -> None:
    result = sweep(tmp_path / "sweep", "model=custom", "model._target_=seeded_nets.FailsInForward", "seed=1,2",
                   "trainer.max_epochs=1", report=True)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for job in ("0", "1"):
        failure = json.loads((tmp_path / "sweep" / job / "failure.json").read_text())
        assert failure["status"] == "failed" and "a bug in the network's forward" in failure["reason"]
    assert "| failed |" in (tmp_path / "sweep" / "report.md").read_text()


@pytest.mark.slow
def test_jobs_that_cannot_be_stacked_run_alone_and_say_why(tmp_path: Path) -> None:
    result = sweep(tmp_path / "sweep", "early_stopping.patience=null,1", "seed=1,2,3", "trainer.max_epochs=2",
                   "hydra.launcher.max_members=2")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "seeds [1, 2] of one configuration train as one vectorized model" in log
    assert "#2 trains alone: it is alone in its group: hydra.launcher.max_members=2 split the 3 jobs" in log
    assert "#3 trains alone: early stopping ends each seed at its own epoch" in log
    assert [r["status"] for r in records(tmp_path / "sweep").values()] == ["ok"] * 6
    for job in ("0", "2", "3"):  # grouped, alone after the group's first, alone as the first: the Trainer's lines once
        assert (tmp_path / "sweep" / job / "train.log").read_text().count("GPU available: ") == 1, job


@pytest.mark.slow
def test_an_interrupt_leaves_every_member_resumable(tmp_path: Path) -> None:
    folder = tmp_path / "sweep"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "-m", *QUIET, "hydra/launcher=seeds", f"hydra.sweep.dir={folder}",
         "seed=1,2", "trainer.max_epochs=100000", "logger=csv"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    deadline = time.time() + 120
    while not group_files(folder):  # the group has saved its first epoch
        assert time.time() < deadline and process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-3000:]
    for job, record in records(folder).items():
        assert record["status"] == "interrupted", job
        assert str(folder / job) in record["resume"] and "ckpt_path=last" in record["resume"]
        assert Path(record["checkpoint"]).parent == folder / job / "checkpoints"
        logged_rows = list(csv.DictReader((folder / job / "csv" / "metrics.csv").open()))  # its logger was ended
        assert len(logged_rows) >= 2 and logged_rows[0]["step"] == "6"
        evaluation = [*QUIET, f"seed={record['seed']}", "train=false", f"ckpt_path={record['checkpoint']}"]
        evaluated = run_in_process(compose_config(evaluation, tmp_path / ("eval" + job)))
        assert evaluated["status"] == "ok" and evaluated["evaluated"] == record["checkpoint"]


def test_clipping_by_norm_clips_each_member_by_its_own_norm() -> None:
    from lossheads.seeds.stack import StackedNet

    nets = [MLP((5,), 1) for _ in range(3)]
    stacked = StackedNet(nets)
    x = torch.randn(3, 16, 5) * torch.tensor([0.01, 1.0, 100.0]).reshape(3, 1, 1)  # very different norms
    stacked(x).sum().backward()
    for k, net in enumerate(nets):
        net(x[k]).sum().backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 0.5)

    from lossheads.seeds.module import SeedsModule

    clip = SeedsModule.clip_gradients
    holder = type("Holder", (), {"net": stacked, "size": 3})()
    clip(holder, None, 0.5, "norm")
    for k, net in enumerate(nets):
        for name, p in zip(stacked.names, stacked.stacked, strict=True):
            assert torch.allclose(p.grad[k], dict(net.named_parameters())[name].grad, atol=1e-6)


def stacked_and_alone(optimizer: type[torch.optim.Optimizer], steps: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Three members' (4, 3) weights and (4,) biases after `steps` updates from the same gradients:
    by one optimizer over the stacked tensors, and by one optimizer per member."""
    generator = torch.Generator().manual_seed(0)
    weights, biases = torch.randn(3, 4, 3, generator=generator), torch.randn(3, 4, generator=generator)
    grads = [(torch.randn(3, 4, 3, generator=generator), torch.randn(3, 4, generator=generator)) for _ in range(steps)]
    stacked = [weights.clone().requires_grad_(), biases.clone().requires_grad_()]
    alone = [[weights[k].clone().requires_grad_(), biases[k].clone().requires_grad_()] for k in range(3)]
    optimizers = [optimizer(stacked, lr=0.01)] + [optimizer(params, lr=0.01) for params in alone]
    for weight_grad, bias_grad in grads:
        stacked[0].grad, stacked[1].grad = weight_grad.clone(), bias_grad.clone()
        for k, (weight, bias) in enumerate(alone):
            weight.grad, bias.grad = weight_grad[k].clone(), bias_grad[k].clone()
        for each in optimizers:
            each.step()
    together = torch.cat([stacked[0].detach().reshape(3, -1), stacked[1].detach()], dim=1)
    separately = torch.stack([torch.cat([w.detach().reshape(-1), b.detach()]) for w, b in alone])
    return together, separately


def test_optimizers_stacked_only_where_each_element_is_updated_on_its_own() -> None:
    import functools

    from hydra.utils import instantiate

    from lossheads.seeds.module import ELEMENTWISE_OPTIMIZERS, why_not_elementwise

    for optimizer in ELEMENTWISE_OPTIMIZERS:
        together, separately = stacked_and_alone(optimizer)
        assert torch.allclose(together, separately, atol=1e-6), optimizer.__name__
        assert why_not_elementwise(functools.partial(optimizer, lr=0.01)) is None
    # Adafactor factors a matrix's second moment by rows and columns: a stacked bias (K, out) would
    # share its column factor between the members (measured before this check: 0.009 in test/acc)
    together, separately = stacked_and_alone(torch.optim.Adafactor)
    assert (together - separately).abs().max() > 1e-3
    factory = instantiate({"_target_": "torch.optim.Adafactor", "_partial_": True, "lr": 0.01})  # as optimizer=...
    assert why_not_elementwise(factory).startswith("optimizer Adafactor is not among those that update each element")


PER_LOGIT_HEADS = ["sigmoid", "multilabel", "ovr"]


@pytest.mark.parametrize(
    ("loss_name", "head_name", "weight"),
    [(loss, head, None) for loss in ("bce_logits", "bce", "asl") for head in PER_LOGIT_HEADS]
    + [("focal", head, None) for head in [*PER_LOGIT_HEADS, "softmax"]]
    + [("bce_logits", "multilabel", [[1.0, 2.0, 0.5]])]  # weight rows, as BCELoss takes them
    + [("ce", "softmax", None), ("ce", "softmax4", None), ("ce", "softmax_probabilities", None)],
)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_an_elementwise_loss_over_the_member_axis_equals_each_members_own_call(
    loss_name: str, head_name: str, weight: list | None, reduction: str
) -> None:
    """The stack's one call of an elementwise loss gives each member's loss and gradient as its own
    call does, with buffers of its own (pos_weight and weight counted on its own split), and a member's
    NaN logit poisons its loss alone."""
    from lossheads.config.pairing import build_loss
    from lossheads.heads import build_head
    from lossheads.losses import LOSSES
    from lossheads.seeds.module import member_axis_loss

    task = {"multilabel": "multilabel", "softmax4": "multiclass", "ovr": "multiclass"}.get(head_name, "binary")
    head = build_head(head_name.removesuffix("4").removesuffix("_probabilities"),
                      {"multilabel": 3, "softmax4": 4, "ovr": 4}.get(head_name, 2), task)  # fmt: skip
    torch.manual_seed(0)
    members, n, logits_per = 4, 16, head.num_logits
    shape, classes = (50, 3) if task == "multilabel" else (50,), 4 if task == "multiclass" else 2
    splits = [torch.randint(0, classes, shape) for _ in range(members)]
    options = {"reduction": reduction}
    takes = LOSSES[loss_name].takes
    options |= {"pos_weight": "auto"} if "pos_weight" in takes and task == "binary" else {}
    options |= {"weight": "auto"} if "weight" in takes and logits_per > 1 else {}
    options |= {"weight": weight} if weight is not None else {}
    losses = [build_loss(options | {"name": loss_name}, head, split) for split in splits]
    if "auto" in options.values():  # each member's own buffers, counted on its own split
        ours, theirs = dict(losses[0].named_buffers()), dict(losses[1].named_buffers())
        assert any(not torch.equal(ours[name], theirs[name]) for name in ours)
    logits = head.logits(torch.randn(members, n, logits_per)).requires_grad_()
    targets = torch.stack([head.loss_target(s[:n]) for s in splits])
    if head_name.endswith("_probabilities"):  # soft targets (N, C), as distillation or mixup give them
        targets = torch.softmax(torch.randn(members, n, logits_per), dim=-1)
    together = member_axis_loss(losses)
    assert together is not None
    ours = together(logits, targets)
    ours.sum().backward()
    ours_grad, logits.grad = logits.grad, None
    theirs = torch.stack([loss(logits[k], targets[k], None) for k, loss in enumerate(losses)])
    theirs.sum().backward()
    assert ours.shape == (members,)
    assert torch.allclose(ours, theirs, atol=1e-6) and torch.allclose(ours_grad, logits.grad, atol=1e-6)
    poisoned = logits.detach().clone()
    poisoned[2, 5] = float("nan")
    values = together(poisoned, targets)
    assert values[2].isnan() and values[[0, 1, 3]].isfinite().all()


def test_losses_that_are_not_elementwise_are_vmapped_not_called_over_the_member_axis() -> None:
    """A loss reduced otherwise (CE's label smoothing, logit adjustment), or a subclass that does not
    declare itself elementwise, goes through vmap, and so does a loss whose buffer has more dimensions
    than a sample's logits (the member axis would broadcast one member's logits against another's)."""
    from lossheads.heads import build_head
    from lossheads.losses import LOSSES
    from lossheads.seeds.module import member_axis_loss

    head = build_head("softmax", 2, "binary")
    targets = torch.randint(0, 2, (50,))
    logits, labels = torch.randn(2, 8), torch.randint(0, 2, (2, 8)).float()
    assert member_axis_loss([LOSSES["ce"](head, targets, label_smoothing=0.1)]) is None
    assert member_axis_loss([LOSSES["logit_adjusted"](head, targets)]) is None

    asl = LOSSES["asl"](sigmoid := build_head("sigmoid", 2, "binary"), targets.float())
    asl.weight = torch.tensor([[5.0]])  # more dimensions than a sample's one logit (no longer a valid loss.weight)
    ours, theirs = (
        member_axis_loss([asl, asl]),
        torch.stack([asl(z, y, None) for z, y in zip(logits, labels, strict=True)]),
    )
    assert torch.allclose(ours(logits, labels), theirs)  # vmapped: each member's own broadcast, as alone

    class MyBCE(LOSSES["bce_logits"]):  # a user's loss with its own reduction
        name = ""

    assert member_axis_loss([MyBCE(sigmoid, targets.float())]) is None


def test_dropout_draws_its_own_mask_for_each_member() -> None:
    from lossheads.seeds.stack import StackedNet

    torch.manual_seed(0)
    net = MLP((5,), 1, hidden=[256], dropout=0.5)
    stacked = StackedNet([net, net, net])  # the same weights three times: only dropout can tell them apart
    x = torch.randn(1, 8, 5).expand(3, 8, 5)
    out = stacked(x)
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[1], out[2])
    stacked.eval()
    out = stacked(x)
    assert torch.allclose(out[0], out[1]) and torch.allclose(out[1], out[2])


def test_the_seeds_benchmark_prints_its_line(monkeypatch, capsys) -> None:
    """scripts/bench_seeds.py's loop, medians and last line, in-process with its sweeps stubbed: the
    timed sweeps themselves (timer, job statuses) run for real in tests/test_bench_verdict.py, through
    the same `timed_sweep`."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import bench_seeds

    seconds = iter([9.0, 3.0, 11.0, 2.0, 10.0, 4.0])  # basic, seeds, interleaved, 3 repeats
    monkeypatch.setattr(bench_seeds, "sweep_seconds", lambda *args: next(seconds))
    bench_seeds.main(["--seeds", "10", "--repeats", "3"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert "10 seeds: basic launcher   10.0 s (1.00 s a job), hydra/launcher=seeds    3.0 s: 3.3x" in lines[-2]
    assert lines[-2].endswith("(medians of 3: basic 9.0-11.0 s, seeds 2.0-4.0 s)")
    assert lines[-1] == "bench-seeds: speedup@10=3.33"


def test_configs_that_differ_beyond_the_seed_are_each_composed() -> None:
    """The launcher's config loader copies a composed config for a job that differs only in its
    seed, its override dirname made as Hydra makes it (any item and key-value separators); unless
    `seed` is a config group, which could change the defaults list, or the dirname does not follow
    Hydra's rule: then every job is composed once, and the launch gets what Hydra's check composed."""
    import re as regex

    from omegaconf import OmegaConf

    from hydra_plugins.lossheads_seeds.shared_configs import SeedSharingConfigLoader

    def dirname(overrides: list[str], item_sep: str, kv_sep: str) -> str:
        return regex.sub("=", kv_sep, item_sep.join(sorted(o for o in overrides if not o.startswith("+my"))))

    class Composer:
        def __init__(self, depends_on_seed: bool, item_sep: str, kv_sep: str, hydras_rule: bool = True) -> None:
            self.depends_on_seed, self.item_sep, self.kv_sep, self.rule = depends_on_seed, item_sep, kv_sep, hydras_rule
            self.calls = 0

        def load_sweep_config(self, master_config: object, sweep_overrides: list[str]) -> object:
            self.calls += 1
            seed = int(sweep_overrides[-1].split("=")[1])
            width = 8 * seed if self.depends_on_seed else 8  # a config group `seed` whose options differ
            made = dirname(sweep_overrides, self.item_sep, self.kv_sep) if self.rule else "/".join(sweep_overrides)
            separators = {"item_sep": self.item_sep, "kv_sep": self.kv_sep, "exclude_keys": ["my_seed"]}
            job = {"override_dirname": made, "config": {"override_dirname": separators}}
            choices = {"loss": "ce", **({"seed": str(seed)} if self.depends_on_seed else {})}
            return OmegaConf.create({"seed": seed, "width": width, "hydra": {"overrides": {"task": sweep_overrides},
                                     "job": job, "runtime": {"choices": choices}}})  # fmt: skip

    master = OmegaConf.create({})
    jobs = [["loss=ce", "+my_seed=1", f"seed={s}"] for s in range(1, 6)]
    # Hydra alone composes 10: each job twice
    for depends_on_seed, item_sep, kv_sep, rule, composed in (
        (False, ",", "=", True, 1), (False, "", "=", True, 1), (False, "_", "_", True, 1),
        (True, ",", "=", True, 5), (False, ",", "=", False, 5),
    ):  # fmt: skip
        inner = Composer(depends_on_seed, item_sep, kv_sep, rule)
        loader = SeedSharingConfigLoader(inner)  # type: ignore[arg-type]
        for _ in range(2):  # Hydra's check of the batch, then the launch
            configs = [loader.load_sweep_config(master, overrides) for overrides in jobs]
        assert inner.calls == loader.composed == composed
        assert [c.seed for c in configs] == [1, 2, 3, 4, 5]
        assert [c.width for c in configs] == ([8] * 5 if not depends_on_seed else [8, 16, 24, 32, 40])
        expected = dirname(jobs[3], item_sep, kv_sep) if rule else "/".join(jobs[3])
        assert configs[3].hydra.job.override_dirname == expected
        assert list(configs[3].hydra.overrides.task) == jobs[3]


class JobEvents(Callback):
    """A user's Hydra callback: each job's start and end, with whether its metrics.json exists then."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def _note(self, event: str, config: Any, ret: Any = None) -> None:
        folder = Path(config.hydra.runtime.output_dir)
        status = getattr(getattr(ret, "status", None), "name", None)
        line = {"event": event, "job": folder.name, "recorded": (folder / "metrics.json").is_file(),
                "env": os.environ.get("JOB_NOTE"), "status": status}  # fmt: skip
        with self.path.open("a") as handle:
            handle.write(json.dumps(line) + "\n")

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        self._note("start", config)

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        self._note("end", config, job_return)


def test_a_users_hydra_callback_sees_each_job_start_and_end_once_as_under_the_basic_launcher(tmp_path: Path) -> None:
    """A member's `on_job_start` comes with its `env_set`, its `on_job_end` after its records, once
    per job, as under the basic launcher."""
    seen: dict[str, list[dict]] = {}
    for launcher in ("seeds", "basic"):
        events = tmp_path / f"{launcher}.jsonl"
        callback = ["+hydra.callbacks.events._target_=test_seeds.JobEvents", f"+hydra.callbacks.events.path={events}",
                    "+hydra.job.env_set.JOB_NOTE=set"]  # fmt: skip
        done = sweep(tmp_path / launcher, "seed=1,2", "trainer.max_epochs=1", *callback, seeds=launcher == "seeds")
        assert done.returncode == 0, done.stderr[-3000:]
        seen[launcher] = sorted((json.loads(line) for line in events.read_text().splitlines()),
                                key=lambda e: (e["job"], e["event"] != "start"))  # fmt: skip
    assert (
        seen["seeds"]
        == seen["basic"]
        == [
            {"event": "start", "job": "0", "recorded": False, "env": "set", "status": None},
            {"event": "end", "job": "0", "recorded": True, "env": None, "status": "COMPLETED"},
            {"event": "start", "job": "1", "recorded": False, "env": "set", "status": None},
            {"event": "end", "job": "1", "recorded": True, "env": None, "status": "COMPLETED"},
        ]
    )


class HydraFilesAtGroupStart(Callback):
    """Each job folder's `.hydra/overrides.yaml` as the first job starts: a group's start, with the jobs
    that do not train in it prepared already."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        if not self.path.exists():
            sweep = Path(config.hydra.runtime.output_dir).parent
            found = {p.parent.parent.name: p.read_text() for p in sweep.glob("*/.hydra/overrides.yaml")}
            self.path.write_text(json.dumps(found))


def test_jobs_whose_folders_hold_other_runs_have_their_hydra_files_back_before_the_group_trains(
    tmp_path: Path,
) -> None:
    """An arm added to a sweep run again renumbers its jobs: the folders that hold other runs are
    refused, and their `.hydra/`, which Hydra wrote as each job was prepared, is the run's again before
    the group trains (a Ctrl-C then left the new command's overrides beside another run's record, and
    the report took that run for the new job's)."""
    folder = tmp_path / "sweep"
    first = sweep(folder, "seed=1,2,3", "loss=bce_logits,bce", "trainer.max_epochs=1")
    assert first.returncode == 0, first.stderr[-3000:]
    before = {p.parent.parent.name: p.read_text() for p in folder.glob("*/.hydra/overrides.yaml")}
    seen = tmp_path / "seen.json"
    callback = [
        "+hydra.callbacks.files._target_=test_seeds.HydraFilesAtGroupStart",
        f"+hydra.callbacks.files.path={seen}",
    ]
    again = sweep(folder, "seed=1,2,3", "loss=bce_logits,bce,focal", "trainer.max_epochs=1", *callback)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "train as one vectorized model" in again.stdout + again.stderr  # the new jobs, as one group
    at_start = json.loads(seen.read_text())
    assert {job: at_start[job] for job in before} == before


def test_removing_a_group_file_takes_the_temporary_files_a_kill_left(tmp_path: Path) -> None:
    """A kill while the group file is written leaves `.<name>.<random>.tmp`; the group's end removes it."""
    from lossheads.seeds.checkpoints import remove_group_file

    path = tmp_path / ".seeds" / "group-0123.ckpt"
    path.parent.mkdir()
    left = [path, path.with_suffix(".members"), path.parent / ".group-0123.ckpt.x1y2.tmp"]
    other = path.parent / ".group-4567.ckpt.x1y2.tmp"  # another group's
    for file in [*left, other]:
        file.write_bytes(b"partial")
    remove_group_file(path)
    assert [p.name for p in path.parent.iterdir()] == [other.name]


def group_files(folder: Path) -> list[Path]:
    """The seeds groups' checkpoint files of a sweep (while they train)."""
    return sorted((folder / ".seeds").glob("group-*.ckpt"))


@pytest.mark.slow
def test_a_sigkill_mid_epoch_loses_no_finished_epoch_and_the_sweep_run_again_equals_an_unbroken_one(
    tmp_path: Path,
) -> None:
    from lossheads.seeds.checkpoints import read_group_file

    overrides = ["model=custom", "model._target_=seeded_nets.SlowToTrain", "seed=1,2,3", "trainer.max_epochs=6",
                 "~hydra.callbacks.report", "logger=csv"]  # fmt: skip
    folder = tmp_path / "killed"
    command = [sys.executable, str(ROOT / "train.py"), "-m", *QUIET, "hydra/launcher=seeds",
               f"hydra.sweep.dir={folder}", *overrides]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env=with_test_nets())  # fmt: skip
    deadline = time.time() + 120
    while not group_files(folder) or read_group_file(group_files(folder)[0])["epoch"] < 2:
        assert time.time() < deadline and process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.05)
    time.sleep(0.15)  # into the next epoch (0.3 s each)
    process.kill()
    process.wait(timeout=60)
    (saved,) = group_files(folder)
    epochs = read_group_file(saved)["epoch"]  # whole: its checksum over its bytes holds
    assert 2 <= epochs < 5 and not records(folder)  # stopped in training: no member recorded yet
    # run again shorter than the group has trained: each member refused in one line, the file kept
    shorter = sweep(folder, *overrides, "trainer.max_epochs=1")
    assert shorter.returncode == 0 and "Traceback" not in shorter.stdout + shorter.stderr, shorter.stderr[-3000:]
    refusals = {json.loads((folder / job / "failure.json").read_text())["reason"] for job in ("0", "1", "2")}
    (refusal,) = refusals
    assert re.fullmatch(rf"trainer.max_epochs=1 is not valid: the seeds group's checkpoint {re.escape(str(saved))} "
                        r"has already trained (\d+) epochs; give trainer.max_epochs>=\1 to continue it, or remove "
                        rf"{re.escape(str(saved))} to train the group afresh", refusal), refusal  # fmt: skip
    assert group_files(folder) == [saved]
    again = sweep(folder, *overrides)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "the seeds group resumes from" in again.stdout + again.stderr
    assert not group_files(folder)  # the members' folders hold their runs now
    unbroken = sweep(tmp_path / "unbroken", *overrides)
    assert unbroken.returncode == 0, unbroken.stderr[-3000:]
    resumed, reference = records(folder), records(tmp_path / "unbroken")
    assert resumed.keys() == reference.keys() == {"0", "1", "2"}
    for job, record in resumed.items():
        assert record["status"] == "ok" and record["epochs"] == 6
        assert record["resumed_from"]["epochs"] >= 1
        for key in [k for k in reference[job] if "/" in k]:
            assert record[key] == pytest.approx(reference[job][key], abs=TOLERANCE), (job, key)
    for job in ("0", "1", "2"):  # each member's checkpoints are a run's again
        assert sorted(p.name for p in (folder / job / "checkpoints").iterdir()) == sorted(
            p.name for p in (tmp_path / "unbroken" / job / "checkpoints").iterdir()
        )
    for job in ("0", "1", "2"):  # and its logged rows: those from before the kill, each step once
        ours, theirs = (list(csv.DictReader((r / job / "csv" / "metrics.csv").open(newline="")))
                        for r in (folder, tmp_path / "unbroken"))  # fmt: skip
        assert [row["step"] for row in ours] == [row["step"] for row in theirs] and len(ours) >= 12
        for mine, its in zip(ours, theirs, strict=True):
            for key in [k for k in its if "/" in k and its[k]]:
                assert float(mine[key]) == pytest.approx(float(its[key]), abs=TOLERANCE), (job, key)


@pytest.mark.slow
def test_two_seeds_given_one_folder_are_one_run_and_one_refusal_as_under_the_basic_launcher(tmp_path: Path) -> None:
    shared = ["seed=1,2", "trainer.max_epochs=1", "hydra.job.config.override_dirname.exclude_keys=[seed]",
              "hydra.sweep.subdir=${hydra.job.override_dirname}"]  # fmt: skip
    result = sweep(tmp_path / "sweep", *shared)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "#1 trains alone: its run folder is job #0's too" in log and "refused job" in log
    assert "#0 trains alone: no other seed of its configuration can train with it" in log
    (folder,) = [p for p in (tmp_path / "sweep").iterdir() if p.is_dir()]
    assert json.loads((folder / "metrics.json").read_text())["seed"] == 1
    assert "seed=1" in (folder / ".hydra" / "overrides.yaml").read_text()  # the owner's files, put back


def _stopped_sweep(folder: Path, overrides: list[str], after: str, sig: signal.Signals) -> tuple[int, str]:
    """Run a seeds sweep, send `sig` 0.3 s after a log line holding `after`; its exit code and output."""
    env = {**with_test_nets(), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "-m", *QUIET, "hydra/launcher=seeds", f"hydra.sweep.dir={folder}",
         "~hydra.callbacks.report", *overrides],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=folder.parent,
    )  # fmt: skip
    seen = []
    assert process.stdout is not None
    for line in process.stdout:
        seen.append(line)
        if after in line:
            break
    time.sleep(0.3)
    process.send_signal(sig)
    rest = process.communicate(timeout=120)[0]
    return process.returncode, "".join(seen) + rest


@pytest.mark.slow
def test_a_stop_while_members_are_tested_is_recorded_for_each_and_the_sweep_run_again_finishes(tmp_path: Path) -> None:
    """SIGTERM in the members' test pass (Ctrl-C goes through the same stop records: see the interrupt
    test while the group trains)."""
    sig, code = signal.SIGTERM, 143
    overrides = ["model=custom", "model._target_=seeded_nets.SlowToEvaluate", "seed=1,2", "trainer.max_epochs=1"]
    returncode, log = _stopped_sweep(tmp_path / "sweep", overrides, "each is now tested and recorded", sig)
    assert returncode == code, log[-3000:]
    assert "Traceback" not in log
    found = records(tmp_path / "sweep")
    assert [r["status"] for r in found.values()] == ["interrupted", "interrupted"], log[-3000:]
    assert found["0"]["phase"] == "validate" and "ckpt_path=last" in found["0"]["resume"]  # its record's val pass
    again = sweep(tmp_path / "sweep", *overrides)  # finishes both from their checkpoints
    assert again.returncode == 0, again.stderr[-3000:]
    assert [r["status"] for r in records(tmp_path / "sweep").values()] == ["ok", "ok"]


@pytest.mark.slow
def test_a_sigkill_while_members_are_tested_leaves_no_group_file_and_the_sweep_run_again_finishes(
    tmp_path: Path,
) -> None:
    """Once the members have their own checkpoints, the group's file is gone: a kill in the test pass
    leaves each member to resume from its own folder, and nothing stale in the sweep's .seeds/."""
    overrides = ["model=custom", "model._target_=seeded_nets.SlowToEvaluate", "seed=1,2", "trainer.max_epochs=1"]
    returncode, log = _stopped_sweep(tmp_path / "sweep", overrides, "each is now tested and recorded", signal.SIGKILL)
    assert returncode == -signal.SIGKILL, log[-3000:]
    assert not records(tmp_path / "sweep") and not group_files(tmp_path / "sweep")
    assert all((tmp_path / "sweep" / job / "checkpoints" / "last.ckpt").is_file() for job in ("0", "1"))
    again = sweep(tmp_path / "sweep", *overrides)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [r["status"] for r in records(tmp_path / "sweep").values()] == ["ok", "ok"]


@pytest.mark.slow
def test_a_stop_while_seeds_are_prepared_is_recorded_and_the_sweep_run_again_finishes(tmp_path: Path) -> None:
    overrides = ["model=custom", "model._target_=seeded_nets.SlowToBuild", "seed=1,2", "trainer.max_epochs=1"]
    returncode, log = _stopped_sweep(tmp_path / "sweep", overrides, "#1 : ", signal.SIGINT)
    assert returncode == 130, log[-3000:]
    assert "Traceback" not in log and "interrupted by Ctrl-C (SIGINT) during set-up" in log
    found = records(tmp_path / "sweep")
    assert list(found) == ["1"] and found["1"]["status"] == "interrupted"  # job 0 had not started training
    again = sweep(tmp_path / "sweep", *overrides)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [r["status"] for r in records(tmp_path / "sweep").values()] == ["ok", "ok"]


@pytest.mark.slow
def test_mixed_precision_arms_train_in_one_group_each_loss_cast_as_in_its_run(tmp_path: Path) -> None:
    """bf16 autocast on the CPU: each member's loss is computed by its own call (autocast casts BCE to
    float32 as in a run alone), and the members' numbers stay those of their runs."""
    overrides = ["trainer.precision=bf16-mixed", "loss=bce_logits,bce", "seed=1", "trainer.max_epochs=2",
                 "~hydra.callbacks.report"]  # fmt: skip
    together, alone = sweep(tmp_path / "together", *overrides), sweep(tmp_path / "alone", *overrides, seeds=False)
    assert together.returncode == 0, together.stderr[-3000:]
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert "2 runs: seeds [1] of 2 arms (loss=bce_logits, loss=bce)" in together.stdout + together.stderr
    ours, theirs = records(tmp_path / "together"), records(tmp_path / "alone")
    assert ours.keys() == theirs.keys() and [r["status"] for r in ours.values()] == ["ok"] * 2
    for job, record in ours.items():
        for key in [k for k in record if k.startswith("test/")]:
            assert record[key] == pytest.approx(theirs[job][key], abs=2e-2), (job, key)


def test_a_group_file_is_resumed_only_by_its_own_jobs_on_their_own_data(tmp_path: Path, caplog) -> None:
    """The group file names its members' folders, configs and inputs: another group of jobs, or the
    same jobs on changed data, start afresh (one log line each); a damaged file too."""
    from lossheads.seeds.checkpoints import group_bytes, resumable, write_group_file
    from lossheads.seeds.module import SeedsModule

    path = tmp_path / ".seeds" / "group-x.ckpt"
    ours = [["/sweep/0", "f0", '{"fingerprint": "a"}'], ["/sweep/1", "f1", '{"fingerprint": "a"}']]
    write_group_file(path, group_bytes({SeedsModule.STATE: {"identity": ours}, "epoch": 2, "global_step": 12}))
    assert resumable(path, ours) == {"checkpoint": str(path), "epochs": 2, "step": 12}
    changed = [[*job[:2], '{"fingerprint": "b"}'] for job in ours]
    assert resumable(path, changed) is None
    assert "the data or its split changed since it was saved" in caplog.text
    assert resumable(path, [ours[0]]) is None and "belongs to another group of jobs" in caplog.text
    path.write_bytes(path.read_bytes()[:-10])  # cut short
    assert resumable(path, ours) is None and "is damaged" in caplog.text


def test_a_group_file_in_either_torch_format_is_read_whole(tmp_path: Path) -> None:
    """`group_bytes` writes torch's pre-zip format (faster for a group's many small tensors); a group
    file in the zip format, as earlier versions wrote it, is read alike, tensors and records whole,
    under `weights_only=True`. Fails the day torch.save drops `_use_new_zipfile_serialization`."""
    import io

    from lossheads.seeds.checkpoints import group_bytes, read_group_file, write_group_file

    state = {"epoch": 3, "state_dict": {"net.0.weight": torch.randn(40, 8, 4)}, "values": [{"val/nll": 0.25}] * 40,
             "scores": {k: torch.tensor(k / 10) for k in range(40)}}  # fmt: skip
    zipped = io.BytesIO()
    torch.save(state, zipped)
    for name, payload in (("pre-zip", group_bytes(state)), ("zip", zipped.getbuffer())):
        path = tmp_path / f"{name}.ckpt"
        write_group_file(path, payload)
        back = read_group_file(path)
        assert back["epoch"] == 3 and back["values"] == state["values"], name
        assert torch.equal(back["state_dict"]["net.0.weight"], state["state_dict"]["net.0.weight"]), name
        assert all(torch.equal(back["scores"][k], state["scores"][k]) for k in range(40)), name
    assert not bytes(group_bytes(state)[:4]).startswith(b"PK"), "a zip archive: the faster format is gone"


def test_members_checkpoints_packed_into_the_group_file_come_back_whole() -> None:
    """`pack` stacks the members' tensors path by path for the group file; `unpack` gives each member's
    checkpoint back, tensors, int keys and plain values alike, also through torch.save/load."""
    import io

    from lossheads.seeds.checkpoints import pack, unpack

    def checkpoint(step: float, extra: bool) -> dict:
        return {"state_dict": {"net.0.weight": torch.randn(3, 2)}, "epoch": int(step),
                "optimizer_states": [{"state": {0: {"step": torch.tensor(step), "exp_avg": torch.randn(3, 2)}},
                                      "param_groups": [{"lr": 0.1, "params": [0]}]}],
                "callbacks": {"ModelCheckpoint{...}": {"best_model_score": torch.tensor(step / 10)}},
                **({"only_mine": torch.ones(2)} if extra else {})}  # fmt: skip

    ours = {0: checkpoint(3.0, False), 7: checkpoint(4.0, True)}
    buffer = io.BytesIO()
    torch.save(pack(ours), buffer)
    back = unpack(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    assert back.keys() == ours.keys()
    for k, original in ours.items():
        assert back[k]["epoch"] == original["epoch"] and list(back[k]["optimizer_states"][0]["state"]) == [0]
        assert torch.equal(back[k]["state_dict"]["net.0.weight"], original["state_dict"]["net.0.weight"])
        steps = [c["optimizer_states"][0]["state"][0]["step"] for c in (back[k], original)]
        assert torch.equal(*steps)
        assert back[k]["optimizer_states"][0]["param_groups"] == [{"lr": 0.1, "params": [0]}]
    assert torch.equal(back[7]["only_mine"], torch.ones(2)) and "only_mine" not in back[0]


@pytest.mark.slow
def test_a_table_loaded_once_for_the_group_gives_each_member_its_run(tmp_path: Path) -> None:
    """data=csv: the group reads the file once; what reading it sets (its columns, the label names)
    reaches every member, whose numbers, per-class labels, standardization and split are its run's
    (a member standardizing the shared arrays in place gave the next ones already standardized data)."""
    points = [(math.sin(i), math.cos(3 * i)) for i in range(300)]  # distinct values: no tied scores to rank
    rows = [f"{a:.4f},{b:.4f},{'yes' if a + 0.5 * b > 0.1 else 'no'}" for a, b in points]
    (tmp_path / "t.csv").write_text("a,b,label\n" + "\n".join(rows) + "\n")
    overrides = ["data=csv", f"data.path={tmp_path / 't.csv'}", "loss=bce_logits,focal", "seed=1,2",
                 "trainer.max_epochs=2"]  # fmt: skip
    together, alone = sweep(tmp_path / "together", *overrides), sweep(tmp_path / "alone", *overrides, seeds=False)
    assert together.returncode == 0, together.stderr[-3000:]
    assert alone.returncode == 0, alone.stderr[-3000:]
    log = together.stdout + together.stderr
    assert "4 runs: seeds [1, 2] of 2 arms (loss=bce_logits, loss=focal) train as one vectorized model" in log
    assert_same_runs(records(tmp_path / "together"), records(tmp_path / "alone"))
    for job in ("0", "3"):
        ours, theirs = (json.loads((tmp_path / r / job / "per_class.json").read_text()) for r in ("together", "alone"))
        assert ours["labels"] == theirs["labels"] == ["no", "yes"]
    for job in ("0", "1", "2", "3"):  # what predict and a resume read: the raw table's statistics, its rows
        for name in ("preprocessing.json", "split.json"):
            ours, theirs = ((tmp_path / r / job / name).read_text() for r in ("together", "alone"))
            assert ours == theirs, (job, name)
    # both sweeps run again: each job is found finished before its data is read or its Trainer built, so
    # its files and its job log stay as they were and the console has neither the label line nor Lightning's
    before = {(r, p.relative_to(tmp_path / r)): p.read_bytes() for r in ("together", "alone")
              for p in (tmp_path / r).glob("*/*") if p.is_file()}  # fmt: skip
    for name, seeds in (("together", True), ("alone", False)):
        again = sweep(tmp_path / name, *overrides, seeds=seeds)
        assert again.returncode == 0, again.stderr[-3000:]
        log = again.stdout + again.stderr
        assert "data.label_columns=label" not in log and "GPU available" not in log
        if seeds:
            assert log.count("finished already: its run is kept as it is") == 4
    after = {(r, p.relative_to(tmp_path / r)): p.read_bytes() for r in ("together", "alone")
             for p in (tmp_path / r).glob("*/*") if p.is_file()}  # fmt: skip
    assert after == before


def test_a_member_without_checkpoints_of_a_killed_group_points_to_the_sweep(tmp_path: Path) -> None:
    """Killed while its group trained, a member's folder has no checkpoint yet: the group's file in the
    sweep's .seeds/ (beside it, the list of its members' folders) holds its state, and `ckpt_path=last`
    on the member names that file, the one of its own group, and says to run the sweep again."""
    from lossheads.config.validators import ConfigError
    from lossheads.run.checkpoints import resolve_checkpoint
    from lossheads.seeds.checkpoints import list_members

    member = tmp_path / "sweep" / "seed1" / "run"  # hydra.sweep.subdir=seed${seed}/run
    member.mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"no checkpoint in .*seed1/run/checkpoints: continue"):
        resolve_checkpoint("ckpt_path", "last", member)  # no group: as before
    seeds = tmp_path / "sweep" / ".seeds"
    for name, folders in (("group-0aaa.ckpt", [tmp_path / "sweep" / "other"]), ("group-0bbb.ckpt", [member])):
        (seeds / name).parent.mkdir(exist_ok=True)
        (seeds / name).write_bytes(b"")
        list_members(seeds / name, [str(f.resolve()) for f in folders])
    for value in ("last", str(member)):
        with pytest.raises(ConfigError) as refused:
            resolve_checkpoint("ckpt_path", value, member)
        message = str(refused.value)
        assert "\n" not in message and "keeps their state in" in message and "group-0bbb.ckpt" in message
        assert "group-0aaa" not in message and "run the sweep's command again" in message
    # the command refused in the member's folder leaves the member's Hydra files as they were
    owner = {name: f"owner's {name}\n" for name in ("config.yaml", "hydra.yaml", "overrides.yaml")}
    for folder in (".hydra", ".hydra-run"):
        (member / folder).mkdir()
        for name, text in owner.items():
            (member / folder / name).write_text(text)
    refused = train_py_in_process(*QUIET, f"hydra.run.dir={member}", "ckpt_path=last")
    assert refused.returncode == 2 and "run the sweep's command again" in refused.stderr
    assert {name: (member / ".hydra" / name).read_text() for name in owner} == owner
    refused = train_py_in_process(*QUIET, f"hydra.run.dir={member}", "optimizer.lr=-1")  # before Lightning loads
    assert refused.returncode == 2 and "optimizer.lr=-1 is not valid" in refused.stderr
    assert {name: (member / ".hydra" / name).read_text() for name in owner} == owner


# ---- worker processes (hydra.launcher.workers) ------------------------------------------------------


def sweep_processes(folder: Path) -> list[int]:
    """The PIDs of the processes whose command line names the sweep folder (the sweep and its workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(folder).encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:  # gone meanwhile
            continue
    return found


def workers_of(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


def started_sweep(folder: Path, *overrides: str) -> subprocess.Popen:
    """A sweep with two worker processes in a process of its own, once both groups have saved an epoch."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "-m", *QUIET, "hydra/launcher=seeds", f"hydra.sweep.dir={folder}",
         "~hydra.callbacks.report", "hydra.launcher.workers=2", "loss=bce_logits,ce", "seed=1,2", *overrides],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    deadline = time.time() + 120
    while len(group_files(folder)) < 2:
        assert time.time() < deadline and process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.1)
    return process


@pytest.mark.slow
def test_the_figures_drawn_while_the_last_group_trains_are_the_reports_own(tmp_path: Path) -> None:
    """Two datasets, one group each, two workers: the worker that ends first leaves a core free, and the
    figures of its dataset are drawn then, in memory. The report writes them, and they are byte for byte
    the figures that the report command draws afresh; a figure whose runs changed since is drawn again."""
    import shutil

    from lossheads.report import drawing
    from lossheads.report.markdown import write
    from lossheads.report.settings import of_sweep, settings

    folder = tmp_path / "sweep"
    result = sweep(folder, "data=breast_cancer,synthetic_binary", "loss.pos_weight=null,auto", "seed=1,2",
                   "trainer.max_epochs=2", "hydra.launcher.workers=2", "hydra.verbose=lossheads.report.drawing",
                   report=True)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    taken = re.search(r"figures drawn ahead: (\d+) taken, 0 drawn again", result.stdout + result.stderr)
    assert taken and int(taken[1]) >= 4, (result.stdout + result.stderr)[-3000:]  # a dataset's four, at least
    afresh = tmp_path / "afresh"
    shutil.copytree(folder, afresh)
    for figure in afresh.glob("*.png"):
        figure.unlink()
    assert result_of(["-m", "lossheads.report", str(afresh)]).returncode == 0
    figures = sorted(p.name for p in folder.glob("*.png"))
    assert figures == sorted(p.name for p in afresh.glob("*.png")) and len(figures) == 8
    for name in figures:
        assert (folder / name).read_bytes() == (afresh / name).read_bytes(), name
    # drawn ahead again, then one run's predictions change: that dataset's figures are drawn again
    chosen = settings(**of_sweep(afresh))
    drawing.expect(afresh, chosen)
    drawing.draw_ahead(afresh, running=set())
    drawing._drawing.forked.reader.join()  # the figures are drawn (its pipe closed) before the run changes
    (afresh / "0" / "predictions.npz").touch()  # job 0: breast_cancer, the first dataset swept
    drawn_now: list[str] = []
    real_draw = drawing.draw

    def draw(calls: list[Any]) -> list[Path | None]:
        drawn_now.extend(drawing.path_of(call).name for call in calls)
        return real_draw(calls)

    drawing.draw = draw
    try:
        write(afresh, chosen)
    finally:
        drawing.draw = real_draw
    names = ("forest", "curves", "roc_pr", "reliability", "confusion")  # confusion: none for binary data
    assert sorted(drawn_now) == sorted(f"breast_cancer-{name}.png" for name in names)
    for name in figures:
        assert (folder / name).read_bytes() == (afresh / name).read_bytes(), name


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="figures are drawn ahead on Linux")
def test_a_sweep_killed_while_figures_are_drawn_ahead_leaves_no_drawing_process_and_its_folder_free(tmp_path: Path):
    """The drawing process holds none of the sweep's folder locks and dies with the sweep: after a
    SIGKILL (which the sweep cannot pass on) the same command can write the folder at once."""
    from lossheads.run.lock import is_held

    folder = tmp_path / "sweep"
    code = (f"import time; from pathlib import Path; from lossheads.run.lock import acquire; "
            f"from lossheads.report import drawing; from lossheads.report.settings import settings\n"
            f"folder = Path({str(folder)!r}); acquire(folder, 'hydra.sweep.dir')\n"
            f"drawing._draw = lambda expected, running: time.sleep(60) or {{}}  # a long drawing\n"
            f"drawing.expect(folder, settings()); drawing.draw_ahead(folder, set())\n"
            f"print(drawing._drawing.forked.pid, flush=True); time.sleep(60)\n")  # fmt: skip
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(process.stdout.readline())
    time.sleep(0.5)  # the drawing process has closed its copy of the lock's file
    assert is_held(folder)
    process.kill()
    process.wait()
    deadline = time.time() + 5
    while Path(f"/proc/{child}").exists() and time.time() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists() and not is_held(folder)


def result_of(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.slow
def test_workers_share_the_groups_and_each_member_equals_its_run_in_one_process(tmp_path: Path) -> None:
    """Two worker processes take the sweep's units (here the one-logit arm and the softmax arm, which
    can never stack, prepared apart): every member's numbers and files are those of the same sweep
    in one process, and the workers' console lines reach the sweep's console."""
    overrides = ["loss=bce_logits,ce", "loss.pos_weight=null,auto", "seed=1,2", "trainer.max_epochs=2"]
    shared = sweep(tmp_path / "shared", *overrides, "hydra.launcher.workers=2")
    alone = sweep(tmp_path / "alone", *overrides, "hydra.launcher.workers=1")
    assert shared.returncode == 0, shared.stderr[-3000:]
    assert alone.returncode == 0, alone.stderr[-3000:]
    log, one = shared.stdout + shared.stderr, alone.stdout + alone.stderr
    assert "Launching 8 jobs, those of one network shape together (hydra/launcher=seeds), in 2 worker processes" in log
    assert "worker processes" not in one
    assert "#4, #5, #6, #7 train as a group of their own: they differ from #0's in head, number of logits" in one
    for text in (log, one):  # one composition per loss; seeds and pos_weight values are copies of it
        assert "job configs: 2 composed, 14 copied from a composed one" in text
        assert text.count("train as one vectorized model") == 2
    assert_same_runs(records(tmp_path / "shared"), records(tmp_path / "alone"))
    for job in map(str, range(8)):
        assert hydra_files(tmp_path / "shared", job) == hydra_files(tmp_path / "alone", job)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_stop_sent_to_the_sweep_alone_reaches_every_worker(tmp_path: Path) -> None:
    folder = tmp_path / "sweep"
    process = started_sweep(folder, "trainer.max_epochs=100000")
    workers = workers_of(process.pid)
    assert len(workers) == 2
    process.send_signal(signal.SIGTERM)  # to the sweep's process only, as `kill PID` sends it
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err[-3000:]
    assert "interrupted by SIGTERM: the workers recorded their running jobs as interrupted" in err
    assert [r["status"] for r in records(folder).values()] == ["interrupted"] * 4
    assert sweep_processes(folder) == []


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_whose_sweep_is_killed_record_their_stops(tmp_path: Path) -> None:
    folder = tmp_path / "sweep"
    process = started_sweep(folder, "trainer.max_epochs=100000")
    process.kill()  # SIGKILL: the sweep cannot pass it on
    process.communicate(timeout=60)
    deadline = time.time() + 30
    while sweep_processes(folder):
        assert time.time() < deadline, "the workers outlived their sweep"
        time.sleep(0.2)
    assert [r["status"] for r in records(folder).values()] == ["interrupted"] * 4


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_worker_ends_the_sweep_in_one_line_and_the_sweep_run_again_finishes_it(tmp_path: Path) -> None:
    folder = tmp_path / "sweep"
    process = started_sweep(folder, "trainer.max_epochs=150")
    killed = workers_of(process.pid)[0]
    os.kill(killed, signal.SIGKILL)
    _, err = process.communicate(timeout=120)  # the other worker finishes its group
    assert process.returncode == 1, err[-3000:]
    assert f"error: worker process {killed} was ended by SIGKILL before its jobs were recorded" in err
    statuses = {job: r["status"] for job, r in records(folder).items()}
    assert list(statuses.values()) == ["ok", "ok"]  # the other worker's two runs
    again = sweep(folder, "loss=bce_logits,ce", "seed=1,2", "trainer.max_epochs=150", "hydra.launcher.workers=2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert [r["status"] for r in records(folder).values()] == ["ok"] * 4


def test_jobs_whose_heads_differ_on_every_task_are_prepared_apart() -> None:
    from hydra_plugins.lossheads_seeds.seeds_launcher import apart_by_head
    from lossheads.config.pairing import head_on_each_task

    heads = {"loss=bce": head_on_each_task("auto", "bce"), "loss=ce": head_on_each_task("auto", "ce"),
             "loss=focal": head_on_each_task("auto", "focal"), "loss=unknown": None}  # fmt: skip
    jobs = [(i, [loss, f"seed={s}"]) for i, (loss, s) in enumerate((n, s) for n in heads for s in (1, 2))]

    def parts(names: list[str]) -> list[list[int]]:
        chosen = [j for j in jobs if j[1][0] in names]
        return [[i for i, _ in part] for part in apart_by_head(chosen, lambda o: heads[o[0]])]

    assert heads["loss=bce"] == ("sigmoid", "ovr", "multilabel") and heads["loss=ce"] == ("softmax", "softmax", None)
    assert parts(["loss=bce", "loss=ce"]) == [[0, 1], [2, 3]]  # sigmoid / ovr / multilabel against softmax
    assert parts(["loss=bce", "loss=ce", "loss=focal"]) == [[0, 1, 2, 3, 4, 5]]  # focal may stack with either
    assert parts(["loss=bce", "loss=ce", "loss=unknown"]) == [[0, 1, 2, 3, 6, 7]]  # not known: one part


def test_worker_processes_by_default_one_per_core_on_a_cpu_and_one_elsewhere() -> None:
    from lossheads.seeds.workers import cpu_cores, dealing_order, worker_count

    cores = cpu_cores()
    assert worker_count("auto", 100, on_cpu=True) == (min(cores, 100) if sys.platform.startswith("linux") else 1)
    assert worker_count("auto", 100, on_cpu=False) == 1
    assert worker_count(4, 3, on_cpu=True) == 3  # never more than the units
    assert worker_count(1, 3, on_cpu=True) == 1
    assert dealing_order([40, 20, 40, 20]) == [0, 2, 1, 3]  # the largest first, ties in sweep order


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_worker_count_is_refused_in_one_line(tmp_path: Path, value: str) -> None:
    result = sweep(tmp_path / "sweep", "seed=1,2", f"hydra.launcher.workers={value}")
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: hydra.launcher.workers=") and value in line
    assert "use auto (one process per CPU core on a CPU) or a whole number >= 1" in result.stderr
    assert not list((tmp_path / "sweep").glob("*/metrics.json"))


@pytest.mark.slow
def test_jobs_that_differ_only_in_values_share_one_composition_and_get_hydras_files(tmp_path: Path) -> None:
    """Values (a learning rate, a loss option, the seed) are set on a copy of one composed config as
    Hydra sets them: every job's `.hydra/` files are those of Hydra's basic launcher. A list value
    is merged into what is there, so its jobs are each composed."""
    overrides = ["loss=ce", "optimizer.lr=0.001,0.01", "loss.pos_weight=null,auto", "seed=1", "trainer.max_epochs=1"]
    copied = sweep(tmp_path / "copied", *overrides)
    composed = sweep(tmp_path / "composed", *overrides, seeds=False)
    assert copied.returncode == 0 and composed.returncode == 0, copied.stderr[-3000:] + composed.stderr[-3000:]
    assert "job configs: 1 composed, 7 copied from a composed one" in copied.stdout + copied.stderr
    for job in map(str, range(4)):
        assert hydra_files(tmp_path / "copied", job) == hydra_files(tmp_path / "composed", job)
    lists = sweep(tmp_path / "lists", "loss=ce", "loss.weight=[1.0,2.0]", "seed=1,2", "trainer.max_epochs=1")
    assert lists.returncode == 0, lists.stderr[-3000:]
    assert "job configs: 2 composed, 2 copied from a composed one" in lists.stdout + lists.stderr
    # a later item on the same key wins, as in Hydra: the value is not set again on a copy
    for name, later in (("forced", "++optimizer.lr=0.5"), ("deleted", "~optimizer.lr")):
        ours = sweep(tmp_path / name, "optimizer.lr=0.01,0.1", later, "seed=1", "trainer.max_epochs=1")
        theirs = sweep(tmp_path / f"{name}-basic", "optimizer.lr=0.01,0.1", later, "seed=1", "trainer.max_epochs=1",
                       seeds=False)  # fmt: skip
        assert ours.returncode == theirs.returncode == 0, ours.stderr[-3000:]
        assert "Traceback" not in ours.stderr
        for job in ("0", "1"):
            assert hydra_files(tmp_path / name, job) == hydra_files(tmp_path / f"{name}-basic", job)


@pytest.mark.slow
def test_workers_of_a_process_that_ran_parallel_ops_finish(tmp_path: Path) -> None:
    """OpenMP's thread pool does not survive a fork: a worker of a process that has run a parallel op
    hangs in its first op with more than one thread. A sweep started from such a process (a notebook,
    a test runner, an earlier batch of an Optuna study) finishes."""
    script = (
        "import sys, torch\n"
        "torch.set_num_threads(4)\n"
        "x = torch.randn(1500, 1500)\n"
        "(x @ x).relu().sum()\n"
        "from lossheads.cli.train import train\n"
        f"sys.argv = ['train.py', '-m', *{QUIET!r}, 'hydra/launcher=seeds', 'hydra.launcher.workers=2',\n"
        f"            '~hydra.callbacks.report', 'hydra.sweep.dir={tmp_path / 'sweep'}', 'loss=bce_logits,ce',\n"
        "            'seed=1,2', 'trainer.max_epochs=1']\n"
        "train()\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["status"] for r in records(tmp_path / "sweep").values()] == ["ok"] * 4


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_second_stop_kills_the_workers_and_the_sweep_run_again_finishes(tmp_path: Path) -> None:
    folder = tmp_path / "sweep"
    process = started_sweep(folder, "trainer.max_epochs=60")
    process.send_signal(signal.SIGTERM)
    time.sleep(0.05)  # two signals at once are one
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err[-3000:]
    assert "a second stop: the workers are killed; run the same command again to continue the sweep" in err
    assert sweep_processes(folder) == []
    again = sweep(folder, "loss=bce_logits,ce", "seed=1,2", "trainer.max_epochs=60", "hydra.launcher.workers=2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert [r["status"] for r in records(folder).values()] == ["ok"] * 4


@pytest.mark.slow
def test_the_job_config_count_of_a_sweep_in_batches_counts_the_workers(tmp_path: Path) -> None:
    overrides = ["loss=bce_logits,ce", "seed=1,2,3", "hydra.sweeper.max_batch_size=4", "trainer.max_epochs=1"]
    logs = []
    for workers in (2, 1):
        result = sweep(tmp_path / f"w{workers}", *overrides, f"hydra.launcher.workers={workers}")
        assert result.returncode == 0, result.stderr[-3000:]
        logs.append(re.findall(r"job configs: \d+ composed, \d+ copied", result.stdout + result.stderr))
    assert logs[0] == logs[1] == ["job configs: 2 composed, 6 copied", "job configs: 2 composed, 10 copied"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="workers are forked")
def test_workers_take_every_unit_once_however_many() -> None:
    """More units than a pipe holds at once (16,384 indices): each is taken by one worker, exactly once."""
    from lossheads.seeds.workers import run_in_workers

    units = list(range(20_000))
    outcome = run_in_workers(units, [1.0] * len(units), 2, lambda u: {u: os.getpid()}, os.getpid)
    assert outcome.exit_code == 0 and outcome.stop is None
    assert sorted(outcome.returns) == units
    assert set(outcome.returns.values()) == set(outcome.summaries) and len(outcome.summaries) == 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="workers are forked")
def test_when_a_worker_runs_out_of_units_the_sweep_hears_which_still_run() -> None:
    """The long unit goes first (largest first), to one worker; the other takes the three short ones and
    ends first: `tail` hears, once, that only the long one still runs. With one worker it never does."""
    from lossheads.seeds.workers import run_in_workers

    heard: list[set[int]] = []
    seconds = [0.05, 0.05, 1.5, 0.05]
    units = list(range(len(seconds)))
    outcome = run_in_workers(units, seconds, 2, lambda u: {u: time.sleep(seconds[u])}, os.getpid, tail=heard.append)
    assert outcome.exit_code == 0 and sorted(outcome.returns) == units and heard == [{2}]
    run_in_workers(units, seconds, 1, lambda u: {u: None}, os.getpid, tail=heard.append)
    assert heard == [{2}]


@pytest.mark.slow
def test_a_head_swept_as_a_value_keeps_its_jobs_in_one_unit(tmp_path: Path) -> None:
    """`head.name=...` is a value set on each job's copy: which head a job has is not known before its
    config is made, so no job is prepared apart from another (two units would keep two jobs that
    stack from stacking)."""
    result = sweep(tmp_path / "sweep", "head.name=sigmoid,softmax", "loss=ce,bce_logits", "seed=1",
                   "trainer.max_epochs=1", "hydra.launcher.workers=2")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "4 jobs composed and prepared" in log and "worker processes" not in log
    statuses = sorted(r["status"] for r in records(tmp_path / "sweep").values())
    assert statuses == ["ok", "ok"]  # loss=ce with the sigmoid head and bce_logits with softmax are refused


def test_with_hydras_disabled_sweep_logging_each_members_log_keeps_its_lines(tmp_path: Path) -> None:
    """`hydra/hydra_logging=disabled` disables every logger each time the sweep's logging is set up;
    each member's log still gets its group's lines and the Trainer's, and the console the sweep's
    `#N` lines, as when Hydra sets up each job's logging again."""
    result = sweep(tmp_path, "hydra/hydra_logging=disabled", "seed=1,2", "loss=bce_logits,bce",
                   "trainer.max_epochs=1", "hydra.launcher.workers=1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    for job in ("0", "1", "2", "3"):
        job_log = (tmp_path / job / "train.log").read_text()
        assert "train as one vectorized model" in job_log and "GPU available: " in job_log, job
