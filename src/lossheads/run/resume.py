"""Resume is exact or refused: a resumed run continues the checkpoint's run, nothing else.

The checkpoint carries its run's resolved config (`checkpoints.RunCheckpointIO`). A resume compares
it with the config of the command: every key may change its meaning (model, head, loss and its
options, data and split, optimizer, batch size, seed, steps_per_call, precision, ...) except those
in `MAY_CHANGE`, which decide only how long training goes on, where it writes and what it shows.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from lossheads.config.validators import ConfigError

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


def may_change(key: str) -> bool:
    return any(key == k or key.startswith(f"{k}.") for k in MAY_CHANGE)


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
    done, max_epochs = epochs_done(checkpoint), (ours.get("trainer") or {}).get("max_epochs")
    if isinstance(max_epochs, int) and max_epochs != -1 and max_epochs < done:
        raise ConfigError(
            f"trainer.max_epochs={max_epochs} is not valid: the checkpoint {path} has already trained "
            f"{done} epochs; give trainer.max_epochs>={done} to continue it, or evaluate it with train=false"
        )
    step, max_steps = int(checkpoint.get("global_step", 0)), (ours.get("trainer") or {}).get("max_steps")
    if isinstance(max_steps, int) and max_steps != -1 and max_steps < step:
        raise ConfigError(
            f"trainer.max_steps={max_steps} is not valid: the checkpoint {path} has already taken {step} "
            f"steps; give trainer.max_steps>={step} (or -1) to continue it, or evaluate it with train=false"
        )


def _show(value: Any) -> str:
    return value if value == ABSENT else repr(value) if isinstance(value, str) else str(value)


def resumed_from(path: str, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What metrics.json records of the checkpoint a resumed run started from."""
    from lossheads.run.checkpoints import epochs_done

    return {"checkpoint": path, "epochs": epochs_done(checkpoint), "step": int(checkpoint.get("global_step", 0))}
