"""Lightning callbacks of our own: `last.ckpt`, the newest state of a run, at every epoch end and stop."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.trainer.states import TrainerFn


class Interrupted(Exception):
    """The run was stopped by Ctrl-C or SIGTERM; `checkpoint` is where it can resume from (None when
    it stopped before training had started)."""

    def __init__(self, signal_name: str, checkpoint: str | None, phase: str) -> None:
        super().__init__(f"{signal_name} during {phase}")
        self.signal_name, self.checkpoint, self.phase = signal_name, checkpoint, phase


class LastCheckpoint(Checkpoint):
    """`checkpoints/last.ckpt` is always the run's newest state: saved at the end of every training
    epoch, when training ends (also by `max_steps` in mid-epoch), and when the run stops on an
    interrupt between epochs (Ctrl-C, SIGTERM; within an epoch the last epoch's end stays, see
    `on_exception`; a divergence or a crash is not saved: its weights are not worth resuming).
    Lightning's `ModelCheckpoint(save_last=True, monitor=...)` writes last.ckpt only when a new best
    is saved (tests/test_durability.py holds that fact), so the best checkpoint is ModelCheckpoint's
    alone, under its own name.

    A `Checkpoint` subclass so that Lightning calls its `on_train_epoch_end` after the module's own
    (it logs the epoch's train metrics there) and sorts it after the other callbacks. Not an
    `OnExceptionCheckpoint`: with one of those present, Lightning turns every `fit(ckpt_path=None)`
    into a silent resume from the folder's last.ckpt.
    """

    def __init__(self, dirpath: str, filename: str = "last") -> None:
        self.ckpt_path = str(Path(dirpath) / f"{filename}.ckpt")
        self.saved_step = -1
        self.epoch_start_step = 0  # global_step when this epoch's training began
        self.val_metrics: dict[str, float] = {}  # the last validation's, kept in the checkpoint

    def state_dict(self) -> dict[str, dict[str, float]]:
        return {"val_metrics": dict(self.val_metrics)}

    def load_state_dict(self, state_dict: dict[str, dict[str, float]]) -> None:
        self.val_metrics = dict(state_dict.get("val_metrics", {}))

    def save(self, trainer: Trainer) -> None:
        if trainer.global_step > 0 and trainer.global_step != self.saved_step:
            self._save(trainer)

    def _save(self, trainer: Trainer) -> None:
        logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self.val_metrics = logged or self.val_metrics
        trainer.save_checkpoint(self.ckpt_path, weights_only=False)
        self.saved_step = trainer.global_step

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._save(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.save(trainer)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.epoch_start_step = trainer.global_step

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """A stop saves the state it came in only between epochs. Stopped within one, the run keeps
        the last epoch's end: Lightning restarts an epoch it resumes from its first batch (our
        batches are not a stateful loader), so a mid-epoch state would retrain the steps already
        taken, where redoing the epoch from its start is exact."""
        if trainer.state.fn != TrainerFn.FITTING or not isinstance(exception, (KeyboardInterrupt, SystemExit)):
            return  # SIGTERM arrives as Lightning's SIGTERMException, a SystemExit
        if trainer.global_step == self.epoch_start_step:
            self.save(trainer)
