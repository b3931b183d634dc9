"""Atomic file writes: a reader (or a kill at any moment) sees the old file or the new one, never half.

Each write goes to a unique temporary name in the target's own folder (so the final rename never
crosses a filesystem, which would turn it into a copy), is flushed and fsync'ed, then renamed over
the target; the folder is fsync'ed so that the rename itself survives a power cut. A full or
read-only disk becomes a `StorageError`: one line that names the file and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from lossheads.config.validators import ConfigError

DISK_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
               errno.EROFS: "the filesystem is read-only", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied"}  # fmt: skip


def quiet_disk_errors_in_threads() -> None:
    """A library's writer thread (TensorBoard's event writer) that meets a full disk or a read-only
    folder prints its traceback as it ends; the command says in one line which file it could not write
    (`StorageError`), so such a thread ends quietly. Other errors in threads print as Python prints them."""
    if getattr(threading.excepthook, "quiet_disk_errors", False):
        return
    default = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if not (isinstance(args.exc_value, OSError) and args.exc_value.errno in DISK_ERRORS):
            default(args)

    hook.quiet_disk_errors = True  # type: ignore[attr-defined]
    threading.excepthook = hook


class StorageError(ConfigError):
    """A file of the run could not be written (full disk, read-only folder): shown as one line, exit 2."""

    short: str | None = None  # the line without the advice about run folders, for commands that make none


def storage_error(path: Path, exc: OSError) -> StorageError:
    why = DISK_ERRORS.get(exc.errno or 0, exc.strerror or type(exc).__name__)
    error = StorageError(
        f"cannot write {path}: {why}: free space or make the folder writable, or choose another "
        "folder with hydra.run.dir=... (paths.log_dir=... for new runs)"
    )
    error.short = f"cannot write {path}: {why}: free space or make the folder writable"  # a command without runs
    return error


TEMPORARY = ".tmp"  # a write's temporary file: `.<name>.<random>.tmp` beside its target


def leftover_temporaries(path: Path) -> list[Path]:
    """The temporary files of writes to `path` that a kill left behind (no writer of it still runs:
    the caller holds the folder's lock)."""
    return sorted(path.parent.glob(f".{path.name}.*{TEMPORARY}"))


_together: list[Path] | None = None  # inside `durable_together`: the folders written, made durable at its end


@contextlib.contextmanager
def durable_together() -> Iterator[None]:
    """The durable writes inside are made durable together when the block ends (one flush of each
    filesystem written, `syncfs`), not each as it is written (two fsyncs a file, each of which waits
    for a journal commit of everything the machine has written: on a busy 2-core machine 2-3 ms). For
    a seeds group's member checkpoints: what follows the block (the group file removed) finds every
    file of it durable, as before; a power loss inside the block can leave some of them empty, and the
    group file, still there, makes the sweep run again write them again."""
    global _together
    if _together is not None:  # inside another: its end makes these durable too
        yield
        return
    _together = []
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):  # what was written is made durable; the first error is the one said
            _sync_together()
        raise
    _sync_together()


def _sync_together() -> None:
    global _together
    folders, _together = _together or [], None
    by_filesystem: dict[int, Path] = {}
    for folder in folders:
        with contextlib.suppress(OSError):
            by_filesystem.setdefault(os.stat(folder).st_dev, folder)
    for folder in by_filesystem.values():
        sync_filesystem(folder)


def sync_filesystem(folder: Path) -> None:
    """Everything written to `folder`'s filesystem, durable: Linux's `syncfs`, elsewhere `os.sync`. A
    write that failed only now (a full disk found late, an I/O error) is a `StorageError` naming `folder`."""
    import ctypes

    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # no such folder any more
        os.sync()
        return
    try:
        synced = ctypes.CDLL(None, use_errno=True).syncfs(fd)
    except AttributeError:  # no syncfs in this C library
        synced = None
    finally:
        os.close(fd)
    if synced is None or (synced != 0 and ctypes.get_errno() not in (*DISK_ERRORS, errno.EIO)):
        os.sync()
    elif synced != 0:
        failed = ctypes.get_errno()
        raise storage_error(folder, OSError(failed, os.strerror(failed)))


def write_atomic(path: Path | str, write: Callable[[IO[bytes]], None], *, durable: bool = True) -> None:
    """Call `write(handle)` on a fresh temporary file beside `path`, then rename it to `path`.
    `durable`: fsync the file and its folder, so that it survives a power loss too (a killed process
    never leaves a partial file either way: the rename is atomic, the page cache outlives it); inside
    `durable_together`, at the block's end instead."""
    path = Path(path)
    if durable and _together is not None:
        _together.append(path.parent)
        durable = False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY, dir=path.parent)
    except OSError as exc:
        raise storage_error(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:  # a kill (KeyboardInterrupt, SIGTERM) too: never leave the temporary file
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
            raise storage_error(path, exc) from None
        raise
    if durable:
        fsync_folder(path.parent)


def write_bytes(path: Path | str, data: bytes, *, durable: bool = True) -> None:
    write_atomic(path, lambda handle: handle.write(data), durable=durable)


def write_text(path: Path | str, text: str) -> None:
    write_bytes(path, text.encode())


def fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable; some filesystems refuse to open a folder, which is harmless."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def require_writable(folder: Path) -> None:
    """Refuse a run before training when its folder cannot be written (read-only, full, no permission).
    The probe is removed at once: nothing to make durable."""
    write_bytes(folder / ".write-test", b"", durable=False)
    with contextlib.suppress(OSError):
        (folder / ".write-test").unlink()
