"""`hydra/launcher=seeds`: a sweep's jobs that share a network shape train as one vectorized model.

Hydra finds launchers only in the `hydra_plugins` namespace package, hence this module; the work is
in `lossheads.seeds`, the config copies in `shared_configs`, the members' Hydra jobs in
`prepared_jobs`. Jobs are prepared together by their overrides without `seed=...` and the arm keys
(loss, threshold, head: `launch_key`), then stacked by what their built runs share
(`lossheads.seeds.members.partition`); each job still gets its own folder, Hydra files and number,
as under the basic launcher. A job that cannot join a group
(`lossheads.seeds.members.why_not_vectorized` says why, in the log) or is alone in its group runs
through the task function itself, one after another, as the basic launcher runs every job. On a CPU
the units of jobs prepared together are shared among forked worker processes, one per core
(`hydra.launcher.workers`, `lossheads.seeds.workers`).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, env_override, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from hydra_plugins.lossheads_seeds.prepared_jobs import run_prepared_job
from hydra_plugins.lossheads_seeds.shared_configs import SeedSharingConfigLoader, group_key
from lossheads.seeds.job_logs import JobLogging
from lossheads.seeds.workers import worker_count

log = logging.getLogger(__name__)
Job = tuple[int, Sequence[str]]  # a job's number and overrides


def launch_key(overrides: Sequence[str]) -> tuple[str, ...]:
    """A job's overrides without its seed and arm keys (loss, threshold, head and their options): the
    jobs that are prepared together and may train as one stack (`lossheads.seeds.members.partition`
    decides which do)."""
    from lossheads.seeds.members import is_arm

    return tuple(o for o in group_key(overrides) if not is_arm(o))


def trains_on_cpu(config: DictConfig) -> bool:
    """Whether the sweep's jobs train on the CPU (`trainer.accelerator` cpu, or auto on a machine
    without CUDA or MPS): only there are the groups shared among forked workers by default."""
    accelerator = str(OmegaConf.select(config, "trainer.accelerator", default="auto"))
    if accelerator != "auto":
        return accelerator == "cpu"
    import torch

    mps = getattr(torch.backends, "mps", None)
    return not torch.cuda.is_available() and not (mps is not None and mps.is_available())


def apart_by_head(jobs: list[Job], heads: Callable[[Sequence[str]], tuple[str | None, ...] | None]) -> list[list[Job]]:
    """`jobs` (of one launch key) in parts that cannot stack together whatever the data's task: two
    jobs whose heads (`heads(overrides)`) differ on every task never share a stack (`members.stack_key`),
    so preparing them apart changes no group. Jobs whose heads agree on some task, or are not known,
    stay in one part. A dataset's sigmoid arms and its softmax arms become two units, which the
    workers take one at a time (one unit per dataset would leave a worker idle while another trains)."""
    parts: list[tuple[list[tuple[str | None, ...] | None], list[Job]]] = []
    for job in jobs:
        own = heads(job[1])
        joined = [p for p in parts if own is None or any(h is None or _share_a_head(own, h) for h in p[0])]
        merged: tuple[list[Any], list[Job]] = ([own], [job])
        for part in joined:  # the job joins every part it may stack with, and so those parts join too
            merged[0].extend(part[0])
            merged[1].extend(part[1])
            parts.remove(part)
        parts.append(merged)
    return [sorted(part[1]) for part in sorted(parts, key=lambda p: min(p[1]))]


def _share_a_head(ours: tuple[str | None, ...], theirs: tuple[str | None, ...]) -> bool:
    return any(a is not None and a == b for a, b in zip(ours, theirs, strict=True))


def sent_back(returns: dict[int, JobReturn]) -> dict[int, JobReturn]:
    """A worker's JobReturns as the sweep process gets them: without `hydra_cfg`, the job's Hydra config,
    which the sweepers do not read (they read `return_value`, `status` and `overrides`) and which is
    three quarters of the bytes; the Hydra callbacks' `on_job_end` had it in the worker."""
    for result in returns.values():
        result.hydra_cfg = None
    return returns


class SeedsLauncher(Launcher):
    def __init__(self, max_members: int = 64, workers: Any = "auto") -> None:
        self.max_members = max_members
        self.workers = workers
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self._sweep_log: JobLogging | None = None  # the sweep's logging as it was set up, to put back after each job

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        if not isinstance(hydra_context.config_loader, SeedSharingConfigLoader):
            hydra_context.config_loader = SeedSharingConfigLoader(hydra_context.config_loader)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from lossheads.config.validators import EXIT_BAD_INPUT, ConfigError, is_int, require

        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        try:
            require(is_int(self.max_members) and self.max_members >= 2, "hydra.launcher.max_members", self.max_members,
                    "use a whole number >= 2: the most jobs prepared, and so stacked, at once")  # fmt: skip
            require(self.workers == "auto" or (is_int(self.workers) and self.workers >= 1), "hydra.launcher.workers",
                    self.workers, "use auto (one process per CPU core on a CPU) or a whole number >= 1")  # fmt: skip
            require(self.workers in ("auto", 1) or hasattr(os, "fork"), "hydra.launcher.workers", self.workers,
                    "use 1 or auto: worker processes are forked, and this system has no fork")  # fmt: skip
        except ConfigError as error:  # the entry point's one line, before any job starts
            print(f"error: {error}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        setup_globals()
        self._sweep_logging(afresh=True)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        on_cpu = trains_on_cpu(self.config)
        parallel = worker_count(self.workers, len(job_overrides), on_cpu) > 1
        groups: dict[tuple[str, ...], list[Job]] = {}
        for i, overrides in enumerate(job_overrides):
            groups.setdefault(launch_key(overrides), []).append((initial_job_idx + i, overrides))
        if parallel:  # more, smaller units, which the workers share more evenly
            groups = {(*key, str(n)): part for key, jobs in groups.items()
                      for n, part in enumerate(apart_by_head(jobs, self._heads))}  # fmt: skip
        units = [(jobs[start : start + self.max_members], len(jobs))
                 for jobs in groups.values() for start in range(0, len(jobs), self.max_members)]  # fmt: skip
        workers = worker_count(self.workers, len(units), on_cpu)
        in_workers = f", in {workers} worker processes (hydra.launcher.workers={self.workers})" if workers > 1 else ""
        log.info(f"Launching {len(job_overrides)} jobs, those of one network shape together (hydra/launcher=seeds)"
                 f"{in_workers}")  # fmt: skip
        if workers > 1:
            returns = self._launch_in_workers(units, workers)
        else:
            returns = {}
            for jobs, of in units:
                returns.update(self._launch_group(jobs, of))
        loader = self.hydra_context.config_loader
        if isinstance(loader, SeedSharingConfigLoader):
            log.info(f"job configs: {loader.composed} composed, {loader.copied} copied from a composed one")
        return [returns[initial_job_idx + i] for i in range(len(job_overrides))]

    def _launch_in_workers(self, units: list[tuple[list[Job], int]], workers: int) -> dict[int, JobReturn]:
        """The launch units dealt to forked worker processes (`lossheads.seeds.workers`); the sweep ends
        as the first worker that did not finish ended (its line said why), after all have ended."""
        import lossheads.seeds.group  # noqa: F401 -- imported once here, not once in each worker
        from lossheads.seeds.workers import run_in_workers

        loader = self.hydra_context.config_loader if self.hydra_context else None
        shared = isinstance(loader, SeedSharingConfigLoader)

        def counts() -> tuple[int, int]:  # the job configs a worker composed and copied
            return (loader.composed, loader.copied) if shared else (0, 0)  # type: ignore[union-attr]

        before = counts()
        outcome = run_in_workers(units, [len(jobs) for jobs, _ in units], workers,
                                 lambda unit: sent_back(self._launch_group(*unit)), counts,
                                 meanwhile=self._before_report,
                                 tail=lambda running: self._draw_ahead([units[i][0] for i in running]))  # fmt: skip
        if shared:  # the workers' own, added to this process's count
            loader.composed += sum(c[0] - before[0] for c in outcome.summaries)  # type: ignore[union-attr]
            loader.copied += sum(c[1] - before[1] for c in outcome.summaries)  # type: ignore[union-attr]
        if outcome.stop is not None:
            from lossheads.run.stops import NAMES, exit_code_of

            if not outcome.killed:  # else the second stop's line said what happened
                print(f"interrupted by {NAMES[outcome.stop]}: the workers recorded their running jobs as "
                      "interrupted; run the same command again to continue the sweep (finished jobs are kept)",
                      file=sys.stderr)  # fmt: skip
            sys.exit(exit_code_of(outcome.stop))
        if outcome.exit_code:
            sys.exit(outcome.exit_code)
        return outcome.returns

    def _before_report(self) -> None:
        """While the workers train, this process imports what the sweep's report will draw with."""
        callbacks = OmegaConf.select(self.config, "hydra.callbacks", default=None) or {}
        if any(str(c.get("_target_", "")).startswith("lossheads.report") for c in callbacks.values()):
            from lossheads.report.plots import warm_up

            warm_up()

    def _draw_ahead(self, running: list[list[Job]]) -> None:
        """A worker is out of units: the report's figures of the datasets whose jobs have all ended are
        drawn meanwhile (`lossheads.report.drawing`), where each job's folder is its number."""
        from lossheads.report.drawing import draw_ahead
        from lossheads.report.sweeps import numbered_folders

        assert self.config is not None
        if not numbered_folders(OmegaConf.to_container(self.config.hydra, resolve=False)):  # type: ignore[arg-type]
            return

        draw_ahead(Path(str(self.config.hydra.sweep.dir)), {str(idx) for jobs in running for idx, _ in jobs})

    def _heads(self, overrides: Sequence[str]) -> tuple[str | None, ...] | None:
        """The head the job's composed config resolves to on each kind of task (None: not known)."""
        from lossheads.config.pairing import head_on_each_task, loss_name

        loader = self.hydra_context.config_loader if self.hydra_context else None
        if not isinstance(loader, SeedSharingConfigLoader) or self.config is None:
            return None
        head, name, target = (loader.composed_value(self.config, list(overrides), key)
                              for key in ("head.name", "loss.name", "loss._target_"))  # fmt: skip
        if head is None or (name is None and target is None):
            return None
        return head_on_each_task(str(head), loss_name({"name": name, "_target_": target}))

    def _sweep_config(self, idx: int, overrides: Sequence[str]) -> DictConfig:
        assert self.config is not None and self.hydra_context is not None
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(config):
            config.hydra.job.id = idx
            config.hydra.job.num = idx
        return config

    def _run(self, config: DictConfig, task: Any) -> JobReturn:
        """One job, as Hydra's basic launcher runs it: its logging is the job's while it runs, the
        sweep's again after (so a job's log file holds its own lines only)."""
        try:
            return run_job(hydra_context=self.hydra_context, task_function=task, config=config,
                           job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")  # fmt: skip
        finally:
            self._sweep_logging(afresh=True)  # run_job set up the job's logging, which a switch may not undo

    def _job_callbacks(self, member: Any, config: DictConfig, result: JobReturn | None = None) -> None:
        """The Hydra callbacks' `on_job_start` (no `result`: as the group starts) or `on_job_end` for a
        member's job, as `run_job` calls them: its Hydra config current, its `env_set` in the
        environment for the start."""
        assert self.hydra_context is not None and self.task_function is not None
        hydra, before = HydraConfig.instance(), HydraConfig.instance().cfg
        hydra.cfg = member.hydra_config
        try:
            if result is None:
                with env_override(member.hydra_config.hydra.job.env_set):
                    self.hydra_context.callbacks.on_job_start(config=config, task_function=self.task_function)
            else:  # after the job's environment is put back, as run_job calls it
                self.hydra_context.callbacks.on_job_end(config=config, job_return=result)
        finally:
            hydra.cfg = before

    def _sweep_logging(self, *, afresh: bool = False) -> None:
        """The sweep's own logging (Hydra's `hydra_logging`): set up as the launch starts, put back after
        each job (`JobLogging`)."""
        assert self.config is not None
        if afresh or self._sweep_log is None:
            self._sweep_log = JobLogging.set_up(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        else:
            self._sweep_log.use()

    def _launch_group(self, jobs: list[tuple[int, Sequence[str]]], of: int) -> dict[int, JobReturn]:
        """Ctrl-C or SIGTERM while the group is prepared: the job being prepared records it, as its
        own run would (jobs after it have no folder yet under the basic launcher; here those
        prepared have their config files, and the sweep run again starts them afresh); while it
        trains or is tested, `train_group` records it for every member."""
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        from lossheads.run.stops import StopSignals, caught

        with caught():
            try:
                return self._launch_prepared(jobs, of)
            except (KeyboardInterrupt, SIGTERMException):
                if StopSignals.received is None:
                    raise
                print(StopSignals.between_seeds_jobs(), file=sys.stderr)
                sys.exit(StopSignals.exit_code())

    def _launch_prepared(self, jobs: list[tuple[int, Sequence[str]]], of: int) -> dict[int, JobReturn]:
        """`jobs`: a group of the `of` jobs of one configuration (more: hydra.launcher.max_members split them)."""
        from lossheads.config.validators import EXIT_BAD_INPUT
        from lossheads.run.atomic import StorageError
        from lossheads.run.guards import unusable_job_folder
        from lossheads.run.stops import StopSignals
        from lossheads.seeds.group import run_members
        from lossheads.seeds.members import Finished, Member, Stopped, differences, failure, partition, prepare, stacked

        started = time.perf_counter()
        prepared: list[tuple[int, DictConfig, JobReturn, Any]] = []
        folders: dict[Path, int] = {}  # the run folders of the jobs prepared so far
        loaded: dict[str, Any] = {}  # the data they loaded, by data config: loaded once for the group
        for (idx, overrides), config in zip(jobs, [self._sweep_config(*job) for job in jobs], strict=True):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            try:
                task = functools.partial(prepare, folders=folders, loaded=loaded)
                result = run_prepared_job(self.hydra_context, task, config)
            except StorageError as error:  # its `.hydra/` files: one line and exit 2, as its run alone stops
                self._sweep_logging()
                print(f"error: {error}", file=sys.stderr)
                sys.exit(EXIT_BAD_INPUT)
            except (FileExistsError, NotADirectoryError) as error:  # its folder's path is a file
                if (line := unusable_job_folder(error)) is None:
                    raise
                print(f"error: {line}", file=sys.stderr)
                sys.exit(EXIT_BAD_INPUT)
            finally:
                self._sweep_logging()
            if isinstance(result._return_value, Stopped):
                sys.exit(StopSignals.exit_code())
            prepared.append((idx, config, result, result._return_value))
        log.info(f"\t{len(prepared)} jobs composed and prepared (folders, data, networks) in "
                 f"{time.perf_counter() - started:.2f} s")  # fmt: skip
        ready = [p for p in prepared if isinstance(p[3], Member)]
        number = {id(p[3]): p[0] for p in ready}
        stacks = partition([p[3] for p in ready])
        groups: list[tuple[list[Member], Any]] = []
        alone: dict[int, str] = {}  # each job that does not train in a group: why, logged in job order
        for stack in stacks:
            reason = None
            if len(stack) == 1 and len(jobs) > 1:
                reason = "no other seed of its configuration can train with it"
            elif len(stack) == 1 and of > 1:
                reason = f"it is alone in its group: hydra.launcher.max_members={self.max_members} split the {of} jobs"
            elif len(stack) == 1:
                reason = "it is the only one of its configuration"
            module = stacked(stack) if not reason else None
            if isinstance(module, str):
                reason = module
            if reason:
                alone.update((number[id(member)], f"trains alone: {reason}") for member in stack)
                continue
            if stack is not stacks[0]:
                jobs_named = ", ".join(f"#{number[id(m)]}" for m in stack)
                log.info(f"\t{jobs_named} train as a group of their own: they differ from "
                         f"#{number[id(stacks[0][0])]}'s in {differences(stack[0], stacks[0][0])}")  # fmt: skip
            groups.append((stack, module))
        for idx, _, _, why in prepared:
            if isinstance(why, Finished):
                alone[idx] = "finished already: its run is kept as it is"
            elif not isinstance(why, Member):
                failed = f" ({failure(why)})" if why else ""
                because = why if isinstance(why, str) else f"its job failed while it was prepared{failed}"
                alone[idx] = f"trains alone: {because}"
        for idx in sorted(alone):
            log.info(f"\t#{idx} {alone[idx]}")
        returns: dict[int, JobReturn] = {}
        by_member = {id(p[3]): p for p in ready}
        for stack, module in groups:
            for member in stack:
                self._job_callbacks(member, by_member[id(member)][1])
            try:
                records = run_members(stack, module)
            finally:
                self._sweep_logging()
            for member, record in zip(stack, records, strict=True):
                idx, config, result, _ = by_member[id(member)]
                metric = member.cfg.get("optimized_metric")
                result.return_value = record.get(metric) if record and metric else None
                result.status = JobStatus.COMPLETED
                returns[idx] = result
                self._job_callbacks(member, config, result)
        for idx, config, _, _ in prepared:
            if idx not in returns:
                returns[idx] = self._run(config, self.task_function)
        return returns
