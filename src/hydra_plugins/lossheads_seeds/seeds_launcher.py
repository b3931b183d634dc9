"""`hydra/launcher=seeds`: a sweep's jobs that share a network shape train as one vectorized model.

Hydra finds launchers only in the `hydra_plugins` namespace package, hence this module; the work is
in `lossheads.seeds`. Jobs are prepared together by their overrides without `seed=...` and the arm
keys (loss, threshold, head: `launch_key`), then stacked by what their built runs share
(`lossheads.seeds.members.partition`); each job still gets its own folder, Hydra files and number,
as under the basic launcher. A job that cannot join a group
(`lossheads.seeds.members.why_not_vectorized` says why, in the log) or is alone in its group runs
through the task function itself, one after another, as the basic launcher runs every job.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra.core.config_loader import ConfigLoader
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import (
    JobReturn,
    JobRuntime,
    JobStatus,
    configure_log,
    env_override,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf._utils import get_omega_conf_dumper  # its quoting of strings; a test compares the text

log = logging.getLogger(__name__)


def group_key(overrides: Sequence[str]) -> tuple[str, ...]:
    """A job's overrides without its seed value (`seed=`, `+seed=`, `++seed=`): the jobs of one
    configuration share it (`~seed` deletes the key: a configuration of its own)."""
    return tuple(o for o in overrides if o.split("=", 1)[0].lstrip("+") != "seed" or "=" not in o)


def launch_key(overrides: Sequence[str]) -> tuple[str, ...]:
    """A job's overrides without its seed and arm keys (loss, threshold, head and their options): the
    jobs that are prepared together and may train as one stack (`lossheads.seeds.members.partition`
    decides which do)."""
    from lossheads.seeds.members import is_arm

    return tuple(o for o in group_key(overrides) if not is_arm(o))


def _seed_item(overrides: Sequence[str]) -> str | None:
    return next((o for o in overrides if o.split("=", 1)[0].lstrip("+") == "seed"), None)


def _override_dirname(config: DictConfig, overrides: Sequence[str]) -> str:
    """`hydra.job.override_dirname` of the job `overrides`, as Hydra 1.3 computes it: the overrides
    as typed, but for `exclude_keys`, sorted, joined by `item_sep`, every `=` turned into `kv_sep`
    (`_seed_only_sets_a_value` checks that it gives a composed config's own)."""
    settings = config.hydra.job.config.override_dirname
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    lines = sorted(str(o.input_line) for o in parsed if o.key_or_group not in settings.exclude_keys)
    return re.sub("[=]", str(settings.kv_sep), str(settings.item_sep).join(lines))


def _with_seed(first: bytes, overrides: Sequence[str]) -> DictConfig:
    """The composed job config pickled in `first` as the job `overrides` (the same but for
    `seed=...`) composes it. A pickle round trip copies a job config in ~0.8 ms, a deepcopy in ~5."""
    config = pickle.loads(first)
    ours = _seed_item(overrides)
    with read_write(config), open_dict(config):
        if ours is not None:
            config.seed = OverridesParser.create().parse_override(ours).value()
        config.hydra.overrides.task = list(overrides)
        config.hydra.job.override_dirname = _override_dirname(config, overrides)
    return config


def _seed_only_sets_a_value(config: DictConfig) -> bool:
    """Whether jobs that differ from `config`'s only in `seed=...` compose to it with that seed set.
    Hydra composes the defaults list before any value exists, so its interpolations see config group
    choices only: unless `seed` names a config group, `seed=...` sets the value `seed` and nothing
    else but the job's overrides and override dirname, which `_with_seed` sets as Hydra does (where
    it does not give this config's own dirname, every job is composed)."""
    choices = OmegaConf.select(config, "hydra.runtime.choices", default=None) or {}
    own = config.hydra.job.override_dirname
    return "seed" not in choices and _override_dirname(config, list(config.hydra.overrides.task)) == own


class _HydraFileDumper(yaml.CDumper):
    """OmegaConf's YAML for the `.hydra/` files (`OmegaConf.to_yaml`: its quoting of strings), emitted
    by libyaml: 2.6 ms a job config instead of 6.2 ms, the same text (tests/test_seeds.py)."""


_HydraFileDumper.add_representer(str, get_omega_conf_dumper().str_representer)


def hydra_file_text(config: Any) -> str:
    container = OmegaConf.to_container(config, resolve=False, enum_to_str=True)
    return yaml.dump(container, default_flow_style=False, allow_unicode=True, sort_keys=False, Dumper=_HydraFileDumper)


def run_prepared_job(hydra_context: HydraContext, task: TaskFunction, config: DictConfig) -> JobReturn:
    """A sweep job the group prepares, run as Hydra 1.3's `run_job` runs it with the sweep's folder
    keys: the same folder, `.hydra/` files, job logging, environment, working folder and JobReturn,
    at a third of its ~30 ms. Hydra's config is set once, not twice (the job's folder is set in it
    too); the task's config is a pickle copy, not a deep copy, and the Hydra config of the JobReturn
    is the one set for the job, not a deep copy of it (nothing changes either after); the files'
    YAML is libyaml's, written atomically. tests/test_seeds.py compares the files and records with
    the basic launcher's. The Hydra callbacks' `on_job_start` and `on_job_end` come when the job
    trains: with its group (`SeedsLauncher._job_callbacks`), or through `run_job` when it trains alone."""
    runtime, hydra = JobRuntime.instance(), HydraConfig.instance()
    old_cwd, orig_hydra_cfg = os.getcwd(), hydra.cfg
    hydra.set_config(config)
    output_dir = os.path.abspath(os.path.join(str(OmegaConf.select(config, "hydra.sweep.dir")),
                                              str(OmegaConf.select(config, "hydra.sweep.subdir"))))  # fmt: skip
    for node in (config.hydra.runtime, hydra.cfg.hydra.runtime):
        with read_write(node), open_dict(node):
            node.output_dir = output_dir
    chdir = bool(config.hydra.job.chdir)  # None is False from Hydra 1.2
    try:
        ret = JobReturn()
        task_cfg = pickle.loads(pickle.dumps(config))
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        ret.cfg, ret.hydra_cfg = task_cfg, hydra.cfg
        ret.overrides = list(OmegaConf.to_container(config.hydra.overrides.task))  # type: ignore[arg-type]
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        if chdir:
            os.chdir(output_dir)
        ret.working_dir = os.getcwd()
        configure_log(config.hydra.job_logging, config.hydra.verbose)
        if config.hydra.output_subdir is not None:
            from lossheads.run.atomic import write_bytes

            files = Path(output_dir, str(config.hydra.output_subdir))
            files.mkdir(parents=True, exist_ok=True)
            for name, node in (("config.yaml", task_cfg), ("hydra.yaml", hydra.cfg),
                               ("overrides.yaml", config.hydra.overrides.task)):  # fmt: skip
                write_bytes(files / name, hydra_file_text(node).encode(), durable=False)
        with env_override(hydra.cfg.hydra.job.env_set):
            try:
                ret.return_value = task(task_cfg)
                ret.status = JobStatus.COMPLETED
            except Exception as exc:  # noqa: BLE001 -- as run_job: the job failed, the sweep goes on
                ret.return_value, ret.status = exc, JobStatus.FAILED
        ret.task_name = runtime.get("name")
        for handler in logging.getLogger().handlers:
            handler.flush()
        return ret
    finally:
        hydra.cfg = orig_hydra_cfg
        if chdir:
            os.chdir(old_cwd)


class SeedSharingConfigLoader(ConfigLoader):
    """Hydra's config loader, but a job that differs from an earlier one only in `seed=...` gets that
    job's config with the seed set (`_with_seed`) instead of a composition of its own.

    Composing one job's config costs ~0.1 s on 2 CPU cores, as much as training a member, and a
    sweep composes each job twice: Hydra's sweeper composes every job to check the batch before any
    runs (`Sweeper.validate_batch_is_legal`), then the launcher composes it to run it. Configs of
    one configuration differ only where the seed is (`seed`, the task overrides, the override
    dirname) unless `seed` is a config group (`_seed_only_sets_a_value`): one is composed for real
    and the others are copies of it; when `seed` is a group, every job is composed for real once,
    and the launch gets a copy of what the check composed.

    The framework hook: the sweeper and the launcher share one `HydraContext`, whose `config_loader`
    the sweeper's check goes through; `SeedsLauncher.setup` puts this loader there (Hydra 1.3).
    tests/test_seeds.py counts the real compositions of a 3-seed sweep, and fails if either the
    check or the launch stops going through it."""

    def __init__(self, inner: ConfigLoader) -> None:
        self.inner = inner
        self.composed = self.copied = 0  # configs composed for real, and handed out as copies
        self.first: dict[tuple[int, tuple[str, ...]], bytes] = {}  # a configuration's composed config, pickled
        self.seen: dict[tuple[int, tuple[str, ...]], bytes] = {}  # other jobs composed for real, pickled

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        key = (id(master_config), group_key(sweep_overrides))
        if key in self.first:  # its seed only sets a value: every job of the configuration is a copy
            self.copied += 1
            return _with_seed(self.first[key], sweep_overrides)
        if (id(master_config), tuple(sweep_overrides)) in self.seen:  # the launch after Hydra's check
            self.copied += 1
            return pickle.loads(self.seen[(id(master_config), tuple(sweep_overrides))])
        config = self.inner.load_sweep_config(master_config, sweep_overrides)
        self.composed += 1
        if _seed_only_sets_a_value(config):
            self.first[key] = pickle.dumps(config)
        else:
            self.seen[(id(master_config), tuple(sweep_overrides))] = pickle.dumps(config)
        return config

    def load_configuration(self, *args: Any, **kwargs: Any) -> DictConfig:
        return self.inner.load_configuration(*args, **kwargs)

    def get_search_path(self) -> Any:
        return self.inner.get_search_path()

    def get_sources(self) -> Any:
        return self.inner.get_sources()

    def list_groups(self, parent_name: str) -> list[str]:
        return self.inner.list_groups(parent_name)

    def get_group_options(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.inner.get_group_options(*args, **kwargs)

    def compute_defaults_list(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.compute_defaults_list(*args, **kwargs)


class SeedsLauncher(Launcher):
    def __init__(self, max_members: int = 64) -> None:
        self.max_members = max_members
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

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
        except ConfigError as error:  # the entry point's one line, before any job starts
            print(f"error: {error}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        setup_globals()
        self._sweep_logging()
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs, those of one network shape together (hydra/launcher=seeds)")
        groups: dict[tuple[str, ...], list[tuple[int, Sequence[str]]]] = {}
        for i, overrides in enumerate(job_overrides):
            groups.setdefault(launch_key(overrides), []).append((initial_job_idx + i, overrides))
        returns: dict[int, JobReturn] = {}
        for jobs in groups.values():
            for start in range(0, len(jobs), self.max_members):
                returns.update(self._launch_group(jobs[start : start + self.max_members], len(jobs)))
        loader = self.hydra_context.config_loader
        if isinstance(loader, SeedSharingConfigLoader):
            log.info(f"job configs: {loader.composed} composed, {loader.copied} copied from a composed one")
        return [returns[initial_job_idx + i] for i in range(len(job_overrides))]

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
            self._sweep_logging()

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

    def _sweep_logging(self) -> None:
        assert self.config is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)

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
                print(f"interrupted by {StopSignals.name()} between the seeds' jobs: run the sweep again to "
                      "continue it (finished jobs are kept)", file=sys.stderr)  # fmt: skip
                sys.exit(StopSignals.exit_code())

    def _launch_prepared(self, jobs: list[tuple[int, Sequence[str]]], of: int) -> dict[int, JobReturn]:
        """`jobs`: a group of the `of` jobs of one configuration (more: hydra.launcher.max_members split them)."""
        from lossheads.run.stops import StopSignals
        from lossheads.seeds.group import run_members
        from lossheads.seeds.members import Member, Stopped, differences, partition, prepare, stacked

        started = time.perf_counter()
        prepared: list[tuple[int, DictConfig, JobReturn, Any]] = []
        folders: dict[Path, int] = {}  # the run folders of the jobs prepared so far
        loaded: dict[str, Any] = {}  # the data they loaded, by data config: loaded once for the group
        for (idx, overrides), config in zip(jobs, [self._sweep_config(*job) for job in jobs], strict=True):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            try:
                task = functools.partial(prepare, folders=folders, loaded=loaded)
                result = run_prepared_job(self.hydra_context, task, config)
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
                for member in stack:
                    log.info(f"\t#{number[id(member)]} trains alone: {reason}")
                continue
            if stack is not stacks[0]:
                jobs_named = ", ".join(f"#{number[id(m)]}" for m in stack)
                log.info(f"\t{jobs_named} train as a group of their own: they differ from "
                         f"#{number[id(stacks[0][0])]}'s in {differences(stack[0], stacks[0][0])}")  # fmt: skip
            groups.append((stack, module))
        for idx, _, _, why in prepared:
            if not isinstance(why, Member):
                failed = f" ({type(why).__name__}: {str(why).splitlines()[0] if str(why) else ''})" if why else ""
                because = why if isinstance(why, str) else f"its job failed while it was prepared{failed}"
                log.info(f"\t#{idx} trains alone: {because}")
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
