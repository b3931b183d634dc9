"""Distillation: the KL term's numbers, the frozen teacher, controlled comparisons and refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import QUIET, built, compose_config, train_py_in_process
from lossheads.config.pairing import build_loss
from lossheads.config.validators import ConfigError
from lossheads.heads import build_head
from lossheads.run.build import build
from lossheads.run.execute import run

STUDENT = torch.tensor([[0.5, 1.0, 0.8], [0.2, 0.4, 0.6]])
TEACHER_PROBS = torch.tensor([[0.3, 0.4, 0.3], [0.1, 0.5, 0.4]])
LABELS = torch.tensor([1, 2])


def kd_loss(config, *overrides: str, head: str = "softmax", num_classes: int = 3, targets=LABELS):
    cfg = config("loss=kd", *overrides)
    return build_loss(cfg.loss, build_head(head, num_classes), targets)


def test_kl_term_reproduces_the_worked_value_with_batchmean(config):
    loss = kd_loss(config, "loss.temperature=1", "loss.soft_weight=1")
    value = loss(STUDENT, LABELS, TEACHER_PROBS.log()).item()
    assert value == pytest.approx(0.057796258479356766, abs=1e-6)
    per_element_mean = F.kl_div(F.log_softmax(STUDENT, 1), TEACHER_PROBS, reduction="mean").item()
    assert per_element_mean == pytest.approx(value / 3, abs=1e-7)  # `mean` divides by N*C, not N


def test_temperature_scales_by_t_squared(config):
    t = 2.0
    p_student = torch.softmax(STUDENT / t, 1)
    p_teacher = torch.softmax(TEACHER_PROBS.log() / t, 1)
    by_hand = (p_teacher * (p_teacher / p_student).log()).sum(1).mean() * t**2
    loss = kd_loss(config, "loss.temperature=2", "loss.soft_weight=1")
    assert loss(STUDENT, LABELS, TEACHER_PROBS.log()).item() == pytest.approx(by_hand.item(), abs=1e-6)


def test_soft_weight_mixes_kl_and_the_heads_hard_loss(config):
    soft = kd_loss(config, "loss.temperature=1", "loss.soft_weight=1")(STUDENT, LABELS, TEACHER_PROBS.log())
    hard = F.cross_entropy(STUDENT, LABELS)
    mixed = kd_loss(config, "loss.temperature=1", "loss.soft_weight=0.3")(STUDENT, LABELS, TEACHER_PROBS.log())
    assert mixed.item() == pytest.approx(0.3 * soft.item() + 0.7 * hard.item(), abs=1e-6)
    only_teacher = kd_loss(config, "loss.soft_weight=1")
    assert only_teacher(STUDENT, LABELS, TEACHER_PROBS.log()).item() == pytest.approx(
        only_teacher(STUDENT, torch.tensor([0, 0]), TEACHER_PROBS.log()).item()
    )  # soft_weight=1: the labels do not enter


def test_sigmoid_heads_distil_bernoulli_pairs_and_match_a_softmax_teacher(config):
    z_student, z_teacher = torch.tensor([0.3, -1.2, 2.0]), torch.tensor([1.0, -0.5, 0.5])
    targets = torch.tensor([1, 0, 1])
    sigmoid, softmax = build_head("sigmoid", 2), build_head("softmax", 2)
    loss = kd_loss(config, "loss.temperature=1", "loss.soft_weight=1", head="sigmoid", num_classes=2, targets=targets)
    p, q = torch.sigmoid(z_student), torch.sigmoid(z_teacher)
    by_hand = (q * (q / p).log() + (1 - q) * ((1 - q) / (1 - p)).log()).mean()
    assert loss(z_student, targets, z_teacher).item() == pytest.approx(by_hand.item(), abs=1e-6)
    as_softmax = softmax.read_logits(z_teacher, sigmoid)  # a sigmoid teacher for a two-way softmax student
    torch.testing.assert_close(softmax.probabilities(as_softmax), q)
    torch.testing.assert_close(sigmoid.read_logits(as_softmax, softmax), z_teacher)


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory) -> str:
    """A digits teacher trained for 2 epochs, in a run folder of its own."""
    folder = tmp_path_factory.mktemp("teacher")
    overrides = ["data=digits", "loss=ce", "model.hidden=[128]", "trainer.max_epochs=2", "print_config=false"]
    run(compose_config(overrides, folder))
    return str(folder / "checkpoints" / "last.ckpt")


QUICK = ["data=digits", "trainer.max_epochs=2", *QUIET]


@pytest.mark.slow
def test_soft_weight_zero_trains_exactly_like_ce(tmp_path, teacher_ckpt):
    kd = run(
        compose_config([*QUICK, "loss=kd", "loss.soft_weight=0", f"teacher.ckpt_path={teacher_ckpt}"], tmp_path / "kd")
    )
    ce = run(compose_config([*QUICK, "loss=ce"], tmp_path / "ce"))
    assert kd["val/loss"] == pytest.approx(ce["val/loss"], abs=1e-4)


def test_teacher_stays_frozen_and_in_eval_mode(tmp_path, teacher_ckpt):
    overrides = [*QUICK, "loss=kd", "loss.soft_weight=1", f"teacher.ckpt_path={teacher_ckpt}"]
    datamodule, module, trainer = built(overrides, tmp_path / "s")
    saved = torch.load(teacher_ckpt, weights_only=True)["state_dict"]
    for name, value in module.teacher.net.state_dict().items():
        assert torch.equal(value, saved[f"net.{name}"])  # loaded exactly
    trainer.fit(module, datamodule=datamodule)
    assert not module.teacher.training and not module.teacher.net.training
    for name, value in module.teacher.net.state_dict().items():
        assert torch.equal(value, saved[f"net.{name}"])  # unchanged by the student's training
    student_accuracy = module.trainer.callback_metrics["val/acc"].item()
    assert student_accuracy > 0.5  # learned from the teacher alone (soft_weight=1): chance is 0.1


@pytest.mark.slow
@pytest.mark.parametrize("steps_per_call", [1, 32])
def test_teacher_logits_computed_once_train_the_student_as_per_batch_ones(tmp_path, teacher_ckpt, steps_per_call):
    """The cached path serves the teacher's logits with the batches (same order, same chunks under
    steps_per_call) and never calls the teacher while training; the weights are the per-batch path's."""
    students = {}
    for cache in (True, False):
        overrides = [*QUICK, "loss=kd", f"teacher.ckpt_path={teacher_ckpt}", f"steps_per_call={steps_per_call}",
                     f"teacher.cache_outputs={str(cache).lower()}", "trainer.num_sanity_val_steps=0"]  # fmt: skip
        datamodule, module, trainer = built(overrides, tmp_path / str(cache))
        calls: list[int] = []
        module.teacher.register_forward_hook(lambda mod, args, out, calls=calls: calls.append(len(args[0])))
        trainer.fit(module, datamodule=datamodule)
        if cache:
            assert sorted(datamodule.teacher_outputs) == ["train", "val"]
            assert sum(calls) == len(datamodule.splits["train"][0]) + len(datamodule.splits["val"][0])  # one pass
        else:
            assert not datamodule.teacher_outputs and sum(calls) > 2 * len(datamodule.splits["train"][0])
        students[cache] = module.net.state_dict()
        losses = {k: float(v) for k, v in trainer.callback_metrics.items() if k.endswith("loss")}
        students[cache, "loss"] = losses
    torch.testing.assert_close(students[True], students[False])
    assert students[True, "loss"] == pytest.approx(students[False, "loss"], rel=1e-5)


def test_cached_rows_follow_their_samples_through_the_shuffle_the_steps_and_the_ddp_shards():
    from lossheads.data.base import InMemoryBatches

    features = torch.arange(50.0)[:, None]
    for rank in (0, 1):
        loader = InMemoryBatches(features, torch.arange(50), 4, shuffle=True, seed=3, batches_per_item=2, rank=rank,
                                 world_size=2, extra=features * 10)  # fmt: skip
        items = list(loader)
        assert all(len(item) == 3 and torch.equal(item[2], item[0] * 10) for item in items)
        assert sum(len(item[0]) for item in items) == 25


def test_augmented_or_decoded_images_keep_per_batch_teacher_calls_and_say_why(caplog):
    from lossheads.data import DigitsImages
    from lossheads.run.distill import Teacher

    head = build_head("softmax", 10)
    teacher = Teacher(torch.nn.Flatten(), head, head)
    varying = (({"crop_padding": 1}, "random augmentation"), ({"in_memory": False}, "the images are decoded per batch"))
    for options, reason in varying:
        data = DigitsImages(num_workers=0, **options)
        data.setup()
        with caplog.at_level("INFO", logger="lossheads.run.distill"):
            teacher.serve_outputs(data, torch.device("cpu"))
        assert not data.teacher_outputs
        assert f"the teacher runs on every batch: {reason}" in caplog.text
    plain = DigitsImages(num_workers=0)
    plain.setup()
    teacher.serve_outputs(plain, torch.device("cpu"))
    train_images = plain.splits["train"][0]
    torch.testing.assert_close(plain.teacher_outputs["train"], plain.transform(train_images).flatten(1))


@pytest.mark.slow
def test_distill_recipe_puts_teacher_kd_and_hard_students_side_by_side(tmp_path):
    result = train_py_in_process(
        "experiment=distill", "trainer.max_epochs=1", "hydra.run.dir=run", "print_config=false", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for name in ("teacher", "kd", "hard"):
        assert 0.0 <= record[f"{name}/test/acc"] <= 1.0
        assert (tmp_path / "run" / name / "metrics.json").is_file()
        assert list((tmp_path / "run" / name / "tensorboard").glob("events.out.tfevents.*"))
    assert record["teacher.ckpt_path"].endswith("teacher/checkpoints/last.ckpt")
    kd_config = (tmp_path / "run" / "kd" / ".hydra" / "config.yaml").read_text()
    assert "name: kd" in kd_config and "hidden:\n  - 32" in kd_config


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, teacher_ckpt):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.mkdir, (marker,))

    folder = Path(teacher_ckpt).parent.parent
    evil = folder / "checkpoints" / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Payload()}, evil)
    cfg = compose_config([*QUICK, "loss=kd", f"teacher.ckpt_path={evil}"], tmp_path / "s")
    with pytest.raises(ConfigError, match="is not a readable checkpoint"):
        build(cfg)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["loss=kd"], "teacher.ckpt_path=None is not valid: loss=kd needs a teacher"),
        (["loss=kd", "teacher.ckpt_path=/no/such.ckpt"], "no such file"),
        (
            ["loss=kd", "loss.temperature=0", "teacher.ckpt_path=TEACHER"],
            "loss.temperature=0 is not valid: use a number > 0",
        ),
        (
            ["loss=kd", "loss.soft_weight=1.5", "teacher.ckpt_path=TEACHER"],
            "loss.soft_weight=1.5 is not valid: use a number in [0, 1]",
        ),
        (
            ["loss=kd", "teacher.ckpt_path=TEACHER", "data=breast_cancer"],
            "the teacher was trained on lossheads.data.Digits",
        ),
        (
            ["loss=kd", "teacher.ckpt_path=TEACHER", "seed=7"],
            "the teacher trained on 225 of the student's 359 validation and 212 of its 359 test samples",
        ),
        (["loss=kd", "teacher.ckpt_path=GARBAGE"], "is not a readable checkpoint"),
    ],
)
def test_bad_distillation_input_is_refused(tmp_path, teacher_ckpt, overrides, message):
    garbage = tmp_path / "run_g" / "checkpoints" / "garbage.ckpt"
    garbage.parent.mkdir(parents=True)
    garbage.write_text("not a checkpoint")
    (garbage.parent.parent / ".hydra").mkdir()
    (garbage.parent.parent / ".hydra" / "config.yaml").write_text(
        Path(teacher_ckpt).parent.parent.joinpath(".hydra", "config.yaml").read_text()
    )
    overrides = [o.replace("TEACHER", teacher_ckpt).replace("GARBAGE", str(garbage)) for o in overrides]
    cfg = compose_config(["data=digits", "print_config=false", *overrides], tmp_path / "s")
    with pytest.raises(ConfigError, match=re.escape(message)):
        run(cfg)
    assert not (tmp_path / "s" / "metrics.json").exists()


def test_a_teacher_with_another_number_of_classes_is_refused(tmp_path):
    data = ["data=synthetic_multiclass", "data.n_samples=200", "loss=ce", "print_config=false", "trainer.max_epochs=1"]
    run(compose_config([*data, "data.num_classes=4"], tmp_path / "t"))
    cfg = compose_config(
        [*data, "loss=kd", f"teacher.ckpt_path={tmp_path / 't' / 'checkpoints' / 'last.ckpt'}"], tmp_path / "s"
    )
    with pytest.raises(ConfigError, match="trained with another number of classes"):
        build(cfg)
