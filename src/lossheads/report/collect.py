"""Read a sweep folder into runs, and group them by dataset and configuration.

A job folder holds one run, or three for `experiment=distill` (teacher, KD student, hard-label
student, each in its own subfolder with its metrics also prefixed in the job's metrics.json).
Reads only files: metrics.json or failure.json, .hydra/overrides.yaml, and predictions.npz to tell
the task of runs that predate the `task` key.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

# ok; invalid (refused config); failed (crashed); diverged (non-finite loss); interrupted (Ctrl-C,
# SIGTERM); missing (killed before it wrote anything, or still running)
STATUSES = ("ok", "invalid", "failed", "diverged", "interrupted", "missing")
LOWER_IS_BETTER = ("nll", "ece", "brier", "loss")
# overrides that name a replicate of a configuration, not the configuration itself
REPLICATE_KEYS = ("seed", "data.split_seed", "fold")
PART_NAMES = {"teacher": "teacher", "kd": "KD student", "hard": "hard-label student"}


@dataclass
class Run:
    folder: Path  # where its predictions.npz, per_class.json and TensorBoard events are
    job: str  # the job folder's name, with the part for a distillation step ("3/kd")
    overrides: dict[str, str]
    status: str  # one of STATUSES
    metrics: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    part: str = ""  # the distillation recipe's step: teacher, kd or hard
    config: str = ""  # set by `label`: the swept choices other than data and replicate keys
    dataset: str = ""  # set by `label`: data plus any swept data.* option

    @property
    def replicate(self) -> tuple[str, ...]:
        """What pairs two configurations' runs: the seed (and split seed or fold, where swept)."""
        seed = self.metrics.get("seed", self.overrides.get("seed", ""))
        return (str(seed), *(self.overrides.get(k, "") for k in REPLICATE_KEYS[1:]))

    @property
    def seed_label(self) -> str:
        return "/".join(r for r in self.replicate if r)

    @property
    def task(self) -> str:
        """metrics.json's `task`, or what the saved predictions' shapes say for older runs."""
        if self.metrics.get("task"):
            return str(self.metrics["task"])
        file = self.folder / "predictions.npz"
        if file.is_file():
            with np.load(file) as arrays:
                split = next((s for s in ("test", "val") if f"{s}_probs" in arrays), None)
                if split:
                    probs, targets = arrays[f"{split}_probs"], arrays[f"{split}_targets"]
                    return "binary" if probs.ndim == 1 else "multiclass" if targets.ndim == 1 else "multilabel"
        return "?"


def read_overrides(folder: Path) -> dict[str, str]:
    overrides_file = folder / ".hydra" / "overrides.yaml"
    overrides = {}
    if overrides_file.is_file():
        for item in OmegaConf.load(overrides_file):
            key, _, value = str(item).partition("=")
            overrides[key.lstrip("+~")] = value
    return overrides


def parts_of(metrics: dict[str, Any]) -> list[str]:
    """The steps of a distillation record (`teacher/test/acc`, `kd/val/auroc`, ...), in order."""
    found = [k.split("/")[0] for k in metrics if re.match(r"[^/]+/(val|test)/", k)]
    return list(dict.fromkeys(found))


def read_job(folder: Path) -> list[Run]:
    """The runs of one job folder: one, or one per distillation step."""
    overrides = read_overrides(folder)
    for name in ("metrics.json", "failure.json"):
        if (folder / name).is_file():
            try:
                record = json.loads((folder / name).read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                return [Run(folder, folder.name, overrides, "failed", reason=f"unreadable {name}: {error}")]
            status = record.get("status", "ok")
            if status != "ok":
                return [Run(folder, folder.name, overrides, status, reason=str(record.get("reason", "")))]
            parts = parts_of(record)
            if not parts:
                return [Run(folder, folder.name, overrides, "ok", record)]
            return [distillation_step(folder, overrides, record, part) for part in parts]
    return [
        Run(
            folder, folder.name, overrides, "missing", reason="no metrics.json or failure.json: killed or still running"
        )
    ]


def distillation_step(folder: Path, overrides: dict[str, str], record: dict[str, Any], part: str) -> Run:
    """One step of the recipe: its prefixed metrics, and head/loss/task from its own metrics.json."""
    own_file = folder / part / "metrics.json"
    own = json.loads(own_file.read_text()) if own_file.is_file() else {}
    shared = {k: v for k, v in record.items() if "/" not in k}
    metrics = {
        **shared,
        **{k: v for k, v in own.items() if "/" not in k},
        **{k.removeprefix(f"{part}/"): v for k, v in record.items() if k.startswith(f"{part}/")},
    }
    return Run(folder / part, f"{folder.name}/{part}", overrides, "ok", metrics, part=part)


def collect(sweep_dir: Path) -> list[Run]:
    folders = [p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir()]
    runs = [run for f in sorted(folders, key=lambda p: (len(p.name), p.name)) for run in read_job(f)]
    label(runs)
    return runs


def short(value: str) -> str:
    """Searched floats (Optuna) to 3 significant digits, so labels stay readable."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if "." not in value and "e" not in value.lower() else f"{number:.3g}"


def label(runs: list[Run]) -> None:
    """A dataset is `data` plus any swept `data.*` option; a configuration is the other swept keys,
    the replicate keys (seed, split seed, fold) left out."""
    keys = sorted({k for r in runs for k in r.overrides})
    varying = [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1 and k not in REPLICATE_KEYS]
    data_keys = [k for k in varying if k.startswith("data.")]
    config_keys = [k for k in varying if k != "data" and k not in data_keys]
    for run in runs:
        name = str(run.overrides.get("data") or run.metrics.get("data") or "data")  # the name typed
        run.dataset = " ".join([name, *(f"{k}={short(run.overrides[k])}" for k in data_keys if k in run.overrides)])
        words = [PART_NAMES.get(run.part, run.part)] if run.part else []
        words += [f"{k}={short(run.overrides[k])}" for k in config_keys if k in run.overrides]  # absent: default
        run.config = " ".join(words) or "all"


def sections(runs: list[Run]) -> dict[tuple[str, str], dict[str, list[Run]]]:
    """(dataset, task) -> configuration -> its finished runs, in sweep order."""
    grouped: dict[tuple[str, str], dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        if run.status == "ok":
            grouped[(run.dataset, run.task)][run.config].append(run)
    return {key: dict(configs) for key, configs in grouped.items()}


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def summarize(values: list[Any]) -> tuple[float, float, int]:
    """(mean, sample std, count) of the finite values; NaN and missing ones are left out and counted out."""
    values = [v for v in values if finite(v)]
    if not values:
        return math.nan, math.nan, 0
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)


def higher_is_better(metric: str) -> bool:
    return not metric.split("/")[-1].endswith(LOWER_IS_BETTER)


def ranking(configs: dict[str, list[Run]], metric: str) -> list[str] | None:
    """Configurations best first by their mean `metric`; one with no defined value (NaN, or not
    logged) is never first. None when no run has the metric at all: there is nothing to rank by."""
    means = {c: summarize([r.metrics.get(metric) for r in runs])[0] for c, runs in configs.items()}
    if all(math.isnan(m) for m in means.values()):
        return None
    sign = -1 if higher_is_better(metric) else 1
    return sorted(configs, key=lambda c: (math.isnan(means[c]), sign * means[c] if not math.isnan(means[c]) else 0))
