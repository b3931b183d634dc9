"""A member's Hydra job while its group is prepared: `run_job`'s files and state at a fraction of its cost."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobRuntime, JobStatus, configure_log, env_override
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, flag_override, open_dict, read_write
from omegaconf._utils import get_omega_conf_dumper  # its quoting of strings; a test compares the text


class _HydraFileDumper(yaml.CDumper):
    """OmegaConf's YAML for the `.hydra/` files (`OmegaConf.to_yaml`: its quoting of strings), emitted
    by libyaml: 2.6 ms a job config instead of 6.2 ms, the same text (tests/test_seeds.py)."""


_HydraFileDumper.add_representer(str, get_omega_conf_dumper().str_representer)


def hydra_file_text(config: Any) -> str:
    container = OmegaConf.to_container(config, resolve=False, enum_to_str=True)
    return yaml.dump(container, default_flow_style=False, allow_unicode=True, sort_keys=False, Dumper=_HydraFileDumper)


def job_hydra_config(config: DictConfig) -> DictConfig:
    """What `HydraConfig.set_config(config)` makes the current Hydra config, without its two deep
    copies of the `hydra` node (3 ms a job): a config whose `hydra` is the job's own node, read-only,
    its parent the job's config (so that it resolves interpolations into it, as Hydra's copy does).
    Nothing changes the node after the job's folder is set in it. tests/test_seeds.py holds it to
    `set_config`'s result."""
    OmegaConf.set_readonly(config.hydra, True)
    current = OmegaConf.create({})
    with flag_override(current, "no_deepcopy_set_nodes", True):
        current["hydra"] = config.hydra
    config.hydra._set_parent(config)  # as set_config does to its copy
    return current


def run_prepared_job(hydra_context: HydraContext, task: TaskFunction, config: DictConfig) -> JobReturn:
    """A sweep job the group prepares, run as Hydra 1.3's `run_job` runs it with the sweep's folder
    keys: the same folder, `.hydra/` files, job logging, environment, working folder and JobReturn,
    at a third of its ~30 ms. Hydra's config shares the job's `hydra` node (`job_hydra_config`);
    the task's config is a pickle copy, not a deep copy, and the Hydra config of the JobReturn
    is the one set for the job, not a deep copy of it (nothing changes either after); the files'
    YAML is libyaml's, written atomically. tests/test_seeds.py compares the files and records with
    the basic launcher's. The Hydra callbacks' `on_job_start` and `on_job_end` come when the job
    trains: with its group (`SeedsLauncher._job_callbacks`), or through `run_job` when it trains alone."""
    runtime, hydra = JobRuntime.instance(), HydraConfig.instance()
    old_cwd, orig_hydra_cfg = os.getcwd(), hydra.cfg
    hydra.cfg = job_hydra_config(config)
    output_dir = os.path.abspath(os.path.join(str(OmegaConf.select(config, "hydra.sweep.dir")),
                                              str(OmegaConf.select(config, "hydra.sweep.subdir"))))  # fmt: skip
    with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
        config.hydra.runtime.output_dir = output_dir  # the node of Hydra's config too
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
