"""What a run that did not finish leaves in its folder: failure.json for a refused or failed job,
metrics.json marked with its status for a diverged or interrupted one (never one that looks like a
result), and the resume command after Ctrl-C or SIGTERM."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from lossheads.config.validators import ConfigError
from lossheads.run.atomic import StorageError
from lossheads.run.checkpoints import newest_checkpoint
from lossheads.run.folder import fingerprint, read_record
from lossheads.run.records import write_metrics
from lossheads.run.resume import resolved
from lossheads.run.stops import StopSignals, resume_command
from lossheads.training.callbacks import Interrupted


def in_sweep() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:  # no Hydra run: a test or a script calling main
        return False


def record_status(cfg: DictConfig, status: str, reason: str, filename: str = "failure.json", **extra: Any) -> None:
    """A job that was refused or failed leaves failure.json, and one that diverged or was interrupted
    a metrics.json marked with its status (never one that looks like a result), so that the report
    lists it with its reason and the sweep goes on. Under DDP rank 0 writes it."""
    if rank_zero_only.rank != 0:
        return
    output_dir = Path(cfg.paths.output_dir)
    record = {"status": status, "reason": reason, "seed": cfg.get("seed"), **extra}
    with contextlib.suppress(Exception):  # a config that does not even resolve has no fingerprint
        record.setdefault("fingerprint", fingerprint(resolved(cfg)))  # whose record: a rerun knows its own
    write_metrics(output_dir / filename, record)
    if status == "diverged":  # an earlier result's files (a resumed run) would sit beside a record that has none
        for stale in ("predictions.npz", "per_class.json"):
            (output_dir / stale).unlink(missing_ok=True)


def record_stop(cfg: DictConfig, then_exit: bool = True) -> None:
    """Ctrl-C or SIGTERM, in whatever phase: metrics.json with the status, where to resume from and
    how, one line on stderr, exit 130 / 143 (`then_exit`; a seeds group records all its members first)."""
    output_dir = Path(cfg.paths.output_dir)
    phase = StopSignals.phase
    if cfg.get("distill"):
        checkpoints = [p for p in output_dir.glob("*/checkpoints/*.ckpt")]
        checkpoint = str(max(checkpoints, key=lambda p: p.stat().st_mtime)) if checkpoints else None
        has_checkpoint = True  # ckpt_path=last continues the recipe: finished steps kept, the rest resumed
    else:
        try:
            newest = newest_checkpoint(output_dir / "checkpoints")
        except ConfigError:  # a damaged file there: say so in the record rather than fail to record
            newest = None
        checkpoint, has_checkpoint = (str(newest) if newest else None), newest is not None
    try:
        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:  # no Hydra run
        overrides = []
    stop = Interrupted(StopSignals.name(), checkpoint, phase)
    resume = resume_command(overrides, str(output_dir), has_checkpoint)
    owner = (read_record(output_dir) or {}).get("fingerprint")
    try:
        if owner is None or owner == fingerprint(resolved(cfg)):  # never over another run's record
            record_status(cfg, "interrupted", f"{stop}: resume with {resume}", "metrics.json",
                          checkpoint=checkpoint, resume=resume, phase=phase)  # fmt: skip
    except StorageError as error:
        print(f"error: {error}", file=sys.stderr)
    saved = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint (training had not started)"
    print(f"interrupted by {stop}; {saved}; resume with: {resume}", file=sys.stderr)
    if then_exit:
        sys.exit(StopSignals.exit_code())
