"""The whole-config check: the top-level keys and the trainer, before anything is built.

Components validate their own arguments where they enter (constructors raise `ConfigError`); this
covers what no component owns. `check_config` imports neither torch nor Lightning, so the entry point
answers a bad value before loading them (seconds); `check_machine` needs torch and runs in
`run.build.plan_run`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lossheads.config.validators import MAX_SEED, ConfigError, is_int, is_number, require, require_choice, require_int


def check_config(cfg: DictConfig) -> None:
    """Checks of the top-level keys; data, head, loss, model and scheduler check themselves
    (`pairing.check_names` the head and loss names), and Lightning the trainer's arguments (its
    aliases, e.g. precision=16 or devices=[0], work)."""
    require_finite_numbers(cfg)
    require(is_int(cfg.seed) and 0 <= cfg.seed <= MAX_SEED, "seed", cfg.seed, f"use a whole number in [0, {MAX_SEED}]")
    require(isinstance(cfg.get("train"), bool), "train", cfg.get("train"), "use true, or false to evaluate ckpt_path")
    if cfg.threshold != "auto":
        require(is_number(cfg.threshold) and 0 < cfg.threshold < 1, "threshold", cfg.threshold,
                "use a number in (0, 1), or auto (the validation F1-maximizing threshold)")  # fmt: skip
    else:
        require(cfg.trainer.get("limit_val_batches") != 0, "threshold", "auto",
                "it is chosen on the validation split, which trainer.limit_val_batches=0 leaves out: "
                "give limit_val_batches > 0, or a threshold in (0, 1)")  # fmt: skip
    optimizer = cfg.optimizer
    require(is_number(optimizer.get("lr")) and optimizer.lr > 0, "optimizer.lr", optimizer.get("lr"),
            "use a learning rate > 0, e.g. optimizer.lr=1e-3")  # fmt: skip
    weight_decay = optimizer.get("weight_decay", 0.0)
    require(is_number(weight_decay) and weight_decay >= 0, "optimizer.weight_decay", weight_decay,
            "use a number >= 0")  # fmt: skip
    trainer = cfg.trainer
    require(is_int(trainer.max_epochs) and (trainer.max_epochs >= 1 or trainer.max_epochs == -1),
            "trainer.max_epochs", trainer.max_epochs, "use a whole number >= 1")  # fmt: skip
    require_int("steps_per_call", cfg.steps_per_call, 1)
    patience = cfg.get("early_stopping", {}).get("patience")
    require(patience is None or (is_int(patience) and patience >= 1), "early_stopping.patience", patience,
            "use a whole number of epochs >= 1, or null for no early stopping")  # fmt: skip
    require_choice("test_on", cfg.get("test_on", "last"), ("last", "best"))
    bar = (cfg.get("callbacks") or {}).get("progress_bar")
    require(trainer.get("enable_progress_bar", True) is not False or not bar, "trainer.enable_progress_bar", False,
            "the console's bar is callbacks.progress_bar: turn it off with callbacks.progress_bar.refresh_rate=0, "
            "or drop it with ~callbacks.progress_bar")  # fmt: skip
    check_training_budget(trainer)


def require_finite_numbers(cfg: DictConfig) -> None:
    """NaN and infinity are refused wherever a number goes: one rule over the whole composed config,
    because a per-key check lets NaN through (every comparison with NaN is false): early stopping
    stops at once on `min_delta=nan`, clipping ignores `gradient_clip_val=nan`."""
    try:
        tree = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException:  # an interpolation only Hydra's own run can resolve: the values as typed
        tree = OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False)
    for key, value in leaves(tree):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}={value} is not valid: NaN and infinity are not numbers a run can use; "
                              "give a finite number")  # fmt: skip


def leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every value in a plain config tree, list items as `key[i]`; Hydra's own
    node (`hydra.*`) is left out."""
    if isinstance(node, dict):
        for key, value in node.items():
            if not (prefix == "" and key == "hydra"):
                yield from leaves(value, f"{prefix}{key}.")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from leaves(value, f"{prefix.rstrip('.')}[{i}].")
    else:
        yield prefix.rstrip("."), node


def check_training_budget(trainer: DictConfig) -> None:
    """A run that can take no optimizer step would report its random initialization as a result."""
    max_steps = trainer.get("max_steps", -1)
    require(is_int(max_steps) and (max_steps >= 1 or max_steps == -1), "trainer.max_steps", max_steps,
            "use -1 (no limit) or a whole number >= 1: with 0 the run would take no optimizer step")  # fmt: skip
    limit = trainer.get("limit_train_batches")
    require(limit is None or (is_number(limit) and limit > 0), "trainer.limit_train_batches", limit,
            "use a fraction in (0, 1] or a number of batches >= 1: 0 would take no optimizer step")  # fmt: skip


def check_machine(trainer: DictConfig) -> None:
    """Devices this machine has, and nodes only inside a cluster (Lightning would start more processes
    than cores, or wait forever for the other nodes)."""
    import torch
    from lightning.fabric.plugins.environments import (
        LSFEnvironment,
        MPIEnvironment,
        SLURMEnvironment,
        TorchElasticEnvironment,
    )

    devices, accelerator = trainer.devices, str(trainer.accelerator)
    gpus = torch.cuda.device_count()
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and gpus > 0)
    have = gpus if on_gpu else os.cpu_count() or 1
    unit = "GPU(s)" if on_gpu else "CPU core(s)"
    require(not is_int(devices) or devices == -1 or devices <= have, "trainer.devices", devices,
            f"this machine has {have} {unit}: use trainer.devices<={have} (or -1 for all)")  # fmt: skip
    nodes = trainer.get("num_nodes", 1)
    require(is_int(nodes) and nodes >= 1, "trainer.num_nodes", nodes, "use a whole number >= 1")
    environments = (SLURMEnvironment, TorchElasticEnvironment, LSFEnvironment, MPIEnvironment)  # Kubeflow: no detect
    manual = all(k in os.environ for k in ("MASTER_ADDR", "NODE_RANK"))  # Lightning's own multi-node set-up
    in_cluster = manual or any(env.detect() for env in environments)
    require(nodes == 1 or in_cluster, "trainer.num_nodes", nodes,
            "several nodes need a cluster launcher (SLURM: srun or hydra/launcher=submitit_slurm; torchrun); "
            "none was found, so the run would wait forever for the other nodes: use trainer.num_nodes=1")  # fmt: skip
