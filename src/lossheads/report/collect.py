"""Read a sweep folder into runs, and group them by dataset and configuration.

A job folder holds one run, or three for `experiment=distill` (teacher, KD student, hard-label
student, each in its own subfolder with its metrics also prefixed in the job's metrics.json).
Reads only files: metrics.json or failure.json, .hydra/overrides.yaml, split.json (the data's
fingerprint), and predictions.npz to tell the task of runs that predate the `task` key.
"""

from __future__ import annotations

import functools
import json
import math
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lossheads.report.arms import label
from lossheads.run.resume import meaning, parsed_overrides

# ok; invalid (refused config); failed (crashed); diverged (non-finite loss); interrupted (Ctrl-C,
# SIGTERM); missing (killed before it wrote anything, or still running)
STATUSES = ("ok", "invalid", "failed", "diverged", "interrupted", "refused", "missing")
LOWER_IS_BETTER = ("nll", "ece", "brier", "loss")


@dataclass
class Run:
    folder: Path  # where its predictions.npz, per_class.json and TensorBoard events are
    job: str  # the job folder's name, with the part for a distillation step ("3/kd")
    overrides: dict[str, str]
    status: str  # one of STATUSES
    metrics: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    part: str = ""  # the distillation recipe's step: teacher, kd or hard
    config: str = ""  # the arm, set by `arms.label`: the swept choices other than dataset and replicate keys
    dataset: str = ""  # set by `arms.label`: the data choice (and a table's data.path)

    @property
    def replicate(self) -> tuple[str, ...]:
        """What pairs two arms' runs: the seed, and the split seed and fold where swept."""
        seed = self.metrics.get("seed", self.overrides.get("seed", ""))
        fold = self.overrides.get("data.fold", self.overrides.get("fold", ""))
        return (str(seed), self.overrides.get("data.split_seed", ""), fold)

    @property
    def seed_label(self) -> str:
        return "/".join(r for r in self.replicate if r)

    @functools.cached_property
    def data_fingerprint(self) -> str | None:
        """The fingerprint of the data it trained on (its split.json: the samples, whatever their order
        or split); None where the folder has none (a run of an older version)."""
        try:
            return str(json.loads((self.folder / "split.json").read_text())["fingerprint"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

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
    if overrides_file.is_file():  # a list of `key=value` strings: libyaml reads it in a tenth of OmegaConf's time
        for item in yaml.load(overrides_file.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or []:
            key, _, value = str(item).partition("=")
            overrides[key.lstrip("+~")] = value
    return overrides


def parts_of(metrics: dict[str, Any]) -> list[str]:
    """The steps of a distillation record (`teacher/test/acc`, `kd/val/auroc`, ...), in order."""
    found = [k.split("/")[0] for k in metrics if re.match(r"[^/]+/(val|test)/", k)]
    return list(dict.fromkeys(found))


def read_job(folder: Path, overrides: dict[str, str] | None = None) -> list[Run]:
    """The runs of one job folder: one, or one per distillation step; `overrides`: the job's as its
    sweep names it (else its `.hydra/overrides.yaml`)."""
    overrides = read_overrides(folder) if overrides is None else overrides
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
    try:
        own = json.loads(own_file.read_text()) if own_file.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return Run(folder / part, f"{folder.name}/{part}", overrides, "failed",
                   reason=f"unreadable {part}/metrics.json: {error}")  # fmt: skip
    shared = {k: v for k, v in record.items() if "/" not in k}
    metrics = {
        **shared,
        **{k: v for k, v in own.items() if "/" not in k},
        **{k.removeprefix(f"{part}/"): v for k, v in record.items() if k.startswith(f"{part}/")},
    }
    return Run(folder / part, f"{folder.name}/{part}", overrides, "ok", metrics, part=part)


def collect(sweep_dir: Path) -> list[Run]:
    from lossheads.report.sweeps import expected_jobs

    folders = [p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir()]
    expected = {name: parsed_overrides(job) for name, job in expected_jobs(sweep_dir) or []}
    runs = []
    for folder in sorted(folders, key=lambda p: (len(p.name), p.name)):
        own = expected.get(folder.name)
        found = read_overrides(folder)
        if expected and own is None:  # an earlier, larger sweep's job: not one of this sweep's
            reason = f"not a job of this sweep (its multirun.yaml has {len(expected)}): an earlier sweep's folder"
            runs.append(Run(folder, folder.name, found, "refused", reason=reason))
        elif own is not None and meaning(found) != meaning(own):  # refused: its folder holds another run
            reason = (f"refused: its folder holds another run ({', '.join(f'{k}={v}' for k, v in found.items())}), "
                      "which is not this job's")  # fmt: skip
            runs.append(Run(folder, folder.name, own, "refused", reason=reason))
        else:  # named as this sweep names the job (the logging it typed now, say), as its arm is
            runs += read_job(folder, own)
    runs += never_ran(sweep_dir, {f.name for f in folders})
    label(runs)
    return runs


def never_ran(sweep_dir: Path, present: set[str]) -> list[Run]:
    """The grid's jobs (multirun.yaml) that have no folder: the sweep was stopped before them."""
    from lossheads.report.sweeps import expected_jobs

    runs = []
    for name, overrides in expected_jobs(sweep_dir) or []:
        if name not in present:
            parsed = parsed_overrides(overrides)
            reason = "never ran: the sweep was stopped before it; run the same sweep again to finish it"
            runs.append(Run(sweep_dir / name, name, parsed, "missing", reason=reason))
    return runs


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


def ranking(arms: dict[str, list[Run]], metric: str) -> list[str] | None:
    """Arms best first by their mean `metric` over the replicates every arm with a value shares (paired
    means: unequal seed sets would rank luck); one with no defined value is never first. None when no
    run has the metric, or no replicate is shared: there is nothing fair to rank by."""

    def defined_values(runs: list[Run]) -> dict[tuple[str, ...], float]:
        return {r.replicate: r.metrics[metric] for r in runs if finite(r.metrics.get(metric))}

    defined = {arm: defined_values(runs) for arm, runs in arms.items()}
    having = [found for found in defined.values() if found]
    if not having:
        return None
    shared = set.intersection(*(set(found) for found in having))
    if not shared:
        return None
    means = {c: statistics.fmean(found[k] for k in shared) if found else math.nan for c, found in defined.items()}
    sign = -1 if higher_is_better(metric) else 1
    return sorted(arms, key=lambda c: (math.isnan(means[c]), sign * means[c] if not math.isnan(means[c]) else 0))
