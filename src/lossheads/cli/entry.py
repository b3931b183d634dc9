"""`python train.py` and `lossheads-train`, before anything heavy is imported: a Ctrl-C while the
command's imports load (Hydra, OmegaConf, the project) or Hydra composes its config, until a run or
sweep handles its own stops, is one line and exit 130, not a traceback from wherever it came; the run
folder Hydra made (only Hydra's files) goes."""

from __future__ import annotations

import sys
from typing import NoReturn


def train() -> None:
    try:
        from lossheads.cli import train as command
    except KeyboardInterrupt:
        interrupted()
    try:
        command.train()
    except KeyboardInterrupt:
        command.NewRunFolder.remove_if_refused()  # only Hydra's files in it: nothing that looks like a result
        interrupted()


def interrupted() -> NoReturn:
    print("interrupted by Ctrl-C (SIGINT) while the command started: nothing was trained", file=sys.stderr)
    sys.exit(130)
