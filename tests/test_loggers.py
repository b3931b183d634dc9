"""Experiment loggers: each records the run's metrics and hyperparameters where its own tools read them."""

from __future__ import annotations

import csv

import pytest

from conftest import QUIET


def test_csv_logger_records_metrics_and_hyperparameters(train, tmp_path):
    metrics = train("logger=csv", *QUIET)
    assert metrics["status"] == "ok"
    folder = tmp_path / "run" / "csv"
    with (folder / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert any(row.get("val/loss") for row in rows) and any(row.get("train/lr") for row in rows)
    hparams = (folder / "hparams.yaml").read_text()
    assert "head: sigmoid" in hparams and "loss: bce_logits" in hparams


def test_a_resumed_run_keeps_its_csv_rows_and_logs_its_new_steps_once(train, tmp_path, recwarn):
    """Lightning's CSV writer deletes the metrics.csv it finds; a resume here keeps the earlier epochs'
    rows, and a row of a step the resumed run logs again (written after its checkpoint, before a kill)
    gives way to the new one."""

    def rows(folder: str) -> list[dict[str, str]]:
        with (tmp_path / folder / "csv" / "metrics.csv").open(newline="") as handle:
            return [row for row in csv.DictReader(handle) if row.get("val/loss")]

    train("logger=csv", "trainer.max_epochs=4", *QUIET, quick=False, folder="whole")
    train("logger=csv", "trainer.max_epochs=2", *QUIET, quick=False, folder="part")
    whole, part = rows("whole"), rows("part")
    assert len(whole) == 4 and part == whole[:2]
    with (tmp_path / "part" / "csv" / "metrics.csv").open("a", newline="") as handle:  # epoch 3 as a kill left it
        csv.DictWriter(handle, fieldnames=list(whole[2])).writerow({**whole[2], "val/loss": "123.0"})
    train("logger=csv", "trainer.max_epochs=4", "ckpt_path=last", *QUIET, quick=False, folder="part")
    assert rows("part") == whole
    assert not [w for w in recwarn if "Experiment logs directory" in str(w.message)]  # no note of a deletion


def test_tensorboard_has_no_epoch_or_single_point_charts_and_steps_count_optimizer_steps(train, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    metrics = train("trainer.max_epochs=2", *QUIET, quick=False)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "val/loss", "val/acc", "val/auroc", "train/lr"} <= tags
    assert "epoch" not in tags and not any(t.startswith("hp/") for t in tags)
    assert [e.step for e in events.Scalars("val/loss")] == [6, 12] == [6, metrics["steps"]]  # optimizer steps
    plugins = events.PluginTagToContent("custom_scalars")  # the loss/accuracy/AUROC/calibration page
    assert plugins


def test_tensorboard_reads_each_logged_number_back_also_after_finalize(tmp_path):
    """TensorBoard logs a call's numbers as one event (`TensorBoard.log_metrics`); TensorBoard reads
    each back at its step, with Lightning's prefix, also from a call after `finalize` (a run's test)."""
    import torch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lossheads.run.loggers import TensorBoard

    logger = TensorBoard(save_dir=str(tmp_path), name="", version="", prefix="fold")
    logger.log_metrics({"val/loss": 0.5, "val/acc": torch.tensor(0.75), "epoch": 3}, step=6)
    logger.finalize("success")
    logger.log_metrics({"test/acc": 0.625}, step=12)
    logger.finalize("success")
    events = EventAccumulator(str(tmp_path)).Reload()
    assert sorted(events.Tags()["scalars"]) == ["fold-test/acc", "fold-val/acc", "fold-val/loss"]
    assert [(e.step, e.value) for e in events.Scalars("fold-val/loss")] == [(6, 0.5)]
    assert [(e.step, e.value) for e in events.Scalars("fold-val/acc")] == [(6, 0.75)]
    assert [(e.step, e.value) for e in events.Scalars("fold-test/acc")] == [(12, 0.625)]
    with pytest.raises(ValueError, match="not a dict of numbers"):
        logger.log_metrics({"val/acc": "high"}, step=13)


def test_mlflow_client_reads_back_the_logged_params_and_metrics(train, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    metrics = train("logger=mlflow", f"logger.tracking_uri={uri}", "trainer.max_epochs=2", *QUIET, quick=False)
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("lossheads").experiment_id])
    assert run.data.params["head"] == "sigmoid" and run.data.params["loss"] == "bce_logits"
    assert run.data.params["optimizer.lr"] == "0.001"
    assert run.data.metrics["test/acc"] == pytest.approx(metrics["test/acc"])
    history = client.get_metric_history(run.info.run_id, "val/loss")
    assert [m.step for m in history] == [6, 12] and history[-1].value == pytest.approx(metrics["val/loss"])


def test_a_missing_optional_logger_is_refused_in_one_line_naming_its_extra(config, monkeypatch):
    import builtins

    from lossheads.config.validators import ConfigError
    from lossheads.run.build import build_trainer

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name.startswith("wandb"):
            raise ModuleNotFoundError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    with pytest.raises(ConfigError, match=r"logger=wandb needs the wandb package: pip install 'lossheads\[wandb\]'"):
        build_trainer(config("logger=wandb"))
