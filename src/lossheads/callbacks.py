"""Lightning callbacks of our own: a checkpoint when a run is interrupted (Ctrl-C, SIGTERM)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.exceptions import SIGTERMException


class Interrupted(Exception):
    """The run was stopped by Ctrl-C or SIGTERM; `checkpoint` is where it can resume from."""

    def __init__(self, signal_name: str, checkpoint: str, epoch: int, step: int) -> None:
        super().__init__(f"{signal_name} at epoch {epoch}, step {step}")
        self.signal_name, self.checkpoint, self.epoch, self.step = signal_name, checkpoint, epoch, step


class InterruptCheckpoint(Callback):
    """Lightning's `OnExceptionCheckpoint`, kept to the interrupts a run can resume from.

    A crash or a divergence leaves no checkpoint here (its weights are not worth resuming); Ctrl-C
    and SIGTERM (a cluster's pre-emption, `kill`) save `interrupted.ckpt`. Lightning notices SIGTERM
    only at an epoch's end in a single process, so this also checks after every training call.
    Not a subclass of `OnExceptionCheckpoint`: with one of those present, Lightning turns every
    `fit(ckpt_path=None)` into a silent resume from the folder's last.ckpt.
    """

    def __init__(self, dirpath: str, filename: str = "interrupted") -> None:
        self.ckpt_path = str(Path(dirpath) / f"{filename}.ckpt")
        self.interrupted: Interrupted | None = None

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Training finished: a checkpoint left by an earlier interrupt of this run is stale."""
        if Path(self.ckpt_path).is_file():
            trainer.strategy.remove_checkpoint(self.ckpt_path)

    def on_train_batch_end(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.received_sigterm:
            raise SIGTERMException

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        kinds = {KeyboardInterrupt: "Ctrl-C (SIGINT)", SIGTERMException: "SIGTERM"}
        name = next((n for kind, n in kinds.items() if isinstance(exception, kind)), None)
        if name is None:
            return
        trainer.save_checkpoint(self.ckpt_path, weights_only=False)
        self.interrupted = Interrupted(name, self.ckpt_path, trainer.current_epoch, trainer.global_step)
