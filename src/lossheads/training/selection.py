"""Which weights a run keeps and tests: early stopping and `test_on=best|last`, both on the
validation metric the checkpoint callback monitors (select on validation, report on test)."""

from __future__ import annotations

from lightning.pytorch import Callback
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from omegaconf import DictConfig

from lossheads.config.validators import require


def checkpoint_callback(callbacks: list[Callback]) -> ModelCheckpoint | None:
    """The callback that keeps the best weights by the validation monitor, if the config has one."""
    return next((c for c in callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None)


def validation_monitor(callbacks: list[Callback]) -> tuple[str, str]:
    """(metric, mode) of the checkpoint monitor: the one yardstick early stopping, `plateau` and
    `test_on=best` share."""
    checkpoint = checkpoint_callback(callbacks)
    return (checkpoint.monitor, checkpoint.mode) if checkpoint else ("val/loss", "min")


def early_stopping(cfg: DictConfig, callbacks: list[Callback]) -> EarlyStopping | None:
    """Lightning's `EarlyStopping` on the checkpoint monitor, when `early_stopping.patience` is set."""
    options = cfg.get("early_stopping") or {}
    if options.get("patience") is None:
        return None
    monitor, mode = validation_monitor(callbacks)
    return EarlyStopping(monitor=monitor, mode=mode, patience=options.patience,
                         min_delta=options.get("min_delta", 0.0), check_on_train_epoch_end=False)  # fmt: skip


def weights_to_test(cfg: DictConfig, callbacks: list[Callback]) -> str | None:
    """The checkpoint `trainer.test` loads after training: None for `test_on=last` (the weights training
    ended with), the checkpoint monitor's best for `test_on=best` (metrics.json's `test_weights` says which)."""
    if cfg.get("test_on", "last") != "best":
        return None
    checkpoint = checkpoint_callback(callbacks)
    path = checkpoint.best_model_path if checkpoint else ""
    require(bool(path), "test_on", "best",
            "no best checkpoint was saved: keep callbacks.model_checkpoint monitoring and validation on")  # fmt: skip
    return path
