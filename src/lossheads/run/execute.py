"""One run: check the config, build data -> head -> loss -> net -> module, fit, test, write metrics.json."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from lossheads.config.validators import EXIT_BAD_INPUT, ConfigError
from lossheads.data import ArrayDataModule
from lossheads.run.atomic import StorageError, require_writable
from lossheads.run.build import build, build_trainer, checked_checkpoint, plan_run
from lossheads.run.console import print_results, quiet_lightning, show_config
from lossheads.run.distill import run_distillation
from lossheads.run.folder import RefusedFolder, claim, owns_training_record, resumes_in_place, settle_hydra_files
from lossheads.run.guards import keep_hydra_files, restore_hydra_files
from lossheads.run.lock import FolderBusy, FolderLock, acquire, held_in
from lossheads.run.loggers import register_resolvers
from lossheads.run.outcomes import in_sweep, record_status, record_stop
from lossheads.run.records import Trained, logged, save_config, test_and_record, write_metrics
from lossheads.run.resume import run_inputs
from lossheads.run.sealed import write_sealed
from lossheads.run.splits import write_split
from lossheads.run.stops import (
    EXIT_SIGTERM,
    StopSignals,
    caught,
    deferred_stops,
    in_worker,
    park,
    prepare_worker,
    sweep_stopping,
)
from lossheads.training.callbacks import LastCheckpoint
from lossheads.training.module import Diverged
from lossheads.training.selection import weights_to_test

EXIT_DIVERGED = 1


def run(cfg: DictConfig, continue_own: bool = False) -> dict[str, Any]:
    """Train (or, with train=false, only evaluate `ckpt_path`), test and record one configuration;
    returns what metrics.json holds. Under DDP only rank 0 writes. `continue_own` (a sweep job or a
    recipe step run again): a finished run in the folder is returned as it is, a stopped one resumed."""
    output_dir = Path(cfg.paths.output_dir)
    plan = plan_run(cfg)
    found = None
    if cfg.train and rank_zero_only.rank == 0 and not resumes_in_place(cfg, output_dir):
        # before the data and the Trainer: a finished job of a sweep run again loads, builds and logs nothing
        with kept_if_refused(cfg, output_dir):  # e.g. its run's checkpoint unreadable
            folder = claim(output_dir, plan.config, continue_own=continue_own)
        if folder.action == "done":
            settle_hydra_files(output_dir, folder.record or {}, plan.config)  # Hydra wrote this job's over the run's
            return folder.record  # type: ignore[return-value]
        found = folder.checkpoint
    datamodule, module = build(cfg, plan)
    inputs = run_inputs(datamodule.split_record, getattr(module.teacher, "checksum", None))
    trainer = build_trainer(cfg, plan, inputs)  # Lightning checks its arguments before anything is written
    with kept_if_refused(cfg, output_dir):  # e.g. fewer epochs than the run trained, or other data
        start = checked_checkpoint(cfg, module, plan.config, found, inputs)
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
        ckpt_path = weights_to_test(cfg, trainer.callbacks)  # None: the weights training ended with
    trained = Trained(trainer.current_epoch, trainer.global_step, start) if cfg.train else None
    return test_and_record(cfg, trainer, module, datamodule, metrics, ckpt_path, trained, beside, config=plan.config)


@contextlib.contextmanager
def kept_if_refused(cfg: DictConfig, output_dir: Path) -> Iterator[None]:
    """A training command refused over the run its folder holds (a checkpoint it cannot read, fewer
    epochs than the run trained) is a `RefusedFolder`: the run keeps its record, with no failure.json
    beside it, and its `.hydra/`. Only before the command writes anything: the folder's is the run's."""
    try:
        yield
    except RefusedFolder:
        raise
    except ConfigError as error:
        if cfg.train and owns_training_record(output_dir):
            raise RefusedFolder(str(error)) from None
        raise


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
        write_sealed(output_dir / "preprocessing.json", datamodule.preprocessing())  # predict verifies it
        write_split(output_dir, datamodule.split_record)


def last_val_metrics(trainer: Trainer) -> dict[str, float]:
    """A resume that had nothing left to train ran no validation: the checkpoint's own val/* numbers."""
    for callback in trainer.callbacks:
        if isinstance(callback, LastCheckpoint):
            return dict(callback.val_metrics)
    return {}


def record_diverged_job(cfg: DictConfig, error: Diverged) -> None:
    """A sweep's diverged job: its `diverged` record and its warning line; the sweep goes on."""
    record_status(cfg, "diverged", str(error), "metrics.json")
    logging.getLogger(__name__).warning("diverged job: %s", error)


def record_failed_job(cfg: DictConfig, exc: Exception) -> None:
    """A sweep's crashed job (called where it is caught): its `failed` record and its traceback in the log."""
    record_status(cfg, "failed", f"{type(exc).__name__}: {exc}")
    logging.getLogger(__name__).exception("job failed; the sweep goes on")


def main(cfg: DictConfig) -> float | None:
    """Entry point behind `python train.py`. A bad input is one line on stderr and exit code 2; a
    divergence one line and exit 1; Ctrl-C or SIGTERM saves a checkpoint, says how to resume, and
    exits 130 / 143. In a sweep a refused, failed or diverged job is recorded and the sweep goes on.
    Returns `optimized_metric` for sweepers that optimize it (Optuna)."""
    quiet_lightning()
    register_resolvers()
    sweeping = in_sweep()
    if sweeping and in_worker():
        prepare_worker()  # a stop between this worker's jobs, or its sweep's end: start no other
    with caught():
        lock = None
        try:
            with deferred_stops():  # a stop now lands after the lock is taken whole, and releases it
                lock = job_lock(cfg) if sweeping else None  # a single run's lock is taken before Hydra writes
            if lock is not None and in_worker() and sweep_stopping():  # the sweep stops: start nothing
                lock.release()
                park(EXIT_SIGTERM)
            return _main(cfg, sweeping)
        except FolderBusy as error:  # in a sweep: another process writes this job's folder
            logging.getLogger(__name__).warning("refused job: %s", error)
            return None
        except BaseException:
            if StopSignals.received is None:
                raise
            lock = lock or (held_in(Path(cfg.paths.output_dir)) if sweeping else None)  # a stop inside `job_lock`
            record_stop(cfg, then_exit=False)  # Ctrl-C or SIGTERM, in whatever form Lightning passed it on
            if lock is not None:
                lock.release()  # recorded: the sweep that passed the stop on waits for this
            if in_worker():
                park(StopSignals.exit_code())
            sys.exit(StopSignals.exit_code())
        finally:
            if lock is not None:
                lock.release()


def job_lock(cfg: DictConfig) -> FolderLock:
    """A sweep job holds its own folder (inside its sweep's lock) with its PID: a stopped sweep finds
    the processes of its running jobs this way, and no other command writes the folder meanwhile."""
    return acquire(Path(cfg.paths.output_dir), "job folder", inside_own=True)


def _main(cfg: DictConfig, sweeping: bool) -> float | None:
    try:
        if not sweeping and rank_zero_only.rank == 0:
            show_config(cfg)
        if cfg.get("distill"):
            record = run_distillation(cfg, run, continue_own=sweeping)
            write_metrics(Path(cfg.paths.output_dir) / "metrics.json", record)
        else:
            record = run(cfg, continue_own=sweeping)
    except RefusedFolder as error:  # nothing is written into a run's folder it may not write; its .hydra/ is put back
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
        if sweeping:
            record_diverged_job(cfg, error)
            return None
        record_status(cfg, "diverged", str(error), "metrics.json")
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_DIVERGED)
    except Exception as exc:  # noqa: BLE001 -- in a sweep one job's crash must not end the others
        if not sweeping:
            raise
        record_failed_job(cfg, exc)
        return None
    if not sweeping and rank_zero_only.rank == 0:
        print_results(record, cfg.paths.output_dir)
    metric = cfg.get("optimized_metric")
    return record.get(metric) if metric else None
