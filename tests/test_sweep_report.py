"""Sweeps through the real `train.py -m`, and the report written from job folders."""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from itertools import product
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import QUICK, train_py_in_process
from lossheads.report import main
from lossheads.report.collect import Run, collect, ranking
from lossheads.report.markdown import write_report
from lossheads.report.settings import settings
from lossheads.report.thresholds import f1_at


@pytest.mark.slow
def test_grid_records_invalid_pairs_and_reports_the_valid_ones(tmp_path):
    result = train_py_in_process(
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
    names = ("report.md", "results.csv", "comparisons.csv", *(f"breast_cancer-{p}.png" for p in PLOTS))
    for name in names:
        assert (sweep / name).is_file(), name

    report = (sweep / "report.md").read_text()
    auroc = [
        json.loads((j / "metrics.json").read_text())["test/auroc"] for j in valid if "head=sigmoid" in _overrides(j)
    ]
    row = next(
        line for line in report.splitlines() if re.match(r"\| \d \| head=sigmoid loss=bce_logits \(control\)", line)
    )
    assert f"| {statistics.fmean(auroc):.4f} ± {statistics.stdev(auroc):.4f} |" in row
    assert report.count("| invalid |") == 4
    with (sweep / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["status"] for r in rows) == ["invalid"] * 4 + ["ok"] * 4


PLOTS = ("forest", "curves", "reliability", "roc_pr")


def _overrides(job: Path) -> str:
    return " ".join(yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()))


CRASHING_NET = '''
from torch import nn


class CrashingNet(nn.Module):
    """Builds and has weights, then fails in its first forward pass: a bug in a user's network."""

    def __init__(self, input_shape, num_logits):
        super().__init__()
        self.linear = nn.Linear(int(input_shape[0]), num_logits)

    def forward(self, features):
        raise ValueError("a bug in the network's forward")


class NanNet(CrashingNet):
    """Trains, but its outputs are NaN: the run diverges at its first step."""

    def forward(self, features):
        return self.linear(features) * float("nan")
'''


@pytest.mark.slow
def test_a_job_that_crashes_or_diverges_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    (tmp_path / "crashing_net.py").write_text(CRASHING_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    nets = "crashing_net.CrashingNet,crashing_net.NanNet,lossheads.models.MLP"
    result = train_py_in_process(
        "-m", "model=custom", f"model._target_={nets}", *QUICK, "hydra.sweep.dir=sweep", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    failure = json.loads((tmp_path / "sweep" / "0" / "failure.json").read_text())
    assert failure["status"] == "failed" and "ValueError" in failure["reason"], failure
    diverged = json.loads((tmp_path / "sweep" / "1" / "metrics.json").read_text())
    assert diverged["status"] == "diverged" and "test/acc" not in diverged
    assert json.loads((tmp_path / "sweep" / "2" / "metrics.json").read_text())["status"] == "ok"
    report = (tmp_path / "sweep" / "report.md").read_text()
    assert "| failed |" in report and "| diverged | training diverged" in report
    assert "3 runs: 1 ok, 1 failed, 1 diverged." in report


@pytest.mark.slow
def test_optuna_search_returns_the_metric_to_the_sweeper(tmp_path):
    result = train_py_in_process(
        "hparams_search=optuna", "loss=focal", "hydra.sweeper.n_trials=2", *QUICK, "hydra.sweep.dir=sweep", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    best = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    records = [json.loads((tmp_path / "sweep" / str(i) / "metrics.json").read_text()) for i in range(2)]
    assert [r["status"] for r in records] == ["ok"] * 2  # only keys that focal takes were searched
    assert best["best_value"] == pytest.approx(max(r["val/auroc"] for r in records))
    assert set(best["best_params"]) == {
        "optimizer.lr", "optimizer.weight_decay", "model.hidden", "loss.gamma", "loss.alpha"
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
        metrics = {"head": "x", "loss": loss, "seed": seed, "task": "binary", "val/auroc": auroc,
                   "test/auroc": auroc, "test/acc": auroc - 0.1, "test/ece": 0.1 if loss == "ce" else 0.2}  # fmt: skip
        make_job(sweep, str(i), [f"loss={loss}", f"seed={seed}"], metrics)
    make_job(sweep, "4", ["loss=focal", "seed=1"], None, failure="RuntimeError: boom")
    write_report(sweep)
    report = (sweep / "report.md").read_text()
    assert "| 1 | loss=bce_logits (control) | 2 | 0.9200 ± 0.0283 | 0.9200 ± 0.0283 | 0.2000 ± 0.0000 |" in report
    not_counted = "not counted: 2 common seeds, at least 3 needed"
    row = "| loss=ce | AUROC (higher is better) | 2 | −0.0900 | n/a | n/a | n/a | n/a | 0.005 |"
    assert f"{row} {not_counted} |" in report
    assert "no comparison has 3 common seeds" in report
    assert "| 4 | loss=focal seed=1 | failed | RuntimeError: boom |" in report
    assert [j.status for j in collect(sweep)] == ["ok", "ok", "ok", "ok", "failed"]
    assert (sweep / "data-forest.png").is_file() and not (sweep / "data-reliability.png").exists()  # no predictions
    report = sweep / "report.md"
    report.write_text(report.read_text() + "\n![data-reliability](data-reliability.png)\n")  # as an earlier one
    (sweep / "data-reliability.png").write_bytes(b"an earlier report's figure")
    (sweep / "data-confusion.png").write_bytes(b"a figure of the user's own, which no report showed")
    write_report(sweep)  # again: nothing to show there still; the earlier report's figure goes, the user's stays
    assert not (sweep / "data-reliability.png").exists() and (sweep / "data-forest.png").is_file()
    assert (sweep / "data-confusion.png").read_bytes().startswith(b"a figure of the user's own")


def seeded(base: float, spread: list[float]) -> list[float]:
    return [round(base + s, 4) for s in spread]


def hand_p(diffs: list[float]) -> float:
    flipped = [sum(s * d for s, d in zip(signs, diffs, strict=True)) for signs in product((1, -1), repeat=len(diffs))]
    up = sum(f >= sum(diffs) - 1e-12 for f in flipped) / len(flipped)
    down = sum(f <= sum(diffs) + 1e-12 for f in flipped) / len(flipped)
    return min(1.0, 2 * min(up, down))


def test_the_control_is_typed_first_never_the_validation_best(tmp_path):
    """Two datasets; on breast_cancer the validation-best (ce) is not the control (bce_logits, typed first)."""
    sweep = tmp_path / "sweep"
    noise = [0.0, 0.01, -0.01, 0.005, -0.004, 0.002, -0.006, 0.008]
    arms = {  # (data, loss): (val/auroc, test/auroc)
        ("breast_cancer", "bce_logits"): (0.90, 0.95), ("breast_cancer", "ce"): (0.95, 0.93),
        ("breast_cancer", "focal"): (0.80, 0.80), ("synthetic_imbalanced", "bce_logits"): (0.70, 0.71),
        ("synthetic_imbalanced", "ce"): (0.60, 0.62), ("synthetic_imbalanced", "focal"): (math.nan, 0.99),
    }  # fmt: skip
    test_values: dict[tuple[str, str], list[float]] = {}
    job = 0
    for (data, loss), (val, test) in arms.items():
        test_values[(data, loss)] = seeded(test, {"ce": noise[::-1], "focal": noise[1:] + noise[:1]}.get(loss, noise))
        for seed, value in enumerate(test_values[(data, loss)], start=1):
            metrics = {"head": "x", "loss": loss, "data": data, "seed": seed, "task": "binary",
                       "val/auroc": val + noise[seed - 1] / 2, "test/auroc": value, "test/nll": 0.3}  # fmt: skip
            make_job(sweep, str(job), [f"data={data}", f"loss={loss}", f"seed={seed}"], metrics)
            job += 1
    write_report(sweep)
    report = (sweep / "report.md").read_text()
    cancer, synthetic = report.split("## breast_cancer (binary)")[1].split("## synthetic_imbalanced (binary)")
    rows = [line.split(" | ")[1] for line in cancer.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert rows == ["loss=ce", "loss=bce_logits (control)", "loss=focal"]  # ranked by val/auroc: information
    rows = [line.split(" | ")[1] for line in synthetic.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert rows == ["loss=bce_logits (control)", "loss=ce", "loss=focal"]  # NaN val/auroc never first
    assert "data=" not in report.split("## Jobs")[0] and "seed=" not in report

    with (sweep / "comparisons.csv").open() as handle:
        found = list(csv.DictReader(handle))
    assert [(r["data"], r["config"], r["baseline"], r["metric"]) for r in found] == [
        (data, arm, "loss=bce_logits", metric)
        for data in ("breast_cancer", "synthetic_imbalanced")
        for arm in ("loss=ce", "loss=focal")
        for metric in ("auroc", "nll")
    ]
    for row in found:
        mine = test_values[(row["data"], row["config"].removeprefix("loss="))]
        base = test_values[(row["data"], "bce_logits")]
        diffs = list(np.subtract(mine, base)) if row["metric"] == "auroc" else [0.0] * 8
        p = hand_p(diffs)
        assert (int(row["n"]), int(row["family"])) == (8, 4)  # 2 arms x 2 metrics measured
        assert [float(row[k]) for k in ("mean_diff", "p", "p_adjusted")] == pytest.approx(
            [np.mean(diffs), p, min(1.0, 4 * p)]
        )
    verdicts = {(r["data"], r["config"], r["metric"]): r["verdict"] for r in found}
    assert verdicts[("breast_cancer", "loss=ce", "auroc")] == "worse"  # the val-best is worse on test
    assert verdicts[("breast_cancer", "loss=focal", "auroc")] == "worse"
    assert verdicts[("synthetic_imbalanced", "loss=focal", "auroc")] == "better"
    assert verdicts[("breast_cancer", "loss=ce", "nll")] == "equivalent"
    summary = report.split("## Summary")[1].split("## breast_cancer")[0]
    assert "- `loss=ce` vs `loss=bce_logits`: AUROC −0.020 [" in summary
    assert "(worse); calibration equivalent" in summary  # the one calibration metric measured, NLL: equal


def test_distillation_and_evaluate_only_sweeps_are_reported(tmp_path):
    sweep = tmp_path / "distill"
    for seed in (1, 2, 3):
        record = {"head": "softmax", "loss": "kd", "data": "digits", "seed": seed, "task": "multiclass"}
        for part, acc in (("teacher", 0.97), ("kd", 0.93), ("hard", 0.95)):
            record |= {f"{part}/val/auroc": acc + seed / 1000, f"{part}/test/auroc": acc, f"{part}/test/acc": acc}
        make_job(sweep, str(seed - 1), [f"seed={seed}"], record)
    write_report(sweep, chosen=settings(baseline="hard-label student"))
    report = (sweep / "report.md").read_text()
    assert "| 1 | teacher | 3 |" in report
    assert "| 2 | hard-label student (control) | 3 |" in report and "| 3 | KD student | 3 |" in report
    assert "| KD student | accuracy (higher is better) | 3 | −0.0200 |" in report

    sweep = tmp_path / "evaluate"
    for seed in (1, 2):
        record = {"head": "sigmoid", "loss": "bce_logits", "data": "breast_cancer", "seed": seed, "test/auroc": 0.9}
        make_job(sweep, str(seed), ["train=false", f"seed={seed}"], record)
        probs = np.array([0.2, 0.7, 0.9])
        np.savez(sweep / str(seed) / "predictions.npz", test_probs=probs, test_targets=np.array([0, 1, 1]))
    write_report(sweep)
    report = (sweep / "report.md").read_text()
    assert "## breast_cancer (binary)" in report and "Not ranked: no run has val/auroc" in report
    assert "One arm: nothing to compare." in report
    assert "No run with validation and test predictions: no threshold study." in report
    assert (sweep / "breast_cancer-roc_pr.png").is_file()


def test_ranks_use_the_seeds_every_arm_shares(tmp_path):
    def run(seed: int, **metrics: float) -> Run:
        return Run(tmp_path, str(seed), {"seed": str(seed)}, "ok", {"seed": seed, **metrics})

    runs = {"a": [run(1, **{"val/nll": math.nan, "val/auroc": math.nan})],
            "b": [run(1, **{"val/nll": 0.4, "val/auroc": 0.7})],
            "c": [run(1, **{"val/nll": 0.3, "val/auroc": 0.8})]}  # fmt: skip
    assert ranking(runs, "val/nll") == ["c", "b", "a"]  # an undefined metric never ranks first
    assert ranking(runs, "val/auroc") == ["c", "b", "a"]
    assert ranking(runs, "val/ap") is None  # nothing to rank by
    # b's mean over its own seeds (0.75) beats c's (0.72), but on the seed both ran c is better
    unequal = {
        "b": [run(1, **{"val/auroc": 0.70}), run(2, **{"val/auroc": 0.80})],
        "c": [run(1, **{"val/auroc": 0.72})],
    }
    assert ranking(unequal, "val/auroc") == ["c", "b"]


def test_a_test_metric_is_refused_as_the_ranking_metric(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path), "--metric", "test/auroc"])
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: --metric='test/auroc' is not valid") and error.count("\n") == 1
    assert not (tmp_path / "report.md").exists()


def test_f1_at_a_threshold_and_macro_over_labels():
    probs = np.array([0.9, 0.6, 0.4, 0.2])
    targets = np.array([1, 0, 1, 0])
    assert f1_at(probs, targets, 0.5) == pytest.approx(0.5)  # TP=1 FP=1 FN=1
    assert f1_at(probs, targets, 0.3) == pytest.approx(0.8)  # TP=2 FP=1 FN=0
    labels = np.array([[0.9, 0.1], [0.2, 0.8]])
    assert f1_at(labels, np.array([[1, 0], [0, 0]]), 0.5) == pytest.approx(0.5)  # label 1: F1 0


def test_datasets_whose_names_clean_to_one_prefix_draw_into_files_of_their_own(tmp_path):
    from types import SimpleNamespace

    from lossheads.report import plots

    slugs: set[str] = set()
    names = ("sub_a-2", "sub/a", "sub_a", "table data.path=/d/x/a.csv", "table data.path=/d/x_a.csv")
    sections = [SimpleNamespace(dataset=name, arms={}, control=None) for name in names]
    paths = [[call.args[-1].name for call in plots.dataset_figures(section, tmp_path, slugs)] for section in sections]
    firsts = ["sub_a-2-forest.png", "sub_a-forest.png", "sub_a-3-forest.png", "table_data.path_d_x_a.csv-forest.png",
              "table_data.path_d_x_a.csv-2-forest.png"]  # fmt: skip
    assert [p[0] for p in paths] == firsts
    assert len({name for p in paths for name in p}) == sum(len(p) for p in paths)  # no file drawn twice


def test_a_run_without_a_result_is_on_the_dataset_of_the_others_when_data_is_not_swept(tmp_path):
    """A diverged record has no `data`; with `data` not swept it belongs to the one dataset the other
    runs name (results.csv), not to a dataset called "data"."""
    from lossheads.report.arms import label

    sweep = tmp_path / "sweep"
    for i, seed in enumerate((1, 2)):
        make_job(sweep, str(i), [f"seed={seed}"], {"head": "x", "loss": "ce", "seed": seed, "task": "binary",
                                                     "data": "breast_cancer", "test/auroc": 0.9})  # fmt: skip
    make_job(sweep, "2", ["seed=3"], {"status": "diverged", "reason": "training diverged: ...", "seed": 3})
    runs = collect(sweep)
    label(runs)
    assert [r.dataset for r in runs] == ["breast_cancer"] * 3


def test_a_full_disk_under_the_report_command_is_one_line_without_run_folder_advice(tmp_path, monkeypatch, capsys):
    import errno

    import lossheads.report.markdown as markdown
    from lossheads.run.atomic import storage_error

    sweep = tmp_path / "sweep"
    for i, seed in enumerate((1, 2)):
        make_job(sweep, str(i), [f"seed={seed}"], {"head": "x", "loss": "ce", "seed": seed, "task": "binary",
                                                     "test/auroc": 0.9})  # fmt: skip

    def full(_, path: Path) -> None:
        raise storage_error(path, OSError(errno.ENOSPC, "No space left on device"))

    monkeypatch.setattr(markdown, "write_results_csv", full)
    with pytest.raises(SystemExit) as stopped:
        main([str(sweep)])
    assert stopped.value.code == 2
    line = capsys.readouterr().err.strip()
    assert line == f"error: cannot write {sweep}/results.csv: the disk is full: free space or make the folder writable"
