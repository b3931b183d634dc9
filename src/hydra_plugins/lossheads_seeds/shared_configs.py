"""The seeds launcher's config loader: one composition per set of config group choices; the jobs
that differ from it only in values (`seed=2`, `loss.pos_weight=auto`, `optimizer.lr=0.01`) get copies
of it with their values set, as Hydra sets them (`_with_values`).
"""

from __future__ import annotations

import functools
import pickle
import re
from collections.abc import Sequence
from typing import Any

from hydra.core.config_loader import ConfigLoader
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, read_write

SCALARS = (str, int, float, bool, type(None))
NOT_PLAIN = object()  # `_parsed`'s value of an item that does not set one plain scalar


def group_key(overrides: Sequence[str]) -> tuple[str, ...]:
    """A job's overrides without its seed value (`seed=`, `+seed=`, `++seed=`): the jobs of one
    configuration share it (`~seed` deletes the key: a configuration of its own)."""
    return tuple(o for o in overrides if o.split("=", 1)[0].lstrip("+") != "seed" or "=" not in o)


@functools.lru_cache(maxsize=4096)
def _parsed(item: str) -> tuple[str, str, Any]:
    """An override item's key (or group), its text as Hydra keeps it, and its value where it sets a
    plain scalar (else `NOT_PLAIN`): parsed once per text by Hydra's grammar (~0.5 ms each), though
    a sweep repeats each text in many jobs."""
    override = OverridesParser.create().parse_override(item)
    value = override.value()
    plain = not (override.is_add() or override.is_force_add() or override.is_delete() or override.package)
    return override.key_or_group, str(override.input_line), value if plain and isinstance(value, SCALARS) else NOT_PLAIN


def _value_key(item: str) -> str | None:
    """The key of an item that may only set a value (`key=value`: no `+`, `~` or `@package`, no config
    group path with `/`, not Hydra's own), judged from its text; None for any other item."""
    key, equals, _ = item.partition("=")
    if not equals or key.startswith(("+", "~")) or "@" in key or "/" in key or key.split(".", 1)[0] == "hydra":
        return None
    return key


def _signature(overrides: Sequence[str]) -> tuple[str, ...]:
    """The overrides with the value of each item that may only set one left out: jobs that may share a
    composition have one signature."""
    return tuple(f"{key}=" if (key := _value_key(o)) is not None else o for o in overrides)


def _override_dirname(config: DictConfig, overrides: Sequence[str]) -> str:
    """`hydra.job.override_dirname` of the job `overrides`, as Hydra 1.3 computes it: the overrides
    as typed, but for `exclude_keys`, sorted, joined by `item_sep`, every `=` turned into `kv_sep`
    (`_value_positions` checks that it gives a composed config's own)."""
    settings = config.hydra.job.config.override_dirname
    lines = sorted(_parsed(o)[1] for o in overrides if _parsed(o)[0] not in settings.exclude_keys)
    return re.sub("[=]", str(settings.kv_sep), str(settings.item_sep).join(lines))


def _with_values(first: bytes, overrides: Sequence[str], values: frozenset[int]) -> DictConfig:
    """The composed job config pickled in `first` as the job `overrides` (the same config group
    choices, other values at the positions `values`) composes it: each value set as Hydra sets a
    command line value (`OmegaConf.update(..., merge=True)`, in order, after composition), then the
    job's overrides and override dirname. A pickle round trip copies a job config in ~0.8 ms, where
    a composition takes ~100 ms."""
    config = pickle.loads(first)
    with read_write(config):
        for position in sorted(values):
            key, _, value = _parsed(overrides[position])
            OmegaConf.update(config, key, value, merge=True)
        config.hydra.overrides.task = list(overrides)
        config.hydra.job.override_dirname = _override_dirname(config, overrides)
    return config


def _value_positions(config: DictConfig, overrides: Sequence[str]) -> frozenset[int] | None:
    """The positions of the items of `overrides` that only set a value in `config`, composed from them;
    None where the jobs that differ in those values may not share it. Hydra composes the defaults list
    before any value is set, so its interpolations see config group choices only: an item that names
    no config group choice (`hydra.runtime.choices`) and sets a plain scalar sets that value and
    nothing else but the job's overrides and override dirname, which `_with_values` sets as Hydra
    does (where that does not give this config's own dirname, every job is composed). A list or a
    dict is merged into what is there, which would keep the first job's value in: composed too."""
    choices = OmegaConf.select(config, "hydra.runtime.choices", default=None) or {}
    if _override_dirname(config, list(config.hydra.overrides.task)) != config.hydra.job.override_dirname:
        return None
    # what each item sets, adds or deletes: a config group choice (`loss=ce`) sets none of the values
    keys = [None if _value_key(o) in choices else _parsed(o)[0] for o in overrides]
    values = frozenset(
        i for i, o in enumerate(overrides)
        if (key := _value_key(o)) is not None and key not in choices and not _touched_elsewhere(keys, i)
    )  # fmt: skip
    return None if any(_parsed(overrides[i])[2] is NOT_PLAIN for i in values) else values


def _touched_elsewhere(keys: Sequence[str | None], position: int) -> bool:
    """Whether another item sets, adds or deletes the key at `position`, a key under it or above it
    (`optimizer.lr=0.01,0.1 ++optimizer.lr=0.5`, `~optimizer`): which item wins then depends on their
    order, which setting this one again on a copy would not keep. None: an item that sets no value."""
    ours = str(keys[position])
    return any(
        k is not None and (k == ours or k.startswith(f"{ours}.") or ours.startswith(f"{k}."))
        for i, k in enumerate(keys)
        if i != position
    )


class SeedSharingConfigLoader(ConfigLoader):
    """Hydra's config loader, but a job that differs from an earlier one only in values (its seed, a
    loss option, a learning rate) gets that job's config with its values set (`_with_values`)
    instead of a composition of its own.

    Composing one job's config costs ~0.1 s on 2 CPU cores, as much as training a member, and a
    sweep composes each job twice: Hydra's sweeper composes every job to check the batch before any
    runs (`Sweeper.validate_batch_is_legal`), then the launcher composes it to run it. Here one job
    of each set of config group choices is composed for real and the others are copies of it; a job
    whose items `_value_positions` does not vouch for (a config group named like a value, a `+key`,
    a list) is composed for real once, and the launch gets a copy of what the check composed.

    The framework hook: the sweeper and the launcher share one `HydraContext`, whose `config_loader`
    the sweeper's check goes through; `SeedsLauncher.setup` puts this loader there (Hydra 1.3).
    tests/test_seeds.py counts the real compositions of a 3-seed sweep, and fails if either the
    check or the launch stops going through it."""

    def __init__(self, inner: ConfigLoader) -> None:
        self.inner = inner
        self.composed = self.copied = 0  # configs composed for real, and handed out as copies
        self.shapes: dict[tuple[int, tuple[str, ...]], frozenset[int]] = {}  # by signature: value positions
        self.first: dict[tuple[int, tuple[str, ...]], bytes] = {}  # a configuration's composed config, pickled
        self.seen: dict[tuple[int, tuple[str, ...]], bytes] = {}  # other jobs composed for real, pickled
        self.peeked: dict[bytes, DictConfig] = {}  # `composed_value`'s configs, by their pickle

    def _configuration(self, master_config: DictConfig, overrides: Sequence[str]) -> tuple[Any, frozenset[int]]:
        """The key in `first` of the job's configuration (its items but the values), and its value
        positions; (None, ...) where no job of its signature was composed yet."""
        values = self.shapes.get((id(master_config), _signature(overrides)))
        if values is None:
            return None, frozenset()
        return (id(master_config), tuple("" if i in values else o for i, o in enumerate(overrides))), values

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        key, values = self._configuration(master_config, sweep_overrides)
        if key in self.first and all(_parsed(sweep_overrides[i])[2] is not NOT_PLAIN for i in values):
            self.copied += 1  # a job of its configuration was composed: a copy with this job's values
            return _with_values(self.first[key], sweep_overrides, values)
        if (id(master_config), tuple(sweep_overrides)) in self.seen:  # the launch after Hydra's check
            self.copied += 1
            return pickle.loads(self.seen[(id(master_config), tuple(sweep_overrides))])
        config = self.inner.load_sweep_config(master_config, sweep_overrides)
        self.composed += 1
        own = _value_positions(config, sweep_overrides)
        if own is not None and self.shapes.setdefault((id(master_config), _signature(sweep_overrides)), own) == own:
            key, _ = self._configuration(master_config, sweep_overrides)
            self.first.setdefault(key, pickle.dumps(config))
        else:  # not vouched for, or its signature's first job had other value positions
            self.seen[(id(master_config), tuple(sweep_overrides))] = pickle.dumps(config)
        return config

    def composed_value(self, master_config: DictConfig, sweep_overrides: list[str], key: str) -> Any:
        """`key`'s value in the config composed for the job `sweep_overrides` (or for another job of
        its configuration), without composing one: None where none was composed, or where one of the
        job's own values sets `key`, a key under it or above it."""
        configuration, values = self._configuration(master_config, sweep_overrides)
        own = [_parsed(sweep_overrides[i])[0] for i in values]
        if _touched_elsewhere([key, *own], 0):
            return None  # a value of this job's own sets it (`head.name=softmax`): the copy is not made here
        found = self.first.get(configuration) or self.seen.get((id(master_config), tuple(sweep_overrides)))
        if found is None:
            return None
        if found not in self.peeked:
            self.peeked[found] = pickle.loads(found)
        return OmegaConf.select(self.peeked[found], key, default=None)

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
