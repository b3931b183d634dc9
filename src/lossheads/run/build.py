"""Build one run from its config, every input checked before anything trains: data -> head -> loss ->
net -> module, and the Trainer with the run's callbacks, loggers and checkpoint writer.

What both halves need is computed once, in `plan_run`: the resolved config (stored in every
checkpoint, compared on resume, fingerprinted in metrics.json), the stepping plan and the callbacks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Callback, Trainer, seed_everything
from omegaconf import DictConfig, OmegaConf

from lossheads.config.check import check_config, check_machine
from lossheads.config.pairing import build_head_for, build_loss, check_names, loss_name
from lossheads.config.validators import ConfigError, instantiate_checked, require
from lossheads.data import ArrayDataModule
from lossheads.models import build_net
from lossheads.run.checkpoints import RunCheckpointIO, read_checkpoint, resolve_checkpoint
from lossheads.run.distill import load_teacher
from lossheads.run.loggers import build_loggers
from lossheads.run.resume import check_inputs, check_resume, check_schedule_length, resolved, resumed_from
from lossheads.training.module import ClassifierModule
from lossheads.training.schedules import Plateau
from lossheads.training.selection import early_stopping, validation_monitor
from lossheads.training.stepping import Stepping, plan_stepping, trainer_arguments


@dataclass(frozen=True)
class RunPlan:
    """What a run derives from its checked config, once: `config` is `resolved(cfg)`, `callbacks`
    the config's callbacks (early stopping included), `stepping` how the run steps."""

    config: dict[str, Any]
    stepping: Stepping
    callbacks: list[Callback]


def plan_run(cfg: DictConfig) -> RunPlan:
    """Check the config (top-level keys, head and loss names, this machine) and plan the run."""
    check_config(cfg)
    check_names(str(cfg.head.name), loss_name(cfg.loss))
    check_machine(cfg.trainer)
    callbacks = [instantiate_checked(c, "callbacks") for c in (cfg.get("callbacks") or {}).values() if c is not None]
    stopper = early_stopping(cfg, callbacks)
    return RunPlan(resolved(cfg), plan_stepping(cfg), callbacks + ([stopper] if stopper else []))


def build_trainer(cfg: DictConfig, plan: RunPlan | None = None, inputs: dict | None = None) -> Trainer:
    """The run's Trainer: its callbacks and loggers, batches counted in optimizer steps, and the
    checkpoint writer that stores the run's config, what it trains on (`inputs`: `resume.run_inputs`)
    and a checksum in each checkpoint."""
    plan = plan or plan_run(cfg)
    counts = trainer_arguments(cfg.trainer, plan.stepping)
    io_plugin = RunCheckpointIO(plan.config, inputs)
    try:
        return instantiate_checked(cfg.trainer, explain=lambda cause: lightning_says(cfg.trainer, cause),
                                   logger=build_loggers(cfg), callbacks=plan.callbacks, plugins=[io_plugin],
                                   **counts)  # fmt: skip
    except ConfigError:  # the constructor's own refusal, already in one line (`explain`)
        raise
    except (MisconfigurationException, ValueError) as exc:  # raised outside the Trainer's constructor
        raise ConfigError(lightning_says(cfg.trainer, exc)) from exc


def lightning_says(trainer: DictConfig, exc: BaseException) -> str:
    """One line for a trainer argument Lightning refused: the key it names first, and its reason."""
    reason = str(exc).splitlines()[0].rstrip(".") if str(exc) else type(exc).__name__
    at = {k: reason.lower().find(k.lower()) for k in trainer if k != "_target_"}
    named = sorted((k for k in at if at[k] >= 0), key=at.get)  # the key Lightning names first
    key = f"trainer.{named[0]}={trainer[named[0]]!r}" if named else "trainer"
    return f"{key} is not valid: Lightning says {reason}"


def build(
    cfg: DictConfig, plan: RunPlan | None = None, loaded: dict[str, Any] | None = None, *, metrics: bool = True
) -> tuple[ArrayDataModule, ClassifierModule]:
    """Everything a run needs, every input checked, before any training starts. `loaded`: data
    already loaded by runs built before this one (a seeds group), by their data config; `metrics`
    False: a module without its own metrics (a seeds group computes its members')."""
    plan = plan or plan_run(cfg)
    stepping = plan.stepping
    seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule: ArrayDataModule = instantiate_checked(cfg.data, "data", steps_per_call=stepping.steps_per_call,
                                                      seed=cfg.seed)  # fmt: skip
    if loaded is not None:
        data = OmegaConf.to_container(cfg.data, resolve=True)
        key = json.dumps({k: v for k, v in data.items() if k != "split_seed"}, sort_keys=True, default=str)
        datamodule.preloaded, datamodule.keep_loaded = loaded.get(key), True
    datamodule.setup()
    if loaded is not None:
        loaded.setdefault(key, datamodule.preloaded)
    require(cfg.threshold != "auto" or datamodule.task != "multiclass", "threshold", cfg.threshold,
            "multi-class heads predict the argmax and take no threshold: drop threshold=auto")  # fmt: skip
    # threshold=auto trains and validates at 0.5; the tuned threshold is set before testing
    threshold = 0.5 if cfg.threshold == "auto" else cfg.threshold
    head = build_head_for(cfg.head, cfg.loss, datamodule.task, datamodule.num_classes, threshold)
    loss = build_loss(cfg.loss, head, datamodule.train_targets)
    teacher = None
    if loss.needs_teacher:
        teacher = load_teacher(cfg.teacher.ckpt_path, cfg.data, datamodule, head, cfg.model,
                               cache_outputs=cfg.teacher.get("cache_outputs", True))  # fmt: skip
    torch.manual_seed(cfg.seed)  # the initialization depends on the seed alone, whatever was built before
    net = build_net(cfg.model, datamodule.input_shape, head.num_logits)
    optimizer = checked_optimizer(cfg.optimizer, net)
    schedule = instantiate_checked(cfg.scheduler, "scheduler") if cfg.get("scheduler") else None
    if isinstance(schedule, Plateau):
        schedule.monitor, schedule.mode = validation_monitor(plan.callbacks)
    module = ClassifierModule(net, head, loss, optimizer, datamodule.task, datamodule.num_classes, teacher,
                              batch_size=datamodule.batch_size, steps_per_call=stepping.steps_per_call,
                              schedule=schedule, stepping=stepping,
                              labels=getattr(datamodule, "label_names", None) or None, metrics=metrics)  # fmt: skip
    return datamodule, module


def checked_optimizer(node: DictConfig, net: torch.nn.Module):
    """The optimizer factory, tried once on the network's parameters so that an unknown option or a
    bad value (`+optimizer.foo=1`, `+optimizer.betas=[0.9,1.5]`) is refused before training."""
    factory = instantiate_checked(node, "optimizer")
    try:
        factory(net.parameters())
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"optimizer: {str(exc).splitlines()[0]}: fix the optimizer.* overrides") from None
    return factory


def checked_checkpoint(
    cfg: DictConfig,
    module: ClassifierModule,
    config: dict[str, Any],
    found: Path | None = None,
    inputs: dict | None = None,
) -> dict | None:
    """`ckpt_path` found (`last`, a run folder or a file; or `found` by the run folder's plan), read
    safely (checksum verified) and matched against the module this config builds, or None;
    `train=false` needs one. A resume must continue the checkpoint's run exactly: its config
    (`check_resume`), its schedule's length and, given `inputs`, its data and teacher (`check_inputs`).
    `config`: this run's `resolved(cfg)`. Returns where the run starts from: {"checkpoint", "epochs", "step"}."""
    if cfg.get("ckpt_path") is None and found is None:
        require(cfg.train, "ckpt_path", None,
                "train=false evaluates a checkpoint: give ckpt_path=RUN/checkpoints/last.ckpt")  # fmt: skip
        return None
    path = found or resolve_checkpoint("ckpt_path", cfg.ckpt_path, Path(cfg.paths.output_dir))
    checkpoint = read_checkpoint("ckpt_path", path)
    theirs = {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items()}
    ours = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    require(ours == theirs, "ckpt_path", str(path),
            "it was saved by a run with another model, head, loss or dataset: give that run's overrides")  # fmt: skip
    if not cfg.train:  # weights that blew up give no result: refused before anything is written
        blown = [k for k, v in checkpoint["state_dict"].items() if v.is_floating_point() and not v.isfinite().all()]
        require(not blown, "ckpt_path", str(path),
                f"its weights are not finite (NaN or inf in {blown[0] if blown else ''}), so its run diverged; "
                "evaluate a checkpoint from before it did (e.g. its run's best-epochNNN.ckpt)")  # fmt: skip
    if cfg.train:
        check_resume(str(path), checkpoint, config)
        check_schedule_length(str(path), checkpoint, config, module.schedule)
        if inputs is not None:
            check_inputs(str(path), checkpoint, inputs)
    return resumed_from(str(path), checkpoint)
