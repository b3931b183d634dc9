"""Resume is exact or refused: a resumed run continues the checkpoint's run, nothing else.

The checkpoint carries its run's resolved config (`checkpoints.RunCheckpointIO`). A resume compares
it with the config of the command: every key may change its meaning (model, head, loss and its
options, data and split, optimizer, batch size, seed, steps_per_call, precision, ...) except those
in `MAY_CHANGE`, which decide only how long training goes on, where it writes and what it shows.
The same config can read other inputs, so the checkpoint also carries what the run trained on
(`run_inputs`: the data's fingerprint and split, the teacher's checksum), compared by `check_inputs`;
and a schedule spread over the run's length refuses a new length (`check_schedule_length`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lossheads.config.validators import ConfigError

log = logging.getLogger(__name__)

# dotted keys (a group name covers its keys) a resume may change; README's "Unattended runs" lists them
MAY_CHANGE = (
    "trainer.max_epochs", "trainer.max_steps", "trainer.max_time", "trainer.min_epochs", "trainer.min_steps",
    "trainer.log_every_n_steps", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "trainer.num_sanity_val_steps", "trainer.limit_val_batches", "trainer.limit_test_batches",
    "trainer.val_check_interval", "trainer.check_val_every_n_epoch", "trainer.default_root_dir",
    "trainer.accelerator", "trainer.benchmark",
    "logger", "callbacks", "paths", "hydra", "print_config", "ckpt_path", "train", "optimized_metric",
    "console", "teacher.cache_outputs",
)  # fmt: skip


# how long a run trains (a resume may train on longer), with Lightning's defaults; metrics.json keeps them
LENGTH = {"trainer.max_epochs": None, "trainer.max_steps": -1, "trainer.min_epochs": None,
          "trainer.min_steps": None, "trainer.max_time": None}  # fmt: skip
# of MAY_CHANGE, the keys that change only what a run shows or where it writes: runs that differ in no other are one
SHOWN_ONLY = (
    "trainer.log_every_n_steps", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "trainer.default_root_dir", "logger", "callbacks.progress_bar", "paths", "hydra", "print_config", "console",
    "optimized_metric",
)  # fmt: skip


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain data, interpolations resolved, Hydra's own node left out: what a
    checkpoint stores."""
    data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert isinstance(data, dict)
    data.pop("hydra", None)
    return data


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): node}


def covered(key: str, keys: tuple[str, ...]) -> bool:
    """`key` is one of `keys` or lies under one of them (a group name covers its keys)."""
    return any(key == k or key.startswith(f"{k}.") for k in keys)


def may_change(key: str) -> bool:
    return covered(key, MAY_CHANGE)


def shown_only(key: str) -> bool:
    """A key of SHOWN_ONLY, or a callback's `dirpath` (where it writes: inside the run's folder)."""
    return key.rsplit(".", 1)[-1] == "dirpath" or covered(key, SHOWN_ONLY)


def length_of(settings: dict[str, Any]) -> dict[str, Any]:
    """A run's length settings (LENGTH, Lightning's default where unset), read from its `trainer`
    config or from its metrics.json, which keeps them under the same names."""
    return {key.removeprefix("trainer."): settings.get(key.removeprefix("trainer."), default)
            for key, default in LENGTH.items()}  # fmt: skip


def parsed_overrides(overrides: list[str]) -> dict[str, str]:
    """Hydra overrides as typed (`+key=value`, `~key`) by key: the key without its sign, the value."""
    return {k.lstrip("+~"): v for k, _, v in (o.partition("=") for o in overrides)}


def meaning(overrides: dict[str, str]) -> dict[str, str]:
    """The overrides that make a run a sweep job's: all but those that change only what a run shows or
    where it writes. A sweep run again with other logging still finds its jobs' finished runs; a run of
    another length than the sweep asks, or of another value of any other key (a list typed in another
    order renumbers the jobs), is not this job's."""
    return {key: value for key, value in overrides.items() if not shown_only(key)}


ABSENT = "<absent>"


def meaning_changes(theirs: dict[str, Any], ours: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, checkpoint's value, this command's value) for every key that differs and may not change."""
    a, b = flatten(theirs), flatten(ours)
    changes = []
    for key in sorted(set(a) | set(b)):
        if may_change(key):
            continue
        old, new = a.get(key, ABSENT), b.get(key, ABSENT)
        if old != new:
            changes.append((key, old, new))
    return changes


def check_resume(path: str, checkpoint: dict[str, Any], ours: dict[str, Any]) -> None:
    """Refuse, in one line naming each key and both values, a resume that would change the run."""
    from lossheads.run.checkpoints import checkpoint_config, epochs_done

    theirs = checkpoint_config(checkpoint)
    if theirs is None:
        raise ConfigError(f"ckpt_path={path!r} is not valid: it carries no config, so a resume cannot be checked")
    changes = meaning_changes(theirs, ours)
    if changes:
        listed = ", ".join(f"{k}={_show(new)} (the checkpoint's run: {_show(old)})" for k, old, new in changes)
        raise ConfigError(
            f"ckpt_path={path!r} is not valid: a resume continues its run exactly, and these overrides change "
            f"it: {listed}; drop them (only {', '.join(MAY_CHANGE[:2])}, logging and display may change), or "
            "start a new run without ckpt_path"
        )
    check_length(f"the checkpoint {path}", epochs_done(checkpoint), int(checkpoint.get("global_step", 0)),
                 ours.get("trainer") or {}, "or evaluate it with train=false")  # fmt: skip


def check_length(saved: str, done: int, step: int, trainer: dict[str, Any], otherwise: str) -> None:
    """Refuse, in one line, a resume of `saved` (which has trained `done` epochs, `step` steps) into a
    run shorter than that: Lightning would stop it with a traceback."""
    max_epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps")
    if isinstance(max_epochs, int) and max_epochs != -1 and max_epochs < done:
        raise ConfigError(
            f"trainer.max_epochs={max_epochs} is not valid: {saved} has already trained {done} epochs; give "
            f"trainer.max_epochs>={done} to continue it, {otherwise}"
        )
    if isinstance(max_steps, int) and max_steps != -1 and max_steps < step:
        raise ConfigError(
            f"trainer.max_steps={max_steps} is not valid: {saved} has already taken {step} steps; give "
            f"trainer.max_steps>={step} (or -1) to continue it, {otherwise}"
        )


def _show(value: Any) -> str:
    return value if value == ABSENT else repr(value) if isinstance(value, str) else str(value)


def resumed_from(path: str, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What metrics.json records of the checkpoint a resumed run started from."""
    from lossheads.run.checkpoints import epochs_done

    return {"checkpoint": path, "epochs": epochs_done(checkpoint), "step": int(checkpoint.get("global_step", 0))}


# ---- the inputs a config reads: data and teacher ------------------------------------------------------


def run_inputs(split_record: dict[str, Any], teacher_checksum: str | None = None) -> dict[str, Any]:
    """What a run trains on, kept in each of its checkpoints: the data's name, size and fingerprint
    (its samples' contents, whatever their order), the split's digest (which sample is in which split,
    in order) and the teacher checkpoint's checksum (KD)."""
    from lossheads.run.splits import split_digest

    return {"data": split_record["data"], "samples": split_record["samples"],
            "fingerprint": split_record["fingerprint"], "split": split_digest(split_record),
            "teacher": teacher_checksum}  # fmt: skip


def recorded_inputs(path: Path, checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The inputs the checkpoint records, or those of the split.json in its run folder (a checkpoint
    written without them: a seeds member's, an earlier version's); None when neither is there."""
    from lossheads.run.checkpoints import checkpoint_inputs
    from lossheads.run.splits import FILENAME

    inputs = checkpoint_inputs(checkpoint)
    if inputs is not None:
        return inputs
    try:
        record = json.loads((path.parent.parent / FILENAME).read_text())
        return {**run_inputs(record), "teacher": ABSENT}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_inputs(path: str, checkpoint: dict[str, Any], ours: dict[str, Any]) -> None:
    """Refuse, in one line saying what changed, a resume whose data or teacher differ from the ones
    the checkpoint's run trained on: the same overrides, other inputs, would not continue that run."""
    theirs = recorded_inputs(Path(path), checkpoint)
    if theirs is None:
        log.warning("ckpt_path=%s records no data fingerprint (no split.json beside it): the resume cannot "
                    "check that the data is the one its run trained on", path)  # fmt: skip
        return
    start = f"ckpt_path={path!r} is not valid: "
    fix = "or start a new run without ckpt_path"
    if theirs["fingerprint"] != ours["fingerprint"]:
        raise ConfigError(
            f"{start}the data changed since the checkpoint was saved (data={theirs['data']}: {theirs['samples']} "
            f"samples, fingerprint {theirs['fingerprint'][:12]} then; {ours['samples']} samples, fingerprint "
            f"{ours['fingerprint'][:12]} now), so the resume would not continue its run: restore the data the "
            f"run trained on, {fix}"
        )
    if theirs["split"] != ours["split"]:
        raise ConfigError(
            f"{start}the data holds the same samples but in another order than when the checkpoint was saved "
            f"(data={theirs['data']}), which puts other samples in the train, val and test splits: restore the "
            f"file's row order, {fix}"
        )
    if theirs.get("teacher", ABSENT) not in (ABSENT, ours["teacher"]):
        raise ConfigError(
            f"{start}the teacher changed since the checkpoint was saved (checksum {str(theirs['teacher'])[:12]} "
            f"then, {str(ours['teacher'])[:12]} now: retrained or replaced in place), so the resume would "
            f"distill from another teacher: restore the teacher's checkpoint, {fix}"
        )


LENGTH_KEYS = ("trainer.max_epochs", "trainer.max_steps")


def check_schedule_length(path: str, checkpoint: dict[str, Any], ours: dict[str, Any], schedule: Any) -> None:
    """A schedule spread over the run's length (`Schedule.needs_length`: cosine, onecycle) was laid
    out for the length the run started with; every step already taken followed that curve, so no
    continuation equals an unbroken run of another length: such a change is refused, in one line."""
    from lossheads.run.checkpoints import checkpoint_config

    if schedule is None or not schedule.needs_length:
        return
    old, new = flatten(checkpoint_config(checkpoint) or {}), flatten(ours)
    changed = [k for k in LENGTH_KEYS if old.get(k, ABSENT) != new.get(k, ABSENT)]
    if not changed:
        return
    then = ", ".join(f"{k}={old.get(k, ABSENT)}" for k in LENGTH_KEYS)
    raise ConfigError(
        f"{', '.join(f'{k}={new.get(k, ABSENT)}' for k in changed)} is not valid for this resume: "
        f"scheduler={schedule.name} spreads the learning rate over the run's length, set when the run started "
        f"({then}), and every step taken so far followed that curve, so no resume to another length matches an "
        f"unbroken run of it: resume with {then}, or start a new run of the new length without ckpt_path "
        "(scheduler=none, step and plateau resume to any length)"
    )
