"""The common yardstick (nll, brier, top-label ece), undefined ranking metrics, per-class numbers
and threshold=auto: each against a hand computation or sklearn on the same probabilities."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import brier_score_loss, f1_score, log_loss
from torchmetrics import classification as tmc

from lossheads.evaluation.metrics import HeadMetrics, UndefinedMetricWarning
from lossheads.evaluation.scoring import BrierScore, NegativeLogLikelihood, TopLabelCalibrationError
from lossheads.evaluation.threshold import best_f1_threshold, tune_threshold

GEN = torch.Generator().manual_seed(0)


def test_top_label_ece_differs_from_torchmetrics_positive_class_calibration():
    """p = 0.3, 0.3, 0.7 with every label 0. Top-label: all three have confidence 0.7 (one bin), two of
    three decisions right: |2/3 - 0.7| = 1/30. Positive-class: bins at 0.3 and 0.7, true rate 0 in
    both: (2 * 0.3 + 0.7) / 3 = 1.3/3, which is what torchmetrics' BinaryCalibrationError returns."""
    p, y = torch.tensor([0.3, 0.3, 0.7]), torch.tensor([0, 0, 0])
    ece = TopLabelCalibrationError("binary")
    ece.update(p, y)
    assert ece.compute().item() == pytest.approx(1 / 30, abs=1e-6)
    assert tmc.BinaryCalibrationError(n_bins=15)(p, y).item() == pytest.approx(1.3 / 3, abs=1e-6)
    metrics = HeadMetrics("binary", 2, prefix="val/")
    metrics.update((p >= 0.5).long(), p, y)
    with pytest.warns(UndefinedMetricWarning):  # no positives: AUROC is NaN
        values = metrics.compute()
    assert values["val/ece"].item() == pytest.approx(1 / 30, abs=1e-6)
    assert values["val/positive_ece"].item() == pytest.approx(1.3 / 3, abs=1e-6)


def test_top_label_ece_equals_torchmetrics_multiclass_on_every_task():
    """Streamed per batch, it equals torchmetrics' multi-class (top-label) ECE on the same numbers:
    binary as the pair [1 - p, p], multi-label pooled over (sample, label) pairs."""
    probs = torch.softmax(torch.randn(300, 4, generator=GEN) * 2, dim=1)
    labels = torch.randint(0, 4, (300,), generator=GEN)
    ece = TopLabelCalibrationError("multiclass")
    for part in range(3):
        ece.update(probs[part * 100 : (part + 1) * 100], labels[part * 100 : (part + 1) * 100])
    expected = tmc.MulticlassCalibrationError(num_classes=4, n_bins=15)(probs, labels)
    assert ece.compute().item() == pytest.approx(expected.item(), abs=1e-6)

    p, y = torch.rand(300, 3, generator=GEN), torch.randint(0, 2, (300, 3), generator=GEN)
    pooled = TopLabelCalibrationError("multilabel")
    pooled.update(p, y)
    pairs = torch.stack([1 - p.reshape(-1), p.reshape(-1)], dim=1)
    expected = tmc.MulticlassCalibrationError(num_classes=2, n_bins=15)(pairs, y.reshape(-1))
    assert pooled.compute().item() == pytest.approx(expected.item(), abs=1e-6)


def _score(metric, probs, targets):
    metric.update(probs, targets)
    return metric.compute().item()


def test_nll_of_a_nan_probability_is_nan_not_a_crash():
    """BCELoss refuses a NaN probability; the run's NLL must come out NaN instead (its record then says
    that the network's outputs are not finite), for the binary and multi-label forms."""
    p, y = torch.rand(200, generator=GEN), torch.randint(0, 2, (200,), generator=GEN)
    finite = _score(NegativeLogLikelihood("binary"), p, y)
    assert finite == pytest.approx(log_loss(y, p.double()), rel=1e-5)
    broken = p.clone()
    broken[7] = float("nan")
    assert math.isnan(_score(NegativeLogLikelihood("binary"), broken, y))
    assert math.isnan(_score(NegativeLogLikelihood("multilabel"), broken.reshape(100, 2), y.reshape(100, 2)))


def test_nll_and_brier_equal_sklearn():
    p, y = torch.rand(200, generator=GEN), torch.randint(0, 2, (200,), generator=GEN)
    assert _score(NegativeLogLikelihood("binary"), p, y) == pytest.approx(log_loss(y, p.double()), rel=1e-5)
    assert _score(BrierScore("binary"), p, y) == pytest.approx(brier_score_loss(y, p.double()), rel=1e-5)

    probs = torch.softmax(torch.randn(200, 5, generator=GEN, dtype=torch.float64), dim=1)
    labels = torch.randint(0, 5, (200,), generator=GEN)
    classes = list(range(5))
    expected_nll = log_loss(labels, probs.double(), labels=classes)
    assert _score(NegativeLogLikelihood("multiclass"), probs, labels) == pytest.approx(expected_nll, rel=1e-5)
    expected_brier = brier_score_loss(labels, probs.double(), labels=classes)  # sum over classes, range [0, 2]
    assert _score(BrierScore("multiclass"), probs, labels) == pytest.approx(expected_brier, rel=1e-5)

    p, y = torch.rand(200, 3, generator=GEN), torch.randint(0, 2, (200, 3), generator=GEN)
    per_label_nll = np.mean([log_loss(y[:, j], p[:, j].double()) for j in range(3)])
    per_label_brier = np.mean([brier_score_loss(y[:, j], p[:, j].double()) for j in range(3)])
    assert _score(NegativeLogLikelihood("multilabel"), p, y) == pytest.approx(per_label_nll, rel=1e-5)
    assert _score(BrierScore("multilabel"), p, y) == pytest.approx(per_label_brier, rel=1e-5)

    certain = torch.tensor([0.0, 1.0])  # clipped as log_loss clips: finite, not inf
    wrong = torch.tensor([1, 0])
    assert _score(NegativeLogLikelihood("binary"), certain, wrong) == pytest.approx(
        log_loss(wrong, certain.numpy(), labels=[0, 1]), rel=1e-5
    )


def test_auroc_of_a_class_absent_from_the_split_is_nan_and_left_out_of_the_macro_average():
    """Class 2 has no sample in this split: its AUROC and AP are NaN (torchmetrics says 0), one
    warning names it and the split, and the macro averages are over classes 0 and 1."""
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.3, 0.5, 0.2], [0.5, 0.4, 0.1]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    metrics = HeadMetrics("multiclass", 3, prefix="test/")
    metrics.update(probs.argmax(1), probs, labels)
    with pytest.warns(UndefinedMetricWarning, match="class 2 in the test split.*over the 2 other classes") as caught:
        values = metrics.compute()
    assert len([w for w in caught if w.category is UndefinedMetricWarning]) == 1
    per_class = tmc.MulticlassAUROC(num_classes=3, average=None)(probs, labels)
    assert per_class[2].item() == 0.0  # what torchmetrics would have averaged in
    assert values["test/auroc"].item() == pytest.approx(per_class[:2].mean().item())
    expected_ap = tmc.MulticlassAveragePrecision(num_classes=3, average=None)(probs, labels)[:2].mean()
    assert values["test/ap"].item() == pytest.approx(expected_ap.item())

    binary = HeadMetrics("binary", 2, prefix="val/")
    binary.update(torch.tensor([1, 0]), torch.tensor([0.9, 0.2]), torch.tensor([1, 1]))
    with pytest.warns(UndefinedMetricWarning, match="val split"):
        values = binary.compute()
    assert np.isnan(values["val/auroc"].item()) and np.isnan(values["val/ap"].item())


def test_per_class_numbers_and_confusion_matrix():
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.1, 0.6, 0.3]])
    labels = torch.tensor([0, 1, 2, 2])
    metrics = HeadMetrics("multiclass", 3, prefix="test/", per_class=True, labels=["a", "b", "c"])
    metrics.update(probs.argmax(1), probs, labels)
    table = metrics.per_class()
    assert table["labels"] == ["a", "b", "c"]
    assert table["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]  # rows: true class
    assert table["precision"] == pytest.approx([1.0, 0.5, 1.0])
    assert table["recall"] == pytest.approx([1.0, 1.0, 0.5])
    assert table["f1"] == pytest.approx([1.0, 2 / 3, 2 / 3])


SCORES = torch.tensor([0.95, 0.9, 0.8, 0.7, 0.45, 0.4, 0.35, 0.3, 0.2, 0.1])
TARGETS = torch.tensor([1, 0, 1, 0, 1, 1, 1, 0, 0, 0])


def test_auto_threshold_is_the_validation_f1_maximum_found_exactly():
    """By hand (5 positives): predicting the top k gives F1 = 2 TP / (k + 5); the best is k = 7
    (TP = 5, F1 = 10/12), cut between the scores 0.35 and 0.3: threshold 0.325. At 0.5, F1 = 4/9."""
    threshold = best_f1_threshold(SCORES, TARGETS)
    assert threshold == pytest.approx(0.325)
    predicted = SCORES.numpy()[None, :] >= np.linspace(0.0, 1.0, 2001)[:, None]  # a fine grid, vectorized
    hits = (predicted & TARGETS.numpy().astype(bool)).sum(1)
    best_on_grid = (2 * hits / (predicted.sum(1) + TARGETS.sum().item())).max()
    tuned = SCORES.ge(threshold).long()
    assert f1_score(TARGETS, tuned) == pytest.approx(best_on_grid) == pytest.approx(10 / 12)
    assert f1_score(TARGETS, SCORES >= 0.5) == pytest.approx(4 / 9)


def test_auto_threshold_ties_take_the_higher_threshold_and_labels_get_their_own():
    # F1 of the top k: 2/3, 2/4, 4/5 (all positive): the lowest cut wins, half its score
    assert best_f1_threshold(torch.tensor([0.9, 0.6, 0.3]), torch.tensor([1, 0, 1])) == pytest.approx(0.15)
    # F1 of the top k: 2/3, 2/4, 2/5, 4/6: k = 1 and k = 4 tie; the higher threshold (fewer positives) wins
    tied_scores, tied_targets = torch.tensor([0.8, 0.6, 0.4, 0.2]), torch.tensor([1, 0, 0, 1])
    assert best_f1_threshold(tied_scores, tied_targets) == pytest.approx(0.7)
    # equal scores are one cut: 0.5 twice, never split between them
    assert best_f1_threshold(torch.tensor([0.5, 0.5, 0.1]), torch.tensor([1, 0, 0])) == pytest.approx(0.3)
    both = tune_threshold(torch.stack([SCORES, 1 - SCORES], 1), torch.stack([TARGETS, 1 - TARGETS], 1))
    assert both[0] == pytest.approx(0.325) and len(both) == 2
    with pytest.warns(UserWarning, match="no positives; keeping 0.5"):
        assert tune_threshold(SCORES, torch.zeros(10)) == 0.5


def test_threshold_auto_run_records_its_threshold_and_per_class_json(train, tmp_path):
    record = train("data=synthetic_binary", "data.n_samples=300", "threshold=auto", "head=softmax")
    val = np.load(tmp_path / "run" / "predictions.npz")
    expected = best_f1_threshold(torch.as_tensor(val["val_probs"]), torch.as_tensor(val["val_targets"]))
    assert record["threshold"] == pytest.approx(expected)
    assert record["task"] == "binary" and record["test_weights"] == "last" and record["test_weights_epoch"] == 0
    assert {"val/nll", "val/brier", "val/ece", "val/positive_ece", "test/nll", "test/ece"} <= set(record)
    tested = (val["test_probs"] >= record["threshold"]).astype(int)
    assert record["test/f1"] == pytest.approx(f1_score(val["test_targets"], tested), abs=1e-6)
    per_class = json.loads((tmp_path / "run" / "per_class.json").read_text())
    assert sum(map(sum, per_class["confusion"])) == len(val["test_targets"])


def test_evaluating_a_checkpoint_with_threshold_auto_tunes_on_validation_again(train, tmp_path):
    trained = train("data=synthetic_binary", "data.n_samples=300", "threshold=auto")
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    evaluated = train("data=synthetic_binary", "data.n_samples=300", "threshold=auto", "train=false",
                      f"ckpt_path={ckpt}", folder="eval")  # fmt: skip
    assert evaluated["threshold"] == pytest.approx(trained["threshold"])
    assert evaluated["test/f1"] == pytest.approx(trained["test/f1"], abs=1e-6)
    assert evaluated["test_weights"] == "last" and evaluated["test_weights_epoch"] == 0
    assert set(np.load(tmp_path / "eval" / "predictions.npz")) == {"val_probs", "val_targets", "test_probs",
                                                                  "test_targets"}  # fmt: skip


def test_a_class_absent_from_the_data_leaves_macro_auroc_over_the_defined_classes(train, tmp_path):
    """Three separable classes of four (data.num_classes=4): class 3 is absent from val and test, so its
    AUROC is NaN there, not 0 averaged into the macro. (A class with too few rows to reach val and test
    is refused by the split: see tests/test_folds.py.)"""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 40)
    features = rng.normal(size=(120, 2)) * 0.3 + np.stack([labels, -labels], axis=1)
    rows = [[*f, y] for f, y in zip(features.tolist(), labels.tolist(), strict=True)]
    path = tmp_path / "absent.csv"
    path.write_text("a,b,label\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    with pytest.warns(UndefinedMetricWarning, match="class 3 in the test split"):
        record = train("data=csv", f"data.path={path}", "data.num_classes=4", "loss=ce", "trainer.max_epochs=3")
    assert 0.9 < record["test/auroc"] <= 1.0  # 0.75 at most if class 3 counted as 0
    per_class = json.loads((tmp_path / "run" / "per_class.json").read_text())
    assert len(per_class["confusion"]) == 4 and sum(per_class["confusion"][3]) == 0
