"""Build one run from its config, every input checked before anything trains: data -> head -> loss ->
net -> module, and the Trainer with the run's callbacks, loggers and checkpoint writer."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Trainer, seed_everything
from omegaconf import DictConfig

from lossheads.config.check import check_config
from lossheads.config.pairing import build_head_for, build_loss
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
from lossheads.training.stepping import plan_stepping, trainer_arguments


def build_trainer(cfg: DictConfig, inputs: dict | None = None) -> Trainer:
    """The Trainer; `inputs` (`resume.run_inputs`): what the run trains on, kept in its checkpoints."""
    logger = build_loggers(cfg)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    stopper = early_stopping(cfg, callbacks)
    callbacks += [stopper] if stopper else []
    counts = trainer_arguments(cfg.trainer, plan_stepping(cfg))  # batches counted in optimizer steps
    io_plugin = RunCheckpointIO(resolved(cfg), inputs)  # atomic writes, the run's config and a checksum in each
    try:
        return instantiate(cfg.trainer, logger=logger, callbacks=callbacks, plugins=[io_plugin], **counts)
    except (InstantiationException, MisconfigurationException, ValueError) as exc:
        reason = str(exc.__cause__ or exc).splitlines()[0].rstrip(".")
        at = {k: reason.lower().find(k.lower()) for k in cfg.trainer if k != "_target_"}
        named = sorted((k for k in at if at[k] >= 0), key=at.get)  # the key Lightning names first
        key = f"trainer.{named[0]}={cfg.trainer[named[0]]!r}" if named else "trainer"
        raise ConfigError(f"{key} is not valid: Lightning says {reason}") from exc


def build(cfg: DictConfig) -> tuple[ArrayDataModule, ClassifierModule]:
    """Everything a run needs, every input checked, before any training starts."""
    check_config(cfg)
    seed_everything(cfg.seed, workers=True, verbose=False)
    stepping = plan_stepping(cfg)
    datamodule: ArrayDataModule = instantiate_checked(cfg.data, steps_per_call=stepping.steps_per_call,
                                                      seed=cfg.seed)  # fmt: skip
    datamodule.setup()
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
    schedule = instantiate_checked(cfg.scheduler) if cfg.get("scheduler") else None
    if isinstance(schedule, Plateau):
        callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
        schedule.monitor, schedule.mode = validation_monitor(callbacks)
    module = ClassifierModule(net, head, loss, optimizer, datamodule.task, datamodule.num_classes, teacher,
                              batch_size=datamodule.batch_size, steps_per_call=stepping.steps_per_call,
                              schedule=schedule, stepping=stepping,
                              labels=getattr(datamodule, "label_names", None) or None)  # fmt: skip
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
    cfg: DictConfig, module: ClassifierModule, found: Path | None = None, inputs: dict | None = None
) -> dict | None:
    """`ckpt_path` found (`last`, a run folder or a file; or `found` by the run folder's plan), read
    safely (checksum verified) and matched against the module this config builds, or None;
    `train=false` needs one. A resume must continue the checkpoint's run exactly: its config
    (`check_resume`), its schedule's length and, given `inputs`, its data and teacher (`check_inputs`).
    Returns where the run starts from: {"checkpoint", "epochs", "step"}."""
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
    if cfg.train:
        check_resume(str(path), checkpoint, resolved(cfg))
        check_schedule_length(str(path), checkpoint, resolved(cfg), module.schedule)
        if inputs is not None:
            check_inputs(str(path), checkpoint, inputs)
    return resumed_from(str(path), checkpoint)
