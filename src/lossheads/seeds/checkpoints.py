"""A member's checkpoints cut from the group's: Lightning saves the group's state, and
`MembersCheckpointIO` writes each member's slice of it into the member's folder, where `ckpt_path`,
`train=false` and distillation read it as any run's."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Checkpoint

from lossheads.run.checkpoints import RunCheckpointIO
from lossheads.seeds.members import Member
from lossheads.seeds.module import SeedsModule
from lossheads.training.callbacks import LastCheckpoint

log = logging.getLogger(__name__)


class MembersCheckpointIO(TorchCheckpointIO):
    """Each checkpoint Lightning saves for the group is written as every healthy member's own, under
    the same file name in the member's `checkpoints/` (or, for a member's best, only that one's)."""

    def __init__(self, members: list[Member], module: SeedsModule) -> None:
        self.members, self.module = members, module
        self.only: dict[int, Path] | None = None  # members' best: those members' files alone, at these paths

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        """The members' files are written one after another, all before this returns, as Lightning
        expects of a save. Not by threads: a member's file is mostly Python work (its checksum,
        pickling), and four threads made the group's saves 2x slower on 2 CPU cores (1.1 s against
        2.2 s for a 10-seed default sweep's 383 files)."""
        targets = self.only or {k: m.folder / "checkpoints" / Path(path).name for k, m in enumerate(self.members)}
        for k, target in targets.items():
            if k in self.module.diverged:
                continue  # its last healthy checkpoint stays
            member = self.members[k]
            data = member_checkpoint(checkpoint, k, member, self.module, last=self.only is None)
            RunCheckpointIO(member.config).save_checkpoint(data, target)  # a full disk raises, as a run's save

    def remove_checkpoint(self, path: Any) -> None:
        for member in self.members:
            (member.folder / "checkpoints" / Path(path).name).unlink(missing_ok=True)


def member_checkpoint(group: dict[str, Any], k: int, member: Member, module: SeedsModule, last: bool) -> dict[str, Any]:
    """Member k's checkpoint from the group's: what its own run's checkpoint at this step holds. The
    loops' and schedulers' states are the group's (the members take the same steps); the weights and
    the optimizer's per-element state are member k's slice; callbacks are the member's own. `last`: a
    save of last.ckpt, the moment its run's `LastCheckpoint` takes the newest val/* numbers."""
    net = module.net.member_state(k)
    state = {}
    for key in member.module.state_dict():
        state[key] = net[key.removeprefix("net.")] if key.startswith("net.") else group["state_dict"][key]
    shapes = [tuple(p.shape) for p in module.net.stacked]
    optimizers = []
    for optimizer in group["optimizer_states"]:
        sliced = {
            i: {
                name: v[k].clone() if isinstance(v, torch.Tensor) and tuple(v.shape) == shapes[i] else v
                for name, v in per_param.items()
            }  # fmt: skip
            for i, per_param in optimizer["state"].items()
        }
        optimizers.append({"state": sliced, "param_groups": optimizer["param_groups"]})
    callbacks = {}
    for callback in member.trainer.callbacks:
        if isinstance(callback, LastCheckpoint) and last:
            newest = {n: v for n, v in module.member_values[k].items() if n.startswith("val/")}
            callback.val_metrics = newest or callback.val_metrics
        own = callback.state_dict()
        if own:
            callbacks[callback.state_key] = own
    kept = {key: value for key, value in group.items() if key not in ("state_dict", "optimizer_states", "callbacks")}
    return {**kept, "state_dict": state, "optimizer_states": optimizers, "callbacks": callbacks}


class MemberBest(Checkpoint):
    """Each member's best checkpoint by its own validation monitor, as its `ModelCheckpoint` (top 1)
    would keep it: the member's callback object holds the state; the file is the member's slice.
    Saved when that `ModelCheckpoint` saves (by default at the training epoch's end, after the
    module's hook: a `Checkpoint` is called then), so that its loop counters are its run's."""

    def __init__(self, members: list[Member], io: MembersCheckpointIO) -> None:
        self.members, self.io = members, io

    def _at_epoch_end(self, trainer: Trainer) -> bool:
        """Lightning's rule for where ModelCheckpoint saves (a private method, asked of the first
        member's own callback; tests/test_seeds.py compares a member's best checkpoint's loop
        counters with its run alone's, which catches the day the rule moves)."""
        best = next((m.best for m in self.members if m.best is not None), None)
        return best is not None and best._should_save_on_train_epoch_end(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking and not self._at_epoch_end(trainer):
            self._save_improved(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._at_epoch_end(trainer):
            self._save_improved(trainer, pl_module)

    def _save_improved(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The members whose monitor improved get their best file, from one dump of the group's state."""
        module: SeedsModule = pl_module  # type: ignore[assignment]
        improved: dict[int, Path] = {}
        replaced = []
        for k, member in enumerate(self.members):
            best = member.best
            if best is None or not module.member_healthy(k) or best.monitor not in module.member_values[k]:
                continue
            score = torch.tensor(module.member_values[k][best.monitor])
            if not best.check_monitor_top_k(trainer, score):
                continue
            candidates = {"epoch": torch.tensor(trainer.current_epoch), "step": torch.tensor(trainer.global_step),
                          best.monitor: score}  # fmt: skip
            path, before = best.format_checkpoint_name(candidates), best.best_model_path
            best.best_k_models = {path: score}
            best.kth_best_model_path, best.kth_value = path, score
            best.best_model_path, best.best_model_score, best.current_score = path, score, score
            improved[k] = Path(path)
            if before and before != path:
                replaced.append(Path(before))
        if not improved:
            return
        self.io.only = improved
        try:
            trainer.save_checkpoint(improved[next(iter(improved))], weights_only=False)
        finally:
            self.io.only = None
        for path in replaced:  # after the new best is safely written, as ModelCheckpoint does
            path.unlink(missing_ok=True)
