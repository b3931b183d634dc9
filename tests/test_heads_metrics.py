"""Prediction rules (0.5 threshold vs argmax), head resolution, and metrics fed by the head."""

from __future__ import annotations

import re

import pytest
import torch
from torchmetrics.classification import BinaryAccuracy

from lossheads.config.pairing import resolve
from lossheads.config.validators import ConfigError
from lossheads.evaluation.metrics import HeadMetrics
from lossheads.heads import build_head


def test_two_way_softmax_equals_sigmoid_of_the_logit_difference():
    z = torch.randn(200, 2, generator=torch.Generator().manual_seed(0)) * 3
    softmax, sigmoid = build_head("softmax", 2), build_head("sigmoid", 2)
    difference = (z[:, 1] - z[:, 0]).unsqueeze(1)  # the sigmoid head's single logit
    torch.testing.assert_close(softmax.probabilities(z), sigmoid.probabilities(sigmoid.logits(difference)))
    assert torch.equal(softmax.predict(z), sigmoid.predict(sigmoid.logits(difference)))


def test_sigmoid_rule_is_p_at_least_threshold():
    head = build_head("sigmoid", 2, threshold=0.5)
    logits = torch.tensor([-0.1, 0.0, 0.1])
    assert head.predict(logits).tolist() == [0, 1, 1]  # p = 0.5 exactly counts as positive
    assert build_head("sigmoid", 2, threshold=0.6).predict(torch.tensor([0.3, 0.5])).tolist() == [0, 1]


def test_softmax_rule_is_argmax_and_multilabel_thresholds_each_label():
    assert build_head("softmax", 3).predict(torch.tensor([[0.1, 2.0, 1.9], [3.0, -1.0, 0.0]])).tolist() == [1, 0]
    head = build_head("multilabel", 3, threshold=0.5)
    assert head.predict(torch.tensor([[2.0, -2.0, 0.0]])).tolist() == [[1, 0, 1]]


def test_metrics_get_probabilities_even_when_logits_lie_in_0_1():
    """Logits 0.2, 0.4, 0.9 mean p = 0.55, 0.60, 0.71: all positive. torchmetrics would read the raw
    logits as probabilities (they lie in [0, 1]) and call the first two negative."""
    logits, targets = torch.tensor([0.2, 0.4, 0.9]), torch.tensor([1, 1, 1])
    head = build_head("sigmoid", 2)
    metrics = HeadMetrics("binary", 2, prefix="val/")
    metrics.update(head.predict(logits), head.probabilities(logits), targets)
    assert metrics.compute()["val/acc"].item() == 1.0
    assert BinaryAccuracy()(logits, targets).item() == pytest.approx(1 / 3)


def test_binary_metrics_match_hand_counts():
    probs = torch.tensor([0.9, 0.8, 0.3, 0.6, 0.1, 0.4])
    targets = torch.tensor([1, 1, 1, 0, 0, 0])
    preds = (probs >= 0.5).long()  # TP=2, FN=1, FP=1, TN=2
    metrics = HeadMetrics("binary", 2, prefix="test/")
    metrics.update(preds, probs, targets)
    values = {k: v.item() for k, v in metrics.compute().items()}
    assert values["test/acc"] == pytest.approx(4 / 6)
    assert values["test/precision"] == pytest.approx(2 / 3)
    assert values["test/recall"] == pytest.approx(2 / 3)
    assert values["test/auroc"] == pytest.approx(7 / 9)  # 7 of 9 positive-negative pairs ranked right
    names = ("acc", "precision", "recall", "f1", "auroc", "ap", "nll", "brier", "ece", "positive_ece")
    assert set(values) == {f"test/{m}" for m in names}


def test_multilabel_calibration_error_pools_labels():
    probs = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    targets = torch.tensor([[1, 0], [0, 0]])
    metrics = HeadMetrics("multilabel", 2, prefix="val/")
    metrics.update((probs >= 0.5).long(), probs, targets)
    values = metrics.compute()
    assert values["val/ece"].item() == pytest.approx(0.25)  # one of 4 confident decisions wrong
    assert values["val/positive_ece"].item() == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("head", "loss", "task", "expected"),
    [
        ("auto", "bce_logits", "binary", "sigmoid"),
        ("auto", "ce", "binary", "softmax"),
        ("auto", "ce", "multiclass", "softmax"),
        ("auto", "bce", "multilabel", "multilabel"),
        ("softmax", "ce", "binary", "softmax"),
        ("auto", "focal", "binary", "sigmoid"),
        ("auto", "focal", "multiclass", "softmax"),
        ("auto", "mse", "binary", "sigmoid"),  # the data's default head, since mse fits it
        ("auto", "bce_logits", "multiclass", "ovr"),  # the per-logit loss on single-label data: one-vs-rest
        ("auto", "asl", "multiclass", "ovr"),
        ("auto", "auto", "binary", "sigmoid"),
        ("auto", "auto", "multiclass", "softmax"),
        ("auto", "auto", "multilabel", "multilabel"),
        ("softmax", "auto", "binary", "softmax"),
        ("auto", "multilabel_soft_margin", "multilabel", "multilabel"),
    ],
)
def test_auto_head_follows_loss_and_data(head, loss, task, expected):
    assert resolve(head, loss, task)[0].name == expected


@pytest.mark.parametrize(
    ("head", "task", "expected"),
    [("auto", "binary", "bce_logits"), ("softmax", "binary", "ce"), ("auto", "multiclass", "ce"),
     ("auto", "multilabel", "bce_logits")],
)  # fmt: skip
def test_auto_loss_is_the_heads_own_loss(head, task, expected):
    assert resolve(head, "auto", task)[1].name == expected


@pytest.mark.parametrize(
    ("head", "loss", "task", "message"),
    [
        ("sigmoid", "ce", "binary", "loss=ce needs head=softmax, got head=sigmoid: use head=softmax or loss=bce_l"),
        ("softmax", "bce_logits", "binary", "got head=softmax: use head=sigmoid or loss=ce|"),
        ("multilabel", "ce", "multilabel", "got head=multilabel: use loss=bce_logits|"),
        ("sigmoid", "bce_logits", "multiclass", "head=sigmoid does not fit multiclass data"),
        ("multilabel", "bce", "binary", "head=multilabel does not fit binary data: use head=sigmoid"),
        ("sigmoid", "nll", "binary", "loss=nll needs head=softmax"),
        ("auto", "ce", "multilabel", "loss=ce fits no head on multilabel data: use loss=auto or loss=bce_logits|"),
    ],
)
def test_bad_head_loss_data_combinations_are_refused(head, loss, task, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve(head, loss, task)
