"""One run: check the config, build data -> head -> loss -> net -> module, fit, test, write metrics.json."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from lossheads.atomic import StorageError, require_writable
from lossheads.callbacks import Interrupted, LastCheckpoint
from lossheads.check import ConfigError, check_config, instantiate_checked, require
from lossheads.checkpoints import RunCheckpointIO, newest_checkpoint, read_checkpoint, resolve_checkpoint
from lossheads.console import print_results, quiet_lightning, show_config
from lossheads.data import ArrayDataModule
from lossheads.distill import load_teacher, run_distillation
from lossheads.loggers import build_loggers
from lossheads.models import build_net
from lossheads.module import ClassifierModule, Diverged
from lossheads.optim import Plateau
from lossheads.pairing import build_head_for, build_loss
from lossheads.records import Trained, logged, save_config, test_and_record, write_metrics
from lossheads.resume import check_resume, resolved, resumed_from
from lossheads.run_folder import (
    ForeignFolder,
    claim,
    fingerprint,
    keep_hydra_files,
    owns_training_record,
    read_record,
    restore_hydra_files,
)
from lossheads.selection import early_stopping, validation_monitor, weights_to_test
from lossheads.splits import write_split
from lossheads.stepping import plan_stepping, trainer_arguments
from lossheads.stops import StopSignals, caught, resume_command

EXIT_DIVERGED = 1
EXIT_BAD_INPUT = 2


def build_trainer(cfg: DictConfig) -> Trainer:
    logger = build_loggers(cfg)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    stopper = early_stopping(cfg, callbacks)
    callbacks += [stopper] if stopper else []
    counts = trainer_arguments(cfg.trainer, plan_stepping(cfg))  # batches counted in optimizer steps
    io_plugin = RunCheckpointIO(resolved(cfg))  # atomic writes, the run's config and a checksum in each
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


def checked_checkpoint(cfg: DictConfig, module: ClassifierModule, found: Path | None = None) -> dict | None:
    """`ckpt_path` found (`last`, a run folder or a file; or `found` by the run folder's plan), read
    safely (checksum verified) and matched against the module this config builds, or None;
    `train=false` needs one. A resume must continue the checkpoint's run exactly (`check_resume`).
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
    return resumed_from(str(path), checkpoint)


def run(cfg: DictConfig, continue_own: bool = False) -> dict[str, Any]:
    """Train (or, with train=false, only evaluate `ckpt_path`), test and record one configuration;
    returns what metrics.json holds. Under DDP only rank 0 writes. `continue_own` (a sweep job or a
    recipe step run again): a finished run in the folder is returned as it is, a stopped one resumed."""
    output_dir = Path(cfg.paths.output_dir)
    datamodule, module = build(cfg)
    trainer = build_trainer(cfg)  # Lightning checks its arguments before anything is written
    config = resolved(cfg)
    found = None
    if cfg.train and rank_zero_only.rank == 0 and not resumes_in_place(cfg, output_dir):
        plan = claim(output_dir, config, continue_own=continue_own)
        if plan.action == "done":
            return plan.record  # type: ignore[return-value]
        found = plan.checkpoint
    start = checked_checkpoint(cfg, module, found)
    ckpt_path = start and start["checkpoint"]
    beside = not cfg.train and owns_training_record(output_dir)  # an evaluation in a run's folder
    if rank_zero_only.rank == 0:
        write_run_files(cfg, datamodule, beside)
    StopSignals.trainer = trainer
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
    metrics: dict[str, float] = {}
    if cfg.train:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        if trainer.global_step == 0:
            raise ConfigError("the run took no optimizer step (trainer.max_steps, trainer.limit_train_batches or "
                              "the data leave no training batch): its numbers would be the random "
                              "initialization's; give training something to do")  # fmt: skip
        metrics = logged(trainer, "val/") or last_val_metrics(trainer)
        ckpt_path = weights_to_test(cfg, trainer)  # None: the weights training ended with
    trained = Trained(trainer.current_epoch, trainer.global_step, start) if cfg.train else None
    return test_and_record(cfg, trainer, module, datamodule, metrics, ckpt_path, trained, beside)


def write_run_files(cfg: DictConfig, datamodule: ArrayDataModule, beside: bool) -> None:
    """What a run's folder holds before training: its config (and Hydra's files, kept as the owner's),
    preprocessing.json (what predict.py needs to read new data) and split.json; `beside`: an
    evaluation in another run's folder, which keeps that run's files."""
    output_dir = Path(cfg.paths.output_dir)
    require_writable(output_dir / "checkpoints" if cfg.train else output_dir)
    save_config(cfg, output_dir)
    if cfg.train:
        keep_hydra_files(output_dir)
    if not beside:
        write_metrics(output_dir / "preprocessing.json", datamodule.preprocessing())
        write_split(output_dir, datamodule.split_record)


def resumes_in_place(cfg: DictConfig, output_dir: Path) -> bool:
    """`ckpt_path` points into this run's own folder: the resume check, not the folder's owner check, applies."""
    value = cfg.get("ckpt_path")
    if value is None:
        return False
    return value == "last" or output_dir.resolve() in Path(str(value)).resolve().parents


def last_val_metrics(trainer: Trainer) -> dict[str, float]:
    """A resume that had nothing left to train ran no validation: the checkpoint's own val/* numbers."""
    for callback in trainer.callbacks:
        if isinstance(callback, LastCheckpoint):
            return dict(callback.val_metrics)
    return {}


def in_sweep() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:  # no Hydra run: a test or a script calling main
        return False


def record_status(cfg: DictConfig, status: str, reason: str, filename: str = "failure.json", **extra: Any) -> None:
    """A job that was refused or failed leaves failure.json, and one that diverged or was interrupted
    a metrics.json marked with its status (never one that looks like a result), so that the report
    lists it with its reason and the sweep goes on. Under DDP rank 0 writes it."""
    if rank_zero_only.rank != 0:
        return
    output_dir = Path(cfg.paths.output_dir)
    record = {"status": status, "reason": reason, "seed": cfg.get("seed"), **extra}
    with contextlib.suppress(Exception):  # a config that does not even resolve has no fingerprint
        record.setdefault("fingerprint", fingerprint(resolved(cfg)))  # whose record: a rerun knows its own
    write_metrics(output_dir / filename, record)


def record_stop(cfg: DictConfig, then_exit: bool = True) -> None:
    """Ctrl-C or SIGTERM, in whatever phase: metrics.json with the status, where to resume from and
    how, one line on stderr, exit 130 / 143 (`then_exit`; a seeds group records all its members first)."""
    output_dir = Path(cfg.paths.output_dir)
    phase = StopSignals.phase
    if cfg.get("distill"):
        checkpoints = [p for p in output_dir.glob("*/checkpoints/*.ckpt")]
        checkpoint = str(max(checkpoints, key=lambda p: p.stat().st_mtime)) if checkpoints else None
        has_checkpoint = True  # ckpt_path=last continues the recipe: finished steps kept, the rest resumed
    else:
        try:
            newest = newest_checkpoint(output_dir / "checkpoints")
        except ConfigError:  # a damaged file there: say so in the record rather than fail to record
            newest = None
        checkpoint, has_checkpoint = (str(newest) if newest else None), newest is not None
    try:
        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:  # no Hydra run
        overrides = []
    stop = Interrupted(StopSignals.name(), checkpoint, phase)
    resume = resume_command(overrides, str(output_dir), has_checkpoint)
    owner = (read_record(output_dir) or {}).get("fingerprint")
    try:
        if owner is None or owner == fingerprint(resolved(cfg)):  # never over another run's record
            record_status(cfg, "interrupted", f"{stop}: resume with {resume}", "metrics.json",
                          checkpoint=checkpoint, resume=resume, phase=phase)  # fmt: skip
    except StorageError as error:
        print(f"error: {error}", file=sys.stderr)
    saved = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint (training had not started)"
    print(f"interrupted by {stop}; {saved}; resume with: {resume}", file=sys.stderr)
    if then_exit:
        sys.exit(StopSignals.exit_code())


def main(cfg: DictConfig) -> float | None:
    """Entry point behind `python train.py`. A bad input is one line on stderr and exit code 2; a
    divergence one line and exit 1; Ctrl-C or SIGTERM saves a checkpoint, says how to resume, and
    exits 130 / 143. In a sweep a refused, failed or diverged job is recorded and the sweep goes on.
    Returns `optimized_metric` for sweepers that optimize it (Optuna)."""
    quiet_lightning()
    with caught():
        try:
            return _main(cfg, in_sweep())
        except BaseException:
            if StopSignals.received is None:
                raise
            record_stop(cfg)  # Ctrl-C or SIGTERM, in whatever form Lightning passed it on (SystemExit for Ctrl-C)
            raise


def _main(cfg: DictConfig, sweeping: bool) -> float | None:
    try:
        if not sweeping and rank_zero_only.rank == 0:
            show_config(cfg)
        if cfg.get("distill"):
            record = run_distillation(cfg, run)
            write_metrics(Path(cfg.paths.output_dir) / "metrics.json", record)
        else:
            record = run(cfg, continue_own=sweeping)
    except ForeignFolder as error:  # nothing is written into another run's folder; its .hydra/ is put back
        restore_hydra_files(Path(cfg.paths.output_dir))
        if sweeping:
            logging.getLogger(__name__).warning("refused job: %s", error)
            return None
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except StorageError as error:
        with contextlib.suppress(StorageError):  # the disk takes nothing more: the line on stderr is the record
            record_status(cfg, "failed", str(error))
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except ConfigError as error:
        if sweeping:
            record_status(cfg, "invalid", str(error))
            logging.getLogger(__name__).warning("invalid job: %s", error)
            return None
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except Diverged as error:
        record_status(cfg, "diverged", str(error), "metrics.json")
        if sweeping:
            logging.getLogger(__name__).warning("diverged job: %s", error)
            return None
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_DIVERGED)
    except Exception as exc:  # noqa: BLE001 -- in a sweep one job's crash must not end the others
        if not sweeping:
            raise
        record_status(cfg, "failed", f"{type(exc).__name__}: {exc}")
        logging.getLogger(__name__).exception("job failed; the sweep goes on")
        return None
    if not sweeping and rank_zero_only.rank == 0:
        print_results(record, cfg.paths.output_dir)
    metric = cfg.get("optimized_metric")
    return record.get(metric) if metric else None
