"""Optimizers, learning-rate schedules, clipping and early stopping mean the same under every
`steps_per_call`: what PyTorch's own scheduler gives stepped by hand, what Lightning's own loop gives."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Callback
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, OneCycleLR, SequentialLR, StepLR

from conftest import QUIET, built

STEPS_PER_EPOCH = 6  # breast_cancer: 341 training samples in mini-batches of 64
EPOCHS = 3


class LearningRates(Callback):
    """The learning rate each optimizer step uses, read just before the step."""

    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.rates.append(optimizer.param_groups[0]["lr"])


def by_hand(make_scheduler, steps: int, lr: float = 1e-3) -> list[float]:
    """PyTorch's scheduler on its own optimizer, stepped once after each optimizer step."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = make_scheduler(optimizer)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def recorded_rates(tmp_path, steps_per_call: int, *overrides: str) -> list[float]:
    datamodule, module, trainer = built(
        [*QUIET, f"trainer.max_epochs={EPOCHS}", f"steps_per_call={steps_per_call}", *overrides], tmp_path
    )
    recorder = LearningRates()
    trainer.callbacks.append(recorder)
    trainer.fit(module, datamodule=datamodule)
    return recorder.rates


TOTAL = STEPS_PER_EPOCH * EPOCHS
SCHEDULES = {
    "cosine+warmup": (
        ["scheduler=cosine", "scheduler.warmup_steps=4"],
        lambda opt: SequentialLR(
            opt, [LinearLR(opt, start_factor=1 / 4, total_iters=4), CosineAnnealingLR(opt, T_max=TOTAL - 4)], [4]
        ),
    ),
    "onecycle": (["scheduler=onecycle"], lambda opt: OneCycleLR(opt, max_lr=1e-3, total_steps=TOTAL)),
    "step": (
        ["scheduler=step", "scheduler.step_size=1", "scheduler.gamma=0.5"],
        lambda opt: StepLR(opt, step_size=STEPS_PER_EPOCH, gamma=0.5),
    ),
}


@pytest.mark.parametrize(
    ("schedule", "steps_per_call"), [("cosine+warmup", 1), ("cosine+warmup", 32), ("onecycle", 32), ("step", 32)]
)
def test_learning_rate_per_step_is_pytorchs_scheduler_stepped_by_hand(tmp_path, schedule, steps_per_call):
    overrides, make = SCHEDULES[schedule]
    rates = recorded_rates(tmp_path, steps_per_call, *overrides)
    assert len(rates) == TOTAL
    assert rates == pytest.approx(by_hand(make, TOTAL), rel=1e-6)


def test_limit_train_batches_counts_optimizer_steps_and_the_schedule_spans_them(tmp_path):
    """trainer.limit_train_batches=4 means 4 optimizer steps per epoch (not 4 calls of 32)."""
    rates = recorded_rates(tmp_path, 32, "scheduler=cosine", "+trainer.limit_train_batches=4")
    assert rates == pytest.approx(by_hand(lambda opt: CosineAnnealingLR(opt, T_max=4 * EPOCHS), 4 * EPOCHS))


def trained_weights(tmp_path, steps_per_call: int, *overrides: str) -> list[torch.Tensor]:
    datamodule, module, trainer = built(
        [*QUIET, "trainer.max_epochs=2", "optimizer.lr=0.05", f"steps_per_call={steps_per_call}", *overrides],
        tmp_path / f"k{steps_per_call}",
    )
    trainer.fit(module, datamodule=datamodule)
    return [p.detach().clone() for p in module.net.parameters()]


@pytest.mark.parametrize("max_norm", [0.05, 0.35])
def test_gradient_clipping_under_32_steps_per_call_gives_the_weights_of_lightnings_own_loop(
    tmp_path, monkeypatch, max_norm
):
    """0.05 clips every step; at 0.35 some of the 12 steps' norms (0.15-2.4) are within the bound,
    where the fast path's CPU clipping skips the multiply by 1.0 (`clipping.py`)."""
    multiplies = []
    clip_with_norm = torch.nn.utils.clip_grads_with_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grads_with_norm_", lambda *a: multiplies.append(1) or clip_with_norm(*a))
    clip = [f"trainer.gradient_clip_val={max_norm}"]
    one = trained_weights(tmp_path / "one", 1, *clip)
    many = trained_weights(tmp_path / "many", 32, *clip)
    unclipped = trained_weights(tmp_path / "free", 32)
    for a, b in zip(one, many, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(a, b, atol=1e-4) for a, b in zip(one, unclipped, strict=True)), "no clipping"
    assert len(multiplies) == 12 if max_norm == 0.05 else 0 < len(multiplies) < 12


@pytest.mark.parametrize("max_norm", [0.5, 1.0, 2.0, 1e9])
@pytest.mark.parametrize("poison", [None, float("nan"), float("inf")])
def test_the_fast_paths_cpu_clipping_leaves_the_gradients_of_clip_grad_norm_bit_for_bit(max_norm, poison):
    """It skips only the multiply by exactly 1.0 (norm within the bound); a non-finite norm multiplies, as in torch."""
    from lossheads.training.clipping import clip_grad_norm_on_cpu

    torch.manual_seed(0)
    grads = [torch.randn(16, 8) * 0.15, torch.randn(8) * 0.15, None]  # total norm ~1.0: some cases clip, some not
    if poison is not None:
        grads[1][3] = poison
    ours = [torch.nn.Parameter(torch.zeros(shape)) for shape in ((16, 8), (8,), (2,))]
    theirs = [torch.nn.Parameter(torch.zeros_like(p)) for p in ours]
    for a, b, grad in zip(ours, theirs, grads, strict=True):
        a.grad, b.grad = (None, None) if grad is None else (grad.clone(), grad.clone())
    norm = clip_grad_norm_on_cpu(ours, max_norm)
    exact = {"rtol": 0, "atol": 0, "equal_nan": True}
    torch.testing.assert_close(norm, torch.nn.utils.clip_grad_norm_(theirs, max_norm), **exact)
    for a, b in zip(ours[:2], theirs[:2], strict=True):
        torch.testing.assert_close(a.grad, b.grad, **exact)
    assert ours[2].grad is None


def test_sgd_with_nesterov_momentum_trains(train):
    metrics = train("optimizer=sgd", "optimizer.lr=0.1", "optimizer.nesterov=true", "trainer.max_epochs=2", *QUIET,
                    quick=False)  # fmt: skip
    assert metrics["status"] == "ok" and metrics["epochs"] == 2 and metrics["test/acc"] > 0.9


OVERFIT = ["data=synthetic_binary", "data.n_samples=300", "data.label_noise=0.3", "model.hidden=[256,256]",
           "optimizer.lr=0.01"]  # fmt: skip  # noisy labels, a wide network: val/loss bottoms out early, then climbs


def test_plateau_cuts_the_rate_after_validation_stalls_alike_under_every_steps_per_call(tmp_path):
    plateau = [*OVERFIT, "scheduler=plateau", "scheduler.patience=0", "scheduler.factor=0.5", "trainer.max_epochs=5"]
    one = recorded_rates(tmp_path / "one", 1, *plateau)
    many = recorded_rates(tmp_path / "many", 32, *plateau)
    assert one == many
    assert one[0] == 0.01 and min(one) < 0.01  # cut once validation stopped improving


def test_early_stopping_stops_a_stalled_run_and_tests_the_best_weights(train):
    """Noisy labels and a wide network: validation loss bottoms out early, then climbs."""
    overfit = [*OVERFIT, "trainer.max_epochs=30", *QUIET]
    metrics = train(*overfit, "early_stopping.patience=2", "test_on=best", quick=False)
    assert metrics["epochs"] < 30
    assert metrics["test_weights"] == "best"
    # the best epoch (0-based), then `patience` epochs without improvement
    assert metrics["test_weights_epoch"] == metrics["epochs"] - 1 - 2
    last = train(*overfit, "early_stopping.patience=2", quick=False, folder="last")
    assert last["test_weights"] == "last" and last["test_weights_epoch"] == last["epochs"] - 1
    assert last["test/loss"] > metrics["test/loss"]  # the last weights overfit more
