"""Finding and safely reading checkpoints: resume (`ckpt_path`), evaluation (`train=false`) and teachers.

Every checkpoint is read with `torch.load(weights_only=True)`: tensors and plain containers only,
so a file that carries a pickled object that would run code is refused instead of executed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lossheads.check import ConfigError, require


def resolve_checkpoint(key: str, value: Any, run_dir: Path) -> Path:
    """`last` (the run folder's newest last*.ckpt or interrupted.ckpt), a run folder (its
    checkpoints/last.ckpt) or a file."""
    if value == "last":
        folder = run_dir / "checkpoints"
        candidates = [*folder.glob("last*.ckpt"), *folder.glob("interrupted.ckpt")]
        found = sorted(candidates, key=lambda p: p.stat().st_mtime)
        require(bool(found), key, value,
                f"no last.ckpt in {folder}: continue a run in its own folder with "
                "hydra.run.dir=outputs/DATE/TIME ckpt_path=last, or give the checkpoint's path")  # fmt: skip
        return found[-1]
    path = Path(str(value))
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    require(path.is_file(), key, str(value), "no such file; give a run's checkpoints/last.ckpt or its run folder")
    return path


def read_checkpoint(key: str, path: Path) -> dict[str, Any]:
    """The checkpoint's contents, or one line that says why it cannot be used."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- any unreadable or unsafe file is the user's input, named in one line
        message = f"{key}={str(path)!r} is not a readable checkpoint ({type(exc).__name__})"
        if "weights_only" in str(exc):
            message += ": it holds pickled objects that could run code; load only checkpoints you trust"
        raise ConfigError(message) from None
    require(isinstance(checkpoint, dict) and "state_dict" in checkpoint, key, str(path),
            "the file is not a Lightning checkpoint (no state_dict); give a run's checkpoints/*.ckpt")  # fmt: skip
    return checkpoint
