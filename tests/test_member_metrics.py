"""MemberMetrics against K HeadMetrics fed each member's slice of the same tensors: the same keys in
the same order, the same values to 1e-6 (NaN where HeadMetrics gives NaN) and the same warnings, on
random data and on data built to break a vectorized version (ties, bin edges, absent classes,
nothing predicted, one member alone)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import Tensor

from lossheads.evaluation.members import MemberMetrics, _equal_width_bin
from lossheads.evaluation.metrics import HeadMetrics, UndefinedMetricWarning

Batch = tuple[Tensor, Tensor, Tensor]
TASKS = {"binary": 2, "multiclass": 4, "multilabel": 3}


def predict(task: str, probabilities: Tensor) -> Tensor:
    """The heads' rules: p >= 0.5 per sample or label, the argmax on multi-class data."""
    return probabilities.argmax(-1) if task == "multiclass" else (probabilities >= 0.5).long()


def random_batch(task: str, members: int, samples: int, seed: int, *, ties: bool = False) -> Batch:
    g = torch.Generator().manual_seed(seed)
    c = TASKS[task]
    if task == "binary":
        probabilities, targets = torch.rand(members, samples, generator=g), torch.rand(members, samples, generator=g)
        targets = (targets < 0.4).long()
    elif task == "multiclass":
        logits = torch.randn(members, samples, c, generator=g)
        probabilities = (logits.round() if ties else logits).softmax(-1)
        targets = torch.randint(0, c, (members, samples), generator=g)
    else:
        probabilities = torch.rand(members, samples, c, generator=g)
        targets = (torch.rand(members, samples, c, generator=g) < 0.3).long()
    if ties and task == "multiclass":  # top-label confidences on bin edges (9/15, 5/15) and exactly 1
        edges = torch.tensor([[0.6, 0.2, 0.2, 0.0], [1 / 3, 1 / 3, 1 / 3, 0.0], [0.0, 1.0, 0.0, 0.0]])
        probabilities[:, ::3] = edges[torch.arange(probabilities[:, ::3].shape[1]) % 3]
    elif ties:  # bin edges k/15, 0 and 1 exactly, and many equal scores
        probabilities = (probabilities * 15).round() / 15
        probabilities[..., ::4] = 0.5
    return predict(task, probabilities), probabilities, targets


def run_both(task: str, batches: list[Batch], *, full: bool = True, labels: list[str] | None = None):
    """Each side's values and the texts of the warnings it gave (member order)."""
    members, c = batches[0][0].shape[0], TASKS[task]
    heads = [HeadMetrics(task, c, "val/", full=full, labels=labels) for _ in range(members)]
    stacked = MemberMetrics(task, c, members, "val/", full=full, labels=labels)
    for predictions, probabilities, targets in batches:
        stacked.update(predictions, probabilities if full else None, targets)
        for k, head in enumerate(heads):
            head.update(predictions[k], probabilities[k] if full else None, targets[k])
    with warnings.catch_warnings(record=True) as head_warnings:
        warnings.simplefilter("always")
        expected = [{name: float(v) for name, v in head.compute().items()} for head in heads]
    with warnings.catch_warnings(record=True) as member_warnings:
        warnings.simplefilter("always")
        got = stacked.compute()
    texts = [[str(w.message) for w in caught if w.category is UndefinedMetricWarning]
             for caught in (head_warnings, member_warnings)]  # fmt: skip
    return got, expected, *texts


def assert_same(got: list[dict[str, float]], expected: list[dict[str, float]]) -> None:
    assert len(got) == len(expected)
    for k, (mine, theirs) in enumerate(zip(got, expected, strict=True)):
        assert list(mine) == list(theirs), f"member {k}"
        for name, value in theirs.items():
            assert isinstance(mine[name], float)
            if math.isnan(value):
                assert math.isnan(mine[name]), f"member {k} {name}: {mine[name]} where HeadMetrics gives NaN"
            else:
                assert mine[name] == pytest.approx(value, abs=1e-6), f"member {k} {name}"


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("full", [True, False])
@pytest.mark.parametrize(("members", "batches"), [(1, 1), (10, 1), (10, 3)])
def test_equals_head_metrics_per_member_on_random_data(task, full, members, batches):
    data = [random_batch(task, members, 40, seed) for seed in range(batches)]
    got, expected, head_warnings, member_warnings = run_both(task, data, full=full)
    assert_same(got, expected)
    assert member_warnings == head_warnings
    names = ["val/acc", "val/f1", "val/precision", "val/recall"]
    if full:
        names += ["val/ap", "val/auroc", "val/brier", "val/ece", "val/nll"]
        names += [] if task == "multiclass" else ["val/positive_ece"]
    assert list(got[0]) == (names if full else ["val/acc"])


@pytest.mark.parametrize("task", list(TASKS))
def test_equals_head_metrics_with_tied_scores_and_scores_on_bin_edges(task):
    data = [random_batch(task, 10, 30, seed, ties=True) for seed in range(2)]
    got, expected, head_warnings, member_warnings = run_both(task, data)
    assert_same(got, expected)
    assert member_warnings == head_warnings


def test_ties_count_half_in_auroc_and_as_one_threshold_in_ap():
    """Scores 0.9, 0.5, 0.5, 0.1 with labels 1, 1, 0, 0. AUROC: the negative at 0.5 has one positive
    above and one tied (1.5), the one at 0.1 two above: 3.5 / 4 = 0.875. AP: precision 1 at 0.9, then
    2/3 at the end of the tied run: (1 + 2/3) / 2. A second member holds the same scores reversed."""
    scores = torch.tensor([[0.9, 0.5, 0.5, 0.1], [0.1, 0.5, 0.5, 0.9]])
    targets = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0]])
    got, expected, _, _ = run_both("binary", [(predict("binary", scores), scores, targets)])
    assert_same(got, expected)
    assert got[0]["val/auroc"] == pytest.approx(0.875, abs=1e-7)
    assert got[0]["val/ap"] == pytest.approx(5 / 6, abs=1e-7)
    assert got[1]["val/auroc"] == pytest.approx(0.125, abs=1e-7)


def test_a_class_absent_from_one_members_targets_is_nan_for_that_member_only_with_heads_warning():
    """Member 0 never sees class 'd' (and never predicts it): its AUROC/AP macro averages are over
    the 3 other classes and HeadMetrics' warning names 'd'; member 1 sees every class and warns nothing.
    Member 2 sees only class 'a': every class is undefined and the averages are NaN."""
    labels = ["a", "b", "c", "d"]
    predictions, probabilities, targets = random_batch("multiclass", 3, 24, seed=3)
    targets[0] = targets[0] % 3
    probabilities[0, :, 3] = 0.0
    predictions[0] = probabilities[0].argmax(-1)
    targets[1] = torch.arange(24) % 4
    targets[2] = 0
    got, expected, head_warnings, member_warnings = run_both(
        "multiclass", [(predictions, probabilities, targets)], labels=labels
    )
    assert_same(got, expected)
    assert member_warnings == head_warnings
    assert member_warnings[0] == (
        "AUROC and AP are undefined (NaN) for class d in the val split: it has no positives or no "
        "negatives there; the macro averages are over the 3 other classes"
    )
    assert len(member_warnings) == 2
    assert not math.isnan(got[0]["val/auroc"]) and not math.isnan(got[1]["val/auroc"])
    assert math.isnan(got[2]["val/auroc"]) and math.isnan(got[2]["val/ap"])


@pytest.mark.parametrize("task", ["binary", "multilabel"])
def test_a_member_with_one_target_value_only_and_one_that_predicts_nothing(task):
    """Member 0: every target positive (AUROC undefined: NaN, warned); member 1: every prediction 0
    (precision 0/0 counts 0, as torchmetrics); member 2: ordinary."""
    predictions, probabilities, targets = random_batch(task, 3, 20, seed=5)
    targets[0] = 1
    probabilities[1] = probabilities[1] * 0.4
    predictions[1] = predict(task, probabilities[1])
    got, expected, head_warnings, member_warnings = run_both(task, [(predictions, probabilities, targets)])
    assert_same(got, expected)
    assert member_warnings == head_warnings and len(member_warnings) == 1
    assert math.isnan(got[0]["val/auroc"])
    assert got[1]["val/precision"] == 0.0


def test_reset_starts_a_new_epoch_and_each_warning_is_given_once_per_member_for_the_objects_life():
    labels = ["a", "b", "c", "d"]
    stacked = MemberMetrics("multiclass", 4, 2, "test/", labels=labels)
    heads = [HeadMetrics("multiclass", 4, "test/", labels=labels) for _ in range(2)]
    for epoch in range(2):
        predictions, probabilities, targets = random_batch("multiclass", 2, 30, seed=10 + epoch)
        targets[1] = targets[1] % 2  # classes c and d absent for member 1, every epoch
        stacked.update(predictions, probabilities, targets)
        for k, head in enumerate(heads):
            head.update(predictions[k], probabilities[k], targets[k])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = stacked.compute()
        with warnings.catch_warnings(record=True):
            expected = [{name: float(v) for name, v in head.compute().items()} for head in heads]
        assert_same(got, expected)
        assert [str(w.message) for w in caught] == (
            ["AUROC and AP are undefined (NaN) for class c, d in the test split: it has no positives or "
             "no negatives there; the macro averages are over the 2 other classes"] if epoch == 0 else []
        )  # fmt: skip
        stacked.reset()
        for head in heads:
            head.reset()


def test_the_members_axis_keeps_members_apart():
    """Member k's numbers do not depend on the other members: the same slice alone gives the same."""
    predictions, probabilities, targets = random_batch("multiclass", 5, 50, seed=7)
    together = MemberMetrics("multiclass", 4, 5, "val/")
    together.update(predictions, probabilities, targets)
    alone = MemberMetrics("multiclass", 4, 1, "val/")
    alone.update(predictions[3:4], probabilities[3:4], targets[3:4])
    assert together.compute()[3] == pytest.approx(alone.compute()[0], abs=1e-12)


def test_bins_by_elementwise_ops_are_torch_bucketize_bins_on_and_beside_every_edge():
    edges = torch.linspace(0, 1, 16)
    beside = torch.cat([edges, torch.nextafter(edges, torch.tensor(2.0)), torch.nextafter(edges, torch.tensor(-1.0))])
    confidence = torch.cat([beside.clamp(0, 1), torch.arange(61) / 60, torch.rand(1000)]).unsqueeze(0)
    assert torch.equal(_equal_width_bin(confidence), torch.bucketize(confidence, edges, right=True) - 1)


@pytest.mark.parametrize("task", list(TASKS))
def test_a_diverged_member_gets_nan_scores_and_leaves_the_others_their_own(task):
    """Member 1's probabilities are NaN (its loss diverged): its label metrics are what HeadMetrics gives
    for its predictions, its score metrics NaN; members 0 and 2 equal HeadMetrics on their own data."""
    predictions, probabilities, targets = random_batch(task, 3, 30, seed=9)
    probabilities[1] = torch.nan
    predictions[1] = predict(task, probabilities[1])
    stacked = MemberMetrics(task, TASKS[task], 3, "val/")
    stacked.update(predictions, probabilities, targets)
    got = stacked.compute()
    kept = [0, 2]
    _, expected, _, _ = run_both(task, [(predictions[kept], probabilities[kept], targets[kept])])
    assert_same([got[k] for k in kept], expected)
    _, labels_only, _, _ = run_both(task, [(predictions[1:2], probabilities[1:2], targets[1:2])], full=False)
    assert got[1]["val/acc"] == pytest.approx(labels_only[0]["val/acc"], abs=1e-6)
    assert all(math.isnan(got[1][f"val/{name}"]) for name in ("auroc", "ap", "nll", "brier", "ece"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("task", list(TASKS))
def test_on_a_cuda_device_it_equals_head_metrics_on_the_cpu(task):
    data = [random_batch(task, 10, 40, seed, ties=True) for seed in range(2)]
    _, expected, _, _ = run_both(task, data)
    stacked = MemberMetrics(task, TASKS[task], 10, "val/")
    for predictions, probabilities, targets in data:
        stacked.update(predictions.cuda(), probabilities.cuda(), targets.cuda())
    assert_same(stacked.compute(), expected)
