"""A seeds group's members: each prepared in its own Hydra job (its folder, config and files, built
and checked before anything trains, the data loaded once), the stacks they fall into (seeds and
arms of one network shape), and the reasons a job trains alone."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary, ProgressBar
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from lossheads.config.validators import first_line
from lossheads.data.base import ArrayDataModule, InMemoryBatches
from lossheads.run.atomic import StorageError
from lossheads.run.folder import claim, settle_hydra_files
from lossheads.run.guards import restore_hydra_files
from lossheads.run.stops import StopSignals
from lossheads.seeds.data import StackedData
from lossheads.seeds.job_logs import JobLogging, switch_logging
from lossheads.seeds.module import SeedsModule, why_not_elementwise
from lossheads.seeds.stack import why_not_stackable
from lossheads.training.callbacks import LastCheckpoint
from lossheads.training.module import ClassifierModule
from lossheads.training.schedules import Plateau
from lossheads.training.selection import checkpoint_callback

log = logging.getLogger(__name__)


@dataclass
class Member:
    """One seed's run, built as `train.run` builds it (but for its Trainer: the group's trains it),
    waiting for the group to train it."""

    cfg: DictConfig  # the job's config, resolved (its paths no longer depend on the current Hydra job)
    hydra_config: DictConfig  # the job's whole config, to make it the current Hydra job again
    datamodule: ArrayDataModule
    module: ClassifierModule  # its head (threshold), loss and metrics; the group's net holds its weights
    loggers: list[Logger]  # its own, as its run alone's Trainer would hold them
    callbacks: list[Callback]  # its run's callbacks (their states go into its checkpoints)
    best: ModelCheckpoint | None  # its checkpoint callback, whose state the group keeps for it
    config: dict[str, Any]  # `resolved(cfg)`: what each of its checkpoints carries
    # its job log's files, as Hydra's logging set them up for its job: (path, encoding, format, level)
    log_files: list[tuple[str, str | None, logging.Formatter | None, int]] = field(default_factory=list)
    job_logging: JobLogging | None = None  # its job's logging as Hydra set it up, to put back (None: set up again)
    # what Lightning logs as the group's Trainer is built (devices found), as its run alone's log has it
    trainer_lines: list[tuple[str, int, str]] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return Path(self.cfg.paths.output_dir)

    @property
    def last(self) -> LastCheckpoint | None:
        return next((c for c in self.callbacks if isinstance(c, LastCheckpoint)), None)


@contextlib.contextmanager
def current_job(member: Member) -> Iterator[None]:
    """Make `member`'s Hydra job the current one (its overrides name its logs and resume command).

    Hydra keeps the current job's config in the `HydraConfig` singleton's `cfg`, which `run_job` sets
    and restores; set here the same way between jobs (tests/test_seeds.py's interrupt test reads each
    member's resume command, which comes from it)."""
    before = HydraConfig.instance().cfg
    HydraConfig.instance().cfg = member.hydra_config
    job = member.hydra_config.hydra
    switch_logging(member.job_logging, job.job_logging, job.verbose)  # its log file
    try:
        yield
    finally:
        HydraConfig.instance().cfg = before


def alone_by_config(cfg: DictConfig) -> str | None:
    """Why the job trains alone whatever it would build: asked before its folder is read (a recipe's
    folder holds its steps' runs; an evaluation or a given checkpoint has its own rules there)."""
    if cfg.get("distill"):
        return "experiment=distill trains three runs in a row"
    if not cfg.train or cfg.get("ckpt_path") is not None:
        return "it evaluates or resumes a checkpoint"
    return None


def why_not_vectorized(cfg: DictConfig, member: Member) -> str | None:
    """None when this run can train as a member of a group; else why it trains alone."""
    if reason := alone_by_config(cfg):
        return reason
    if member.module.teacher is not None:
        return "loss=kd runs a teacher"
    if member.module.stepping.steps_per_call == 1:
        return "steps_per_call is 1 (Lightning's own loop; e.g. trainer.accumulate_grad_batches > 1)"
    if (cfg.get("early_stopping") or {}).get("patience") is not None:
        return "early stopping ends each seed at its own epoch"
    if isinstance(member.module.schedule, Plateau):
        return "scheduler=plateau follows each seed's own validation metric"
    if several_devices(cfg.trainer):
        return "it trains on several devices"
    loader_for = getattr(member.datamodule, "train_loader_for", None)
    if loader_for is None or not isinstance(loader_for(cfg.seed), InMemoryBatches):
        return "its data goes through a DataLoader (data.in_memory=false, or a datamodule of its own)"
    augment = getattr(member.datamodule, "augment", None) or {}
    if any(augment.values()):
        return "image augmentation draws per run"
    own = (LastCheckpoint, ProgressBar, ModelSummary)  # what the group does for each member, with `best`
    others = [type(c).__name__ for c in member.callbacks if not isinstance(c, own) and c is not member.best]
    if others:
        return f"callbacks {', '.join(others)} see one run"
    best = (cfg.get("callbacks") or {}).get("model_checkpoint") or {}
    emulated = {"_target_", "dirpath", "filename", "auto_insert_metric_name", "monitor", "mode", "save_last",
                "save_top_k"}  # fmt: skip
    changed = sorted(set(best) - emulated) + (["save_last"] if best.get("save_last") else [])
    if changed or best.get("save_top_k", 1) != 1:
        return f"callbacks.model_checkpoint.{(changed or ['save_top_k'])[0]} asks for more than the best checkpoint"
    return why_not_elementwise(member.module.make_optimizer) or why_not_stackable(member.module.net)


def several_devices(trainer: DictConfig) -> bool:
    """The Trainer config asks for more than one device or node (the group trains in one process)."""
    devices = trainer.get("devices", 1)
    many = (isinstance(devices, int) and devices != 1 and devices != 0) or (
        not isinstance(devices, (int, str)) and len(devices) > 1
    )
    return many or str(devices) == "-1" or int(trainer.get("num_nodes", 1) or 1) > 1


TRAINER_LINES = "<the Trainer's log lines>"  # in `prepare`'s `loaded`, beside the data configs' keys


@contextlib.contextmanager
def lightning_lines() -> Iterator[list[tuple[str, int, str]]]:
    """The lines Lightning logs meanwhile (logger name, level, text), kept instead of written."""
    lines: list[tuple[str, int, str]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append((record.name, record.levelno, record.getMessage()))

    keep, logger = Keep(), logging.getLogger("lightning.pytorch")
    logger.addHandler(keep)
    logger.propagate = False
    try:
        yield lines
    finally:
        logger.removeHandler(keep)
        logger.propagate = True  # as `console.quiet_lightning` leaves it


class Stopped:
    """What `prepare` returns when Ctrl-C or SIGTERM came while it ran: the job's stop is recorded."""


def failure(exc: BaseException) -> str:
    """`Type: first line` of what a job raised while it was prepared, for the launcher's log line."""
    return f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else type(exc).__name__


class Finished:
    """What `prepare` returns for a job whose folder holds its finished run (a sweep run again): its
    own job returns that run's record, as under the basic launcher, and trains nothing."""


def prepare(cfg: DictConfig, folders: dict[Path, int], loaded: dict[str, Any]) -> Member | str | Stopped | Finished:
    """Inside the member's Hydra job: build and check it as `run` would, or say why it trains alone
    (then its own job runs it through `train.main`, which reports any bad input as usual).
    `folders`: the run folders of the jobs prepared before it in this group, with their numbers;
    `loaded`: the data they loaded (each member splits it its own way)."""
    from lossheads.run.outcomes import record_stop

    try:
        return _prepare(cfg, folders, loaded)
    except BaseException:
        if StopSignals.received is None:
            raise
        record_stop(cfg, then_exit=False)  # as its own run would: an `interrupted` record, its command
        return Stopped()


def _prepare(cfg: DictConfig, folders: dict[Path, int], loaded: dict[str, Any]) -> Member | str | Finished:
    from lossheads.run.build import build, build_trainer, plan_run
    from lossheads.run.console import quiet_lightning
    from lossheads.run.execute import write_run_files
    from lossheads.run.loggers import build_loggers, register_resolvers
    from lossheads.run.records import save_config

    quiet_lightning()
    register_resolvers()
    # Hydra's files elsewhere (hydra.output_subdir=null, or another name): the run writes .hydra/config.yaml
    # itself, unresolved, as its run alone does
    subdir = HydraConfig.get().output_subdir
    unresolved = copy.deepcopy(cfg) if subdir is None or Path(str(subdir)) != Path(".hydra") else None
    try:
        OmegaConf.resolve(cfg)
        plan = plan_run(cfg)
    except Exception as exc:  # noqa: BLE001 -- the job's own run says what was wrong, in its own words
        return failure(exc)
    job = HydraConfig.instance().cfg  # a copy Hydra made for this job; it puts the sweep's back, never changes it
    folder = Path(cfg.paths.output_dir).resolve()
    if folder in folders:  # e.g. a hydra.sweep.subdir without the seed: its own run, after, is refused
        restore_hydra_files(folder)  # Hydra has just written this job's .hydra/ over the first's
        return f"its run folder is job #{folders[folder]}'s too ({folder})"
    folders[folder] = int(job.hydra.job.num)
    if reason := alone_by_config(cfg):
        return reason
    # the folder holds a run: until this job's own run resumes it (Hydra writes its files again then), or
    # refuses it, the folder keeps the run's `.hydra/`, which Hydra has just written over
    try:  # before the data and the network: a finished job of a sweep run again loads and logs nothing
        found = claim(folder, plan.config, continue_own=True)
    except Exception as exc:  # noqa: BLE001 -- another run's folder: its own job refuses it
        restore_hydra_files(folder)
        return first_line(exc)
    if found.action == "done":
        settle_hydra_files(folder, found.record or {}, plan.config)  # as its own run, next, settles them
        return Finished()
    if found.action == "resume":
        restore_hydra_files(folder)
        return "its folder holds this run, stopped or shorter: it resumes alone"
    try:
        datamodule, module = build(cfg, plan, loaded, metrics=False)
        if TRAINER_LINES not in loaded:  # the group's first built: Lightning checks the Trainer's arguments
            with lightning_lines() as lines:  # kept for the group's start; a job that trains alone logs its own
                build_trainer(cfg, plan)
            loaded[TRAINER_LINES] = lines
        loggers = build_loggers(cfg) or []
    except Exception as exc:  # noqa: BLE001 -- the job's own run says what was wrong, in its own words
        return failure(exc)
    best = checkpoint_callback(plan.callbacks)
    member = Member(cfg, job, datamodule, module, loggers, plan.callbacks, best, plan.config)
    member.log_files = [(h.baseFilename, h.encoding, h.formatter, h.level) for h in logging.getLogger().handlers
                        if isinstance(h, logging.FileHandler)]  # fmt: skip
    member.job_logging = JobLogging.current(job.hydra.job_logging, job.hydra.verbose)
    member.trainer_lines = loaded.get(TRAINER_LINES, [])
    reason = why_not_vectorized(cfg, member)
    if reason:
        return reason
    try:
        if unresolved is not None:
            save_config(unresolved, member.folder)
        write_run_files(cfg, datamodule, beside=False)
    except StorageError as error:  # its own run, next, says so in one line and stops the sweep, as it would alone
        return str(error)
    return member


ARM_KEYS = ("loss", "threshold", "head")  # what may differ between the members of one stack


def is_arm(override: str) -> bool:
    """An override of an arm key or one of its options (`loss=ce`, `loss.pos_weight=auto`, `+head.x=1`)."""
    key = override.split("=", 1)[0].lstrip("+~")
    return any(key == arm or key.startswith(f"{arm}.") for arm in ARM_KEYS)


def stack_key(member: Member) -> str:
    """What the members of one stack share: the config but for the seed (and split), the loggers and
    the arm keys (loss, loss options, threshold, head); the head's kind and number of logits; the
    loss's targets form; the splits' sizes."""
    config = copy.deepcopy(member.config)
    config.pop("seed", None)
    config["data"].pop("split_seed", None)  # each member may have its own split (by default its seed's)
    config.pop("logger", None)  # each member's logs are named by its own job
    for key in ARM_KEYS:
        config.pop(key, None)
    module = member.module
    sizes = [len(member.datamodule.split_indices[s]) for s in ("train", "val", "test")]
    shared = {"config": config, "head": module.head.name, "logits": module.head.num_logits, "sizes": sizes,
              "targets": f"{type(module.loss).prepare_targets.__qualname__}"}  # fmt: skip
    return json.dumps(shared, sort_keys=True, default=str).replace(str(member.folder), "<run folder>")


def partition(members: list[Member]) -> list[list[Member]]:
    """The members in stacks (`stack_key`), in order of first appearance."""
    stacks: dict[str, list[Member]] = {}
    for member in members:
        stacks.setdefault(stack_key(member), []).append(member)
    return list(stacks.values())


def differences(member: Member, other: Member) -> str:
    """The top-level config keys (and head) in which `member`'s stack differs from `other`'s."""
    ours, theirs = json.loads(stack_key(member)), json.loads(stack_key(other))
    keys = [k for k in ours["config"] if ours["config"].get(k) != theirs["config"].get(k)]
    keys += [k for k in ("head", "logits", "sizes", "targets") if ours[k] != theirs[k]]
    names = {"head": "head", "logits": "number of logits", "sizes": "data split sizes", "targets": "loss targets"}
    return ", ".join(names.get(k, k) for k in keys) or "their configs"


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
