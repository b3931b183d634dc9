"""The seeds launcher's switch between its jobs' loggings: what Hydra's `configure_log` set up is put
back as it was, lines land in the right job's file, and a switched-away file is not held open."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from lossheads.seeds.job_logs import JobLogging, switch_logging


def job_logging(file: Path, **changes: object) -> DictConfig:
    """Hydra's default `hydra/job_logging` (console and the job's file), `changes` merged into it."""
    config = {
        "version": 1,
        "formatters": {"simple": {"format": "[%(name)s][%(levelname)s] - %(message)s"}},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "simple", "stream": "ext://sys.stdout"},
            "file": {"class": "logging.FileHandler", "formatter": "simple", "filename": str(file)},
        },
        "root": {"level": "INFO", "handlers": ["console", "file"]},
        "disable_existing_loggers": False,
    }
    return OmegaConf.merge(config, changes)  # type: ignore[return-value]


@pytest.fixture(autouse=True)
def root_logging_restored() -> Iterator[None]:
    from lossheads.seeds import job_logs

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    job_logs._SWITCHED["exactly"] = True  # as in a fresh process
    yield
    job_logs._SWITCHED["exactly"] = True
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_a_kept_logging_is_put_back_and_its_file_appended_to(tmp_path: Path) -> None:
    first, second = tmp_path / "0" / "train.log", tmp_path / "1" / "train.log"
    for file in (first, second):
        file.parent.mkdir()
    kept = JobLogging.set_up(job_logging(first), False)
    assert kept is not None
    logging.getLogger("lossheads.test").info("first job, prepared")
    other = JobLogging.set_up(job_logging(second), False)
    assert other is not None
    logging.getLogger("lossheads.test").info("second job, prepared")
    kept.use()
    root = logging.getLogger()
    assert tuple(root.handlers) == kept.handlers and root.level == logging.INFO
    file_handlers = [h for h in other.handlers if isinstance(h, logging.FileHandler)]
    assert [h.stream for h in file_handlers] == [None]  # the second job's file is closed while the first's is current
    logging.getLogger("lossheads.test").info("first job, recorded")
    other.use()
    logging.getLogger("lossheads.test").info("second job, recorded")
    for handler in logging.getLogger().handlers:
        handler.flush()
    assert first.read_text().splitlines() == [
        "[lossheads.test][INFO] - first job, prepared",
        "[lossheads.test][INFO] - first job, recorded",
    ]
    assert second.read_text().splitlines() == [
        "[lossheads.test][INFO] - second job, prepared",
        "[lossheads.test][INFO] - second job, recorded",
    ]


def test_named_loggers_levels_come_back(tmp_path: Path) -> None:
    """Hydra's own `hydra_logging` sets a named logger's level: putting it back sets that level again."""
    kept = JobLogging.set_up(job_logging(tmp_path / "a.log", loggers={"chatty": {"level": "DEBUG"}}), False)
    assert kept is not None
    JobLogging.set_up(job_logging(tmp_path / "b.log", loggers={"chatty": {"level": "ERROR"}}), True)
    assert logging.getLogger().level == logging.DEBUG  # hydra.verbose=true
    assert logging.getLogger("chatty").level == logging.ERROR
    kept.use()
    assert logging.getLogger("chatty").level == logging.DEBUG and logging.getLogger().level == logging.INFO


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"handlers": {"file": {"class": "logging.FileHandler", "filename": "X", "mode": "w"}}}, "a closed 'w' file"),
        ({"disable_existing_loggers": True}, "loggers disabled on each set-up"),
        ({"loggers": {"x": {"handlers": ["file"]}}}, "a named logger's own handler"),
        ({"filters": {"f": {"name": "lossheads"}}, "root": {"filters": ["f"]}}, "a filter on the root logger"),
        ({"handlers": {"file": {"class": "logging.handlers.RotatingFileHandler", "filename": "X"}}}, "another class"),
    ],
)
def test_a_logging_not_put_back_exactly_is_set_up_each_time(tmp_path: Path, changes: dict, why: str) -> None:
    file = str(tmp_path / "job.log")
    config = job_logging(tmp_path / "job.log", **changes)
    config = OmegaConf.create(OmegaConf.to_yaml(config).replace("filename: X", f"filename: {file}"))
    assert JobLogging.set_up(config, False) is None, why
    switch_logging(None, config, False)  # Hydra's configure_log again
    logging.getLogger(f"lossheads.test.{tmp_path.name}").warning("logged")  # made after: not disabled
    for handler in logging.getLogger().handlers:
        handler.flush()
    assert "logged" in Path(file).read_text()


def test_hydras_none_logging_is_left_as_it_is(tmp_path: Path) -> None:
    """`hydra/job_logging=none` (no root): `configure_log` touches nothing, and neither does a switch."""
    kept = JobLogging.set_up(job_logging(tmp_path / "a.log"), False)
    assert kept is not None
    none = OmegaConf.create({"version": 1, "root": None, "disable_existing_loggers": False})
    assert JobLogging.set_up(none, False) is None
    assert tuple(logging.getLogger().handlers) == kept.handlers
    kept.use()
    assert tuple(logging.getLogger().handlers) == kept.handlers


def test_after_hydras_disabled_logging_every_switch_sets_up_again(tmp_path: Path) -> None:
    """`hydra/hydra_logging=disabled` disables every existing logger at each set-up; Hydra's set-up of a
    job's logging enables them again, which putting back its handlers would not: once such a set-up was
    made, a switch is Hydra's set-up again, and a job's lines reach its file."""
    logger = logging.getLogger(f"lossheads.test.{tmp_path.name}")
    kept = JobLogging.set_up(job_logging(tmp_path / "job.log"), False)
    assert kept is not None
    disabled = OmegaConf.create({"version": 1, "root": {"level": "ERROR"}, "disable_existing_loggers": True})
    assert JobLogging.set_up(disabled, False) is None
    assert logger.disabled
    kept.use()
    assert not logger.disabled
    logger.info("the job's line")
    for handler in logging.getLogger().handlers:
        handler.flush()
    assert "the job's line" in (tmp_path / "job.log").read_text()
