"""Who is compared with whom: datasets, arms, replicates, and the control named in advance.

- A dataset is the `data=` choice (and `data.path` for a table): runs are never compared across datasets.
- Seeds, split seeds and folds (`seed`, `data.split_seed`, `data.fold`) are replicates: they pair runs.
- Every other swept key is an arm key, `data.*` options included (`data.sampler=shuffle,balanced`).
- The control is the first value of each swept key as the user typed it, which is the grid's first job
  (Hydra's basic sweeper starts from every list's first value), or `report.baseline`, or a recipe's own
  `report.baseline`. Never the arm that looked best on this data: a winner picked on validation turns
  null sweeps into one-sided "worse" verdicts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lossheads.config.validators import ConfigError

if TYPE_CHECKING:
    from lossheads.report.collect import Run

REPLICATE_KEYS = ("seed", "data.split_seed", "data.fold", "fold")
DATASET_KEYS = ("data", "data.path")
PART_NAMES = {"teacher": "teacher", "kd": "KD student", "hard": "hard-label student"}


def short(value: str) -> str:
    """Searched floats (Optuna) to 3 significant digits, so labels stay readable."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if "." not in value and "e" not in value.lower() else f"{number:.3g}"


def arm_keys(runs: list[Run]) -> list[str]:
    """The swept keys that make an arm: those with more than one value, less dataset and replicate keys."""
    keys = sorted({k for r in runs for k in r.overrides})
    varying = [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]
    return [k for k in varying if k not in REPLICATE_KEYS and k not in DATASET_KEYS]


def arm_label(overrides: dict[str, str], keys: list[str], part: str = "") -> str:
    """`loss=ce loss.weight=auto`: the arm's swept choices (a key left out takes its default)."""
    words = [PART_NAMES.get(part, part)] if part else []
    words += [f"{k}={short(overrides[k])}" for k in keys if k in overrides]
    return " ".join(words) or "all"


def label(runs: list[Run]) -> list[str]:
    """Set each run's dataset and arm; returns the arm keys."""
    keys = arm_keys(runs)
    path_swept = len({r.overrides.get("data.path") for r in runs}) > 1
    # data not swept: a run without a result (no `data` in its record) is on the others' one dataset
    known = {str(r.metrics["data"]) for r in runs if not r.overrides.get("data") and r.metrics.get("data")}
    fallback = next(iter(known)) if len(known) == 1 else "data"
    for run in runs:
        name = str(run.overrides.get("data") or run.metrics.get("data") or fallback)  # the name typed
        path = run.overrides.get("data.path") if path_swept else None
        run.dataset = f"{name} data.path={path}" if path else name
        run.config = arm_label(run.overrides, keys, run.part)
    return keys


def check_baseline(baseline: str | None, swept: dict[str, list[str]]) -> None:
    """Before the first job: each key=value of `baseline` must be a swept key and one of its values as typed."""
    if not baseline:
        return
    rest = baseline.strip()
    for words in PART_NAMES.values():
        rest = rest.removeprefix(words).strip()
    arm = {k: v for k, v in swept.items() if len(v) > 1 and k not in REPLICATE_KEYS and k not in DATASET_KEYS}
    for pair in rest.split():
        key, _, value = pair.partition("=")
        if value not in arm.get(key.lstrip("+~"), []):
            choices = "; ".join(f"{k}={','.join(v)}" for k, v in arm.items()) or "none"
            raise ConfigError(
                f"report.baseline={baseline!r}: {pair!r} is not a value of a swept key (swept: {choices}); "
                "name the control as key=value, e.g. report.baseline='loss=ce'"
            )


def launch_order(run: Run) -> tuple[int, str]:
    number = run.job.split("/")[0]
    return len(number), number


def control(runs: list[Run], keys: list[str], baseline: str | None = None) -> str:
    """The control arm's label: the first job's arm, with `baseline`'s choices put in (`loss=ce`, an arm's
    label, or a distillation step such as `hard-label student`). A baseline that names no arm is refused."""
    if not runs:
        return "all"
    first = sorted(runs, key=launch_order)[0]  # stable: the first step of a distillation job
    if not baseline:
        return first.config
    if not any(r.status == "ok" for r in runs):  # no run finished (all refused, say): nothing is judged
        return baseline
    arms = list(dict.fromkeys(r.config for r in sorted(runs, key=launch_order)))
    if baseline in arms:
        return baseline
    part, rest = first.part, baseline.strip()
    for step, words in PART_NAMES.items():
        if rest.startswith(words):
            part, rest = step, rest.removeprefix(words).strip()
    chosen = {k: v for k, v in first.overrides.items() if k in keys}
    for pair in rest.split():
        key, sign, value = pair.partition("=")
        if not sign or key.lstrip("+~") not in keys:
            swept = ", ".join(keys) or "none"
            raise ConfigError(
                f"report.baseline={baseline!r}: {pair!r} is not a choice of a swept key (swept: {swept}); "
                f"name the control as key=value of a swept key, e.g. report.baseline='{arms[0]}'"
            )
        chosen[key.lstrip("+~")] = value
    found = arm_label(chosen, keys, part)
    if found not in arms:
        raise ConfigError(
            f"report.baseline={baseline!r} names no arm of this sweep (arms: {'; '.join(arms)}); "
            "name one of them, e.g. report.baseline='" + arms[0] + "'"
        )
    return found
