"""Which head and which loss a run uses: `auto` choices, compatibility and the option keys a loss takes.

Everything here asks the head and loss classes (their tasks, forms, defaults and `takes`), so a new
head or loss takes part without an edit here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_args

from omegaconf import OmegaConf
from torch import Tensor

from lossheads.config.validators import ConfigError, require_choice
from lossheads.heads import HEADS, Head, Task
from lossheads.losses import LOSSES, Loss

AUTO = "auto"


def loss_name(loss_cfg: Mapping[str, Any]) -> str:
    """The loss a config names: `name`, or (run folders written before losses had names) the class
    of its `_target_`, matched by class name against the registry, never imported."""
    if loss_cfg.get("name"):
        return str(loss_cfg["name"])
    class_name = str(loss_cfg.get("_target_", "")).rsplit(".", 1)[-1]
    return next((n for n, c in LOSSES.items() if c.__name__ == class_name), class_name)


def losses_fitting(head: type[Head]) -> list[str]:
    """The losses a user can pick for this head, its own hard loss first (KD needs a teacher: left out)."""
    names = [n for n, c in sorted(LOSSES.items()) if c.fits(head) and not c.needs_teacher]
    return sorted(names, key=lambda n: n != head.hard_loss)


def heads_fitting(task: Task, loss: type[Loss] | None = None) -> list[str]:
    """Heads that fit the data (and the loss), the task's default head first."""
    names = [n for n, h in sorted(HEADS.items()) if task in h.tasks and (loss is None or loss.fits(h))]
    return sorted(names, key=lambda n: task not in HEADS[n].default_for)


def check_names(head_name: str, loss: str) -> None:
    """The head and the loss are registered names (or auto); `build` asks before building the data."""
    require_choice("head", head_name, (AUTO, *sorted(HEADS)))
    require_choice("loss", loss, (AUTO, *sorted(LOSSES)))


def resolve(head_name: str, loss: str, task: Task) -> tuple[type[Head], type[Loss]]:
    """`head=auto` takes the task's default head if the loss fits it, else another head that fits both;
    `loss=auto` takes the head's own loss (`Head.hard_loss`): sigmoid + bce_logits on binary data,
    softmax + ce on multi-class, multilabel + bce_logits on multi-label. A pair that does not fit is
    refused in one line with a fix that works."""
    check_names(head_name, loss)
    loss_cls = None if loss == AUTO else LOSSES[loss]
    if head_name == AUTO:
        candidates = heads_fitting(task, loss_cls)
        if not candidates:
            fitting = "|".join(losses_fitting(HEADS[heads_fitting(task)[0]]))
            raise ConfigError(f"loss={loss} fits no head on {task} data: use loss=auto or loss={fitting}")
        head_name = candidates[0]
    head = HEADS[head_name]
    if task not in head.tasks:
        fitting = heads_fitting(task, loss_cls) or heads_fitting(task)
        fix = f"use head={fitting[0]}" if heads_fitting(task, loss_cls) else f"use head={fitting[0]} loss=auto"
        raise ConfigError(f"head={head_name} does not fit {task} data: {fix}")
    if loss_cls is None:
        return head, LOSSES[head.hard_loss]
    if not loss_cls.fits(head):
        wanted = "|".join(n for n, h in sorted(HEADS.items()) if loss_cls.fits(h))
        other_heads = heads_fitting(task, loss_cls)
        losses = "|".join(losses_fitting(head))
        fix = f"use head={other_heads[0]} or loss={losses}" if other_heads else f"use loss={losses}"
        raise ConfigError(f"loss={loss} needs head={wanted}, got head={head_name}: {fix}")
    return head, loss_cls


def head_on_each_task(head_name: str, loss: str) -> tuple[str | None, ...]:
    """The head the pair resolves to on binary, multi-class and multi-label data (None: it fits none
    there); before the data is read, two runs whose heads differ on every task never share a head."""
    heads: list[str | None] = []
    for task in get_args(Task):
        try:
            heads.append(resolve(head_name, loss, task)[0].name)
        except (ConfigError, KeyError):
            heads.append(None)
    return tuple(heads)


def build_head_for(head_cfg: Mapping[str, Any], loss_cfg: Mapping[str, Any], task: Task, num_classes: int,
                   threshold: Any = 0.5) -> Head:  # fmt: skip
    head, _ = resolve(str(head_cfg.get("name")), loss_name(loss_cfg), task)
    return head(num_classes, task, threshold)


def build_loss(loss_cfg: Mapping[str, Any], head: Head, train_targets: Tensor) -> Loss:
    """The loss the config names (`auto` resolved for this head), built with the options it takes;
    a set option it does not take is refused in one line naming the losses that take it."""
    _, cls = resolve(head.name, loss_name(loss_cfg), head.task)
    plain = OmegaConf.to_container(loss_cfg, resolve=True) if OmegaConf.is_config(loss_cfg) else dict(loss_cfg)
    options = {k: v for k, v in plain.items() if k not in ("name", "_target_")}
    for key, value in options.items():
        if value is not None and key not in cls.takes:
            takers = [n for n, c in sorted(LOSSES.items()) if key in c.takes]
            fix = (f"the losses that take it are {'|'.join(takers)}; drop loss.{key} or pick one of those losses"
                   if takers else f"no loss takes it; drop loss.{key}")  # fmt: skip
            raise ConfigError(
                f"loss.{key}={value!r} is not an option of loss={cls.name} (it takes {', '.join(cls.takes)}): {fix}"
            )
    return cls(head, train_targets, **{k: v for k, v in options.items() if k in cls.takes and v is not None})
