"""Experiment loggers: each records the run's metrics and hyperparameters where its own tools read them."""

from __future__ import annotations

import csv

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
