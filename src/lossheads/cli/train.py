"""The command line `python train.py` and the installed `lossheads-train`.

Hydra composes the config; this adds the project's own `--help` (config groups, options and top-level
keys, read from the configs themselves), turns a mistyped override, which Hydra reports as a
composition error, into one line with the nearest valid name and exit code 2, and checks the
composed config before torch and Lightning are imported (a bad value is answered in the time Hydra
takes, not the seconds those imports take). A refused run leaves no run folder behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any, ClassVar

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lossheads.cli.collector import collect_less
from lossheads.cli.help import composition_error, config_dir, help_page
from lossheads.config.validators import EXIT_BAD_INPUT
from lossheads.run.atomic import quiet_disk_errors_in_threads
from lossheads.run.guards import restore_hydra_files, unusable_job_folder
from lossheads.run.lock import HELD, LOCK_NAME


def train() -> None:
    """`python train.py` and `lossheads-train`, through `cli.entry` (which answers a Ctrl-C that comes
    before a run or sweep handles its own stops)."""
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(help_page(config_dir()))
        return
    sys.argv = flags_first(sys.argv)
    collect_less()
    # a log line that cannot be written (a full disk) is not a traceback each time: the file that failed says
    # it in one line (`run.atomic.StorageError`)
    logging.raiseExceptions = False
    quiet_disk_errors_in_threads()
    import hydra
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    # Hydra prints a composition error as a paragraph and exits 1; with this it raises it to us instead
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    entry = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")(checked_run)
    try:
        entry()
    except (MissingConfigException, ConfigCompositionException, OverrideParseException) as exc:
        print(f"error: {composition_error(exc)}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except (FileExistsError, NotADirectoryError) as exc:  # Hydra's `mkdir` of a sweep job's folder
        line = unusable_job_folder(exc)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except SystemExit as exit_:
        if exit_.code == EXIT_BAD_INPUT:
            NewRunFolder.remove_if_refused()
        raise


MULTIRUN_FLAGS = ("-m", "--multirun")


def flags_first(argv: list[str]) -> list[str]:
    """`python train.py loss=ce,focal -m` as `python train.py -m loss=ce,focal`: Hydra's parser takes
    `-m` only before the overrides, and prints its usage otherwise."""
    flags = [arg for arg in argv[1:] if arg in MULTIRUN_FLAGS]
    return [argv[0], *flags[:1], *(arg for arg in argv[1:] if arg not in MULTIRUN_FLAGS)] if flags else argv


def checked_run(cfg: DictConfig) -> float | None:
    """Hydra's task: the whole-config check, then the run (which imports torch and Lightning). In a
    sweep every job goes to the run, which records a refused job and lets the sweep go on."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from lossheads.config.check import check_config
    from lossheads.config.validators import ConfigError

    if HydraConfig.get().mode != RunMode.MULTIRUN:
        try:
            check_config(cfg)
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
    from lossheads.run.execute import main

    return main(cfg)


class NewRunFolder(Callback):
    """Hydra creates the run folder (`outputs/DATE/TIME/`) and writes its own files there before the
    task runs. This callback (`hydra.callbacks.new_run_folder` in train.yaml) notes, just before, the
    first folder on that path that does not exist yet, so that a refused run removes what this
    invocation created, and only while it holds nothing but Hydra's files: a folder that existed
    before (another run's, a resumed one, one a concurrent run shares) is never removed."""

    created: ClassVar[Path | None] = None  # the outermost folder this invocation creates
    folder: ClassVar[Path | None] = None  # the run folder itself
    log_name: ClassVar[str] = "train.log"  # Hydra's job log, named after the job
    evaluations: ClassVar[set[str]] = set()  # the folder's `.hydra-eval-*` from before this invocation

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.note(Path(str(config.hydra.run.dir)), config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A sweep refused before its first job (a report setting, a lock) leaves no sweep folder either."""
        self.note(Path(str(config.hydra.sweep.dir)), config)

    @staticmethod
    def note(path: Path, config: DictConfig) -> None:
        folder = path.absolute()  # `now` is resolved once per run: Hydra's value
        created = None
        for part in (folder, *folder.parents):
            if part.exists():
                break
            created = part
        NewRunFolder.folder, NewRunFolder.created = folder, created
        NewRunFolder.evaluations = {p.name for p in folder.glob(".hydra-eval-*")} if created is None else set()
        NewRunFolder.log_name = f"{config.hydra.job.name}.log"

    @classmethod
    def remove_if_refused(cls) -> None:
        """Remove the run folder this invocation created while it holds only Hydra's files, and the
        empty folders above it this invocation created (`outputs/DATE/`). A folder that was there
        before gets its owner's `.hydra/` files back, which Hydra overwrote before the refusal, and
        loses the `.hydra-eval-*` files of a refused evaluation beside its run."""
        folder, created = cls.folder, cls.created
        if folder is not None and created is None and folder.is_dir():
            restore_hydra_files(folder)
            for own in folder.glob(".hydra-eval-*"):  # a refused evaluation's Hydra files beside the run
                if own.name not in cls.evaluations:
                    shutil.rmtree(own, ignore_errors=True)
        if folder is None or created is None or not folder.is_dir():
            return
        hydra_files = {Path(".hydra") / name for name in ("config.yaml", "hydra.yaml", "overrides.yaml")}
        allowed = {Path(".hydra"), Path(cls.log_name), Path(LOCK_NAME), *hydra_files}
        if any(path.relative_to(folder) not in allowed for path in folder.rglob("*")):
            return
        for locked, lock in list(HELD.items()):  # this command's own writer lock on the folder goes with it
            if Path(locked).absolute() == folder:
                lock.release()
        shutil.rmtree(folder, ignore_errors=True)
        for parent in folder.parents:
            if parent != created and created not in parent.parents:
                break
            try:
                parent.rmdir()  # only while empty: a concurrent run's folder beside it stays
            except OSError:
                break
        cls.folder = cls.created = None
