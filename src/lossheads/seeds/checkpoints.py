"""A seeds group's checkpoints: one file for the whole group while it trains, each member's own
files when it ends.

While the group trains, every save Lightning makes (`GroupLast`: each epoch's end, training's end, a
stop between epochs) is one file holding every member's state (the stacked weights and optimizer
state, the loops, each member's best-so-far records and best weights), written atomically, its
SHA-256 over its bytes on its first line. A SIGKILL loses no finished epoch: the sweep run again
resumes the group from it (`resumable`). When the group finishes or stops, each member's folder gets
`checkpoints/last.ckpt` and its `best-epochNNN.ckpt` as single-run checkpoints (`write_member_files`),
which `ckpt_path`, `train=false` and distillation read as any run's; then the group's file goes.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Checkpoint

from lossheads.config.validators import ConfigError
from lossheads.run.atomic import leftover_temporaries, write_atomic, write_bytes
from lossheads.run.checkpoints import GROUP_MEMBERS, RunCheckpointIO
from lossheads.run.resume import resumed_from, run_inputs
from lossheads.seeds.members import Member
from lossheads.seeds.module import SeedsModule
from lossheads.training.callbacks import LastCheckpoint

log = logging.getLogger(__name__)
HEADER = b"lossheads seeds group checkpoint; sha256 of the bytes after this line: "
BEST_DUMP = "<members' best, kept in memory>"  # the path MemberBest saves to: nothing is written


def group_bytes(checkpoint: dict[str, Any]) -> memoryview:
    """`checkpoint` as torch.save bytes, where torch.save put them (never copied: 2-8 MB a save), in
    torch's pre-zip format: 5.6 ms instead of 7.7 for 40 members; torch.load reads both (tested)."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer, _use_new_zipfile_serialization=False)
    return buffer.getbuffer()


def write_group_file(path: Path, payload: bytes | memoryview) -> None:
    """`payload` behind a first line with its SHA-256, written atomically. Not fsynced (each epoch's
    fsync cost more than the group's steps): a kill never leaves a partial file, and after a power
    loss a damaged one fails its checksum and the group starts afresh."""
    first = HEADER + hashlib.sha256(payload).hexdigest().encode() + b"\n"
    write_atomic(path, lambda handle: (handle.write(first), handle.write(payload)), durable=False)


def read_group_bytes(path: Path) -> bytes:
    """The torch.save bytes of the group checkpoint at `path`, checksum verified, or a one-line ConfigError."""
    data = path.read_bytes()
    first, _, payload = data.partition(b"\n")
    recorded = first[len(HEADER) :].decode(errors="replace") if first.startswith(HEADER) else None
    if recorded != hashlib.sha256(payload).hexdigest():
        raise ConfigError(f"the seeds group checkpoint {path} is damaged (its checksum does not match its bytes)")
    return payload


def read_group_file(path: Path) -> dict[str, Any]:
    return load_group_bytes(read_group_bytes(path))


def list_members(path: Path, folders: list[str]) -> None:
    """Beside the group's file, its members' run folders: `ckpt_path=last` on one of them, refused
    for want of a checkpoint of its own, names the group's file (`run.checkpoints.in_a_group`)."""
    write_bytes(path.with_suffix(GROUP_MEMBERS), "\n".join(folders).encode(), durable=False)


def remove_group_file(path: Path) -> None:
    """The group's file, its members' listing, and any temporary file of it that a kill during a write
    left (the sweep's lock keeps other writers out)."""
    path.unlink(missing_ok=True)
    path.with_suffix(GROUP_MEMBERS).unlink(missing_ok=True)
    for left in leftover_temporaries(path):
        left.unlink(missing_ok=True)


def load_group_bytes(payload: bytes | memoryview) -> dict[str, Any]:
    return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)


class GroupCheckpointIO(TorchCheckpointIO):
    """Lightning's saves of the group: `GroupLast`'s into the group file (the newest bytes kept for
    the members' files), `MemberBest`'s into memory (`BEST_DUMP`).

    The state is serialized at once; the file is hashed and written by a thread while the group
    trains on (hashlib and file writes release the GIL: on 2 cores, 40 members' 8 MB a save no longer
    wait for the disk). The next save, and `finish_writing` before anything reads, replaces or
    removes the file, wait for it; a kill while it is written leaves the previous file, as a kill
    during a save always did: no epoch whose file was written is lost."""

    def __init__(self, path: Path, best: MemberBest) -> None:
        self.path, self.best = path, best
        self.latest: bytes | memoryview | None = None  # the group's newest saved state
        self.seconds = 0.0  # spent in saves (the log's breakdown of the group's time)
        self.writer: threading.Thread | None = None
        self.failed: BaseException | None = None  # the writer's error, raised by the next save or `finish_writing`

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        started = time.perf_counter()
        if path == BEST_DUMP:
            self.best.take(checkpoint)
        else:
            self.best.freeze_diverged(self.latest)  # a member that diverged since keeps its last healthy state
            payload = group_bytes(checkpoint)
            self.finish_writing()
            self.latest = payload
            self.writer = threading.Thread(target=self._write, args=(payload,), name="seeds-group-file", daemon=True)
            self.writer.start()
        self.seconds += time.perf_counter() - started

    def _write(self, payload: memoryview) -> None:
        try:
            write_group_file(self.path, payload)
        except BaseException as exc:  # noqa: BLE001 -- handed to the training thread
            self.failed = exc

    def finish_writing(self, *, raising: bool = True) -> None:
        """Wait for the group file being written; its error (a full disk: a StorageError) is raised
        here, unless `raising` is False (another exception is on its way already)."""
        if self.writer is not None:
            self.writer.join()
            self.writer = None
        failed, self.failed = self.failed, None
        if failed is not None and raising:
            raise failed

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        self.latest = read_group_bytes(Path(path))  # a member diverging after the resume keeps this state
        return load_group_bytes(self.latest)

    def remove_checkpoint(self, path: Any) -> None:
        self.finish_writing(raising=False)
        remove_group_file(Path(path))


def resumable(path: Path, identity: list[list[str]]) -> dict[str, Any] | None:
    """Where the group resumes from (`resume.resumed_from`'s record: the file, epochs, step): a group
    file left by this very group (its members' folders and configs), or None (none, another group's,
    or damaged: the group starts afresh, one log line)."""
    if not path.is_file():
        return None
    try:
        saved = read_group_file(path)
    except (ConfigError, Exception) as error:  # noqa: BLE001 -- any unreadable file: start afresh, say so
        log.warning("%s; the group starts afresh", str(error).splitlines()[0] if str(error) else type(error).__name__)
        return None
    theirs = (saved.get(SeedsModule.STATE) or {}).get("identity")
    if theirs != identity:
        same_jobs = isinstance(theirs, list) and [i[:2] for i in theirs] == [i[:2] for i in identity]
        why = "the data or its split changed since it was saved" if same_jobs else "it belongs to another group of jobs"
        log.warning("the seeds group checkpoint %s is not resumed: %s; the group starts afresh", path, why)
        return None
    found = resumed_from(str(path), saved)
    log.info("the seeds group resumes from %s (epochs done: %s)", path, found["epochs"])
    return found


def member_checkpoint(group: dict[str, Any], k: int, member: Member, module: SeedsModule) -> dict[str, Any]:
    """Member k's checkpoint from the group's dump `group`: what its own run's checkpoint at that step
    holds. The loops' and schedulers' states are the group's (the members take the same steps); the
    weights and the optimizer's per-element state are member k's slice; its loss's buffers and its
    callbacks are its own (their records as of this save)."""
    net_state = {key.removeprefix("net."): v for key, v in group["state_dict"].items() if key.startswith("net.")}
    net = module.net.member_state(k, net_state)
    own = member.module.state_dict()  # its loss's buffers (class weights, pos_weight, log prior) are its own
    state = {
        key: net[key.removeprefix("net.")] if key.startswith("net.") else value.clone() for key, value in own.items()
    }
    shapes = [tuple(p.shape) for p in module.net.stacked]
    optimizers = []
    for optimizer in group["optimizer_states"]:
        sliced = {
            i: {
                name: (v[k].clone() if tuple(v.shape) == shapes[i] else v.clone()) if isinstance(v, torch.Tensor) else v
                for name, v in per_param.items()
            }  # fmt: skip
            for i, per_param in optimizer["state"].items()
        }
        optimizers.append({"state": sliced, "param_groups": optimizer["param_groups"]})
    callbacks = {}
    for callback in member.callbacks:
        own = callback.state_dict()
        if own:
            callbacks[callback.state_key] = own
    dropped = ("state_dict", "optimizer_states", "callbacks", SeedsModule.STATE)
    kept = {key: value for key, value in group.items() if key not in dropped}
    return {**kept, "state_dict": state, "optimizer_states": optimizers, "callbacks": callbacks}


TENSOR = "<tensor>"  # where a packed checkpoint's tensor was


Stripped = dict[int, tuple[dict[str, Any], Any, dict[str, torch.Tensor]]]  # member -> (checkpoint, skeleton, leaves)


def pack(checkpoints: dict[int, Any], stripped: Stripped | None = None) -> dict[str, Any]:
    """Members' checkpoints (of one structure) with their tensors stacked across members, path by path:
    a group file then pickles a few dozen tensors instead of each member's own (torch.save's cost
    grows with the number of tensors: 40 members' best checkpoints took most of a group's saves).
    `stripped`: the walks of earlier packs, reused for the checkpoints that have not changed since."""
    members = sorted(checkpoints)
    stripped = {} if stripped is None else stripped
    plain: set[int] = set()  # for this call only: the checkpoints hold every container it names
    for k in members:
        if k not in stripped or stripped[k][0] is not checkpoints[k]:
            found: dict[str, torch.Tensor] = {}
            stripped[k] = (checkpoints[k], _strip(checkpoints[k], [], found, plain), found)
    leaves = {k: stripped[k][2] for k in members}
    skeletons = {k: stripped[k][1] for k in members}
    first = leaves[members[0]] if members else {}
    stacked = {
        path: torch.stack([leaves[k][path] for k in members])
        for path, tensor in first.items()
        if all(
            path in leaves[k] and leaves[k][path].shape == tensor.shape and leaves[k][path].dtype == tensor.dtype
            for k in members
        )  # fmt: skip
    }
    rest = {k: {path: t for path, t in leaves[k].items() if path not in stacked} for k in members}
    return {"members": members, "skeletons": skeletons, "stacked": stacked, "rest": rest}


def unpack(packed: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """`pack`'s checkpoints again (lists where tuples were)."""
    members = list(packed["members"])
    found = {}
    for i, k in enumerate(members):
        tensors = {path: t[i] for path, t in packed["stacked"].items()} | dict(packed["rest"][k])
        found[k] = _fill(packed["skeletons"][k], [], tensors)
    return found


def _strip(value: Any, path: list[str], leaves: dict[str, torch.Tensor], plain: set[int] | None = None) -> Any:
    """`value` with its tensors replaced by TENSOR (each put in `leaves` by its path). A part without
    tensors is `value`'s own object: the members' checkpoints taken from one dump share its loops'
    and schedulers' records (~300 objects), which torch.save then pickles once, not once a member.
    `plain`: the ids of containers already found without tensors (shared ones are walked once)."""
    if isinstance(value, torch.Tensor):
        leaves[json.dumps(path)] = value
        return TENSOR
    if not isinstance(value, (dict, list, tuple)) or (plain is not None and id(value) in plain):
        return value
    if isinstance(value, dict):
        found: Any = {key: _strip(v, [*path, repr(key)], leaves, plain) for key, v in value.items()}
        same = all(found[key] is v for key, v in value.items())
    else:
        found = [_strip(v, [*path, str(i)], leaves, plain) for i, v in enumerate(value)]
        same = all(a is b for a, b in zip(found, value, strict=True))
    if same and plain is not None:
        plain.add(id(value))
    return value if same else found


def _fill(value: Any, path: list[str], tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, str) and value == TENSOR:
        return tensors[json.dumps(path)]
    if isinstance(value, dict):
        return {key: _fill(v, [*path, repr(key)], tensors) for key, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, [*path, str(i)], tensors) for i, v in enumerate(value)]
    return value


class GroupLast(LastCheckpoint):
    """The group's `LastCheckpoint` (every epoch's end, training's end, a stop between epochs), into
    the group file. Each member's `LastCheckpoint` takes its newest val/* numbers first, as its run's
    does when it saves its last.ckpt."""

    def __init__(self, path: Path, members: list[Member], module: SeedsModule) -> None:
        super().__init__(str(path.parent), path.stem)
        self.members, self.module = members, module

    def _save(self, trainer: Trainer) -> None:
        for k, member in enumerate(self.members):
            newest = {n: v for n, v in self.module.member_values[k].items() if n.startswith("val/")}
            if member.last is not None and k not in self.module.diverged:
                member.last.val_metrics = newest or member.last.val_metrics
            # its logged rows on disk (a run's loggers are saved at each log call), so that the group resumed
            # from this file finds them: a CSV logger holds them in memory until then
            for logger in member.loggers:
                logger.save()
        super()._save(trainer)


class MemberBest(Checkpoint):
    """Each member's best checkpoint by its own validation monitor, as its `ModelCheckpoint` (top 1)
    would keep it: the member's callback object holds the records; the member's slice of the group's
    state at that moment is kept (in memory and in the group file) and written to its folder at the
    end. Taken when that `ModelCheckpoint` would save (by default at the training epoch's end, after
    the module's hook: a `Checkpoint` is called then), so that its loop counters are its run's."""

    def __init__(self, members: list[Member], module: SeedsModule) -> None:
        self.members, self.module = members, module
        self.slices: dict[int, dict[str, Any]] = {}  # member -> its best checkpoint's contents
        # a diverged member -> its last healthy checkpoint (None: it diverged before the group's first save)
        self.frozen: dict[int, dict[str, Any] | None] = {}
        self.improved: list[int] = []
        self.stripped: dict[str, Stripped] = {"slices": {}, "frozen": {}}  # `pack`'s walks, kept between saves
        self.taking = False  # while the dump that `take` slices is made

    def state_dict(self) -> dict[str, Any]:
        if self.taking:  # `take` reads the dump's weights and optimizer state only
            return {}
        return {
            "best": {k: m.best.state_dict() for k, m in enumerate(self.members) if m.best is not None},
            "last": {k: dict(m.last.val_metrics) for k, m in enumerate(self.members) if m.last is not None},
            "slices": pack(self.slices, self.stripped["slices"]),
            "frozen": pack(self.frozen, self.stripped["frozen"]),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for k, member in enumerate(self.members):
            if member.best is not None and k in state_dict["best"]:
                member.best.load_state_dict(state_dict["best"][k])
            if member.last is not None and k in state_dict["last"]:
                member.last.val_metrics = dict(state_dict["last"][k])
        self.slices, self.frozen = unpack(state_dict["slices"]), unpack(state_dict["frozen"])

    def _at_epoch_end(self, trainer: Trainer) -> bool:
        """Lightning's rule for where ModelCheckpoint saves (a private method, asked of the first
        member's own callback; tests/test_seeds.py compares a member's best checkpoint's loop
        counters with its run alone's, which catches the day the rule moves)."""
        best = next((m.best for m in self.members if m.best is not None), None)
        return best is not None and best._should_save_on_train_epoch_end(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking and not self._at_epoch_end(trainer):
            self._save_improved(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._at_epoch_end(trainer):
            self._save_improved(trainer)

    def _save_improved(self, trainer: Trainer) -> None:
        """The members whose monitor improved get their best, from one dump of the group's state."""
        module = self.module
        self.improved = []
        for k, member in enumerate(self.members):
            best = member.best
            if best is None or k in module.diverged or best.monitor not in module.member_values[k]:
                continue
            score = torch.tensor(module.member_values[k][best.monitor])
            if not best.check_monitor_top_k(trainer, score):
                continue
            if torch.isnan(score):  # kept as the worst score, as ModelCheckpoint keeps a NaN (its first is saved)
                score = torch.tensor(float("inf" if best.mode == "min" else "-inf"))
            candidates = {"epoch": torch.tensor(trainer.current_epoch), "step": torch.tensor(trainer.global_step),
                          best.monitor: score}  # fmt: skip
            path = best.format_checkpoint_name(candidates)
            best.best_k_models = {path: score}
            best.kth_best_model_path, best.kth_value = path, score
            best.best_model_path, best.best_model_score, best.current_score = path, score, score
            self.improved.append(k)
        if self.improved:
            self.taking = True
            try:
                trainer.save_checkpoint(BEST_DUMP, weights_only=False)  # -> GroupCheckpointIO -> take
            finally:
                self.taking = False

    def take(self, checkpoint: dict[str, Any]) -> None:
        for k in self.improved:
            self.slices[k] = member_checkpoint(checkpoint, k, self.members[k], self.module)

    def freeze_diverged(self, latest: bytes | memoryview | None) -> None:
        """Members diverged since the group's last save keep that save's state as their last.ckpt
        (as a run alone that diverges keeps the last.ckpt of its last finished epoch)."""
        new = [k for k in self.module.diverged if k not in self.frozen]
        if not new:
            return
        group = load_group_bytes(latest) if latest is not None else None
        for k in new:  # none saved before it diverged: no last.ckpt, as a run alone diverging in its first epoch
            self.frozen[k] = member_checkpoint(group, k, self.members[k], self.module) if group is not None else None


def write_member_files(members: list[Member], module: SeedsModule, io_plugin: GroupCheckpointIO) -> None:
    """Each member's `checkpoints/last.ckpt` (the group's newest state; a diverged member's last healthy
    one) and its best file, as single-run checkpoints with its config, inputs and checksum."""
    best = io_plugin.best
    best.freeze_diverged(io_plugin.latest)
    group = load_group_bytes(io_plugin.latest) if io_plugin.latest is not None else None
    for k, member in enumerate(members):
        writer = RunCheckpointIO(member.config, run_inputs(member.datamodule.split_record))
        if k in best.slices and member.best is not None and member.best.best_model_path:
            writer.save_checkpoint(best.slices[k], Path(member.best.best_model_path))
        last = best.frozen.get(k) if k in module.diverged else None
        if last is None and k not in module.diverged and group is not None:
            last = member_checkpoint(group, k, member, module)
        if last is not None:
            writer.save_checkpoint(last, member.folder / "checkpoints" / "last.ckpt")
