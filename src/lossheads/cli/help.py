"""`lossheads-train --help` and the one-line answer to a mistyped override: both read from the
configs themselves, so a new option or key is listed the day its file exists."""

from __future__ import annotations

import difflib
from pathlib import Path

from omegaconf import OmegaConf


def config_dir() -> Path:
    """The configs shipped inside the installed package, or the repository's `configs/` folder when
    running from a source checkout (`python train.py`, editable installs)."""
    package = Path(__file__).resolve().parents[1]
    packaged = package / "configs"
    if (packaged / "train.yaml").is_file():
        return packaged
    return package.parents[1] / "configs"


def group_options(configs: Path) -> dict[str, list[str]]:
    """Each config group and its options (files starting with `_` are internal building blocks)."""
    return {
        group.name: sorted(p.stem for p in group.glob("*.yaml") if not p.stem.startswith("_"))
        for group in sorted(configs.iterdir())
        if group.is_dir() and not group.name.startswith(("_", "."))
    }


def help_page(configs: Path) -> str:
    """The `--help` page, from the configs: groups with their options and defaults, then top-level keys."""
    train = OmegaConf.load(configs / "train.yaml")
    defaults = {}
    for entry in OmegaConf.to_container(train, resolve=False).get("defaults", []):
        if isinstance(entry, dict):  # unresolved: an entry may name its option by interpolation
            defaults.update({str(k): v for k, v in entry.items()})
    lines = [
        "usage: lossheads-train [group=option ...] [key=value ...]   (or: python train.py ...)",
        "       lossheads-train -m key=a,b seed=1,2,3               a sweep (Hydra multirun)",
        "",
        "Train a classifier and record its validation and test metrics in outputs/DATE/TIME/.",
        "",
        "config groups (default marked *):",
    ]
    for group, options in group_options(configs).items():
        default = defaults.get(group)
        shown = [f"{o}*" if o == default else o for o in options]
        lines.append(f"  {group:<16}{', '.join(shown)}")
    lines += ["", "top-level keys (default):"]
    for key, value in train.items():
        if key in ("defaults", "hydra"):
            continue
        text = OmegaConf.to_yaml(value).strip() if OmegaConf.is_config(value) else str(value)
        text = text.replace("\n", "; ")
        lines.append(f"  {key:<18}{text if len(text) <= 60 else text[:57] + '...'}")
    lines += [
        "",
        "examples:",
        "  lossheads-train loss=ce data=digits",
        "  lossheads-train scheduler=cosine early_stopping.patience=5 test_on=best",
        "  lossheads-train print_config=full          the whole composed config",
        "  lossheads-train -m loss=bce_logits,ce seed=1,2,3 hydra/launcher=joblib",
        "",
        "Any key of a group can be set: loss.pos_weight=auto, trainer.max_epochs=5. Hydra's own options:",
        '--hydra-help; shell completion: eval "$(lossheads-train -sc install=bash)".',
    ]
    return "\n".join(lines)


def nearest(word: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(word, candidates, n=1, cutoff=0.5)
    return f": did you mean {match[0]}?" if match else ""


def composition_error(exc: BaseException) -> str:
    """One line for a config Hydra could not compose: what was typed, the nearest valid name."""
    from hydra.errors import MissingConfigException

    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and "/" in exc.missing_cfg_file:
        group, _, option = exc.missing_cfg_file.rpartition("/")
        options = [o for o in (exc.options or []) if not o.startswith("_")]
        hint = nearest(option, options).replace("did you mean ", f"did you mean {group}=")
        return f"{group}={option} is not an option of {group}{hint} (options: {', '.join(options)})"
    cause = exc.__cause__
    full_key = getattr(cause, "full_key", None)
    parent = getattr(cause, "parent_node", None)
    if full_key and OmegaConf.is_dict(parent):
        prefix, _, key = str(full_key).rpartition(".")
        keys = [str(k) for k in parent]
        hint = nearest(key, keys).replace("did you mean ", f"did you mean {prefix + '.' if prefix else ''}")
        where = prefix or "the config"
        return f"{full_key} is not a key of {where}{hint} (to add a new key: +{full_key}=...)"
    return f"cannot read the overrides: {str(exc).strip().splitlines()[0]}"
