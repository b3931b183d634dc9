"""Whole runs through the real Hydra config: every valid pair trains, every bad input is refused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import compose_config
from lossheads.config.validators import ConfigError
from lossheads.run.execute import run

METRICS = ("acc", "precision", "recall", "f1", "auroc", "ap", "ece", "loss")
SMALL_SYNTHETIC = ["data.n_samples=300"]


def write_csv(path: Path) -> str:
    rows = [f"{i % 5},{(i * 7) % 11},{i % 2}" for i in range(120)]
    path.write_text("\n".join(["a,b,label", *rows]) + "\n")
    return str(path)


# real datasets (every head and loss is trained in tests/test_compatibility.py on synthetic data)
VALID = [
    ("breast_cancer", "sigmoid", "bce_logits"),
    ("breast_cancer", "softmax", "ce"),
    ("csv", "sigmoid", "bce_logits"),
    ("csv", "softmax", "ce"),
    ("digits", "softmax", "ce"),
    ("digits", "ovr", "bce_logits"),
    ("digits_multilabel", "multilabel", "bce_logits"),
]


@pytest.mark.parametrize(("data", "head", "loss"), VALID)
def test_every_valid_pair_trains_and_writes_metrics(train, tmp_path, data, head, loss):
    extra = SMALL_SYNTHETIC if data.startswith("synthetic") else []
    if data == "csv":
        extra = [f"data.path={write_csv(tmp_path / 'data.csv')}"]
    metrics = train(f"data={data}", f"head={head}", f"loss={loss}", *extra)
    assert (metrics["head"], metrics["loss"], metrics["data"], metrics["seed"]) == (head, loss, data, 42)
    for stage in ("val", "test"):
        for name in METRICS:
            assert 0.0 <= metrics[f"{stage}/{name}"] < 10.0, f"{stage}/{name}"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["head=sigmoid", "loss=ce"], "loss=ce needs head=softmax, got head=sigmoid"),
        (["head=softmax", "loss=bce_logits"], "got head=softmax: use head=sigmoid or loss=ce"),
        (
            ["data=digits_multilabel", "head=multilabel", "loss=ce"],
            "got head=multilabel: use loss=bce_logits|",
        ),
        (["data=digits", "head=sigmoid", "loss=bce_logits"], "head=sigmoid does not fit multiclass data"),
        (["loss.pos_weight=[1.0,2.0]"], "loss.pos_weight=[1.0, 2.0] is not valid: give one number, a list of 1"),
        (["loss.pos_weight=-2"], "loss.pos_weight=-2 is not valid"),
        (["data=digits", "loss=ce", "loss.weight=[1.0,2.0]"], "loss.weight=[1.0, 2.0] is not valid: give a list of 10"),
        (["threshold=1.5"], "threshold=1.5 is not valid: use a number in (0, 1)"),
        (["threshold=0"], "threshold=0 is not valid"),
        (["threshold=auto", "+trainer.limit_val_batches=0"], "threshold='auto' is not valid: it is chosen on the val"),
        (["optimizer.lr=0"], "optimizer.lr=0 is not valid"),
        (["trainer.precision=17"], "trainer.precision=17 is not valid: Lightning says Precision 17 is invalid"),
        (["trainer.max_epochs=0"], "trainer.max_epochs=0 is not valid"),
        (["model.hidden=[64,0]"], "model.hidden=[64, 0] is not valid"),
        (["model.dropout=1.0"], "model.dropout=1.0 is not valid"),
        (["data=synthetic_binary", "data.pos_fraction=0"], "data.pos_fraction=0 is not valid"),
        (["data=csv"], "data.path=None is not valid: give the file (CSV, Parquet or .npz)"),
        (["data=csv", "data.path=missing.csv"], "data.path='missing.csv' is not valid: no such file"),
        (["seed=-1"], "seed=-1 is not valid"),
    ],
)
def test_bad_input_is_refused_before_training(tmp_path, overrides, message):
    cfg = compose_config(["print_config=false", *overrides], tmp_path / "run")
    with pytest.raises(ConfigError, match=re.escape(message)):
        run(cfg)
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_bce_and_bce_logits_train_to_the_same_val_loss(train):
    bce = train("loss=bce", "trainer.max_epochs=3", folder="bce")
    fused = train("loss=bce_logits", "trainer.max_epochs=3", folder="fused")
    assert bce["val/loss"] == pytest.approx(fused["val/loss"], abs=1e-4)
    assert bce["val/acc"] == fused["val/acc"]


def test_nll_after_log_softmax_trains_exactly_like_ce(train):
    ce = train("data=digits", "loss=ce", "trainer.max_epochs=2", folder="ce")
    nll = train("data=digits", "loss=nll", "trainer.max_epochs=2", folder="nll")
    assert nll["val/loss"] == pytest.approx(ce["val/loss"], abs=1e-4)


def test_pos_weight_auto_raises_recall_on_imbalanced_data(train):
    data = ["data=synthetic_binary", "data.pos_fraction=0.1", "data.n_samples=1000", "trainer.max_epochs=3"]
    plain = train(*data, folder="plain")
    weighted = train(*data, "loss.pos_weight=auto", folder="weighted")
    assert weighted["val/recall"] > plain["val/recall"]


def test_default_run_reaches_0_9_val_accuracy_and_logs_to_tensorboard(train, tmp_path):
    metrics = train(quick=False)
    assert metrics["epochs"] == 20
    assert metrics["val/acc"] >= 0.9 and metrics["test/acc"] >= 0.9
    tags = set()
    for events in (tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    expected = {f"{stage}/{name}" for stage in ("val", "test") for name in METRICS} | {"train/loss", "train/acc"}
    assert expected <= tags
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert len(list((tmp_path / "run" / "checkpoints").glob("best-epoch*.ckpt"))) == 1


def test_train_py_writes_a_complete_run_folder(default_train_py):
    result, folder = default_train_py
    assert (folder / ".hydra" / "config.yaml").is_file()
    assert (folder / "checkpoints" / "last.ckpt").is_file()
    assert list((folder / "tensorboard").glob("events.out.tfevents.*"))
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["head"] == "sigmoid" and metrics["loss"] == "bce_logits" and metrics["epochs"] == 2
    lines = result.stdout.splitlines()
    assert lines[0].startswith("data=breast_cancer  head=auto  loss=auto")  # the config summary first
    assert [line.split()[0:2] for line in lines if line.startswith("epoch ")] == [["epoch", "1/2"], ["epoch", "2/2"]]
    assert "\r" not in result.stdout  # redirected: one line per epoch, no redraws
    table = lines[lines.index("test metrics (last weights, after 2 epochs)") + 1 :]
    assert table[0].split() == ["test"] and table[1].split()[0] == "acc" and 0.5 < float(table[1].split()[1]) <= 1
    assert lines[-1] == "results in run"


@pytest.mark.parametrize(
    "overrides",
    [["head=sigmoid", "loss=ce"], ["data=digits", "head=sigmoid", "loss=auto"],
     ["data=digits_multilabel", "loss=ce"], ["head=softmax", "loss=bce_logits"]],
)  # fmt: skip
def test_a_refused_pair_names_fixes_that_train(train, tmp_path, overrides):
    """Each `use key=value` the refusal suggests (the first of each `|` list), applied, trains."""
    with pytest.raises(ConfigError) as refused:
        run(compose_config(["print_config=false", *overrides], tmp_path / "refused"))
    fixes = re.search(r": use (.*)$", str(refused.value)).group(1).split(" or ")
    for number, fix in enumerate(fixes):
        changes = [word.split("|")[0] for word in fix.split()]
        keys = {change.split("=")[0] for change in changes}
        kept = [o for o in overrides if o.split("=")[0] not in keys]
        metrics = train(*kept, *changes, "trainer=debug", folder=f"fix{number}")
        assert metrics["status"] == "ok", (fix, metrics)
