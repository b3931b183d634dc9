"""The Hydra callback that keeps a folder to one writer, registered in configs/train.yaml before any
other (Hydra calls the `*_start` hooks in order and the `*_end` hooks in reverse, so the lock is held
while the others run).

Its hooks run before Hydra writes anything into the folder (`.hydra/`, `multirun.yaml`), which is why
the locks are taken here and not in the task function:
- a run takes its `hydra.run.dir`'s lock, a sweep its `hydra.sweep.dir`'s; a second command into a
  folder being written is refused in one line naming the holder's PID, exit 2, nothing written;
- an evaluation (`train=false`) into a run's folder writes Hydra's files into a folder of its own,
  and a training command into another run's folder (refused there, unless it is the same run again)
  writes none;
- in a sweep, a stop reaches the jobs running in worker processes (`stop_sweep_on_signal`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from lossheads.config.validators import EXIT_BAD_INPUT, ConfigError
from lossheads.run.lock import HELD, acquire

RANK_KEYS = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")  # as Lightning reads its rank


def writing_rank() -> bool:
    """Rank 0 writes a run (or the only process): Lightning starts DDP's other processes with the same
    hydra.run.dir, and they share rank 0's lock rather than being refused by it."""
    rank = next((os.environ[key] for key in RANK_KEYS if key in os.environ), "0")
    return rank.strip() in ("", "0")


def hold(folder: Path, key: str) -> None:
    if not writing_rank():
        return
    try:
        acquire(folder, key)
    except ConfigError as error:  # the entry point's one line: Hydra would print a traceback
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def let_go(folder: Path) -> None:
    lock = HELD.get(folder.resolve())
    if lock is not None:
        lock.release()


class OneWriter(Callback):
    def __init__(self) -> None:
        self.restore_signals: Any = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(str(config.hydra.run.dir))
        fresh = not folder.is_dir() or not any(folder.iterdir())  # a new folder holds no run to keep apart
        hold(folder, "hydra.run.dir")
        if fresh or config.hydra.output_subdir is None:
            return  # a new run folder imports nothing heavy here: a bad command is answered before torch
        from lossheads.run.folder import evaluation_hydra_subdir, keeps_hydra_files_out  # torch: after a refusal

        subdir = evaluation_hydra_subdir(folder, bool(config.get("train", True)))
        if subdir is not None or keeps_hydra_files_out(folder, config):
            # Hydra reads hydra.output_subdir from this config when it saves its files, after this hook
            with read_write(config.hydra), open_dict(config.hydra):
                config.hydra.output_subdir = subdir

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        let_go(Path(str(config.hydra.run.dir)))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(str(config.hydra.sweep.dir))
        hold(folder, "hydra.sweep.dir")
        from lossheads.run.stops import SWEEP_PID, stop_sweep_on_signal  # Lightning: after a refusal

        os.environ[SWEEP_PID] = str(os.getpid())  # inherited by worker processes: they know they are one
        self.restore_signals = stop_sweep_on_signal(folder)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from lossheads.run.stops import SWEEP_PID

        if os.environ.get(SWEEP_PID) == str(os.getpid()):  # processes this one starts later are no workers of it
            del os.environ[SWEEP_PID]
        if self.restore_signals is not None:
            self.restore_signals()
        let_go(Path(str(config.hydra.sweep.dir)))
