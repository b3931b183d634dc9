"""What a "step" means under `steps_per_call`: Lightning counts training calls, the user counts
optimizer steps.

With `steps_per_call` = K each Lightning call makes K optimizer steps (module.py's fast path), so
the trainer settings that count batches are translated here into calls, and the module trims the
last call to the exact number of steps; a setting that cannot be translated exactly makes the fast
path step aside (a smaller K, or 1 = Lightning's own loop), with a line in the log saying so.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from lossheads.config.validators import is_int, is_number

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stepping:
    """How a run steps: `steps_per_call` after any stepping aside, the optimizer steps an epoch may
    take (`limit_train_batches`), and gradient clipping done by the module's own loop."""

    steps_per_call: int
    epoch_step_limit: int | None = None
    clip_val: float | None = None
    clip_algorithm: str = "norm"


def _counts(trainer: DictConfig) -> tuple[Any, Any, Any]:
    return trainer.get("accumulate_grad_batches"), trainer.get("val_check_interval"), trainer.get("limit_train_batches")


def plan_stepping(cfg: DictConfig) -> Stepping:
    """The effective `steps_per_call` for this config and what the module must do itself."""
    k = cfg.steps_per_call
    if not is_int(k) or k < 1:
        return Stepping(k)  # check_config refuses it
    accumulate, val_every, limit = _counts(cfg.trainer)
    reasons = []
    if is_int(accumulate) and accumulate > 1:
        k, reasons = 1, [f"trainer.accumulate_grad_batches={accumulate}"]
    if k > 1 and is_number(limit) and not is_int(limit) and limit < 1:
        k, reasons = 1, [f"trainer.limit_train_batches={limit} (a fraction)"]
    if k > 1 and is_int(val_every) and val_every % k:
        k, reasons = math.gcd(k, val_every), [f"trainer.val_check_interval={val_every}"]
    if k != cfg.steps_per_call:
        log.info("steps_per_call=%d for %s (was %d)", k, reasons[0], cfg.steps_per_call)
    if k == 1:
        return Stepping(1)
    clip = cfg.trainer.get("gradient_clip_val")
    return Stepping(
        k,
        epoch_step_limit=limit if is_int(limit) else None,
        clip_val=clip if is_number(clip) and clip > 0 else None,
        clip_algorithm=cfg.trainer.get("gradient_clip_algorithm") or "norm",
    )


def trainer_arguments(trainer: DictConfig, stepping: Stepping) -> dict[str, Any]:
    """Overrides of the trainer config that say in calls what the user said in optimizer steps
    (`max_steps` needs none: Lightning counts manual optimizer steps in `global_step`)."""
    k = stepping.steps_per_call
    if k == 1:
        return {}
    overrides: dict[str, Any] = {"gradient_clip_val": None, "gradient_clip_algorithm": None}  # the module clips
    limit = trainer.get("limit_train_batches")
    if is_int(limit):
        overrides["limit_train_batches"] = math.ceil(limit / k)
    val_every = trainer.get("val_check_interval")
    if is_int(val_every):
        overrides["val_check_interval"] = val_every // k
    log_every = trainer.get("log_every_n_steps")
    if is_int(log_every):
        overrides["log_every_n_steps"] = max(1, math.ceil(log_every / k))
    return {key: value for key, value in overrides.items() if key in trainer or value is not None}
