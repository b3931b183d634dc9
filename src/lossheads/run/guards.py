"""Hydra callbacks that guard a run's folder before Hydra writes into it. Hydra instantiates them on
every command, a mistyped one too, so this module imports nothing heavy (no torch, no Lightning)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from lossheads.config.validators import EXIT_BAD_INPUT
from lossheads.run.atomic import write_bytes


class FolderCheck(Callback):
    """Hydra creates the run (or sweep) folder before any code of ours runs, and a path there that is a
    file or a dangling link ended in its traceback: this Hydra callback (configs/train.yaml) refuses it
    first, in one line, exit 2 (Hydra lets a callback's SystemExit through)."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        refuse_unusable_folder("hydra.run.dir", Path(str(config.hydra.run.dir)))

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        refuse_unusable_folder("hydra.sweep.dir", Path(str(config.hydra.sweep.dir)))


def unusable_folder(path: Path) -> str | None:
    """Why no folder can be made at `path` (it or a parent is a file, or a link to nothing); None: it can."""
    for part in (path, *path.parents):
        name = "it" if part == path else f"its parent {str(part)!r}"
        if part.is_symlink() and not part.exists():
            return (f"{name} is a link to {os.readlink(part)!r}, which does not exist: create that folder, "
                    "remove the link, or choose another folder")  # fmt: skip
        if part.exists():
            return None if part.is_dir() else f"{name} is a file, not a folder: choose another folder, or move the file"
    return None


def unusable_job_folder(exc: OSError) -> str | None:
    """The one line for a sweep job whose folder Hydra (or the seeds launcher) could not make because
    its path, or a parent, is a file or a link to nothing: no callback runs before that `mkdir`, so
    the entry point answers the error it raises. None: `exc` is another error."""
    if not isinstance(exc, (FileExistsError, NotADirectoryError)) or not exc.filename:
        return None
    path = Path(str(exc.filename))
    reason = unusable_folder(path)
    return f"a job's folder {str(path)!r} cannot be made: {reason}" if reason else None


def refuse_unusable_folder(key: str, path: Path) -> None:
    reason = unusable_folder(path)
    if reason:
        print(f"error: {key}={str(path)!r} is not valid: {reason}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


HYDRA_COPY = ".hydra-run"  # the owning run's copy of Hydra's .hydra/ files


def keep_hydra_files(folder: Path) -> None:
    """Copy the run's `.hydra/*.yaml` aside: Hydra rewrites `.hydra/` before any code of ours runs,
    so a command refused for this folder would otherwise leave its config in place of the owner's.
    Kept in the folder (written atomically, not fsynced): every later command refused for it, and a
    finished sweep job run again, puts the owner's files back from it."""
    for file in sorted((folder / ".hydra").glob("*.yaml")):
        write_bytes(folder / HYDRA_COPY / file.name, file.read_bytes(), durable=False)


def restore_hydra_files(folder: Path) -> None:
    """Put the owner's `.hydra/*.yaml` back after a refused command's Hydra overwrote them."""
    for file in sorted((folder / HYDRA_COPY).glob("*.yaml")):
        write_bytes(folder / ".hydra" / file.name, file.read_bytes())
