"""Learning-rate schedules (`scheduler=none|cosine|onecycle|step|plateau`), each with an optional
linear warmup, built from PyTorch's own schedulers.

Every schedule but `plateau` moves once per optimizer step, whatever `steps_per_call` is: Lightning
steps it under automatic optimization (`steps_per_call=1`), the module's fast path after each of its
manual steps. `plateau` moves once per epoch on the validation metric the checkpoint monitors.

A resume with a larger `trainer.max_epochs`/`max_steps` is exact or refused, per schedule: `none`,
`step` and `plateau` do not depend on the run's length, so they continue exactly as an unbroken run
of the new length would (tests/test_resume_inputs.py compares val/loss); `cosine` and `onecycle`
are laid out over the length the run started with, so a resume that changes it is refused
(`run.resume.check_schedule_length`).
"""

from __future__ import annotations

import math
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    OneCycleLR,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
)

from lossheads.config.validators import is_int, is_number, require, require_fraction, require_int


class Schedule:
    """A schedule's settings; `build` makes the PyTorch scheduler once the run's length is known.

    `warmup_steps` > 0 raises the learning rate linearly from lr/warmup_steps to lr over the first
    optimizer steps (PyTorch's `LinearLR` chained by `SequentialLR`) before the schedule proper."""

    name = "none"
    # a schedule that spreads over the whole run needs max_epochs or max_steps, and a resume may not change them
    needs_length = False

    def __init__(self, warmup_steps: int = 0) -> None:
        require_int("scheduler.warmup_steps", warmup_steps, 0)
        self.warmup_steps = warmup_steps

    def main(self, optimizer: Optimizer, steps: int, steps_per_epoch: int) -> LRScheduler | None:
        """The schedule after warmup, over `steps` optimizer steps; None: the learning rate stays."""
        return None

    def build(self, optimizer: Optimizer, total_steps: int | None, steps_per_epoch: int) -> list[dict[str, Any]]:
        """Lightning's scheduler configs: what `configure_optimizers` returns beside the optimizer."""
        if self.needs_length:
            require(total_steps is not None, "scheduler", self.name,
                    "it spreads over the whole run: set trainer.max_epochs or trainer.max_steps")  # fmt: skip
        after = None if total_steps is None else max(1, total_steps - self.warmup_steps)
        main = self.main(optimizer, after, steps_per_epoch)  # type: ignore[arg-type]
        if self.warmup_steps == 0:
            return [] if main is None else [{"scheduler": main, "interval": "step", "name": "lr"}]
        warmup = LinearLR(optimizer, start_factor=1 / self.warmup_steps, total_iters=self.warmup_steps)
        after_warmup = main or ConstantLR(optimizer, factor=1.0, total_iters=0)
        chained = SequentialLR(optimizer, [warmup, after_warmup], milestones=[self.warmup_steps])
        return [{"scheduler": chained, "interval": "step", "name": "lr"}]


class Constant(Schedule):
    """`scheduler=none`: the optimizer's learning rate throughout (after the warmup, if any). A resume
    to a larger max_epochs/max_steps continues exactly as an unbroken run of that length."""


class Cosine(Schedule):
    """Cosine annealing from lr to `min_lr` over the run's optimizer steps (`CosineAnnealingLR`).

    Its curve is laid out for the length the run started with: a resume with another
    trainer.max_epochs/max_steps is refused (the steps already taken followed the shorter curve, so
    no continuation equals an unbroken longer run; continuing the old curve past its end would
    raise the rate again)."""

    name = "cosine"
    needs_length = True

    def __init__(self, warmup_steps: int = 0, min_lr: float = 0.0) -> None:
        super().__init__(warmup_steps)
        require(is_number(min_lr) and min_lr >= 0, "scheduler.min_lr", min_lr, "use a number >= 0")
        self.min_lr = min_lr

    def main(self, optimizer: Optimizer, steps: int, steps_per_epoch: int) -> LRScheduler:
        return CosineAnnealingLR(optimizer, T_max=steps, eta_min=self.min_lr)


class OneCycle(Schedule):
    """Smith's one-cycle policy (`OneCycleLR`, max_lr = optimizer.lr). It has its own warmup,
    `pct_start` of the run; `warmup_steps` > 0 sets that share in steps instead.

    Its cycle is laid out for the length the run started with: a resume with another
    trainer.max_epochs/max_steps is refused (PyTorch's scheduler cannot step past its total, and the
    steps already taken followed the shorter cycle)."""

    name = "onecycle"
    needs_length = True

    def __init__(
        self, warmup_steps: int = 0, pct_start: float = 0.3, div_factor: float = 25.0, final_div_factor: float = 1e4
    ) -> None:
        super().__init__(warmup_steps)
        require_fraction("scheduler.pct_start", pct_start, low_open=True, high_open=True)
        for key, value in (("div_factor", div_factor), ("final_div_factor", final_div_factor)):
            require(is_number(value) and value > 0, f"scheduler.{key}", value, "use a number > 0")
        self.pct_start, self.div_factor, self.final_div_factor = pct_start, div_factor, final_div_factor

    def build(self, optimizer: Optimizer, total_steps: int | None, steps_per_epoch: int) -> list[dict[str, Any]]:
        require(total_steps is not None, "scheduler", self.name,
                "it spreads over the whole run: set trainer.max_epochs or trainer.max_steps")  # fmt: skip
        pct_start = self.warmup_steps / total_steps if self.warmup_steps else self.pct_start
        require(pct_start < 1, "scheduler.warmup_steps", self.warmup_steps,
                f"the run has only {total_steps} optimizer steps: use fewer")  # fmt: skip
        lr = optimizer.param_groups[0]["lr"]
        scheduler = OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps, pct_start=pct_start,
                               div_factor=self.div_factor, final_div_factor=self.final_div_factor)  # fmt: skip
        return [{"scheduler": scheduler, "interval": "step", "name": "lr"}]


class Step(Schedule):
    """Multiply the learning rate by `gamma` every `step_size` epochs (`StepLR`, stepped per optimizer
    step with step_size x the steps of an epoch, so the drop lands on the epoch boundary). It does
    not depend on the run's length: a resume to a larger max_epochs/max_steps continues exactly as an
    unbroken run of that length."""

    name = "step"

    def __init__(self, warmup_steps: int = 0, step_size: int = 10, gamma: float = 0.1) -> None:
        super().__init__(warmup_steps)
        require_int("scheduler.step_size", step_size, 1)
        require(is_number(gamma) and gamma > 0, "scheduler.gamma", gamma, "use a number > 0, e.g. 0.1")
        self.step_size, self.gamma = step_size, gamma

    def main(self, optimizer: Optimizer, steps: int, steps_per_epoch: int) -> LRScheduler:
        return StepLR(optimizer, step_size=self.step_size * steps_per_epoch, gamma=self.gamma)


class Plateau(Schedule):
    """Multiply the learning rate by `factor` when the monitored validation metric has not improved
    for `patience` epochs (`ReduceLROnPlateau`, once per epoch); the warmup, if any, is per step. It
    does not depend on the run's length: a resume to a larger max_epochs/max_steps continues exactly
    (its patience counter and best value are in the checkpoint)."""

    name = "plateau"

    def __init__(self, warmup_steps: int = 0, factor: float = 0.1, patience: int = 5, min_lr: float = 0.0) -> None:
        super().__init__(warmup_steps)
        require_fraction("scheduler.factor", factor, low_open=True, high_open=True)
        require_int("scheduler.patience", patience, 0)
        require(is_number(min_lr) and min_lr >= 0, "scheduler.min_lr", min_lr, "use a number >= 0")
        self.factor, self.patience, self.min_lr = factor, patience, min_lr
        self.monitor, self.mode = "val/loss", "min"  # set by the run: what the checkpoint monitors

    def build(self, optimizer: Optimizer, total_steps: int | None, steps_per_epoch: int) -> list[dict[str, Any]]:
        configs = []
        if self.warmup_steps:
            warmup = LinearLR(optimizer, start_factor=1 / self.warmup_steps, total_iters=self.warmup_steps)
            configs.append({"scheduler": warmup, "interval": "step", "name": "warmup"})
        plateau = ReduceLROnPlateau(optimizer, mode=self.mode, factor=self.factor, patience=self.patience,
                                    min_lr=self.min_lr)  # fmt: skip
        configs.append({"scheduler": plateau, "interval": "epoch", "monitor": self.monitor, "name": "lr",
                        "strict": False})  # fmt: skip  # no validation that epoch: no step
        return configs


def total_optimizer_steps(steps_per_epoch: int, max_epochs: int | None, max_steps: int | None) -> int | None:
    """The run's length in optimizer steps as Lightning ends it (max_steps or max_epochs, the first
    reached); None when neither bounds it."""
    bounds = []
    if is_int(max_epochs) and max_epochs > 0:
        bounds.append(steps_per_epoch * max_epochs)
    if is_int(max_steps) and max_steps > 0:
        bounds.append(max_steps)
    return min(bounds) if bounds else None


def steps_in_epoch(samples: int, batch_size: int, limit: int | None) -> int:
    """Optimizer steps in one epoch of `samples` training samples (this process's share under DDP,
    after drop_last), at most `limit` (limit_train_batches)."""
    steps = math.ceil(samples / batch_size)
    return max(1, min(steps, limit) if limit is not None else steps)
