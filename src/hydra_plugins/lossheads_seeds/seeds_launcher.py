"""`hydra/launcher=seeds`: a sweep's jobs that differ only in `seed` train as one vectorized model.

Hydra finds launchers only in the `hydra_plugins` namespace package, hence this module; the work is
in `lossheads.seeds`. Jobs are grouped by their overrides without `seed=...`; each job still gets its
own folder, Hydra files and number, as under the basic launcher. A job that cannot join a group
(`lossheads.seeds.group.why_not_vectorized` says why, in the log) or is alone in its group runs
through the task function itself, one after another, as the basic launcher runs every job.
"""

from __future__ import annotations

import copy
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger(__name__)


def group_key(overrides: Sequence[str]) -> tuple[str, ...]:
    """A job's overrides without its seed: the jobs of one group share it."""
    return tuple(o for o in overrides if o.split("=", 1)[0].lstrip("+~") != "seed")


def _seed_item(overrides: Sequence[str]) -> str | None:
    return next((o for o in overrides if o.split("=", 1)[0] == "seed"), None)


def _with_seed(first: DictConfig, idx: int, overrides: Sequence[str]) -> DictConfig:
    """`first` (a composed job config) as the job `overrides` (the same but for `seed=...`) composes."""
    config = copy.deepcopy(first)
    ours, theirs = _seed_item(overrides), _seed_item(first.hydra.overrides.task)
    with read_write(config), open_dict(config):
        if ours is not None:
            config.seed = OverridesParser.create().parse_override(ours).value()
        config.hydra.overrides.task = list(overrides)
        job = config.hydra.job
        separator = job.config.override_dirname.item_sep
        items = str(job.override_dirname).split(separator)
        job.override_dirname = separator.join(ours if item == theirs else item for item in items)
        job.id = job.num = idx
    return config


def _container(config: DictConfig) -> Any:
    return OmegaConf.to_container(config, resolve=False)


class SeedsLauncher(Launcher):
    def __init__(self, max_members: int = 32) -> None:
        self.max_members = max_members
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from lossheads.check import ConfigError, require_int

        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        try:
            require_int("hydra.launcher.max_members", self.max_members, 2)
        except ConfigError as error:  # the entry point's one line, before any job starts
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs, seeds of one configuration together (hydra/launcher=seeds)")
        groups: dict[tuple[str, ...], list[tuple[int, Sequence[str]]]] = {}
        for i, overrides in enumerate(job_overrides):
            groups.setdefault(group_key(overrides), []).append((initial_job_idx + i, overrides))
        returns: dict[int, JobReturn] = {}
        for jobs in groups.values():
            for start in range(0, len(jobs), self.max_members):
                returns.update(self._launch_group(jobs[start : start + self.max_members]))
        return [returns[initial_job_idx + i] for i in range(len(job_overrides))]

    def _sweep_config(self, idx: int, overrides: Sequence[str]) -> DictConfig:
        assert self.config is not None and self.hydra_context is not None
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(config):
            config.hydra.job.id = idx
            config.hydra.job.num = idx
        return config

    def _sweep_configs(self, jobs: list[tuple[int, Sequence[str]]]) -> list[DictConfig]:
        """The jobs' configs. Composing one costs ~0.25 s on 2 CPU cores, as much as training a
        member; jobs that differ only in their seed differ in their config only where the seed
        is (`seed`, the task overrides, the override dirname, the job number), so the third and
        later are the first's copy with those set, once the second composed for real has been
        found equal to its copy (else every job is composed)."""
        configs = [self._sweep_config(idx, overrides) for idx, overrides in jobs[:2]]
        if len(jobs) > 2 and _container(configs[1]) == _container(_with_seed(configs[0], *jobs[1])):
            configs += [_with_seed(configs[0], idx, overrides) for idx, overrides in jobs[2:]]
        else:
            configs += [self._sweep_config(idx, overrides) for idx, overrides in jobs[2:]]
        return configs

    def _run(self, config: DictConfig, task: Any) -> JobReturn:
        return run_job(hydra_context=self.hydra_context, task_function=task, config=config,
                       job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")  # fmt: skip

    def _launch_group(self, jobs: list[tuple[int, Sequence[str]]]) -> dict[int, JobReturn]:
        from lossheads.seeds.group import Member, prepare, run_members, stacked, why_not_together

        prepared: list[tuple[int, DictConfig, JobReturn, Any]] = []
        for (idx, overrides), config in zip(jobs, self._sweep_configs(jobs), strict=True):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            result = self._run(config, prepare)
            prepared.append((idx, config, result, result._return_value))
        members = [p for p in prepared if isinstance(p[3], Member)]
        reason = "it is the only one of its configuration" if len(members) == 1 else None
        if len(members) > 1:
            reason = why_not_together([p[3] for p in members])
        module = stacked([p[3] for p in members]) if len(members) > 1 and not reason else None
        if isinstance(module, str):
            reason = module
        if reason:
            members = []
        for idx, _, _, why in prepared:
            if not any(idx == m[0] for m in members):
                log.info(f"\t#{idx} trains alone: {why if isinstance(why, str) else reason}")
        returns: dict[int, JobReturn] = {}
        if members:
            records = run_members([m[3] for m in members], module)
            for (idx, _, result, member), record in zip(members, records, strict=True):
                metric = member.cfg.get("optimized_metric")
                result.return_value = record.get(metric) if record and metric else None
                result.status = JobStatus.COMPLETED
                returns[idx] = result
        for idx, config, _, _ in prepared:
            if idx not in returns:
                returns[idx] = self._run(config, self.task_function)
        return returns
