"""One table for every head and loss: which pairs fit, each fitting pair trained for one epoch through
the real config on every task its head fits, each other pair refused in one line."""

from __future__ import annotations

import re

import pytest
import torch
from hydra.core.hydra_config import HydraConfig

from lossheads.config.pairing import build_loss, resolve
from lossheads.config.validators import ConfigError
from lossheads.heads import HEADS, build_head
from lossheads.losses import LOSSES

PER_LOGIT = {"sigmoid", "multilabel", "ovr"}
CATEGORICAL = {"softmax"}
EVERY = PER_LOGIT | CATEGORICAL
# written by hand: a change to what a loss fits must change this table
FITS = {
    "bce": PER_LOGIT, "bce_logits": PER_LOGIT, "multilabel_soft_margin": PER_LOGIT, "asl": PER_LOGIT,
    "ce": CATEGORICAL, "nll": CATEGORICAL, "poly1": CATEGORICAL, "logit_adjusted": CATEGORICAL,
    "class_balanced": CATEGORICAL, "focal": EVERY, "mse": EVERY, "kd": EVERY,
}  # fmt: skip
TASKS = {"sigmoid": ["binary"], "softmax": ["binary", "multiclass"], "multilabel": ["multilabel"],
         "ovr": ["binary", "multiclass"]}  # fmt: skip
DATA = {"binary": "synthetic_binary", "multiclass": "synthetic_multiclass", "multilabel": "synthetic_multilabel"}
TRAINED = [(task, head, loss) for loss, heads in sorted(FITS.items()) for head in sorted(heads)
           for task in TASKS[head] if not LOSSES[loss].needs_teacher]  # fmt: skip
REFUSED = [(task, head, loss) for loss, heads in sorted(FITS.items()) for head in sorted(EVERY - heads)
           for task in TASKS[head]]  # fmt: skip


def test_the_table_covers_every_registered_head_and_loss_and_matches_their_classes():
    assert set(FITS) == set(LOSSES) and set(TASKS) == set(HEADS)
    for loss, heads in FITS.items():
        assert {h for h, cls in HEADS.items() if LOSSES[loss].fits(cls)} == heads, loss
    for head, tasks in TASKS.items():
        assert list(HEADS[head].tasks) == tasks


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_optuna_searches_only_options_the_chosen_loss_takes(config, loss):
    config(f"loss={loss}", "hparams_search=optuna")  # sets HydraConfig, whose sweeper params Optuna reads
    searched = [key.removeprefix("loss.") for key in HydraConfig.get().sweeper.params if key.startswith("loss.")]
    assert set(searched) <= set(LOSSES[loss].takes), searched


@pytest.mark.parametrize(("task", "head", "loss"), TRAINED)
def test_every_fitting_pair_trains_one_epoch_through_the_real_config(train, task, head, loss):
    metrics = train(f"data={DATA[task]}", "data.n_samples=120", f"head={head}", f"loss={loss}")
    assert (metrics["status"], metrics["head"], metrics["loss"]) == ("ok", head, loss)
    assert 0.0 <= metrics["test/acc"] <= 1.0 and 0.0 <= metrics["val/loss"] < 100.0


@pytest.mark.parametrize(("task", "head", "loss"), REFUSED)
def test_every_other_pair_is_refused_in_one_line_naming_a_head_that_fits(task, head, loss):
    with pytest.raises(ConfigError, match=f"loss={loss} needs head=") as refused:
        resolve(head, loss, task)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["loss=focal", "loss.pos_weight=2"],
         "loss.pos_weight=2 is not an option of loss=focal (it takes gamma, alpha, weight, reduction): "
         "the losses that take it are asl|bce|bce_logits|ce;"),
        (["loss=mse", "loss.label_smoothing=0.1"], "the losses that take it are bce|bce_logits|ce|class_balanced|"),
        (["loss=kd", "loss.reduction=sum"], "loss.reduction='sum' is not an option of loss=kd"),
        (["+loss.foo=1"], "loss.foo=1 is not an option of loss=bce_logits (it takes weight, pos_weight, reduction, "
                          "label_smoothing): no loss takes it; drop loss.foo"),
        (["loss.weight=auto"], "loss.weight='auto' is not valid: head=sigmoid has one logit"),
    ],
)  # fmt: skip
def test_a_key_the_loss_does_not_take_is_refused_naming_the_losses_that_take_it(config, overrides, message):
    cfg = config(*overrides)
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_loss(cfg.loss, build_head("sigmoid", 2), torch.tensor([0, 1, 1, 0]))
