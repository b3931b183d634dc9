"""The jobs a sweep folder should hold, read from the `multirun.yaml` Hydra writes when a sweep starts,
so that a report can list the jobs a killed sweep never ran."""

from __future__ import annotations

from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf


def expected_jobs(sweep_dir: Path) -> list[tuple[str, list[str]]] | None:
    """(job folder name, overrides) of every job of a basic-sweeper grid, in launch order; None where
    the sweep is not such a grid (Optuna draws its trials as it goes) or has no multirun.yaml.

    Uses Hydra's own `BasicSweeper.split_arguments` (the expansion the sweep ran) on the sweeper's
    `params` and the command line's overrides, as `BasicSweeper.sweep` combines them; a job's folder
    is its number under the default `hydra.sweep.subdir`. tests/test_durability.py checks it on a
    killed sweep, so a change in Hydra shows there."""
    file = sweep_dir / "multirun.yaml"
    if not file.is_file():
        return None
    hydra = OmegaConf.to_container(OmegaConf.load(file).hydra, resolve=False)
    sweeper = hydra.get("sweeper") or {}
    if (
        not str(sweeper.get("_target_", "")).endswith("BasicSweeper")
        or hydra["sweep"].get("subdir") != "${hydra.job.num}"
    ):
        return None
    params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
    overrides = OverridesParser.create().parse_overrides([*params, *hydra["overrides"]["task"]])
    (jobs,) = BasicSweeper.split_arguments(overrides, None)
    return [(str(number), job) for number, job in enumerate(jobs)]
