"""Refuse bad input early, in one line that names the key, the value and the fix.

Components validate their own arguments where they enter (constructors raise `ConfigError`);
`check_config` covers the top-level keys and the trainer before anything is built.
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Callable, Iterable
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

MAX_SEED = 2**32 - 1  # numpy's and Lightning's seed range
EXIT_BAD_INPUT = 2  # the exit code of every refusal: a ConfigError printed as one line


class ConfigError(ValueError):
    """A user's input that cannot work; the message is shown as one line, without a traceback."""


def instantiate_checked(
    node: DictConfig, key: str | None = None, explain: Callable[[BaseException], str | None] | None = None,
    **kwargs: Any,
) -> Any:  # fmt: skip
    """Hydra's `instantiate` (containers passed as plain lists/dicts), with Hydra's
    `InstantiationException` turned into one `ConfigError` line: a constructor's own `ConfigError`
    as itself; else `explain(cause)`'s line, where it gives one; else, with `key` (the config
    group), a constructor's TypeError or ValueError (an unknown option, a wrong type). Any other
    cause (a bug inside a constructor) keeps its traceback."""
    call = plain_call(node, kwargs)
    try:
        if call is not None:
            try:
                return call()
            except Exception as exc:  # as Hydra wraps a constructor's exception
                raise InstantiationException(f"Error in call to target '{node.get('_target_')}'") from exc
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, ConfigError):
            raise cause from None
        line = explain(cause) if explain else None
        if line is None and key and isinstance(cause, (TypeError, ValueError)):
            line = f"{key}: {first_line(cause)}: fix the {key}.* overrides"
        target = node.get("_target_") if isinstance(node, DictConfig) else None
        if line is None and key and (isinstance(cause, (ImportError, AttributeError)) or "callable target" in str(exc)):
            why = " ".join(str(cause).split()) if isinstance(cause, (ImportError, AttributeError)) else first_line(exc)
            line = (f"{key}._target_={target!r} cannot be built ({why}): name an importable class or function; "
                    "your own needs its module's folder on PYTHONPATH")  # fmt: skip
        if line is None:
            raise
        raise ConfigError(line) from None


@functools.cache
def _imported(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def plain_call(node: Any, kwargs: dict[str, Any]) -> Callable[[], Any] | None:
    """`instantiate(node, _convert_="all", **kwargs)` as the one call it makes, where Hydra has
    nothing else to do (no `_partial_`, `_args_` or nested `_target_`; a target that imports): ~0.1 ms
    instead of ~1 ms, and a run instantiates half a dozen (tests/test_framework_internals.py compares).
    None: Hydra instantiates it, and says what is wrong in its own words."""
    if not isinstance(node, DictConfig) or any(isinstance(v, (DictConfig, ListConfig)) for v in kwargs.values()):
        return None
    try:
        arguments = OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
        target = _imported(arguments.pop("_target_"))
    except Exception:  # noqa: BLE001 -- whatever it is, Hydra's instantiate says it
        return None

    def nested(value: Any) -> bool:
        if isinstance(value, dict):
            return "_target_" in value or any(nested(v) for v in value.values())
        return isinstance(value, list) and any(nested(v) for v in value)

    if not callable(target) or any(str(k).startswith("_") for k in arguments) or nested(arguments):
        return None
    return lambda: target(**{**arguments, **kwargs})


def first_line(exc: BaseException) -> str:
    """An exception's first line, or its type's name when it has no message."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def require(condition: bool, key: str, value: Any, fix: str) -> None:
    """Raise `ConfigError("<key>=<value> is not valid: <fix>")` unless `condition` holds."""
    if not condition:
        raise ConfigError(f"{key}={value!r} is not valid: {fix}")


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def require_int(key: str, value: Any, minimum: int) -> None:
    require(is_int(value) and value >= minimum, key, value, f"use a whole number >= {minimum}")


def require_fraction(key: str, value: Any, *, low_open: bool, high_open: bool) -> None:
    """A number in [0, 1], with either end excluded where `*_open` says so."""
    ok = is_number(value) and (value > 0 if low_open else value >= 0)
    ok = ok and (value < 1 if high_open else value <= 1)
    interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
    require(ok, key, value, f"use a number in {interval}")


def require_choice(key: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    require(value in choices, key, value, f"use one of {', '.join(choices)}")
