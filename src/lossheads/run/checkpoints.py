"""Checkpoints: written atomically with the run's config and a checksum; found by step; read safely.

Every checkpoint is read with `torch.load(weights_only=True)`: tensors and plain containers only,
so a file that carries a pickled object that would run code is refused instead of executed. Its
checksum (SHA-256 over its contents) is verified on every load: an altered file is refused.

The checksum walks the checkpoint's contents rather than hashing the bytes `torch.save` writes: it
costs the same (`python scripts/bench_checksum.py`, 2-core CPU, load average 7.7-8.7, 2026-12-05:
0.7 ms against 0.5 ms on the default MLP's 0.9 MB checkpoint, 180-184 ms against 195 ms on 151 MB),
and it lives inside the checkpoint it covers, which stays a plain Lightning checkpoint (a hash of
the file's bytes would need a place outside them: a second file, or a wrapper around Lightning's).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO

from lossheads.config.validators import ConfigError, require
from lossheads.run.atomic import write_bytes

META = "lossheads"  # checkpoint[META]: {"config": the run's resolved config, "sha256": the checksum}


def digest(checkpoint: dict[str, Any]) -> str:
    """SHA-256 over the checkpoint's contents (its checksum itself left out): every tensor's dtype,
    shape and bytes and every plain value, in a fixed order, so that it is the same after a load."""
    sha = hashlib.sha256()
    _feed(sha, {k: v for k, v in checkpoint.items() if k != META})
    _feed(sha, {k: v for k, v in checkpoint.get(META, {}).items() if k != "sha256"})
    return sha.hexdigest()


def _feed(sha: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous().reshape(-1)
        sha.update(f"T{tensor.dtype}{tuple(value.shape)}:".encode())
        sha.update(tensor.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        sha.update(f"D{len(value)}:".encode())
        for key in sorted(value, key=repr):
            _feed(sha, key)
            _feed(sha, value[key])
    elif isinstance(value, (list, tuple)):
        sha.update(f"L{len(value)}:".encode())
        for item in value:
            _feed(sha, item)
    else:
        sha.update(f"{type(value).__name__}:{value!r};".encode())


class RunCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with an atomic write in the checkpoint's own folder, and the run's
    config and a checksum inside every checkpoint.

    The framework hook: Lightning hands every checkpoint it saves (`ModelCheckpoint`, our
    `LastCheckpoint`, `trainer.save_checkpoint`) to the strategy's `CheckpointIO.save_checkpoint`,
    and reads every `fit(ckpt_path=...)` through its `load_checkpoint`; a `CheckpointIO` given in
    `Trainer(plugins=[...])` replaces the default. Lightning's own `_atomic_save` goes through an
    fsspec transaction that writes a temporary file in /tmp and *moves* it, which across
    filesystems is a copy that a kill can leave half-written (tests/test_durability.py checks that
    this plugin is the one used and that no partial file can be observed).
    """

    def __init__(self, config: dict[str, Any] | None = None, inputs: dict[str, Any] | None = None) -> None:
        self.config = config
        self.inputs = inputs  # what the run trains on (data fingerprint, teacher checksum): a resume compares them

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        checkpoint[META] = {"config": self.config, **({"inputs": self.inputs} if self.inputs else {})}
        checkpoint[META]["sha256"] = digest(checkpoint)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_bytes(Path(path), buffer.getbuffer())

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return read_checkpoint("ckpt_path", Path(path))


def read_checkpoint(key: str, path: Path, *, mmap: bool = False) -> dict[str, Any]:
    """The checkpoint's contents, checksum verified, or one line that says why it cannot be used."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 -- any unreadable or unsafe file is the user's input, named in one line
        message = f"{key}={str(path)!r} is not a readable checkpoint ({type(exc).__name__})"
        if "weights_only" in str(exc):
            message += ": it holds pickled objects that could run code; load only checkpoints you trust"
        else:
            message += ": it is damaged or not a checkpoint; give another one (e.g. the run's best-*.ckpt)"
        raise ConfigError(message) from None
    require(isinstance(checkpoint, dict) and "state_dict" in checkpoint, key, str(path),
            "the file is not a Lightning checkpoint (no state_dict); give a run's checkpoints/*.ckpt")  # fmt: skip
    verify_checksum(key, path, checkpoint, contents=not mmap)
    return checkpoint


def verify_checksum(key: str, path: Path, checkpoint: dict[str, Any], *, contents: bool = True) -> None:
    """Refuse, in one line, a checkpoint without a lossheads checksum or (`contents`: the tensors are
    read, not memory-mapped) whose contents do not match it."""
    meta = checkpoint.get(META)
    require(isinstance(meta, dict) and "sha256" in meta, key, str(path),
            "it carries no lossheads checksum (not written by this version of lossheads), so its "
            "integrity cannot be checked; retrain, or give a checkpoint this version wrote")  # fmt: skip
    if contents and digest(checkpoint) != meta["sha256"]:
        raise ConfigError(
            f"{key}={str(path)!r} is not valid: its checksum does not match its contents (the file was "
            "altered or damaged); give another checkpoint (e.g. the run's best-*.ckpt) or retrain"
        )


def checkpoint_config(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The resolved config of the run that saved the checkpoint."""
    return (checkpoint.get(META) or {}).get("config")


def checkpoint_inputs(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """What the run that saved the checkpoint trained on (`resume.run_inputs`); None: not recorded."""
    return (checkpoint.get(META) or {}).get("inputs")


def checksum(checkpoint: dict[str, Any]) -> str | None:
    """The checkpoint's recorded SHA-256 (verified when it was read)."""
    return (checkpoint.get(META) or {}).get("sha256")


def newest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint in `folder` with the highest recorded step (`last.ckpt` over a best-*.ckpt of
    the same step), whatever the file names say (`last-v1.ckpt` after a moved folder, ...)."""
    candidates = sorted(folder.glob("*.ckpt")) if folder.is_dir() else []
    if not candidates:
        return None

    def rank(path: Path) -> tuple[int, int, bool, str]:
        saved = read_checkpoint("ckpt_path", path, mmap=True)
        return int(saved.get("global_step", 0)), epochs_done(saved), path.name.startswith("last"), path.name

    return max(candidates, key=rank)


GROUP_FOLDER = ".seeds"  # in a sweep's folder: its seeds groups' files while they train
GROUP_MEMBERS = ".members"  # beside a seeds group's file: its members' run folders, one a line


def in_a_group(run_dir: Path) -> str:
    """Where a run folder without checkpoints may have its state: a seeds group that was killed keeps
    its members' state in one file in its sweep's `.seeds/` (listing their folders beside it) until
    they get their own files (`lossheads.seeds.checkpoints`); the sweep run again resumes it."""
    folder = str(run_dir.resolve())
    for above in run_dir.resolve().parents:
        for listing in sorted((above / GROUP_FOLDER).glob(f"group-*{GROUP_MEMBERS}")):
            kept = listing.with_suffix(".ckpt")
            if kept.is_file() and folder in listing.read_text(errors="replace").splitlines():
                return (f" (its seeds group stopped before its members got their own files, and keeps their "
                        f"state in {kept}: to resume it, run the sweep's command again)")  # fmt: skip
    return ""


def epochs_done(checkpoint: dict[str, Any]) -> int:
    """Whole epochs the checkpoint's run had finished (Lightning's fit-loop progress)."""
    try:
        return int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError):
        return int(checkpoint.get("epoch", 0))


def resolve_checkpoint(key: str, value: Any, run_dir: Path) -> Path:
    """`last` (this run folder's newest checkpoint by step), a run folder (its newest) or a file."""
    if value == "last":
        folder = run_dir / "checkpoints"
        found = newest_checkpoint(folder)
        require(found is not None, key, value,
                f"no checkpoint in {folder}{in_a_group(run_dir)}: continue a run in its own folder with "
                "hydra.run.dir=outputs/DATE/TIME ckpt_path=last, or give the checkpoint's path")  # fmt: skip
        return found  # type: ignore[return-value]
    path = Path(str(value))
    if path.is_dir():
        found = newest_checkpoint(path / "checkpoints")
        require(found is not None, key, str(value), f"no checkpoint in {path / 'checkpoints'}{in_a_group(path)}")
        return found  # type: ignore[return-value]
    require(path.is_file(), key, str(value), "no such file; give a run's checkpoints/last.ckpt or its run folder")
    return path
