"""The grid a sweep launches, read with Hydra's own parser: the jobs a sweep folder should hold (from the
`multirun.yaml` Hydra writes when a sweep starts), so that a report can list the jobs a killed sweep
never ran; and each key's values as typed, so that a control that names no arm is refused before the
first job."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import OmegaConf


def expected_jobs(sweep_dir: Path) -> list[tuple[str, list[str]]] | None:
    """(job folder name, overrides) of every job of a basic-sweeper grid, in launch order; None where
    the sweep is not such a grid (Optuna draws its trials as it goes) or has no multirun.yaml.

    Uses Hydra's own `BasicSweeper.split_arguments` (the expansion the sweep ran) on the sweeper's
    `params` and the command line's overrides, as `BasicSweeper.sweep` combines them; a job's folder
    is its number under the default `hydra.sweep.subdir`. tests/test_durability.py checks it on a
    killed sweep, so a change in Hydra shows there."""
    record = multirun_record(sweep_dir)
    if record is None:
        return None
    hydra = record["hydra"]
    overrides = grid(hydra)
    if overrides is None or not numbered_folders(hydra):
        return None
    (jobs,) = BasicSweeper.split_arguments(overrides, None)
    return [(str(number), job) for number, job in enumerate(jobs)]


def numbered_folders(hydra: dict[str, Any]) -> bool:
    """Whether each job's folder is its number (`hydra.sweep.subdir`'s default), in a sweep's `hydra`
    node as plain unresolved values."""
    return (hydra.get("sweep") or {}).get("subdir") == "${hydra.job.num}"


def multirun_record(sweep_dir: Path) -> dict[str, Any] | None:
    """The sweep's multirun.yaml as plain values, unresolved (None: the folder has none). A report
    reads it three times (its grid twice, its settings once), and OmegaConf takes ~40 ms to read it:
    read once per version of the file, a copy handed out each time."""
    file = sweep_dir / "multirun.yaml"
    if not file.is_file():
        return None
    stat = file.stat()
    return copy.deepcopy(_read_multirun(str(file), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=4)
def _read_multirun(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)  # type: ignore[return-value]


def grid(hydra: dict[str, Any]) -> list[Override] | None:
    """The parsed overrides of a basic-sweeper grid (the sweeper's `params`, then the command line's, as
    `BasicSweeper.sweep` combines them); None for another sweeper (Optuna draws its trials as it goes)."""
    sweeper = hydra.get("sweeper") or {}
    if not str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return None
    params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
    return OverridesParser.create().parse_overrides([*params, *hydra["overrides"]["task"]])


def swept_values(hydra: dict[str, Any]) -> dict[str, list[str]] | None:
    """Each key of the grid with its values in the order typed (`loss=ce,focal` -> ['ce', 'focal'])."""
    overrides = grid(hydra)
    if overrides is None:
        return None
    return {
        o.key_or_group: list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        for o in overrides
    }
