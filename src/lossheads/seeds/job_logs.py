"""Hydra's logging of a sweep and of its jobs, each set up once and then switched back to.

A seeds group moves between loggings many times: the sweep's own comes back after each job is
prepared (as Hydra's basic launcher does after each job), and a member's comes back while it is
tested and recorded. Hydra's `configure_log` (the config resolved, `logging.config.dictConfig`:
every handler closed and made again) costs ~1.4 ms a time, four times a member. `JobLogging.use`
puts back what one set-up left on the root logger, its handlers and level, in ~0.05 ms.

A handler switched away from is closed, as `dictConfig` closes it; a file handler opens its file
again, appending, for its next line, so that a group of a thousand members holds no thousand open
files. Only set-ups that this restores exactly are kept (`JobLogging.current`): root handlers that
are plain `StreamHandler`s and `FileHandler`s appending to their file, named loggers given only a
level or `propagate` (Hydra's own `hydra_logging` has one), and `disable_existing_loggers: false`
(as Hydra's configs have it). Once any other was set up (Hydra's `disabled` disables every logger),
every switch in the process is Hydra's `configure_log` again, as before; Hydra's `none` logging (no
`root`), which `configure_log` leaves as it finds it, is left so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from hydra.core.utils import configure_log
from omegaconf import DictConfig


def _put_back_exactly(handler: logging.Handler) -> bool:
    """A handler that works again after `close`: a console stream, or a file opened again to append."""
    if type(handler) is logging.FileHandler:
        return handler.mode != "w"  # a closed "w" handler drops its lines (CPython issue 42378)
    return type(handler) is logging.StreamHandler


_SWITCHED = {"exactly": True}  # False once a set-up that a switch cannot put back was made in this process


@dataclass(frozen=True)
class JobLogging:
    """What one Hydra logging config set up on the root logger (and the config, to set it up again)."""

    handlers: tuple[logging.Handler, ...]
    level: int
    loggers: tuple[tuple[str, int, bool], ...]  # the config's named loggers: (name, level, propagate)
    config: DictConfig = field(compare=False)
    verbose: Any = field(compare=False)

    @staticmethod
    def current(log_config: DictConfig | None, verbose: Any) -> JobLogging | None:
        """The root logger's set-up now, which `log_config` has just made; None where `use` could not
        put it back exactly. Such a set-up (loggers disabled, say) changes what every other set-up
        left, so from then on every switch in this process is Hydra's own set-up again."""
        root = logging.getLogger()
        if log_config is None or log_config.get("root") is None:  # Hydra's `none`: configure_log leaves all as is
            return None
        named = log_config.get("loggers") or {}
        exact = (
            log_config.get("disable_existing_loggers", True) is False  # else each set-up disables loggers
            and not log_config.root.get("filters")
            and not any(set(named[name] or {}) - {"level", "propagate"} for name in named)  # own handlers or filters
            and all(map(_put_back_exactly, root.handlers))
        )
        if not exact:
            _SWITCHED["exactly"] = False
            return None
        loggers = tuple((str(n), logging.getLogger(str(n)).level, logging.getLogger(str(n)).propagate) for n in named)
        return JobLogging(tuple(root.handlers), root.level, loggers, log_config, verbose)

    @staticmethod
    def set_up(log_config: DictConfig | None, verbose: Any) -> JobLogging | None:
        """Hydra's own set-up of `log_config`, kept where `use` can put it back."""
        configure_log(log_config, verbose)
        return JobLogging.current(log_config, verbose)

    def use(self) -> None:
        if not _SWITCHED["exactly"]:
            configure_log(self.config, self.verbose)
            return
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
            if handler not in self.handlers:
                handler.close()
        for handler in self.handlers:
            root.addHandler(handler)
        root.setLevel(self.level)
        for name, level, propagate in self.loggers:
            logger = logging.getLogger(name)
            logger.setLevel(level)
            logger.propagate = propagate


def switch_logging(kept: JobLogging | None, log_config: DictConfig | None, verbose: Any) -> None:
    """`kept` put back, or where none was kept, Hydra's set-up of `log_config` made again."""
    if kept is not None:
        kept.use()
    else:
        configure_log(log_config, verbose)
