"""What the verdicts compare: folds pair, `data.*` options are arms, the control and `report.baseline`,
every comparisons.csv row recomputed from the jobs' own files, `load()`, and real sweeps whose answer
is known (bce == bce_logits; logit adjustment raises balanced accuracy on a long tail)."""

from __future__ import annotations

import csv
import functools
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score

from conftest import QUIET, run_train_py, train_py_in_process
from lossheads.report import ReportCallback, load, main, write_report
from lossheads.report.settings import settings

PANEL = {  # metric -> (higher is better, default margin)
    "auroc": (True, 0.005), "ap": (True, 0.005), "f1": (True, 0.01), "recall": (True, 0.01),
    "precision": (True, 0.01), "balanced_acc": (True, 0.01), "f1_tuned": (True, 0.01),
    "acc": (True, 0.01), "macro_f1": (True, 0.01), "worst_recall": (True, 0.02), "map": (True, 0.005),
    "nll": (False, 0.01), "brier": (False, 0.005), "ece": (False, 0.01),
}  # fmt: skip
LOGGED = {"auroc": "test/auroc", "ap": "test/ap", "map": "test/ap", "f1": "test/f1", "macro_f1": "test/f1",
          "recall": "test/recall", "precision": "test/precision", "acc": "test/acc", "nll": "test/nll",
          "brier": "test/brier", "ece": "test/ece"}  # fmt: skip


def make_job(sweep: Path, name: str, overrides: list[str], metrics: dict, arrays: dict | None = None) -> None:
    folder = sweep / name
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if arrays is not None:
        np.savez(folder / "predictions.npz", **arrays)


def binary_job(rng: np.random.Generator, skill: float, threshold: float = 0.5) -> tuple[dict, dict]:
    """metrics.json values and predictions of a binary run whose scores separate the classes by `skill`."""
    arrays = {}
    for split in ("val", "test"):
        targets = (rng.random(120) < 0.3).astype(int)
        arrays[f"{split}_targets"] = targets
        arrays[f"{split}_probs"] = 1 / (1 + np.exp(-(skill * (targets - 0.5) * 4 + rng.normal(0, 1, 120))))
    metrics = {"task": "binary", "threshold": threshold, "val/auroc": 0.5 + skill / 4, "test/auroc": 0.5 + skill / 3,
               "test/nll": 0.5 - skill / 10 + rng.normal(0, 0.01),
               "test/recall": recall_score(arrays["test_targets"], arrays["test_probs"] >= threshold)}  # fmt: skip
    return metrics, arrays


@functools.cache
def hand_value(job: Path, metric: str) -> float:
    """The metric from the job's own files, without the report's code: metrics.json or sklearn."""
    record = json.loads((job / "metrics.json").read_text())
    if metric in LOGGED:
        return float(record.get(LOGGED[metric], math.nan))
    with np.load(job / "predictions.npz") as a:
        probs, targets = a["test_probs"], a["test_targets"]
        predicted = probs >= record.get("threshold", 0.5) if probs.ndim == 1 else probs.argmax(1)
        if metric == "balanced_acc":
            return balanced_accuracy_score(targets, predicted)
        if metric == "worst_recall":
            return min(np.mean(predicted[targets == c] == c) for c in np.unique(targets))
        if metric == "f1_tuned":  # every validation score as a cut point; the best's midpoint below
            cuts = np.unique(a["val_probs"])
            chosen = a["val_probs"][None, :] >= cuts[:, None]
            truth = a["val_targets"].astype(bool)[None, :]
            scores = 2 * (chosen & truth).sum(1) / (chosen.sum(1) + truth.sum())
            best = cuts[int(np.argmax(scores))]
            lower = cuts[cuts < best]
            threshold = (best + lower.max()) / 2 if len(lower) else best
            return f1_score(targets, probs >= threshold)
    raise AssertionError(metric)


def hand_test(diffs: list[float], level: float) -> tuple[float, float, float]:
    """(p, low, high) by enumeration: p counts the 2^n sign patterns; the interval ends are the k-th
    smallest and largest of the non-empty subset means, k = floor(level / 2 * 2^n) (Hartigan 1969)."""
    n, observed = len(diffs), sum(diffs)
    flipped = [sum(s * d for s, d in zip(signs, diffs, strict=True)) for signs in itertools.product((1, -1), repeat=n)]
    tie = 1e-9 * max(abs(d) for d in diffs)  # a sum this close to the observed one is a tie
    up = sum(f >= observed - tie for f in flipped) / 2**n
    down = sum(f <= observed + tie for f in flipped) / 2**n
    means = sorted(np.mean(c) for r in range(1, n + 1) for c in itertools.combinations(diffs, r))
    k = math.floor(level / 2 * 2**n + 1e-9)
    low, high = (means[k - 1], means[-k]) if k else (-math.inf, math.inf)
    return min(1.0, 2 * min(up, down)), low, high


def side(jobs: dict[Path, dict[str, str]], data: str, arm: str, metric: str) -> dict[str, float]:
    """An arm's value of `metric` per seed/fold, from the jobs whose overrides hold the arm's choices."""
    chosen = dict(w.split("=", 1) for w in arm.split())
    return {
        o.get("seed", "") + "/" + o.get("data.fold", ""): hand_value(job, metric)
        for job, o in jobs.items()
        if all(o.get(k) == v for k, v in chosen.items()) and o.get("data", data) == data
    }


def check_rows_against_files(sweep: Path) -> list[dict]:
    """Every comparisons.csv row equals a recomputation from the jobs' own metrics.json / predictions.npz."""
    jobs = {}
    for job in sorted(p for p in sweep.iterdir() if (p / "metrics.json").is_file()):
        overrides = dict(o.split("=", 1) for o in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()))
        jobs[job] = overrides
    with (sweep / "comparisons.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    families: dict[str, int] = {}
    for row in rows:
        families[row["data"]] = families.get(row["data"], 0) + (int(row["n"]) >= 3)
    for row in rows:
        mine, base = (side(jobs, row["data"], arm, row["metric"]) for arm in (row["config"], row["baseline"]))
        common = sorted(k for k in mine.keys() & base.keys() if math.isfinite(mine[k]) and math.isfinite(base[k]))
        diffs = [mine[k] - base[k] for k in common]
        family = families[row["data"]]
        p, low, high = hand_test(diffs, 0.05 / family)
        higher, margin = PANEL[row["metric"]]
        if -margin <= low and high <= margin:
            words = "equivalent"
        elif low > 0 or high < 0:
            words = "better" if (np.mean(diffs) > 0) == higher else "worse"
        else:
            words = "no evidence"
        assert (int(row["n"]), int(row["family"]), row["verdict"]) == (len(diffs), family, words), row
        numbers = [float(row[k]) for k in ("mean_diff", "p", "p_adjusted", "ci_low", "ci_high")]
        assert numbers == pytest.approx([np.mean(diffs), p, min(1.0, family * p), low, high], abs=1e-9), row
    return rows


def test_folds_pair_and_every_row_is_recomputed_from_the_job_files(tmp_path):
    """data.fold=0..7 under one seed: eight pairs in one dataset, not eight datasets of one seed each."""
    sweep, rng, job = tmp_path / "sweep", np.random.default_rng(0), 0
    for loss, skill in (("bce_logits", 0.6), ("ce", 0.9)):
        for fold in range(8):
            metrics, arrays = binary_job(rng, skill + rng.normal(0, 0.02))
            overrides = ["data=breast_cancer", "data.folds=8", f"data.fold={fold}", f"loss={loss}", "seed=1"]
            make_job(sweep, str(job), overrides, metrics, arrays)
            job += 1
    write_report(sweep, chosen=settings(metrics=["auroc", "balanced_acc", "f1_tuned"]))
    report = (sweep / "report.md").read_text()
    assert report.count("## breast_cancer") == 1
    rows = check_rows_against_files(sweep)
    assert [(r["metric"], r["n"], r["family"]) for r in rows] == [
        (m, "8", "3") for m in ("auroc", "balanced_acc", "f1_tuned")
    ]
    assert {r["verdict"] for r in rows if r["metric"] == "auroc"} == {"better"}  # +0.1 on every fold


def test_a_data_option_is_an_arm_and_gets_its_verdict(tmp_path):
    """data.sampler=shuffle,balanced: two arms of one dataset, the first typed the control."""
    sweep, rng, job = tmp_path / "sweep", np.random.default_rng(1), 0
    for sampler, threshold in (("shuffle", 0.5), ("balanced", 0.3)):
        for seed in range(1, 10):
            metrics, arrays = binary_job(rng, 0.7, threshold)
            overrides = ["data=synthetic_imbalanced", f"data.sampler={sampler}", f"seed={seed}"]
            make_job(sweep, str(job), overrides, metrics, arrays)
            job += 1
    write_report(sweep)
    rows = check_rows_against_files(sweep)
    assert {(r["data"], r["config"], r["baseline"]) for r in rows} == {
        ("synthetic_imbalanced", "data.sampler=balanced", "data.sampler=shuffle")
    }
    recall = next(r for r in rows if r["metric"] == "recall")
    assert recall["verdict"] == "better"  # a lower threshold on the same scores: more positives found
    summary = (sweep / "report.md").read_text().split("## Summary")[1].split("##")[0]
    assert "- `data.sampler=balanced` vs `data.sampler=shuffle`: " in summary and "recall +0." in summary


def test_the_baseline_is_named_and_a_wrong_one_is_refused(tmp_path, capsys):
    sweep, rng, job = tmp_path / "sweep", np.random.default_rng(2), 0
    for loss in ("bce_logits", "ce"):
        for pos_weight in ("null", "auto"):
            for seed in (1, 2, 3):
                metrics, arrays = binary_job(rng, 0.7)
                make_job(sweep, str(job), [f"loss={loss}", f"loss.pos_weight={pos_weight}", f"seed={seed}"], metrics)
                job += 1
    runs, comparisons = load(sweep)
    assert set(comparisons["baseline"]) == {"loss=bce_logits loss.pos_weight=null"}  # each list's first value
    runs, comparisons = load(sweep, baseline="loss=ce")
    assert set(comparisons["baseline"]) == {"loss=ce loss.pos_weight=null"}  # the other keys keep their first
    assert len(runs) == 12 and runs.loc[runs["control"], "arm"].unique().tolist() == ["loss=ce loss.pos_weight=null"]
    main([str(sweep), "--baseline", "loss=ce loss.pos_weight=auto"])
    with (sweep / "comparisons.csv").open() as handle:
        assert {r["baseline"] for r in csv.DictReader(handle)} == {"loss=ce loss.pos_weight=auto"}
    assert capsys.readouterr().out.splitlines()[-1] == f"report: {sweep / 'report.md'}"
    summary = (sweep / "report.md").read_text().split("## Summary")[1].split("##")[0]
    assert (
        "- nothing is judged: with 3 seeds the exact test cannot reach p <= 0.05 over 9 comparisons; 9 seeds" in summary
    )
    with pytest.raises(SystemExit) as stop:
        main([str(sweep), "--baseline", "loss=focal"])
    error = capsys.readouterr().err
    assert stop.value.code == 2 and error.count("\n") == 1
    assert error.startswith("error: --baseline='loss=focal' names no arm of this sweep (arms: loss=bce_logits")


def test_load_returns_what_the_files_say(tmp_path):
    sweep, rng = tmp_path / "sweep", np.random.default_rng(3)
    for job, (loss, seed) in enumerate(itertools.product(("ce", "focal"), (1, 2, 3, 4))):
        metrics, arrays = binary_job(rng, 0.6 if loss == "ce" else 0.8)
        make_job(sweep, str(job), [f"loss={loss}", f"seed={seed}"], {**metrics, "seed": seed}, arrays)
    write_report(sweep)
    runs, comparisons = load(sweep)
    with (sweep / "comparisons.csv").open() as handle:
        written = list(csv.DictReader(handle))
    assert comparisons["metric"].tolist() == [r["metric"] for r in written]
    assert comparisons["p_adjusted"].tolist() == pytest.approx([float(r["p_adjusted"]) for r in written])
    assert runs["panel/balanced_acc"].tolist() == pytest.approx(
        [hand_value(sweep / str(j), "balanced_acc") for j in range(8)]
    )
    assert runs.groupby("arm")["seed"].count().to_dict() == {"loss=ce": 4, "loss=focal": 4}


def test_settings_that_cannot_work_are_refused_before_the_sweep(capsys):
    with pytest.raises(SystemExit) as stop:
        ReportCallback(metrics=["balanced_accuracy"]).on_multirun_start(config=None)
    error = capsys.readouterr().err
    assert stop.value.code == 2 and error.count("\n") == 1
    assert error.startswith("error: report.metrics=['balanced_accuracy']: balanced_accuracy is not a panel metric")
    with pytest.raises(SystemExit):
        ReportCallback(margin="-1").on_multirun_start(config=None)
    assert "report.margin='-1' is not a margin" in capsys.readouterr().err


def test_a_baseline_that_is_not_swept_is_refused_before_the_first_job(tmp_path):
    result = run_train_py("-m", "report.baseline='loss=focal'", "loss=ce,logit_adjusted", "data=digits", "seed=1,2",
                          "hydra.sweep.dir=sweep", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2 and not (tmp_path / "sweep").exists()
    assert result.stderr.strip() == (
        "error: report.baseline='loss=focal': 'loss=focal' is not a value of a swept key (swept: "
        "loss=ce,logit_adjusted); name the control as key=value, e.g. report.baseline='loss=ce'"
    )


@pytest.mark.slow
def test_bce_and_bce_logits_read_equivalent_in_a_real_sweep(tmp_path):
    """10 seeds trained together (hydra/launcher=seeds): the fused and the unfused loss are the same
    model up to rounding; ce on two logits is another model. The summary is printed when the sweep ends."""
    result = train_py_in_process(
        "-m", "hydra/launcher=seeds", "loss=bce_logits,bce,ce", "seed=range(1,11)", "trainer.max_epochs=2",
        *QUIET, "hydra.sweep.dir=sweep", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "**breast_cancer** (binary), control `loss=bce_logits`, 20 comparisons at 10 seeds:" in result.stdout
    assert "- `loss=bce` vs `loss=bce_logits`: equivalent on every metric" in result.stdout
    rows = check_rows_against_files(tmp_path / "sweep")
    assert {r["verdict"] for r in rows if r["config"] == "loss=bce"} == {"equivalent"}
    assert len(rows) == 20 and {r["metric"] for r in rows} == set(PANEL) - {"acc", "macro_f1", "worst_recall", "map"}


@pytest.mark.slow
def test_logit_adjustment_raises_balanced_accuracy_on_a_long_tail(tmp_path):
    """Menon et al. (ICLR 2021): on long-tailed classes, logit adjustment trades accuracy on the head
    classes for recall on the tail; the report finds it under its default settings. (8 epochs: balanced
    accuracy +0.086 [+0.051, +0.135], worst-class recall +0.282 [+0.167, +0.458] on a 2-core CPU, 2026-12-06.)"""
    result = train_py_in_process(
        "-m", "hydra/launcher=seeds", "data=synthetic_longtail", "loss=ce,logit_adjusted", "seed=range(1,11)",
        "trainer.max_epochs=8", *QUIET, "hydra.sweep.dir=sweep", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {r["metric"]: r for r in check_rows_against_files(tmp_path / "sweep")}
    assert rows["balanced_acc"]["verdict"] == rows["worst_recall"]["verdict"] == "better"
    assert float(rows["balanced_acc"]["ci_low"]) > 0
