"""The losses from the literature against their formulas written out by hand, and the cases where
each reduces to a loss the harness already has."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lossheads.config.pairing import build_loss
from lossheads.heads import build_head

LOGITS = torch.tensor([[2.0, -1.0, 0.5], [0.3, 0.8, -2.0], [-1.0, 0.0, 1.5], [1.0, 1.0, 1.0]])
LABELS = torch.tensor([0, 1, 2, 0])
LONG_TAIL = torch.tensor([0] * 6 + [1] * 3 + [2])  # training split: 6, 3 and 1 samples


def make(config, name: str, *overrides: str, head: str = "softmax", targets=LONG_TAIL, num_classes: int = 3):
    return build_loss(config(f"loss={name}", *overrides).loss, build_head(head, num_classes), targets)


def log_softmax_row(row: list[float]) -> list[float]:
    total = math.log(sum(math.exp(v) for v in row))
    return [v - total for v in row]


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def test_asl_reproduces_its_formula_by_hand(config):
    logits = [[2.0, -1.0], [0.5, -3.0]]
    targets = [[1.0, 0.0], [0.0, 1.0]]
    gp, gn, m = 1.0, 2.0, 0.1
    terms = []
    for z_row, y_row in zip(logits, targets, strict=True):
        for z, y in zip(z_row, y_row, strict=True):
            p = sigmoid(z)
            p_m = max(p - m, 0.0)
            terms.append(-y * (1 - p) ** gp * math.log(p) - (1 - y) * p_m**gn * math.log(1 - p_m))
    by_hand = sum(terms) / len(terms)
    t = torch.tensor(targets)
    asl = make(config, "asl", f"loss.gamma_pos={gp}", f"loss.gamma_neg={gn}", f"loss.clip={m}", head="multilabel",
               targets=t, num_classes=2)  # fmt: skip
    assert asl(torch.tensor(logits), t).item() == pytest.approx(by_hand, rel=1e-6)
    # an easy negative (p = 0.047 <= clip) costs nothing
    assert make(config, "asl", head="multilabel", targets=t, num_classes=2)(
        torch.tensor([[-3.0, -3.0]]), torch.tensor([[0.0, 0.0]])
    ).item() == pytest.approx(0.0, abs=1e-7)


def test_asl_without_focusing_or_margin_is_bce_logits(config):
    t = (torch.rand(8, 3, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    z = torch.randn(8, 3, generator=torch.Generator().manual_seed(1)) * 3
    asl = make(config, "asl", "loss.gamma_pos=0", "loss.gamma_neg=0", "loss.clip=0", head="multilabel", targets=t)
    assert asl(z, t).item() == pytest.approx(F.binary_cross_entropy_with_logits(z, t).item(), rel=1e-6)


def test_logit_adjusted_reproduces_its_formula_by_hand(config):
    tau, prior = 0.7, [0.6, 0.3, 0.1]
    by_hand = []
    for row, y in zip(LOGITS.tolist(), LABELS.tolist(), strict=True):
        adjusted = [z + tau * math.log(pi) for z, pi in zip(row, prior, strict=True)]
        by_hand.append(-log_softmax_row(adjusted)[y])
    loss = make(config, "logit_adjusted", f"loss.tau={tau}")
    assert loss(LOGITS, LABELS).item() == pytest.approx(sum(by_hand) / len(by_hand), rel=1e-6)
    assert loss.log_prior.exp().tolist() == pytest.approx(prior)


def test_logit_adjusted_with_tau_0_is_ce_and_predictions_use_raw_logits(config):
    ce = make(config, "ce")(LOGITS, LABELS)
    assert make(config, "logit_adjusted", "loss.tau=0")(LOGITS, LABELS).item() == pytest.approx(ce.item(), rel=1e-7)
    assert torch.equal(build_head("softmax", 3).predict(LOGITS), LOGITS.argmax(dim=1))


def test_poly1_reproduces_its_formula_by_hand_and_epsilon_0_is_ce(config):
    eps = 2.0
    by_hand = []
    for row, y in zip(LOGITS.tolist(), LABELS.tolist(), strict=True):
        log_p = log_softmax_row(row)
        by_hand.append(-log_p[y] + eps * (1 - math.exp(log_p[y])))
    poly = make(config, "poly1", f"loss.epsilon={eps}")
    assert poly(LOGITS, LABELS).item() == pytest.approx(sum(by_hand) / len(by_hand), rel=1e-6)
    ce = make(config, "ce")(LOGITS, LABELS)
    assert make(config, "poly1", "loss.epsilon=0")(LOGITS, LABELS).item() == pytest.approx(ce.item(), rel=1e-7)


def test_class_balanced_reproduces_its_formula_by_hand(config):
    beta, counts = 0.9, [6, 3, 1]
    raw = [(1 - beta) / (1 - beta**n) for n in counts]
    w = [r / sum(raw) * 3 for r in raw]  # normalized to sum to C
    by_hand = [-w[y] * log_softmax_row(row)[y] for row, y in zip(LOGITS.tolist(), LABELS.tolist(), strict=True)]
    loss = make(config, "class_balanced", f"loss.beta={beta}")
    assert loss.weight.tolist() == pytest.approx(w, rel=1e-6)
    assert loss(LOGITS, LABELS).item() == pytest.approx(sum(by_hand) / len(by_hand), rel=1e-6)
    ce = make(config, "ce")(LOGITS, LABELS)
    assert make(config, "class_balanced", "loss.beta=0")(LOGITS, LABELS).item() == pytest.approx(ce.item(), rel=1e-6)


@pytest.mark.parametrize("name", ["ce", "nll", "poly1", "logit_adjusted", "bce_logits"])
def test_weight_auto_is_n_over_c_times_n_c_from_the_training_split(config, name):
    head = "ovr" if name == "bce_logits" else "softmax"
    loss = make(config, name, "loss.weight=auto", head=head)
    assert loss.weight.tolist() == pytest.approx([10 / (3 * 6), 10 / (3 * 3), 10 / (3 * 1)])


def test_ovr_with_bce_logits_on_one_hot_targets_equals_multilabel_with_bce_logits(config):
    one_hot = F.one_hot(LABELS, 3).float()
    ovr = make(config, "bce_logits", head="ovr", targets=LABELS)
    multilabel = make(config, "bce_logits", head="multilabel", targets=one_hot)
    assert ovr(LOGITS, LABELS).item() == pytest.approx(multilabel(LOGITS, one_hot).item(), rel=1e-7)
    assert ovr(LOGITS, LABELS).item() == pytest.approx(F.binary_cross_entropy_with_logits(LOGITS, one_hot).item())


def test_ovr_predicts_the_argmax_and_hands_normalized_probabilities():
    head = build_head("ovr", 3)
    s = torch.sigmoid(LOGITS)
    torch.testing.assert_close(head.probabilities(LOGITS), s / s.sum(dim=1, keepdim=True))
    assert torch.equal(head.predict(LOGITS), LOGITS.argmax(dim=1))
    binary = build_head("ovr", 2, threshold=0.3)
    z = torch.tensor([[0.0, -0.5]])  # normalized p1 = 0.38/(0.5+0.38) = 0.43 >= 0.3, though z1 < z0
    assert binary.predict(z).tolist() == [1]
