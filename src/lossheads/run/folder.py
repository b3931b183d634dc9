"""A run folder belongs to one run, and is data, never code.

- `claim`: a new run refuses a folder that holds another run's checkpoints or records (unless it
  resumes that run); a sweep job or a recipe step run again finds its own finished record (skip it)
  or its checkpoints (resume them).
- `build_from_folder`: rebuilding a model from a run folder's config imports only lossheads' own
  classes (or the model class the user's own command names) and instantiates no `_target_`
  read from the file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra.utils import get_class

from lossheads.config.validators import ConfigError
from lossheads.run.checkpoints import checkpoint_config, newest_checkpoint, read_checkpoint
from lossheads.run.guards import HYDRA_COPY, keep_hydra_files, restore_hydra_files
from lossheads.run.resume import flatten, length_of, may_change, meaning, parsed_overrides, shown_only

RECORDS = ("metrics.json", "failure.json")


class RefusedFolder(ConfigError):
    """The folder holds a run this command may not write into: another run, or this one where the
    command cannot continue it (fewer epochs than it trained, other data). Refused; nothing is written
    into the folder, and its `.hydra/` is put back."""


def fingerprint(config: dict[str, Any], kept: Callable[[str], bool] | None = None) -> str:
    """A hash of everything that gives a run its meaning (what a resume may not change); `kept`: the
    keys to hash instead."""
    kept = kept or (lambda key: not may_change(key))
    items = sorted((k, repr(v)) for k, v in flatten(config).items() if kept(k))
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]


def outcome(config: dict[str, Any]) -> str:
    """A hash of every setting but those that change only what a run shows or where it writes: runs of
    the same outcome compute the same numbers (metrics.json keeps it)."""
    return fingerprint(config, lambda key: not shown_only(key))


def settle_hydra_files(folder: Path, record: dict[str, Any], config: dict[str, Any]) -> None:
    """A finished run found again by a sweep job: Hydra has written the job's `.hydra/` over the run's.
    Where the job names the run as the run named itself but for display keys (`logger=csv`), the run's
    files go back (they say where it logged). Where it names it otherwise (a default typed out, as
    `loss=bce_logits` in a sweep that adds an arm) and its every other setting is the run's (the
    record's `outcome`), the job's files stay, as the run's, so that the sweep's report finds its job.
    Otherwise (another `callbacks.model_checkpoint.mode`, say) the run's go back, and the report
    refuses the job."""

    def named(files: str) -> dict[str, str]:
        try:
            overrides = yaml.safe_load((folder / files / "overrides.yaml").read_text()) or []
        except (OSError, yaml.YAMLError):
            return {}
        return meaning(parsed_overrides([str(o) for o in overrides]))

    if named(".hydra") != named(HYDRA_COPY) and record.get("outcome") == outcome(config):
        keep_hydra_files(folder)
    else:
        restore_hydra_files(folder)


def read_record(folder: Path) -> dict[str, Any] | None:
    for name in RECORDS:
        try:
            return json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
    return None


@dataclass
class Plan:
    """What a run does with its folder: start afresh, resume a checkpoint, or skip (already done)."""

    action: str  # fresh | resume | done
    checkpoint: Path | None = None
    record: dict[str, Any] | None = None


def claim(folder: Path, config: dict[str, Any], *, continue_own: bool) -> Plan:
    """Refuse a folder that holds another run; with `continue_own` (a sweep job or a recipe step
    run again), a finished record of this very run is `done` and its checkpoints are resumed."""
    record = read_record(folder)
    ours = fingerprint(config)
    if continue_own and record is not None and record.get("fingerprint") == ours and finished(record, config):
        return Plan("done", record=record)  # its checkpoints are not read: a damaged one is no reason to train again
    checkpoint = newest_checkpoint(folder / "checkpoints")
    if checkpoint is None and record is None:
        return Plan("fresh")
    owner = None
    if checkpoint is not None:
        owner_config = checkpoint_config(read_checkpoint("ckpt_path", checkpoint, mmap=True))
        owner = fingerprint(owner_config) if owner_config else None
    elif record is not None:
        owner = record.get("fingerprint")
    if owner != ours:
        raise RefusedFolder(
            f"hydra.run.dir={str(folder)!r} is not valid: it holds another run ({_evidence(folder, checkpoint)}); "
            "a new run never overwrites one: choose a new folder, or resume that run with its own overrides "
            "and ckpt_path=last"
        )
    if continue_own and checkpoint is not None:
        return Plan("resume", checkpoint=checkpoint)
    if checkpoint is None and (record is None or record.get("status") != "ok"):
        return Plan("fresh")  # the same run again, after it stopped before saving anything
    raise RefusedFolder(
        f"hydra.run.dir={str(folder)!r} is not valid: it holds this configuration's run already "
        f"({_evidence(folder, checkpoint)}): continue it with ckpt_path=last (a higher trainer.max_epochs "
        "trains on), evaluate it with train=false, or choose a new folder"
    )


def finished(record: dict[str, Any], config: dict[str, Any]) -> bool:
    """The record is `ok` and of the same length settings as `config` (its epochs and steps, at most and
    at least, and its time limit), so that a fresh run of the command ends where it ended. Any other
    length resumes, whose own checks train it on or refuse it. A record written before a key was kept
    is taken as run with that key's default."""
    return record.get("status") == "ok" and length_of(record) == length_of(config.get("trainer") or {})


def _evidence(folder: Path, checkpoint: Path | None) -> str:
    found = [name for name in RECORDS if (folder / name).is_file()]
    if checkpoint is not None:
        found.append(f"checkpoints/{checkpoint.name}")
    return ", ".join(found)


def owns_training_record(folder: Path) -> bool:
    """The folder holds a run's record or checkpoints: an evaluation writes beside them, not over them."""
    return read_record(folder) is not None or newest_checkpoint(folder / "checkpoints") is not None


RUN_MARKS = (".hydra", "multirun.yaml", *RECORDS)  # what makes a folder a run's (or a sweep's)


def enclosing_run(path: Path) -> Path | None:
    """The run or sweep folder `path` lies in: the nearest folder above it that holds Hydra's files,
    a run's record or its checkpoints; None outside any."""
    for folder in Path(path).resolve().parents:
        if any((folder / mark).exists() for mark in RUN_MARKS) or any((folder / "checkpoints").glob("*.ckpt")):
            return folder
    return None


def resumes_in_place(cfg: Any, output_dir: Path) -> bool:
    """`ckpt_path` points into this run's own folder: the resume check, not the folder's owner check, applies."""
    value = cfg.get("ckpt_path")
    if value is None:
        return False
    return value == "last" or output_dir.resolve() in Path(str(value)).resolve().parents


def keeps_hydra_files_out(folder: Path, cfg: Any) -> bool:
    """A training command into a folder that holds a run, other than that run's resume: `claim` refuses
    it, or it is the same run again after a stop before any checkpoint, whose `.hydra/` (the same
    meaning) stays; either way Hydra's files of this command are not written over the run's."""
    return bool(cfg.get("train", True)) and owns_training_record(folder) and not resumes_in_place(cfg, folder)


def evaluation_hydra_subdir(folder: Path, train: bool) -> str | None:
    """Where an evaluation (`train=false`) into a run's folder keeps Hydra's files for itself
    (`.hydra-eval-<UTC time>`), so that the run's `.hydra/` stays the run's; None for any other command."""
    if train or not owns_training_record(folder):
        return None
    return f".hydra-eval-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%d-%H%M%S-%f')}"


def evaluation_names(folder: Path) -> tuple[Path, Path]:
    """`eval-<UTC time>.json` and `.npz`: an evaluation's record beside the training run's own."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    return folder / f"eval-{stamp}.json", folder / f"eval-{stamp}.npz"


# ---- rebuilding a model from a folder's config, as data --------------------------------------------

SPECIAL = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")


def project_class(key: str, target: Any, base: type, allowed: tuple[str, ...] = ()) -> type:
    """The class a folder's config names, imported only if it is lossheads' own (or in `allowed`:
    the class the user's own command names), and only if it is a `base`."""
    ok = isinstance(target, str) and (target.startswith("lossheads.") or target in allowed)
    if ok:
        try:
            cls = get_class(target)
        except Exception:  # noqa: BLE001 -- a missing or odd name is the file's fault, told in one line
            cls = None
        ok = isinstance(cls, type) and issubclass(cls, base)
    if not ok:
        raise ConfigError(
            f"{key}: the run folder's config names _target_={target!r}, which is not one of lossheads' own "
            f"classes{' or ' + ', '.join(allowed) if allowed else ''}; a run folder is data: nothing it names "
            "outside the project is built. Give a checkpoint of a lossheads run"
        )
    return cls  # type: ignore[return-value]


def plain_options(key: str, node: dict[str, Any]) -> dict[str, Any]:
    """A config node's options as plain data; a nested `_target_` (code to run) is refused."""

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k in SPECIAL:
                    raise ConfigError(
                        f"{key}: the run folder's config holds {path}{k}={v!r}; a run folder is data: nothing "
                        "in it is instantiated. Give a checkpoint of a lossheads run"
                    )
                walk(v, f"{path}{k}.")
        elif isinstance(value, list):
            for item in value:
                walk(item, path)

    options = {k: v for k, v in node.items() if k != "_target_"}
    walk(options, "model.")
    return options


def require_data_only(key: str, model_cfg: dict[str, Any], student_model: Any) -> None:
    """A run folder's model config may name only lossheads' models or the class the student's own config
    names, with plain options (no nested `_target_`): checked before anything is imported or built."""
    from torch import nn

    allowed = (str(student_model.get("_target_")),) if student_model is not None else ()
    project_class(key, model_cfg.get("_target_"), nn.Module, allowed)
    plain_options(key, model_cfg)
