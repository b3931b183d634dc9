"""Resume is exact or refused, with the inputs included: the data and the teacher a run trained on,
and the length a schedule was laid out for; every file read is verified, or said not to be."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from conftest import QUIET, compose_config
from lossheads.cli.predict import main as predict
from lossheads.config.validators import ConfigError
from lossheads.run.execute import run


def train(folder: Path, *overrides: str) -> dict:
    return run(compose_config([*QUIET, *overrides], folder))


def table_file(path: Path, n: int = 120) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=n).round(3), "b": rng.normal(size=n).round(3)})
    frame["label"] = (frame.a + rng.normal(0, 0.5, n) > 0).astype(int)
    frame.to_csv(path, index=False)
    return frame


# ---- the data and the teacher -------------------------------------------------------------------------


def test_a_table_changed_since_the_run_is_refused_on_resume(tmp_path):
    frame = table_file(tmp_path / "t.csv")
    options = ["data=table", f"data.path={tmp_path / 't.csv'}"]
    train(tmp_path / "run", *options, "trainer.max_epochs=1")
    frame.loc[5, "a"] = 9.0  # one cell edited in place: same name, same size, other data
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ConfigError) as refused:
        train(tmp_path / "run", *options, "trainer.max_epochs=2", "ckpt_path=last")
    message = str(refused.value)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert message.startswith(f"ckpt_path='{ckpt}' is not valid: the data changed since the checkpoint was saved "
                              "(data=table: 120 samples, fingerprint ")  # fmt: skip
    assert "restore the data the run trained on, or start a new run without ckpt_path" in message
    assert "\n" not in message and not (tmp_path / "run" / "metrics.json").read_text().count('"epochs": 2')


def test_the_same_rows_in_another_order_are_refused_on_resume(tmp_path):
    frame = table_file(tmp_path / "t.csv")
    options = ["data=table", f"data.path={tmp_path / 't.csv'}"]
    train(tmp_path / "run", *options, "trainer.max_epochs=1")
    frame.iloc[::-1].to_csv(tmp_path / "t.csv", index=False)  # the same samples: the same fingerprint
    with pytest.raises(ConfigError, match=r"the data holds the same samples but in another order .* restore the "
                                          r"file's row order, or start a new run without ckpt_path$"):  # fmt: skip
        train(tmp_path / "run", *options, "trainer.max_epochs=2", "ckpt_path=last")
    frame.to_csv(tmp_path / "t.csv", index=False)  # put back: the resume is accepted
    assert train(tmp_path / "run", *options, "trainer.max_epochs=2", "ckpt_path=last")["epochs"] == 2


def test_a_teacher_retrained_in_place_is_refused_on_the_students_resume(tmp_path, one_epoch_run):
    shutil.copytree(one_epoch_run, tmp_path / "teacher")
    train(tmp_path / "other", "trainer.max_epochs=1", "optimizer.lr=0.01")
    teacher = tmp_path / "teacher" / "checkpoints" / "last.ckpt"
    student = ["loss=kd", f"teacher.ckpt_path={teacher}"]
    train(tmp_path / "student", *student, "trainer.max_epochs=1")
    shutil.copyfile(tmp_path / "other" / "checkpoints" / "last.ckpt", teacher)  # retrained in place
    with pytest.raises(
        ConfigError,
        match=r"is not valid: the teacher changed since the checkpoint was saved "
        r"\(checksum [0-9a-f]{12} then, [0-9a-f]{12} now: retrained or replaced",
    ):
        train(tmp_path / "student", *student, "trainer.max_epochs=2", "ckpt_path=last")


# ---- schedules laid out over the run's length ---------------------------------------------------------


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_a_schedule_spread_over_the_run_refuses_a_resume_to_another_length(tmp_path, schedule):
    train(tmp_path / "run", f"scheduler={schedule}", "trainer.max_epochs=2")
    with pytest.raises(ConfigError) as refused:
        train(tmp_path / "run", f"scheduler={schedule}", "trainer.max_epochs=3", "ckpt_path=last")
    assert str(refused.value) == (
        f"trainer.max_epochs=3 is not valid for this resume: scheduler={schedule} spreads the learning rate over "
        "the run's length, set when the run started (trainer.max_epochs=2, trainer.max_steps=-1), and every step "
        "taken so far followed that curve, so no resume to another length matches an unbroken run of it: resume "
        "with trainer.max_epochs=2, trainer.max_steps=-1, or start a new run of the new length without ckpt_path "
        "(scheduler=none, step and plateau resume to any length)"
    )
    # beyond max_epochs: a new max_steps changes the length too
    with pytest.raises(ConfigError, match=r"^trainer.max_steps=20 is not valid for this resume: scheduler="):
        train(tmp_path / "run", f"scheduler={schedule}", "trainer.max_epochs=2", "trainer.max_steps=20",
              "ckpt_path=last")  # fmt: skip


@pytest.mark.parametrize(
    "schedule",
    [
        ["scheduler=step", "scheduler.step_size=1", "scheduler.gamma=0.5"],
        ["scheduler=plateau", "scheduler.patience=0", "scheduler.factor=0.5"],
        ["scheduler=none", "scheduler.warmup_steps=8"],
    ],
    ids=["step", "plateau", "none+warmup"],
)
def test_a_schedule_independent_of_the_length_resumes_to_a_longer_run_exactly(tmp_path, schedule):
    options = [*schedule, "optimizer.lr=0.01"]
    straight = train(tmp_path / "straight", *options, "trainer.max_epochs=3")
    train(tmp_path / "part", *options, "trainer.max_epochs=2")
    resumed = train(tmp_path / "part", *options, "trainer.max_epochs=3", "ckpt_path=last")
    assert resumed["steps"] == straight["steps"] == 18
    assert resumed["val/loss"] == pytest.approx(straight["val/loss"], abs=1e-6)
    assert resumed["test/auroc"] == straight["test/auroc"]


# ---- every file read is verified, or said not to be ---------------------------------------------------


def test_model_weights_from_a_lossheads_checkpoint_are_checksum_verified(tmp_path, capsys, one_epoch_run):
    ckpt = one_epoch_run / "checkpoints" / "last.ckpt"
    train(tmp_path / "ok", "trainer.max_epochs=1", f"model.weights={ckpt}")
    assert f"model.weights: loaded 6 of 6 tensors from {ckpt} (checksum verified)" in capsys.readouterr().out
    saved = torch.load(ckpt, weights_only=True)
    saved["state_dict"]["net.0.weight"][0, 0] += 1.0  # one weight altered, the checksum left as it was
    torch.save(saved, tmp_path / "altered.ckpt")
    with pytest.raises(ConfigError, match=r"^model.weights='.*altered.ckpt' is not valid: its checksum does not "
                                          r"match its contents \(the file was altered or damaged\)"):  # fmt: skip
        train(tmp_path / "altered", "trainer.max_epochs=1", f"model.weights={tmp_path / 'altered.ckpt'}")


def test_a_plain_state_dict_loads_and_the_log_says_it_has_no_checksum(tmp_path, capsys, one_epoch_run):
    saved = torch.load(one_epoch_run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    torch.save({k.removeprefix("net."): v for k, v in saved.items()}, tmp_path / "plain.pt")
    train(tmp_path / "run", "trainer.max_epochs=1", f"model.weights={tmp_path / 'plain.pt'}")
    assert (f"model.weights: loaded 6 of 6 tensors from {tmp_path / 'plain.pt'} (no checksum in the file, so its "
            "integrity is not verified)") in capsys.readouterr().out  # fmt: skip


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: {**p, "mean": [m + 1.0 for m in p["mean"]]}, "does not match its checksum (the file was edited"),
        (lambda p: {k: v for k, v in p.items() if k != "sha256"}, "carries no checksum (written by an earlier"),
    ],
    ids=["edited", "checksum-removed"],
)
def test_predict_refuses_an_edited_preprocessing_json(tmp_path, edit, message):
    table_file(tmp_path / "t.csv")
    train(tmp_path / "run", "data=table", f"data.path={tmp_path / 't.csv'}", "trainer.max_epochs=1")
    prep_file = tmp_path / "run" / "preprocessing.json"
    args = [f"ckpt_path={tmp_path / 'run'}", f"data.path={tmp_path / 't.csv'}", f"output={tmp_path / 'p.csv'}"]
    before = predict(args).read_text()
    prep_file.write_text(json.dumps(edit(json.loads(prep_file.read_text()))))
    with pytest.raises(ConfigError) as refused:
        predict([*args, "overwrite=true"])
    assert str(refused.value).startswith(f"ckpt_path='{tmp_path / 'run'}' is not valid: {prep_file} {message}")
    assert (tmp_path / "p.csv").read_text() == before  # nothing written over the earlier predictions


def test_predict_reads_the_config_its_checkpoint_carries_not_the_editable_copy(tmp_path):
    table_file(tmp_path / "t.csv")
    train(tmp_path / "run", "data=table", f"data.path={tmp_path / 't.csv'}", "trainer.max_epochs=1")
    args = [f"ckpt_path={tmp_path / 'run'}", f"data.path={tmp_path / 't.csv'}", f"output={tmp_path / 'p.csv'}"]
    before = predict(args).read_text()
    config_file = tmp_path / "run" / ".hydra" / "config.yaml"
    edited = OmegaConf.load(config_file)
    edited.model.hidden = [32]  # read as the run's config, this network would not take the checkpoint's weights
    OmegaConf.save(edited, config_file)
    assert predict([*args, "overwrite=true"]).read_text() == before


@pytest.mark.parametrize("in_memory", ["true", "false"])
def test_an_image_replaced_in_the_folder_is_refused_on_resume(tmp_path, in_memory):
    from PIL import Image

    from test_images import write_folder

    folder = write_folder(tmp_path / "shapes", per_class=15)
    options = ["data=image_folder", f"data.path={folder}", "data.batch_size=8", "loss=ce",
               f"data.in_memory={in_memory}", "data.num_workers=0"]  # fmt: skip
    train(tmp_path / "run", *options, "trainer.max_epochs=1")
    noise = np.random.default_rng(1).integers(0, 255, (12, 12), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "bar" / "3.png")  # another picture under the same name
    with pytest.raises(ConfigError, match=r"is not valid: the data changed since the checkpoint was saved "
                                          r"\(data=image_folder: 45 samples"):  # fmt: skip
        train(tmp_path / "run", *options, "trainer.max_epochs=2", "ckpt_path=last")


def test_a_checkpoint_without_recorded_inputs_is_checked_against_the_split_json_beside_it(tmp_path):
    from lossheads.run.checkpoints import META, RunCheckpointIO, read_checkpoint

    frame = table_file(tmp_path / "t.csv")
    options = ["data=table", f"data.path={tmp_path / 't.csv'}"]
    train(tmp_path / "run", *options, "trainer.max_epochs=1")
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    saved = read_checkpoint("ckpt_path", path)
    assert saved[META]["inputs"]["samples"] == 120
    RunCheckpointIO(saved[META]["config"]).save_checkpoint(saved, path)  # as a seeds member's: config, no inputs
    frame.iloc[:-1].to_csv(tmp_path / "t.csv", index=False)  # one row fewer
    with pytest.raises(ConfigError, match=r"the data changed since the checkpoint was saved \(data=table: 120 samples, "
                                          r"fingerprint [0-9a-f]{12} then; 119 samples"):  # fmt: skip
        train(tmp_path / "run", *options, "trainer.max_epochs=2", "ckpt_path=last")


def test_predict_takes_a_given_threshold_from_the_checkpoint_and_says_a_tuned_one_is_unverified(tmp_path, caplog):
    table_file(tmp_path / "t.csv")
    for threshold in ("0.5", "auto"):
        train(tmp_path / threshold, "data=table", f"data.path={tmp_path / 't.csv'}", "trainer.max_epochs=1",
              f"threshold={threshold}")  # fmt: skip
    args = [f"ckpt_path={tmp_path / '0.5'}", f"data.path={tmp_path / 't.csv'}", f"output={tmp_path / 'p.csv'}"]
    before = predict(args).read_text()
    metrics_file = tmp_path / "0.5" / "metrics.json"
    metrics_file.write_text(json.dumps({**json.loads(metrics_file.read_text()), "threshold": 0.01}))
    assert predict([*args, "overwrite=true"]).read_text() == before  # the edited metrics.json decides nothing
    predict([f"ckpt_path={tmp_path / 'auto'}", f"data.path={tmp_path / 't.csv'}", f"output={tmp_path / 'q.csv'}"])
    assert f"is read from {tmp_path / 'auto' / 'metrics.json'}, which carries no checksum" in caplog.text
