"""Sweeps through the real `train.py -m`, and the report written from job folders."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import QUICK, run_train_py
from lossheads.report import collect, f1_at, write_report


def test_grid_records_invalid_pairs_and_reports_the_valid_ones(tmp_path):
    result = run_train_py(
        "-m", "head=sigmoid,softmax", "loss=bce_logits,ce", "seed=1,2", *QUICK, "hydra.sweep.dir=sweep", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "sweep"
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 8
    valid = [j for j in jobs if (j / "metrics.json").is_file()]
    invalid = [json.loads((j / "failure.json").read_text()) for j in jobs if (j / "failure.json").is_file()]
    assert len(valid) == 4 and len(invalid) == 4
    assert all(f["status"] == "invalid" and "needs head=" in f["reason"] for f in invalid)
    for name in ("report.md", "results.csv", "metrics.png", "curves.png", "reliability.png", "roc_pr.png"):
        assert (sweep / name).is_file(), name

    report = (sweep / "report.md").read_text()
    acc = [json.loads((j / "metrics.json").read_text())["test/acc"] for j in valid if "head=sigmoid" in _overrides(j)]
    row = next(line for line in report.splitlines() if line.startswith("| head=sigmoid loss=bce_logits |"))
    assert f"{statistics.fmean(acc):.4f} ± {statistics.stdev(acc):.4f} (n=2)" in row
    assert report.count("| invalid |") == 4
    with (sweep / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["status"] for r in rows) == ["invalid"] * 4 + ["ok"] * 4


def _overrides(job: Path) -> str:
    return " ".join(yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()))


def test_a_job_that_crashes_is_recorded_and_the_sweep_goes_on(tmp_path):
    # nn.Identity builds (it takes any arguments) but has no weights to train: the job crashes in training
    result = run_train_py(
        "-m", "model._target_=torch.nn.Identity,lossheads.models.MLP", *QUICK, "hydra.sweep.dir=sweep", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    failure = json.loads((tmp_path / "sweep" / "0" / "failure.json").read_text())
    assert failure["status"] == "failed" and "ValueError" in failure["reason"], failure
    assert (tmp_path / "sweep" / "1" / "metrics.json").is_file()
    assert "| failed |" in (tmp_path / "sweep" / "report.md").read_text()


def test_optuna_search_returns_the_metric_to_the_sweeper(tmp_path):
    result = run_train_py(
        "hparams_search=optuna", "hydra.sweeper.n_trials=3", *QUICK, "hydra.sweep.dir=sweep", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    best = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    trials = [json.loads((tmp_path / "sweep" / str(i) / "metrics.json").read_text())["val/auroc"] for i in range(3)]
    assert best["best_value"] == pytest.approx(max(trials))
    assert set(best["best_params"]) == {
        "optimizer.lr", "optimizer.weight_decay", "model.hidden", "loss.pos_weight", "loss.label_smoothing"
    }  # fmt: skip


def make_job(sweep: Path, name: str, overrides: list[str], metrics: dict | None, failure: str | None = None) -> None:
    folder = sweep / name
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    if failure is not None:
        (folder / "failure.json").write_text(json.dumps({"status": "failed", "reason": failure}))


def test_report_from_hand_made_job_folders(tmp_path):
    sweep = tmp_path / "sweep"
    values = {("bce_logits", 1): 0.90, ("bce_logits", 2): 0.94, ("ce", 1): 0.80, ("ce", 2): 0.86}
    for i, ((loss, seed), auroc) in enumerate(values.items()):
        metrics = {"head": "x", "loss": loss, "seed": seed, "test/auroc": auroc, "test/acc": auroc - 0.1,
                   "test/ece": 0.1 if loss == "ce" else 0.2}  # fmt: skip
        make_job(sweep, str(i), [f"loss={loss}", f"seed={seed}"], metrics)
    make_job(sweep, "4", ["loss=focal", "seed=1"], None, failure="RuntimeError: boom")
    write_report(sweep)
    report = (sweep / "report.md").read_text().splitlines()
    top = report.index(next(line for line in report if line.startswith("| configuration |"))) + 2
    assert report[top].startswith("| loss=bce_logits | **0.8200 ± 0.0283 (n=2)**")  # ranked first, best acc
    assert "| **0.9200 ± 0.0283 (n=2)** |" in report[top]
    assert "**0.1000 ± 0.0000 (n=2)**" in report[top + 1]  # lower ECE is better: ce wins that column
    text = "\n".join(report)
    assert "difference +0.0900 ± 0.0141 (std over seeds, n=2): larger than the seed noise" in text
    assert "| 4 | loss=focal seed=1 | failed | RuntimeError: boom |" in text
    assert [j.status for j in collect(sweep)] == ["ok", "ok", "ok", "ok", "failed"]
    assert (sweep / "metrics.png").is_file() and not (sweep / "reliability.png").exists()  # no predictions saved


def test_f1_at_a_threshold_and_macro_over_labels():
    probs = np.array([0.9, 0.6, 0.4, 0.2])
    targets = np.array([1, 0, 1, 0])
    assert f1_at(probs, targets, 0.5) == pytest.approx(0.5)  # TP=1 FP=1 FN=1
    assert f1_at(probs, targets, 0.3) == pytest.approx(0.8)  # TP=2 FP=1 FN=0
    labels = np.array([[0.9, 0.1], [0.2, 0.8]])
    assert f1_at(labels, np.array([[1, 0], [0, 0]]), 0.5) == pytest.approx(0.5)  # label 1: F1 0
