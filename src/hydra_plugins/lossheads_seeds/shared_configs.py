"""The seeds launcher's config loader: one composition per configuration, its other seeds copies of it.

Hydra composes each job's config twice (its sweeper checks the batch, then the launcher composes it
to run it); `SeedSharingConfigLoader` composes one per configuration and hands the other seeds a
copy with `seed` set, made as Hydra would make it (`_with_seed`).
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Sequence
from typing import Any

from hydra.core.config_loader import ConfigLoader
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict, read_write


def group_key(overrides: Sequence[str]) -> tuple[str, ...]:
    """A job's overrides without its seed value (`seed=`, `+seed=`, `++seed=`): the jobs of one
    configuration share it (`~seed` deletes the key: a configuration of its own)."""
    return tuple(o for o in overrides if o.split("=", 1)[0].lstrip("+") != "seed" or "=" not in o)


def _seed_item(overrides: Sequence[str]) -> str | None:
    return next((o for o in overrides if o.split("=", 1)[0].lstrip("+") == "seed"), None)


def _override_dirname(config: DictConfig, overrides: Sequence[str]) -> str:
    """`hydra.job.override_dirname` of the job `overrides`, as Hydra 1.3 computes it: the overrides
    as typed, but for `exclude_keys`, sorted, joined by `item_sep`, every `=` turned into `kv_sep`
    (`_seed_only_sets_a_value` checks that it gives a composed config's own)."""
    settings = config.hydra.job.config.override_dirname
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    lines = sorted(str(o.input_line) for o in parsed if o.key_or_group not in settings.exclude_keys)
    return re.sub("[=]", str(settings.kv_sep), str(settings.item_sep).join(lines))


def _with_seed(first: bytes, overrides: Sequence[str]) -> DictConfig:
    """The composed job config pickled in `first` as the job `overrides` (the same but for
    `seed=...`) composes it. A pickle round trip copies a job config in ~0.8 ms, a deepcopy in ~5."""
    config = pickle.loads(first)
    ours = _seed_item(overrides)
    with read_write(config), open_dict(config):
        if ours is not None:
            config.seed = OverridesParser.create().parse_override(ours).value()
        config.hydra.overrides.task = list(overrides)
        config.hydra.job.override_dirname = _override_dirname(config, overrides)
    return config


def _seed_only_sets_a_value(config: DictConfig) -> bool:
    """Whether jobs that differ from `config`'s only in `seed=...` compose to it with that seed set.
    Hydra composes the defaults list before any value exists, so its interpolations see config group
    choices only: unless `seed` names a config group, `seed=...` sets the value `seed` and nothing
    else but the job's overrides and override dirname, which `_with_seed` sets as Hydra does (where
    it does not give this config's own dirname, every job is composed)."""
    choices = OmegaConf.select(config, "hydra.runtime.choices", default=None) or {}
    own = config.hydra.job.override_dirname
    return "seed" not in choices and _override_dirname(config, list(config.hydra.overrides.task)) == own


class SeedSharingConfigLoader(ConfigLoader):
    """Hydra's config loader, but a job that differs from an earlier one only in `seed=...` gets that
    job's config with the seed set (`_with_seed`) instead of a composition of its own.

    Composing one job's config costs ~0.1 s on 2 CPU cores, as much as training a member, and a
    sweep composes each job twice: Hydra's sweeper composes every job to check the batch before any
    runs (`Sweeper.validate_batch_is_legal`), then the launcher composes it to run it. Configs of
    one configuration differ only where the seed is (`seed`, the task overrides, the override
    dirname) unless `seed` is a config group (`_seed_only_sets_a_value`): one is composed for real
    and the others are copies of it; when `seed` is a group, every job is composed for real once,
    and the launch gets a copy of what the check composed.

    The framework hook: the sweeper and the launcher share one `HydraContext`, whose `config_loader`
    the sweeper's check goes through; `SeedsLauncher.setup` puts this loader there (Hydra 1.3).
    tests/test_seeds.py counts the real compositions of a 3-seed sweep, and fails if either the
    check or the launch stops going through it."""

    def __init__(self, inner: ConfigLoader) -> None:
        self.inner = inner
        self.composed = self.copied = 0  # configs composed for real, and handed out as copies
        self.first: dict[tuple[int, tuple[str, ...]], bytes] = {}  # a configuration's composed config, pickled
        self.seen: dict[tuple[int, tuple[str, ...]], bytes] = {}  # other jobs composed for real, pickled

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        key = (id(master_config), group_key(sweep_overrides))
        if key in self.first:  # its seed only sets a value: every job of the configuration is a copy
            self.copied += 1
            return _with_seed(self.first[key], sweep_overrides)
        if (id(master_config), tuple(sweep_overrides)) in self.seen:  # the launch after Hydra's check
            self.copied += 1
            return pickle.loads(self.seen[(id(master_config), tuple(sweep_overrides))])
        config = self.inner.load_sweep_config(master_config, sweep_overrides)
        self.composed += 1
        if _seed_only_sets_a_value(config):
            self.first[key] = pickle.dumps(config)
        else:
            self.seen[(id(master_config), tuple(sweep_overrides))] = pickle.dumps(config)
        return config

    def load_configuration(self, *args: Any, **kwargs: Any) -> DictConfig:
        return self.inner.load_configuration(*args, **kwargs)

    def get_search_path(self) -> Any:
        return self.inner.get_search_path()

    def get_sources(self) -> Any:
        return self.inner.get_sources()

    def list_groups(self, parent_name: str) -> list[str]:
        return self.inner.list_groups(parent_name)

    def get_group_options(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.inner.get_group_options(*args, **kwargs)

    def compute_defaults_list(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.compute_defaults_list(*args, **kwargs)
