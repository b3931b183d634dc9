"""Seeds of one configuration trained together as one run of work, each member leaving the run
folder its own run would leave.

A member is prepared inside its own Hydra job (its folder, config and Hydra files, as `run`
prepares a run: built and checked before anything trains; the data loaded once for the group). The
group trains as one `SeedsModule` under one Trainer, its state saved after every epoch into one group
file (`seeds.checkpoints`), from which the sweep run again resumes it after a kill. When it ends, each
member's folder gets its single-run checkpoints, and the members are tested in one pass and recorded
each as its own run (`seeds.testing`), where `ckpt_path`, `train=false`, distillation, predict and the
report read them as any run's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from lightning.pytorch import Callback, Trainer
from torch import nn

from lossheads.config.validators import ConfigError
from lossheads.run.atomic import StorageError, durable_together, storage_error
from lossheads.run.checkpoints import GROUP_FOLDER
from lossheads.run.execute import record_diverged_job
from lossheads.run.folder import fingerprint
from lossheads.run.records import Trained
from lossheads.run.resume import check_length, run_inputs
from lossheads.run.stops import StopSignals, caught
from lossheads.seeds.checkpoints import (
    GroupCheckpointIO,
    GroupLast,
    MemberBest,
    list_members,
    remove_group_file,
    resumable,
    write_member_files,
)
from lossheads.seeds.data import StackedData
from lossheads.seeds.job_logs import switch_logging
from lossheads.seeds.members import Member, current_job, is_arm
from lossheads.seeds.module import SeedsModule
from lossheads.seeds.testing import test_members
from lossheads.training.module import Diverged
from lossheads.training.selection import weights_to_test
from lossheads.training.stepping import trainer_arguments

log = logging.getLogger(__name__)
DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def described(members: list[Member]) -> str:
    """'seeds [1, 2, 3] of one configuration', or with arms: '6 runs: seeds [1, 2, 3] of 2 arms (loss=bce,
    loss=bce_logits)', the arms named by their arm overrides."""
    seeds = sorted({int(m.cfg.seed) for m in members})
    items = [[o for o in m.hydra_config.hydra.overrides.task if is_arm(o)] for m in members]
    shared = set.intersection(*(set(i) for i in items))  # the same in every arm: not what tells them apart
    arms: list[str] = []
    for own in items:
        arm = " ".join(o for o in own if o not in shared) or "(defaults)"
        if arm not in arms:
            arms.append(arm)
    if len(arms) == 1:
        return f"seeds {seeds} of one configuration"
    return f"{len(members)} runs: seeds {seeds} of {len(arms)} arms ({', '.join(arms)})"


def group_file(members: list[Member]) -> Path:
    """Where the group's checkpoint lives while it trains: in the sweep's folder, named by its members'
    folders (the sweep run again finds it there), never inside a member's folder."""
    first = members[0]
    digest = hashlib.sha256("\n".join(str(m.folder.resolve()) for m in members).encode()).hexdigest()[:16]
    return Path(str(first.hydra_config.hydra.sweep.dir)) / GROUP_FOLDER / f"group-{digest}.ckpt"


def train_group(members: list[Member], module: SeedsModule) -> list[dict[str, Any] | None]:
    """Train the members as one (`module`, from `stacked`); then test them in one pass and record
    each as its own run. Returns each member's record (None: it diverged or failed, which its
    folder records)."""
    from lossheads.run.outcomes import record_status

    first = members[0]
    stepping = first.module.stepping
    seeds = described(members)
    started = time.perf_counter()
    module.member_loggers = [list(m.loggers) for m in members]
    module.identity = [
        [
            str(m.folder.resolve()),
            fingerprint(m.config),
            json.dumps(run_inputs(m.datamodule.split_record), sort_keys=True),
        ]
        for m in members
    ]
    for member in members:  # what Lightning does for a run's loggers as its fit starts (a diverged run has them)
        try:
            for logger in member.loggers:
                logger.log_hyperparams(member.module.hparams_initial)
                logger.log_graph(member.module)
                logger.save()
        except OSError as exc:  # a full disk: as a run alone, each records it, one line, the sweep stops
            stop_for_storage(members, storage_error(member.folder, exc))
    path = group_file(members)
    list_members(path, [folder for folder, _, _ in module.identity])
    best = MemberBest(members, module)
    io_plugin = GroupCheckpointIO(path, best)
    # in a run's order (callbacks/default.yaml): its best checkpoint is taken before its last.ckpt
    callbacks: list[Callback] = [best, GroupLast(path, members, module)]
    bar = (first.cfg.get("callbacks") or {}).get("progress_bar")
    callbacks += [instantiate(bar)] if bar else []
    trainer = instantiate(first.cfg.trainer, logger=False, callbacks=callbacks, plugins=[io_plugin],
                          **trainer_arguments(first.cfg.trainer, stepping))  # fmt: skip
    data = StackedData([m.datamodule for m in members])
    StopSignals.trainer = trainer
    failure: BaseException | None = None
    with group_logging(members):
        for name, level, message in first.trainer_lines:  # in each member's log, as its run alone's Trainer logs them
            logging.getLogger(name).log(level, message)
        log.info("%s train as one vectorized model", seeds)
        if any(isinstance(m, DROPOUT) and m.p > 0 for m in first.module.net.modules()):
            log.info("dropout draws from the group's random stream: each seed's numbers are those of this "
                     "group (the same sweep gives them again), not those of its run alone")  # fmt: skip
        resume = resumable(path, module.identity)
        if resume:
            try:  # as a run alone refuses to resume to fewer epochs; the file is kept for the longer run
                afresh = f"or remove {path} to train the group afresh"
                check_length(f"the seeds group's checkpoint {path}", resume["epochs"], resume["step"],
                             first.config.get("trainer") or {}, afresh)  # fmt: skip
            except ConfigError as error:
                end_member_logs(members, module, failed=True)
                for member in members:
                    with current_job(member):
                        record_status(member.cfg, "invalid", str(error))
                log.warning("invalid job: %s", error)
                return [None] * len(members)
        fit_start = time.perf_counter()
        try:
            try:
                trainer.fit(module, datamodule=data, ckpt_path=resume and resume["checkpoint"], weights_only=True)
            except BaseException:
                io_plugin.finish_writing(raising=False)
                raise
            io_plugin.finish_writing()  # the last save's file is whole before anything reads or removes it
        except Diverged:
            pass  # every member diverged: each is recorded below
        except StorageError as error:  # a full disk: as a run alone, each records it, one line, the sweep stops
            end_member_logs(members, module, failed=True)
            if not path.is_file():  # no save was written: the members' listing would name a file that is not there
                remove_group_file(path)
            stop_for_storage(members, error)
        except BaseException as exc:
            if StopSignals.received is None and not isinstance(exc, Exception):
                raise
            if StopSignals.received is None:
                log.exception("the %s failed; the sweep goes on", seeds)
            failure = exc
        end_member_logs(members, module, failed=failure is not None)
        trained_at = time.perf_counter()
        if failure is None or StopSignals.received is not None:
            try:  # each member's last.ckpt and best file, as its run leaves them, durable before the group file goes
                with durable_together():
                    write_member_files(members, module, io_plugin)
                io_plugin.remove_checkpoint(path)  # each member's folder holds its state now, and resumes from it
            except StorageError as error:
                stop_for_storage(members, error)
            except BaseException:
                if StopSignals.received is None:
                    raise
                failure = failure or KeyboardInterrupt()
    if failure is not None and StopSignals.received is None:  # a crash: recorded for each member; the sweep goes on
        io_plugin.remove_checkpoint(path)
        for member in members:
            with current_job(member):
                record_status(member.cfg, "failed", f"{type(failure).__name__}: {failure}")
        return [None] * len(members)
    if failure is not None:
        io_plugin.remove_checkpoint(path)  # each member resumes from its own folder, with its own command
        record_stops(members)
    files_at = time.perf_counter()
    with group_logging(members):
        log.info("%s trained; each is now tested and recorded as its own run", seeds)
    records: list[dict[str, Any] | None] = [None] * len(members)
    try:
        records = record_members(members, module, trainer, data, Trained(trainer.current_epoch, trainer.global_step,
                                                                         resume))  # fmt: skip
    except StorageError as error:
        stop_for_storage([m for k, m in enumerate(members) if records[k] is None], error)
    except BaseException:
        if StopSignals.received is None:
            raise
        record_stops(members)  # none of them has its record yet: each resumes from its own last.ckpt
    io_plugin.remove_checkpoint(path)
    with group_logging(members):
        log.info("%s: set up in %.2f s, trained in %.2f s (%.2f s of it saving the group), member checkpoints "
                 "written in %.2f s, tested and recorded in %.2f s", seeds, fit_start - started,
                 trained_at - fit_start, io_plugin.seconds, files_at - trained_at,
                 time.perf_counter() - files_at)  # fmt: skip
    return records


def record_members(
    members: list[Member], module: SeedsModule, trainer: Trainer, data: StackedData, trained: Trained
) -> list[dict[str, Any] | None]:
    """Each healthy member tested (all in one pass) and recorded; a diverged one, or one whose test is
    refused (e.g. test_on=best without a best checkpoint), gets its status record, as its run would."""
    from lossheads.run.outcomes import record_status

    tested: dict[int, str | None] = {}
    for k, member in enumerate(members):
        if k in module.diverged:  # its record and its line, as its run alone's job in a sweep
            with current_job(member):
                record_diverged_job(member.cfg, Diverged(module.diverged[k]))
            continue
        try:
            tested[k] = weights_to_test(member.cfg, member.callbacks)
        except ConfigError as error:
            with current_job(member):
                record_status(member.cfg, "invalid", str(error))
                log.warning("invalid job: %s", error)
    found = test_members(members, module, trainer, data, trained, tested) if tested else {}
    return [found.get(k) for k in range(len(members))]


def end_member_logs(members: list[Member], module: SeedsModule, failed: bool) -> None:
    """What Lightning does to a run's loggers when its fit ends: `finalize` (CSV rows written, MLflow's
    run ended), "failed" for a stopped, crashed or diverged run. A member's test opens them again."""
    for k, member in enumerate(members):
        for logger in member.loggers:
            logger.finalize("failed" if failed or k in module.diverged else "success")


def stop_for_storage(members: list[Member], error: StorageError) -> None:
    """A file of the group could not be written: what `train.main` does for a run alone (each member
    its `failed` record, if the disk takes it; the error in one line; exit 2, which ends the sweep)."""
    from lossheads.config.validators import EXIT_BAD_INPUT
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


@contextlib.contextmanager
def group_logging(members: list[Member]) -> Iterator[None]:
    """Each member's job log (Hydra's `<job name>.log` in its folder) gets the group's training lines,
    as its own job's log gets its run's: Hydra's logging for the last member (console and its file),
    and for each of the others a handler on the files its job's logging opened (`Member.log_files`)."""
    root = logging.getLogger()
    last = members[-1].hydra_config.hydra
    switch_logging(members[-1].job_logging, last.job_logging, last.verbose)
    copies: list[logging.Handler] = []
    for member in members[:-1]:
        for path, encoding, formatter, level in member.log_files:
            copy = logging.FileHandler(path, encoding=encoding)
            copy.setFormatter(formatter)
            copy.setLevel(level)
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
            with contextlib.suppress(OSError):  # a full disk: said in one line where a run's file failed
                handler.close()


def run_members(members: list[Member], module: SeedsModule) -> list[dict[str, Any] | None]:
    """`train_group` with the run's own stop handling (SIGINT / SIGTERM recorded for every member)."""
    from lossheads.run.console import quiet_lightning

    quiet_lightning()
    with caught():
        return train_group(members, module)
