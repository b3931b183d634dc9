"""Arms on equal terms: on binary data the two-way softmax and the sigmoid head predict by the same rule
and, with focal or with pos_weight, optimize the same objective (equal value, equal gradient with
respect to the positive-class log-odds z1 - z0 vs z); multi-label KD weighs its terms as it says."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lossheads.config.pairing import build_loss
from lossheads.heads import build_head

N = 64
GEN = torch.Generator().manual_seed(7)
LOG_ODDS = torch.randn(N, generator=GEN, dtype=torch.float64) * 3
LABELS = (torch.rand(N, generator=GEN) < 0.3).long()
SIGMOID, TWO_WAY = build_head("sigmoid", 2), build_head("softmax", 2)


def value_and_gradient(head, loss, labels: torch.Tensor) -> tuple[float, torch.Tensor]:
    """The loss and its gradient with respect to the log-odds d = z1 - z0 (the sigmoid head's logit is d;
    the two-way softmax gets [0, d]; its gradient in d is dL/dz1 = -dL/dz0 since softmax only sees z1 - z0)."""
    d = LOG_ODDS.clone().requires_grad_(True)
    logits = head.from_binary_logit(d)
    value = loss(logits, labels)
    (grad,) = torch.autograd.grad(value, d)
    return value.item(), grad


def both_forms(options: dict, *, sigmoid_loss: str, softmax_loss: str):
    sigmoid = build_loss({"name": sigmoid_loss, **options}, SIGMOID, LABELS)
    softmax = build_loss({"name": softmax_loss, **options}, TWO_WAY, LABELS)
    return value_and_gradient(SIGMOID, sigmoid.double(), LABELS), value_and_gradient(TWO_WAY, softmax.double(), LABELS)


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.62])
def test_both_binary_heads_predict_p1_at_least_threshold(threshold):
    """At threshold 0.3 a sample with p1 = 0.38 is positive for both heads (argmax would say negative)."""
    sigmoid, two_way = build_head("sigmoid", 2, threshold=threshold), build_head("softmax", 2, threshold=threshold)
    d = torch.tensor([-0.49, 0.0, 0.3, 1.2])  # p1 = 0.38, 0.5, 0.57, 0.77
    expected = (torch.sigmoid(d) >= threshold).long()
    assert torch.equal(sigmoid.predict(d), expected)
    assert torch.equal(two_way.predict(two_way.from_binary_logit(d)), expected)
    assert torch.equal(two_way.predict(two_way.from_binary_logit(LOG_ODDS)), sigmoid.predict(LOG_ODDS))


def test_both_binary_heads_take_a_threshold_per_label_tensor():
    two_way = build_head("softmax", 2, threshold=torch.tensor(0.3))
    assert two_way.predict(two_way.from_binary_logit(torch.tensor([-0.49]))).tolist() == [1]


@pytest.mark.parametrize(
    "options", [{"gamma": 2, "alpha": 0.25}, {"gamma": 1, "alpha": 0.8}, {"gamma": 0, "alpha": -1}]
)
def test_focal_softmax_form_equals_its_sigmoid_form_on_binary_data(options):
    (value, grad), (softmax_value, softmax_grad) = both_forms(options, sigmoid_loss="focal", softmax_loss="focal")
    assert softmax_value == pytest.approx(value, rel=1e-12)
    torch.testing.assert_close(softmax_grad, grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("pos_weight", [4.0, "auto"])
def test_ce_with_pos_weight_equals_bce_logits_with_pos_weight(pos_weight):
    (value, grad), (softmax_value, softmax_grad) = both_forms({"pos_weight": pos_weight}, sigmoid_loss="bce_logits",
                                                              softmax_loss="ce")  # fmt: skip
    assert softmax_value == pytest.approx(value, rel=1e-12)
    torch.testing.assert_close(softmax_grad, grad, rtol=1e-10, atol=1e-12)


def test_ce_without_pos_weight_equals_bce_logits():
    (value, grad), (softmax_value, softmax_grad) = (
        value_and_gradient(SIGMOID, F.binary_cross_entropy_with_logits, LABELS.double()),
        value_and_gradient(TWO_WAY, F.cross_entropy, LABELS),
    )
    assert softmax_value == pytest.approx(value, rel=1e-12)
    torch.testing.assert_close(softmax_grad, grad)


def test_pytorchs_weighted_ce_is_a_weighted_mean_and_ours_with_pos_weight_is_the_plain_mean():
    """Why ce + pos_weight does not call nn.CrossEntropyLoss(weight=...) as it is: its `mean` divides by
    the sum of the weights, a per-batch factor that BCE's plain mean does not have."""
    d = LOG_ODDS
    logits = torch.stack([torch.zeros_like(d), d], dim=1)
    w = torch.tensor([1.0, 9.0], dtype=torch.float64)
    per_sample = F.cross_entropy(logits, LABELS, reduction="none")
    weighted = F.cross_entropy(logits, LABELS, weight=w)
    assert weighted.item() == pytest.approx(((w[LABELS] * per_sample).sum() / w[LABELS].sum()).item())
    ours = build_loss({"name": "ce", "pos_weight": 9.0}, TWO_WAY, LABELS).double()(logits, LABELS)
    assert ours.item() == pytest.approx((w[LABELS] * per_sample).mean().item())
    assert ours.item() != pytest.approx(weighted.item(), rel=1e-2)  # 9x positives at 30%: factors apart


def test_multilabel_kd_weighs_soft_and_hard_terms_per_label():
    """L copies of one label give the same loss as the label alone: the soft KL is averaged over
    labels as the hard BCE is, so soft_weight means the same for any number of labels."""
    student = torch.tensor([[0.3], [-1.2], [2.0]])
    teacher = torch.tensor([[1.0], [-0.5], [0.5]])
    targets = torch.tensor([[1.0], [0.0], [1.0]])
    losses = []
    for labels in (1, 4):
        head = build_head("multilabel", labels)
        kd = build_loss({"name": "kd", "soft_weight": 0.3, "temperature": 2.0}, head, targets)
        copies = (student.repeat(1, labels), targets.repeat(1, labels), teacher.repeat(1, labels))
        losses.append((kd(*copies).item(), kd.soft(copies[0], copies[2]).item(), kd.hard(*copies[:2]).item()))
    (one, one_soft, one_hard), (four, four_soft, four_hard) = losses
    assert four == pytest.approx(one) and four_soft == pytest.approx(one_soft) and four_hard == pytest.approx(one_hard)
    p, q = torch.sigmoid(student / 2), torch.sigmoid(teacher / 2)
    per_label_kl = (q * (q / p).log() + (1 - q) * ((1 - q) / (1 - p)).log()).mean() * 4
    assert one_soft == pytest.approx(per_label_kl.item(), rel=1e-5)
    assert one == pytest.approx(0.3 * one_soft + 0.7 * one_hard, rel=1e-6)
