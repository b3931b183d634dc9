"""Unattended runs: exact resume, interrupts, divergence, DDP, safe loading, evaluation, the stability probe."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import QUIET, ROOT, built, compose_config
from lossheads.config.validators import ConfigError
from lossheads.run.execute import main, run
from lossheads.training.module import Diverged
from test_durability import pause, signal_when, start


def train(folder: Path, *overrides: str) -> dict:
    return run(compose_config([*QUIET, *overrides], folder))


@pytest.mark.slow
def test_two_epochs_then_resume_to_four_equals_four_straight_epochs(tmp_path):
    # dropout makes the random state matter: the checkpoint carries it, so the masks match too
    options = ["model.dropout=0.2", "data=digits", "loss=ce"]
    straight = train(tmp_path / "straight", *options, "trainer.max_epochs=4")
    train(tmp_path / "part", *options, "trainer.max_epochs=2")
    resumed = train(tmp_path / "part", *options, "trainer.max_epochs=4", "ckpt_path=last")
    assert resumed["steps"] == straight["steps"] == 4 * 17  # 1078 training digits in batches of 64
    assert resumed["val/loss"] == pytest.approx(straight["val/loss"], abs=1e-5)
    assert resumed["test/acc"] == straight["test/acc"]


def test_resume_from_a_run_folder_or_a_file(tmp_path, one_epoch_run):
    by_folder = train(tmp_path / "b", "trainer.max_epochs=2", f"ckpt_path={one_epoch_run}")
    by_file = train(tmp_path / "c", "trainer.max_epochs=2", f"ckpt_path={one_epoch_run / 'checkpoints' / 'last.ckpt'}")
    assert by_folder["val/loss"] == by_file["val/loss"] and by_folder["steps"] == 12


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["ckpt_path=last"], "ckpt_path='last' is not valid: no checkpoint in"),
        (["ckpt_path=/no/such.ckpt"], "ckpt_path='/no/such.ckpt' is not valid: no such file"),
        (["train=false"], "ckpt_path=None is not valid: train=false evaluates a checkpoint"),
        (["train=maybe"], "train='maybe' is not valid: use true, or false"),
    ],
)
def test_bad_checkpoint_choices_are_refused_before_training(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        train(tmp_path / "run", *overrides)
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_checkpoint_of_another_configuration_is_refused(tmp_path, one_epoch_run):
    with pytest.raises(ConfigError, match="saved by a run with another model, head, loss or dataset"):
        train(tmp_path / "digits", "data=digits", "loss=ce", f"ckpt_path={one_epoch_run}")  # of breast_cancer


def plant_payload(path: Path, marker: Path) -> None:
    """A checkpoint whose unpickling would run code (create `marker`)."""

    class Payload:
        def __reduce__(self):
            return (Path.mkdir, (marker,))

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "payload": Payload()}, path)


@pytest.mark.parametrize("mode", ["resume", "evaluate"])
def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, mode):
    marker, evil = tmp_path / "pwned", tmp_path / "evil" / "checkpoints" / "last.ckpt"
    plant_payload(evil, marker)
    extra = ["train=false"] if mode == "evaluate" else []
    with pytest.raises(ConfigError, match="could run code; load only checkpoints you trust"):
        train(tmp_path / "run", f"ckpt_path={evil}", *extra)
    assert not marker.exists()
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_evaluating_a_checkpoint_gives_the_training_runs_own_test_numbers(tmp_path):
    trained = train(tmp_path / "trained", "data=digits", "loss=ce", "trainer.max_epochs=3")
    ckpt = tmp_path / "trained" / "checkpoints" / "last.ckpt"
    evaluated = train(tmp_path / "eval", "data=digits", "loss=ce", "train=false", f"ckpt_path={ckpt}")
    assert evaluated["evaluated"] == str(ckpt) and evaluated["status"] == "ok"
    test_keys = [k for k in trained if k.startswith("test/")]
    assert len(test_keys) == 10 and not any(k.startswith("val/") for k in evaluated)
    for key in test_keys:
        assert evaluated[key] == pytest.approx(trained[key], abs=1e-6), key


@pytest.mark.slow
def test_a_sigterm_while_training_saves_a_checkpoint_and_says_how_to_resume(tmp_path):
    """SIGTERM reaches Lightning's own handler while it trains (Ctrl-C there: test_durability's stop
    within an epoch, which resumes through the printed command)."""
    sig, code, name = signal.SIGTERM, 143, "SIGTERM"
    overrides = ["trainer.max_epochs=100", *QUIET]
    process = start(tmp_path, *overrides, "hydra.run.dir=run", *pause("on_train_batch_end", tmp_path / "p", 2))
    stderr = signal_when(process, tmp_path / "p", sig)  # after epoch 2's steps (one call of 6), before its end
    assert process.returncode == code, stderr[-2000:]
    assert "Traceback" not in stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("interrupted by")]
    assert name in line and "resume with: python train.py" in line and "ckpt_path=last" in line
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "interrupted" and "test/acc" not in record
    saved = torch.load(record["checkpoint"], weights_only=True)
    assert "rng_state" in saved
    # the printed command continues the run (here through the interrupted epoch), in-process
    assert (saved["epoch"], saved["global_step"]) == (0, 6)  # the newest state: epoch 1's end
    train(tmp_path / "run", "trainer.max_epochs=2", "ckpt_path=last")
    finished = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert finished["status"] == "ok" and finished["epochs"] == 2 and finished["steps"] == 12
    assert not (tmp_path / "run" / "checkpoints" / "interrupted.ckpt").exists()


def exit_of_main(folder: Path, *overrides: str, capsys) -> tuple[int, str]:
    """What `python train.py OVERRIDES hydra.run.dir=FOLDER` exits with and prints on stderr, in-process."""
    with pytest.raises(SystemExit) as exited:
        main(compose_config([*QUIET, *overrides], folder))
    return exited.value.code, capsys.readouterr().err


def test_a_diverging_run_stops_in_one_line_and_records_it(tmp_path, capsys):
    code, stderr = exit_of_main(tmp_path / "run", "optimizer.lr=1e30", capsys=capsys)
    assert code == 1
    assert "Traceback" not in stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert re.search(r"the loss became nan at epoch 0, step \d+ with optimizer.lr=1e\+30: lower it", line)
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "diverged" and "test/acc" not in record


def test_a_divergence_leaves_no_checkpoint_of_the_diverged_weights(tmp_path, capsys):
    """Validation, which checkpoints, follows the first of two calls here; that call's second step
    gives nan, so the run stops before validation can save those weights."""
    code, stderr = exit_of_main(tmp_path / "run", "optimizer.lr=1e30", "trainer.max_epochs=1", "steps_per_call=4",
                                "+trainer.val_check_interval=0.5", capsys=capsys)  # fmt: skip
    assert code == 1
    assert re.search(r"error: training diverged: the loss became nan at epoch 0, step 1 ", stderr)
    assert not list((tmp_path / "run").rglob("*.ckpt"))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "diverged"


NEEDS_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("accelerator", ["cpu", pytest.param("gpu", marks=NEEDS_GPU)])
def test_a_divergence_stops_the_run_at_the_end_of_its_call_naming_its_step(tmp_path, accelerator):
    """One check per call of 4 steps: the nan at step 1 (0-based) stops the run after step 4."""
    overrides = ["data=digits", "loss=ce", f"trainer.accelerator={accelerator}", "optimizer.lr=1e30",
                 "steps_per_call=4", "trainer.max_epochs=1", *QUIET]  # fmt: skip
    datamodule, module, trainer = built(overrides, tmp_path)
    with pytest.raises(Diverged, match=r"the loss became nan at epoch 0, step 1 with optimizer.lr=1e\+30"):
        trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 4


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_equals_one_process_with_the_joint_batch(tmp_path):
    common = ["trainer.max_epochs=3", "data.drop_last=true", *QUIET]
    ddp = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "trainer=ddp_cpu", "data.batch_size=32", *common, "hydra.run.dir=ddp"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    single = train(tmp_path / "single", "data.batch_size=64", *common)  # in-process, while the two processes start
    _, stderr = ddp.communicate(timeout=300)
    assert ddp.returncode == 0, stderr[-3000:]
    synced = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert synced["steps"] == single["steps"] == 3 * 5  # 343 training samples: 5 full batches of 64
    for key in [k for k in single if "/" in k]:
        assert synced[key] == pytest.approx(single[key], abs=1e-5), key
    # one run folder (rank 0 writes), one metrics.json, one .hydra: nothing duplicated by the second process
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "single"]
    assert len(list((tmp_path / "ddp").rglob("metrics.json"))) == 1
    assert len(list((tmp_path / "ddp").rglob(".hydra"))) == 1
    gathered, whole = np.load(tmp_path / "ddp" / "predictions.npz"), np.load(tmp_path / "single" / "predictions.npz")
    for key in ("val_probs", "test_probs"):  # both processes' shards, gathered
        assert len(gathered[key]) == len(whole[key]) == 113
        assert np.sort(gathered[key]) == pytest.approx(np.sort(whole[key]), abs=1e-5)


def test_stability_probe_finds_the_clamp_the_vanishing_gradient_and_the_fp16_nans(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "stability.py"), "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {
        tuple(c.strip() for c in line.split("|")[1:3]): line for line in result.stdout.splitlines()[4:] if "|" in line
    }
    assert "| 100 | z <= -42.1697 | never | 100 / -0 |" in rows["bce", "fp32"]  # clamped at 100, gradient gone
    assert "| 1000 | never | never | 1e+03 / -1 |" in rows["bce_logits", "fp32"]
    assert "| never | |z| >= 8.41395 |" in rows["naive bce", "fp16"]  # sigmoid rounds to 0 or 1: NaN gradients
    assert "| 1000 | never | never |" in rows["ce (two-way softmax)", "bf16"]
    assert (tmp_path / "stability.png").stat().st_size > 10_000 and (tmp_path / "stability.csv").is_file()


def test_a_new_record_clears_what_an_earlier_attempt_left_beside_it(tmp_path):
    """A diverged record after a resumed result leaves no predictions or per-class numbers of that
    result beside it; a result after a failed attempt (a full disk, then a resume) no failure.json."""
    from omegaconf import OmegaConf

    from lossheads.run.outcomes import record_status

    cfg = OmegaConf.create({"seed": 1, "paths": {"output_dir": str(tmp_path)}})
    for name in ("predictions.npz", "per_class.json", "split.json"):
        (tmp_path / name).write_text("an earlier result's")
    record_status(cfg, "diverged", "training diverged: ...", "metrics.json")
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "diverged"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "split.json"]
