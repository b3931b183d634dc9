"""Seeds of one configuration trained together, each member leaving the run folder its own run
would leave.

A member is prepared inside its own Hydra job (its folder, config and Hydra files, as `run`
prepares a run: built and checked before anything trains), the group is trained as one
`SeedsModule`, and each member is then validated, tested and recorded by its own Trainer and
module through `records.test_and_record`, exactly as a run trained alone. Its checkpoints come
from the group's: Lightning saves the group's state, and `MembersCheckpointIO` writes each
member's slice of it (its weights, its optimizer state, its best-checkpoint and last-validation
records, its own config and checksum) into the member's folder, where `ckpt_path`, `train=false`
and distillation read it as any run's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import configure_log
from hydra.utils import instantiate
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint, ModelSummary, ProgressBar
from omegaconf import DictConfig, OmegaConf
from torch import nn

from lossheads.atomic import StorageError
from lossheads.callbacks import LastCheckpoint
from lossheads.check import ConfigError
from lossheads.checkpoints import RunCheckpointIO
from lossheads.data.base import ArrayDataModule, InMemoryBatches
from lossheads.module import ClassifierModule, Diverged
from lossheads.optim import Plateau
from lossheads.records import Trained, logged, test_and_record
from lossheads.resume import resolved
from lossheads.run_folder import claim, restore_hydra_files
from lossheads.seeds.data import StackedData
from lossheads.seeds.module import SeedsModule, why_not_elementwise
from lossheads.seeds.stack import why_not_stackable
from lossheads.selection import checkpoint_callback, weights_to_test
from lossheads.stepping import plan_stepping, trainer_arguments
from lossheads.stops import StopSignals, caught

log = logging.getLogger(__name__)
DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


@dataclass
class Member:
    """One seed's run, built as `train.run` builds it, waiting for the group to train it."""

    cfg: DictConfig  # the job's config, resolved (its paths no longer depend on the current Hydra job)
    hydra_config: DictConfig  # the job's whole config, to make it the current Hydra job again
    datamodule: ArrayDataModule
    module: ClassifierModule
    trainer: Trainer  # its own: loggers, callbacks; validates and tests the member after training
    best: ModelCheckpoint | None  # its checkpoint callback, whose state the group keeps for it
    config: dict[str, Any]  # `resolved(cfg)`: what each of its checkpoints carries

    @property
    def folder(self) -> Path:
        return Path(self.cfg.paths.output_dir)


def why_not_vectorized(cfg: DictConfig, member: Member) -> str | None:
    """None when this run can train as a member of a group; else why it trains alone."""
    if cfg.get("distill"):
        return "experiment=distill trains three runs in a row"
    if not cfg.train or cfg.get("ckpt_path") is not None:
        return "it evaluates or resumes a checkpoint"
    if member.module.teacher is not None:
        return "loss=kd runs a teacher"
    if plan_stepping(cfg).steps_per_call == 1:
        return "steps_per_call is 1 (Lightning's own loop; e.g. trainer.accumulate_grad_batches > 1)"
    if (cfg.get("early_stopping") or {}).get("patience") is not None:
        return "early stopping ends each seed at its own epoch"
    if isinstance(member.module.schedule, Plateau):
        return "scheduler=plateau follows each seed's own validation metric"
    if member.trainer.world_size > 1:
        return "it trains on several devices"
    loader_for = getattr(member.datamodule, "train_loader_for", None)
    if loader_for is None or not isinstance(loader_for(cfg.seed), InMemoryBatches):
        return "its data goes through a DataLoader (data.in_memory=false, or a datamodule of its own)"
    augment = getattr(member.datamodule, "augment", None) or {}
    if any(augment.values()):
        return "image augmentation draws per run"
    own = (LastCheckpoint, ProgressBar, ModelSummary)  # what the group does for each member, with `best`
    others = [type(c).__name__ for c in member.trainer.callbacks if not isinstance(c, own) and c is not member.best]
    if others:
        return f"callbacks {', '.join(others)} see one run"
    best = (cfg.get("callbacks") or {}).get("model_checkpoint") or {}
    emulated = {"_target_", "dirpath", "filename", "auto_insert_metric_name", "monitor", "mode", "save_last",
                "save_top_k"}  # fmt: skip
    changed = sorted(set(best) - emulated) + (["save_last"] if best.get("save_last") else [])
    if changed or best.get("save_top_k", 1) != 1:
        return f"callbacks.model_checkpoint.{(changed or ['save_top_k'])[0]} asks for more than the best checkpoint"
    return why_not_elementwise(member.module.make_optimizer) or why_not_stackable(member.module.net)


class Stopped:
    """What `prepare` returns when Ctrl-C or SIGTERM came while it ran: the job's stop is recorded."""


def prepare(cfg: DictConfig, folders: dict[Path, int]) -> Member | str | Stopped:
    """Inside the member's Hydra job: build and check it as `run` would, or say why it trains alone
    (then its own job runs it through `train.main`, which reports any bad input as usual).
    `folders`: the run folders of the jobs prepared before it in this group, with their numbers."""
    from lossheads.train import record_stop

    try:
        return _prepare(cfg, folders)
    except BaseException:
        if StopSignals.received is None:
            raise
        record_stop(cfg, then_exit=False)  # as its own run would: an `interrupted` record, its command
        return Stopped()


def _prepare(cfg: DictConfig, folders: dict[Path, int]) -> Member | str:
    from lossheads.console import quiet_lightning
    from lossheads.train import build, build_trainer, write_run_files

    quiet_lightning()
    try:
        OmegaConf.resolve(cfg)
        datamodule, module = build(cfg)
        trainer = build_trainer(cfg)
    except Exception as exc:  # noqa: BLE001 -- the job's own run says what was wrong, in its own words
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    job = HydraConfig.instance().cfg  # a copy Hydra made for this job; it puts the sweep's back, never changes it
    member = Member(cfg, job, datamodule, module, trainer, checkpoint_callback(trainer.callbacks), resolved(cfg))
    folder = member.folder.resolve()
    if folder in folders:  # e.g. a hydra.sweep.subdir without the seed: its own run, after, is refused
        restore_hydra_files(folder)  # Hydra has just written this job's .hydra/ over the first's
        return f"its run folder is job #{folders[folder]}'s too ({folder})"
    folders[folder] = int(job.hydra.job.num)
    reason = why_not_vectorized(cfg, member)
    if reason:
        return reason
    try:
        if claim(member.folder, member.config, continue_own=True).action != "fresh":
            return "its folder holds this run already (finished, or to resume)"
    except Exception as exc:  # noqa: BLE001 -- another run's folder: its own job refuses it
        return str(exc).splitlines()[0]
    try:
        write_run_files(cfg, datamodule, beside=False)
    except StorageError as error:  # its own run, next, says so in one line and stops the sweep, as it would alone
        return str(error)
    return member


def why_not_together(members: list[Member]) -> str | None:
    """Members must differ in their seed (and split) alone, with splits of equal sizes."""

    def without_seed(member: Member) -> str:
        config = resolved(member.cfg)
        config.pop("seed", None)
        config["data"].pop("split_seed", None)  # each member may have its own split (by default its seed's)
        config.pop("logger", None)  # each member's logs are named by its own job
        return json.dumps(config, sort_keys=True, default=str).replace(str(member.folder), "<run folder>")

    first = without_seed(members[0])
    for member in members[1:]:
        if without_seed(member) != first:
            return "their configs differ beyond the seed (an interpolation of ${seed}?)"
        sizes = [len(m.datamodule.split_indices[s]) for m in (members[0], member) for s in ("train", "val", "test")]
        if sizes[:3] != sizes[3:]:
            return "their data splits differ in size"
    return None


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


def stacked(members: list[Member]) -> SeedsModule | str:
    """The group's module, once a forward and backward pass of the stack on a few training samples
    has run (no step taken; buffers put back), or why the members must train alone: a network or a
    loss with data-dependent control flow (`if x.sum() > 0`), which vmap cannot run, shows here."""
    first = members[0]
    stepping = first.module.stepping
    module = SeedsModule([m.module for m in members], [int(m.cfg.seed) for m in members],
                         task=first.datamodule.task, num_classes=first.datamodule.num_classes,
                         batch_size=first.datamodule.batch_size, steps_per_call=stepping.steps_per_call,
                         schedule=first.module.schedule, stepping=stepping)  # fmt: skip
    saved = [b.clone() for b in module.net.buffers()]
    splits = [m.datamodule.splits["train"] for m in members]
    features, targets = torch.stack([f[:4] for f, _ in splits]), torch.stack([t[:4] for _, t in splits])
    try:
        features, targets = StackedData([m.datamodule for m in members]).on_after_batch_transfer((features, targets), 0)
        _, losses = module._forward_loss(features, module.loss.prepare_targets(targets))
        losses.sum().backward()
    except Exception as exc:  # noqa: BLE001 -- any failure here means: not as a stack
        return f"its network or loss cannot run stacked ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
    finally:
        module.net.zero_grad(set_to_none=True)
        with torch.no_grad():
            for buffer, before in zip(module.net.buffers(), saved, strict=True):
                buffer.copy_(before)
    return module


def train_group(members: list[Member], module: SeedsModule) -> list[dict[str, Any] | None]:
    """Train the members as one (`module`, from `stacked`); then record each as its own run.
    Returns each member's record (None: it diverged or failed, which its folder records)."""
    from lossheads.train import record_status

    first = members[0]
    stepping = first.module.stepping
    seeds = module.seeds
    module.member_loggers = [list(m.trainer.loggers) for m in members]
    for member in members:  # what Lightning does for a run's loggers as its fit starts (a diverged run has them)
        for logger in member.trainer.loggers:
            logger.log_hyperparams(member.module.hparams_initial)
            logger.log_graph(member.module)
            logger.save()
    io = MembersCheckpointIO(members, module)
    # in a run's order (callbacks/default.yaml): its best checkpoint is saved before its last.ckpt
    callbacks: list[Callback] = [MemberBest(members, io), LastCheckpoint(str(first.folder / "checkpoints"))]
    bar = (first.cfg.get("callbacks") or {}).get("progress_bar")
    callbacks += [instantiate(bar)] if bar else []
    trainer = instantiate(first.cfg.trainer, logger=False, callbacks=callbacks, plugins=[io],
                          **trainer_arguments(first.cfg.trainer, stepping))  # fmt: skip
    StopSignals.trainer = trainer
    failure: BaseException | None = None
    with group_logging(members):
        log.info("seeds %s of one configuration train as one vectorized model", seeds)
        if any(isinstance(m, DROPOUT) and m.p > 0 for m in first.module.net.modules()):
            log.info("dropout draws from the group's random stream: each seed's numbers are those of this "
                     "group (the same sweep gives them again), not those of its run alone")  # fmt: skip
        started = time.perf_counter()
        try:
            trainer.fit(module, datamodule=StackedData([m.datamodule for m in members]), weights_only=True)
        except Diverged:
            pass  # every member diverged: each is recorded below
        except StorageError as error:  # a full disk: as a run alone, each records it, one line, the sweep stops
            end_member_logs(members, module, failed=True)
            stop_for_storage(members, error)
        except BaseException as exc:
            if StopSignals.received is None and not isinstance(exc, Exception):
                raise
            if StopSignals.received is None:
                log.exception("the seeds %s failed; the sweep goes on", seeds)
            failure = exc
        end_member_logs(members, module, failed=failure is not None)
    if failure is not None and StopSignals.received is None:  # a crash: recorded for each member; the sweep goes on
        for member in members:
            with current_job(member):
                record_status(member.cfg, "failed", f"{type(failure).__name__}: {failure}")
        return [None] * len(members)
    if failure is not None:
        record_stops(members)
    trained = time.perf_counter()
    records: list[dict[str, Any] | None] = []
    try:
        for k, member in enumerate(members):
            with current_job(member):
                records.append(record_member(member, module, k, trainer))
    except StorageError as error:
        stop_for_storage(members[len(records) :], error)
    except BaseException:
        if StopSignals.received is None:
            raise
        record_stops(members[len(records) :])  # the one being tested, and those after it
    with group_logging(members):
        log.info("seeds %s: trained together in %.1f s, tested and recorded one by one in %.1f s", seeds,
                 trained - started, time.perf_counter() - trained)  # fmt: skip
    return records


def end_member_logs(members: list[Member], module: SeedsModule, failed: bool) -> None:
    """What Lightning does to a run's loggers when its fit ends: `finalize` (CSV rows written, MLflow's
    run ended), "failed" for a stopped, crashed or diverged run. A member's test opens them again."""
    for k, member in enumerate(members):
        for logger in member.trainer.loggers:
            logger.finalize("failed" if failed or k in module.diverged else "success")


def stop_for_storage(members: list[Member], error: StorageError) -> None:
    """A file of the group could not be written: what `train.main` does for a run alone (each member
    its `failed` record, if the disk takes it; the error in one line; exit 2, which ends the sweep)."""
    from lossheads.train import EXIT_BAD_INPUT, record_status

    for member in members:
        own = f"{member.folder}{os.sep}" in str(error)
        with current_job(member), contextlib.suppress(StorageError):
            record_status(member.cfg, "failed", str(error) if own else f"its seeds group stopped: {error}")
    print(f"error: {error}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def record_stops(members: list[Member]) -> None:
    """Ctrl-C or SIGTERM: each of `members` resumable from its own folder, with its own command; exit."""
    from lossheads.train import record_stop

    for member in members:
        with current_job(member):
            record_stop(member.cfg, then_exit=False)
    sys.exit(StopSignals.exit_code())


def record_member(member: Member, module: SeedsModule, k: int, trainer: Trainer) -> dict[str, Any] | None:
    """Member k's record once the group has trained: its test's, or its status (None then)."""
    from lossheads.train import record_status

    if k in module.diverged:
        record_status(member.cfg, "diverged", module.diverged[k], "metrics.json")
        return None
    try:
        return finish(member, module, k, trainer)
    except StorageError:
        raise  # the disk: the group stops, as a run alone would
    except ConfigError as error:  # e.g. test_on=best without a best checkpoint: as its own run says
        record_status(member.cfg, "invalid", str(error))
        log.warning("invalid job: %s", error)
    except Exception as exc:  # noqa: BLE001 -- one member's failure must not cost the others' records
        record_status(member.cfg, "failed", f"{type(exc).__name__}: {exc}")
        log.exception("member with seed %s failed; the others go on", member.cfg.seed)
    return None


def finish(member: Member, group: SeedsModule, k: int, trainer: Trainer) -> dict[str, Any]:
    """Member k validated and tested by its own trainer on its final (or best) weights, recorded."""
    StopSignals.trainer = member.trainer  # a stop now is one in this member's validation or test
    final = group.net.member_state(k)
    member.module.trained_steps = trainer.global_step
    # validated again by its own module: the stacked forward's numbers differ by float rounding, which
    # a rank metric (AUROC of saturated, tied probabilities) or threshold=auto can turn into more. On
    # the weights of the group's last validation, whose numbers its own run records; its loggers have
    # that validation's numbers already, from the group
    metrics: dict[str, float] = {}  # none when training ran no validation, as for a run alone
    if group.validated is not None:
        member.module.net.load_state_dict(group.validated[k])
        loggers, member.trainer.loggers = member.trainer.loggers, []
        try:
            member.trainer.validate(member.module, datamodule=member.datamodule, verbose=False)
        finally:
            member.trainer.loggers = loggers
        metrics = logged(member.trainer, "val/")
    member.module.net.load_state_dict(final)
    ckpt_path = weights_to_test(member.cfg, member.trainer)
    trained = Trained(trainer.current_epoch, trainer.global_step)
    return test_and_record(member.cfg, member.trainer, member.module, member.datamodule, metrics, ckpt_path, trained)


@contextlib.contextmanager
def group_logging(members: list[Member]) -> Iterator[None]:
    """Each member's job log (Hydra's `<job name>.log` in its folder) gets the group's training lines,
    as its own job's log gets its run's: Hydra's logging for the last member (console and its file),
    and a copy of its file handler for each of the others."""
    root = logging.getLogger()
    copies: list[logging.Handler] = []
    for member in members:
        configure_log(member.hydra_config.hydra.job_logging, member.hydra_config.hydra.verbose)
        for handler in root.handlers:
            if isinstance(handler, logging.FileHandler) and member is not members[-1]:
                copy = logging.FileHandler(handler.baseFilename, encoding=handler.encoding)
                copy.setFormatter(handler.formatter)
                copy.setLevel(handler.level)
                copies.append(copy)
    for handler in copies:
        root.addHandler(handler)
    try:
        yield
    finally:
        for handler in copies:
            root.removeHandler(handler)
            handler.close()


@contextlib.contextmanager
def current_job(member: Member) -> Iterator[None]:
    """Make `member`'s Hydra job the current one (its overrides name its logs and resume command).

    Hydra keeps the current job's config in the `HydraConfig` singleton's `cfg`, which `run_job` sets
    and restores; set here the same way between jobs (tests/test_seeds.py's interrupt test reads each
    member's resume command, which comes from it)."""
    before = HydraConfig.instance().cfg
    HydraConfig.instance().cfg = member.hydra_config
    configure_log(member.hydra_config.hydra.job_logging, member.hydra_config.hydra.verbose)  # its log file
    try:
        yield
    finally:
        HydraConfig.instance().cfg = before


def run_members(members: list[Member], module: SeedsModule) -> list[dict[str, Any] | None]:
    """`train_group` with the run's own stop handling (SIGINT / SIGTERM recorded for every member)."""
    from lossheads.console import quiet_lightning

    quiet_lightning()
    with caught():
        return train_group(members, module)
