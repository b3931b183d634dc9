"""The loss arms against worked values and their formulas written out by hand."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lossheads.config.pairing import build_loss
from lossheads.config.validators import ConfigError
from lossheads.heads import build_head

P = torch.tensor([[0.5, 1.0, 0.8], [0.2, 0.4, 0.6]])
Y = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
W = [[0.1, 0.9, 0.1], [0.1, 0.1, 0.9]]


def make_loss(config, name: str, *overrides: str, head: str = "multilabel", num_classes: int = 3, targets=Y):
    """A loss built by the project's own builder from the real loss config."""
    cfg = config(f"loss={name}", *overrides)
    return build_loss(cfg.loss, build_head(head, num_classes), targets)


def test_bce_on_probabilities_reproduces_worked_values(config):
    logits = torch.logit(P)  # bce applies sigmoid first, so hand it the logits of P
    assert make_loss(config, "bce")(logits, Y).item() == pytest.approx(0.5912299752235413, abs=1e-6)
    weighted = make_loss(config, "bce", f"loss.weight={W}")
    assert weighted(logits, Y).item() == pytest.approx(0.12723307311534882, abs=1e-6)
    assert nn.BCELoss()(P, Y).item() == pytest.approx(0.5912299752235413, abs=1e-6)


def test_bce_with_logits_reproduces_worked_values(config):
    loss = make_loss(config, "bce_logits")
    assert loss(P, Y).item() == pytest.approx(0.7678468823432922, abs=1e-6)
    assert loss(torch.tensor([[5.0, 1, 8], [2, 4, 6]]), Y).item() == pytest.approx(3.2446444034576416, abs=1e-6)


def test_bce_and_bce_logits_agree_on_moderate_logits(config):
    logits = torch.randn(64, 3, generator=torch.Generator().manual_seed(0)) * 4
    targets = (torch.rand(64, 3, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    for extra in ([], ["loss.pos_weight=[1.0,2.0,3.0]"], ["loss.weight=[0.5,1.0,2.0]", "loss.reduction=sum"]):
        bce = make_loss(config, "bce", *extra)(logits, targets)
        fused = make_loss(config, "bce_logits", *extra)(logits, targets)
        assert bce.item() == pytest.approx(fused.item(), rel=1e-5)


def test_bce_clamps_its_log_at_minus_100_and_loses_the_gradient(config):
    """A confidently wrong logit: BCELoss saturates at 100 and gives no gradient; the fused loss does not."""
    logits = torch.tensor([-200.0], requires_grad=True)
    target = torch.tensor([1.0])
    bce = make_loss(config, "bce", head="sigmoid", num_classes=2, targets=target)(logits, target)
    bce.backward()
    assert bce.item() == pytest.approx(100.0)
    assert logits.grad.item() == 0.0
    logits.grad = None
    fused = make_loss(config, "bce_logits", head="sigmoid", num_classes=2, targets=target)(logits, target)
    fused.backward()
    assert fused.item() == pytest.approx(200.0)
    assert logits.grad.item() == pytest.approx(-1.0)


def test_bce_on_a_nan_logit_is_a_nan_loss_not_a_crash(config):
    """BCELoss refuses a NaN probability (RuntimeError); a diverging run's NaN logit must instead give a
    NaN loss, as bce_logits does, so the run is recorded as diverged (and its seeds group trains on)."""
    logits = torch.tensor([[0.3, float("nan"), -1.0], [2.0, 0.5, -0.5]], requires_grad=True)
    with pytest.raises(RuntimeError, match="between 0 and 1"):
        F.binary_cross_entropy(torch.sigmoid(logits), Y)
    for extra in ([], ["loss.pos_weight=[1.0,2.0,3.0]"], ["loss.reduction=sum"], ["loss.reduction=none"]):
        loss = make_loss(config, "bce", *extra)(logits, Y)
        assert torch.isnan(loss).all(), extra
        assert torch.isnan(make_loss(config, "bce_logits", *extra)(logits, Y)).any(), extra
    finite = torch.logit(P).requires_grad_()
    make_loss(config, "bce")(finite, Y).backward()
    reference = finite.detach().clone().requires_grad_()
    F.binary_cross_entropy(torch.sigmoid(reference), Y).backward()
    assert torch.equal(finite.grad, reference.grad)  # a finite batch: the same loss and gradient as BCELoss's


def test_bce_mean_with_weight_is_a_plain_mean_but_ce_mean_is_a_weighted_mean(config):
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.3, -2.0], [1.5, 1.5, 0.0], [-1.0, 2.0, 1.0]])
    labels = torch.tensor([0, 2, 1, 1])
    weight = torch.tensor([1.0, 2.0, 5.0])
    per_sample = -(logits[torch.arange(4), labels] - torch.logsumexp(logits, dim=1))
    ce = make_loss(config, "ce", head="softmax", targets=labels)
    assert ce(logits, labels).item() == pytest.approx(per_sample.mean().item(), abs=1e-6)
    weighted_ce = make_loss(config, "ce", "loss.weight=[1.0,2.0,5.0]", head="softmax", targets=labels)
    w = weight[labels]
    assert weighted_ce(logits, labels).item() == pytest.approx(((w * per_sample).sum() / w.sum()).item(), abs=1e-6)

    targets = F.one_hot(labels, 3).float()
    weighted_bce = make_loss(config, "bce_logits", "loss.weight=[1.0,2.0,5.0]", targets=targets)
    by_hand = weight * F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    assert weighted_bce(logits, targets).item() == pytest.approx(by_hand.mean().item(), abs=1e-6)


def test_ce_takes_class_probabilities(config):
    logits = torch.tensor([[0.5, 1.0, 0.8], [0.2, 0.4, 0.6]])
    q = torch.tensor([[0.3, 0.4, 0.3], [0.1, 0.5, 0.4]])
    ce = make_loss(config, "ce", head="softmax", targets=q)
    by_hand = -(q * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
    assert ce(logits, q).item() == pytest.approx(by_hand.item(), abs=1e-6)


def test_ce_takes_index_targets_with_extra_dimensions(config):
    """(N, C, d1) logits with (N, d1) class indices, as nn.CrossEntropyLoss allows."""
    logits = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 3, (4, 5), generator=torch.Generator().manual_seed(1))
    ce = make_loss(config, "ce", head="softmax", targets=labels)
    assert ce(logits, labels).item() == pytest.approx(nn.CrossEntropyLoss()(logits, labels).item(), abs=1e-6)


def test_pos_weight_follows_its_formula_and_broadcasts_over_labels(config):
    logits = torch.tensor([[0.3, -1.2], [2.0, 0.5], [-0.7, 1.1]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    pos_weight = torch.tensor([3.0, 0.5])
    loss = make_loss(config, "bce_logits", "loss.pos_weight=[3.0,0.5]", num_classes=2, targets=targets)
    by_hand = -(pos_weight * targets * F.logsigmoid(logits) + (1 - targets) * F.logsigmoid(-logits))
    assert loss(logits, targets).item() == pytest.approx(by_hand.mean().item(), abs=1e-6)
    plain = make_loss(config, "bce_logits", num_classes=2, targets=targets)(logits, targets)
    assert loss(logits, targets).item() != pytest.approx(plain.item(), abs=1e-3)


def test_pos_weight_auto_is_negatives_over_positives_of_the_training_split(config):
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    loss = make_loss(config, "bce_logits", "loss.pos_weight=auto", num_classes=2, targets=targets)
    assert loss.pos_weight.tolist() == pytest.approx([3.0, 1 / 3])
    with pytest.raises(ConfigError, match="label 1 has no positives"):
        make_loss(config, "bce_logits", "loss.pos_weight=auto", num_classes=2, targets=targets[:1])


def test_reduction_none_sums_over_labels_and_averages_over_samples(config):
    logits = torch.tensor([[0.3, -1.2, 0.4], [2.0, 0.5, -0.1]])
    per_element = F.binary_cross_entropy_with_logits(logits, Y, reduction="none")
    loss = make_loss(config, "bce_logits", "loss.reduction=none")
    assert loss(logits, Y).item() == pytest.approx(per_element.sum(dim=1).mean().item(), abs=1e-6)
    total = make_loss(config, "bce_logits", "loss.reduction=sum")
    assert total(logits, Y).item() == pytest.approx(per_element.sum().item(), abs=1e-6)


def test_bce_runs_in_fp32_under_autocast(config):
    """PyTorch refuses binary_cross_entropy under CUDA autocast; the bce arm turns autocast off for it."""
    net = nn.Linear(4, 3)
    features = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    targets = (torch.rand(8, 3, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    loss = make_loss(config, "bce")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = net(features)
        assert logits.dtype == torch.bfloat16
        value = loss(logits, targets)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(loss(logits.float(), targets).item(), abs=1e-6)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["loss=bce_logits", "loss.pos_weight=-1"], "loss.pos_weight=-1 is not valid"),
        (["loss=bce_logits", "loss.pos_weight=[1.0,2.0]"], "give one number, a list of 3"),
        (["loss=bce", "loss.weight=[1.0,2.0]"], "loss.weight=[1.0, 2.0] is not valid"),
        (["loss=bce", "loss.weight=[0.0,0.0,0.0]"], "at least one weight must be > 0"),
        (["loss=bce_logits", "loss.reduction=avg"], "use one of mean, sum, none"),
        (["loss=ce", "loss.weight=2.0"], "give a list of 3"),
        (["loss=ce", "loss.label_smoothing=1.0"], "use a number in [0, 1)"),
    ],
)
def test_bad_loss_options_are_refused_with_the_key_and_the_fix(config, overrides, message):
    cfg = config(*overrides)
    head = build_head("softmax" if cfg.loss.name == "ce" else "multilabel", 3)
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_loss(cfg.loss, head, Y)


@pytest.mark.parametrize("loss", ["bce", "bce_logits", "asl", "focal"])
def test_rows_of_weights_on_one_logit_per_sample_are_refused_in_one_line(config, loss):
    """With head=sigmoid a sample's logit is a number: a weight row would broadcast the batch into a
    matrix (BCE's functions then fail with a traceback; asl and focal averaged the wrong numbers)."""
    cfg = config(f"loss={loss}", "loss.weight=[[2.0]]")
    with pytest.raises(ConfigError) as refused:
        build_loss(cfg.loss, build_head("sigmoid", 2), torch.tensor([0.0, 1.0, 1.0]))
    assert str(refused.value) == (
        "loss.weight=[[2.0]] is not valid: head=sigmoid gives each sample one logit, so its weight is one number "
        "(rows of weights are for heads with a logit per label)"
    )
    build_loss(config(f"loss={loss}", "loss.weight=[[2.0,1.0,1.0]]").loss, build_head("multilabel", 3), Y)
    with pytest.raises(
        ConfigError, match=re.escape("give one number, a list of 3 (one per label), rows of 3 ([[...]])")
    ):
        build_loss(config(f"loss={loss}", "loss.weight=[[2.0]]").loss, build_head("multilabel", 3), Y)


def test_multilabel_soft_margin_is_bce_logits_averaged_over_labels(config):
    logits = torch.randn(16, 3, generator=torch.Generator().manual_seed(2)) * 3
    targets = (torch.rand(16, 3, generator=torch.Generator().manual_seed(3)) > 0.5).float()
    margin = make_loss(config, "multilabel_soft_margin")(logits, targets)
    assert margin.item() == pytest.approx(make_loss(config, "bce_logits")(logits, targets).item(), abs=1e-6)
    assert margin.item() == pytest.approx(nn.MultiLabelSoftMarginLoss()(logits, targets).item(), abs=1e-6)


def torchvision_sigmoid_focal(logits, targets, alpha: float, gamma: float):
    """torchvision.ops.sigmoid_focal_loss, written out by hand (mean reduction)."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean()


def test_focal_matches_torchvision_and_reduces_to_bce_logits_and_ce(config):
    logits = torch.tensor([[3.0, -0.5, 0.2], [-2.0, 1.5, 0.0], [0.7, -3.0, 4.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    focal = make_loss(config, "focal", "loss.gamma=2.0", "loss.alpha=0.25")(logits, targets)
    assert focal.item() == pytest.approx(torchvision_sigmoid_focal(logits, targets, 0.25, 2.0).item(), abs=1e-6)
    plain = make_loss(config, "focal", "loss.gamma=0", "loss.alpha=-1")(logits, targets)
    assert plain.item() == pytest.approx(make_loss(config, "bce_logits")(logits, targets).item(), abs=1e-6)

    labels = torch.tensor([0, 2, 1])
    softmax_focal = make_loss(config, "focal", "loss.gamma=0", head="softmax", targets=labels)
    ce = make_loss(config, "ce", head="softmax", targets=labels)
    assert softmax_focal(logits, labels).item() == pytest.approx(ce(logits, labels).item(), abs=1e-6)
    sharp = make_loss(config, "focal", "loss.gamma=2", head="softmax", targets=labels)(logits, labels)
    p_y = torch.softmax(logits, 1)[torch.arange(3), labels]
    assert sharp.item() == pytest.approx((-((1 - p_y) ** 2) * p_y.log()).mean().item(), abs=1e-6)


def test_square_loss_agrees_with_mse_on_the_worked_inputs(config):
    x = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    y = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    assert nn.L1Loss()(x, y).item() == 1.0 and nn.SmoothL1Loss()(x, y).item() == 0.625
    square = make_loss(config, "mse", head="softmax", num_classes=2, targets=y)
    assert square(x, y).item() == nn.MSELoss()(x, y).item() == 1.5


def test_square_loss_uses_one_hot_targets_on_logits_or_probabilities(config):
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    labels = torch.tensor([0, 1])
    one_hot = F.one_hot(labels, 3).float()
    on_logits = make_loss(config, "mse", head="softmax", targets=labels)(logits, labels)
    assert on_logits.item() == pytest.approx(F.mse_loss(logits, one_hot).item(), abs=1e-6)
    on_probs = make_loss(config, "mse", "loss.on=probs", head="softmax", targets=labels)(logits, labels)
    assert on_probs.item() == pytest.approx(F.mse_loss(torch.softmax(logits, 1), one_hot).item(), abs=1e-6)
    binary, z = torch.tensor([1, 0]), torch.tensor([0.3, -1.0])
    sigmoid = make_loss(config, "mse", "loss.on=probs", head="sigmoid", num_classes=2, targets=binary)
    assert sigmoid(z, binary).item() == pytest.approx(F.mse_loss(torch.sigmoid(z), binary.float()).item(), abs=1e-6)
    # on the logits, 0/1 labels become -1/+1: z = 0 (p = 0.5) is the boundary, as for the p >= 0.5 rule
    signed = make_loss(config, "mse", head="sigmoid", num_classes=2, targets=binary)
    assert signed(z, binary).item() == pytest.approx(F.mse_loss(z, torch.tensor([1.0, -1.0])).item(), abs=1e-6)


def test_bce_label_smoothing_moves_targets_toward_one_half(config):
    logits = torch.tensor([[1.0, -2.0, 0.5]])
    targets = torch.tensor([[1.0, 0.0, 1.0]])
    for name in ("bce", "bce_logits"):
        smoothed = make_loss(config, name, "loss.label_smoothing=0.2")(logits, targets)
        by_hand = F.binary_cross_entropy_with_logits(logits, torch.tensor([[0.9, 0.1, 0.9]]))
        assert smoothed.item() == pytest.approx(by_hand.item(), abs=1e-6)
