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
import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import configure_log
from hydra.utils import instantiate
from lightning.pytorch import Callback, Trainer
from torch import nn

from lossheads.config.validators import ConfigError
from lossheads.run.atomic import StorageError
from lossheads.run.records import Trained, logged, test_and_record
from lossheads.run.stops import StopSignals, caught
from lossheads.seeds.checkpoints import MemberBest, MembersCheckpointIO
from lossheads.seeds.data import StackedData
from lossheads.seeds.members import Member
from lossheads.seeds.module import SeedsModule
from lossheads.training.callbacks import LastCheckpoint
from lossheads.training.module import Diverged
from lossheads.training.selection import weights_to_test
from lossheads.training.stepping import trainer_arguments

log = logging.getLogger(__name__)
DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def train_group(members: list[Member], module: SeedsModule) -> list[dict[str, Any] | None]:
    """Train the members as one (`module`, from `stacked`); then record each as its own run.
    Returns each member's record (None: it diverged or failed, which its folder records)."""
    from lossheads.run.outcomes import record_status

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
        if failure is None:
            log.info("seeds %s trained; each is now tested and recorded as its own run", seeds)
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
    from lossheads.run.execute import EXIT_BAD_INPUT
    from lossheads.run.outcomes import record_status

    for member in members:
        own = f"{member.folder}{os.sep}" in str(error)
        with current_job(member), contextlib.suppress(StorageError):
            record_status(member.cfg, "failed", str(error) if own else f"its seeds group stopped: {error}")
    print(f"error: {error}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def record_stops(members: list[Member]) -> None:
    """Ctrl-C or SIGTERM: each of `members` resumable from its own folder, with its own command; exit."""
    from lossheads.run.outcomes import record_stop

    for member in members:
        with current_job(member):
            record_stop(member.cfg, then_exit=False)
    sys.exit(StopSignals.exit_code())


def record_member(member: Member, module: SeedsModule, k: int, trainer: Trainer) -> dict[str, Any] | None:
    """Member k's record once the group has trained: its test's, or its status (None then)."""
    from lossheads.run.outcomes import record_status

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
    return test_and_record(
        member.cfg, member.trainer, member.module, member.datamodule, metrics, ckpt_path, trained, config=member.config
    )


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
    from lossheads.run.console import quiet_lightning

    quiet_lightning()  # Hydra's new console handler: Lightning's info lines go to the job logs only
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
    from lossheads.run.console import quiet_lightning

    quiet_lightning()
    with caught():
        return train_group(members, module)
