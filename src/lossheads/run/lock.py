"""One writer per run folder and per sweep folder.

A command that writes a folder holds `<folder>/.writer.lock` for as long as it writes: an exclusive
`flock` on the file, which holds the owner's PID, host, start time and command. The kernel releases
a `flock` when its process ends, however it ends (SIGKILL included), so a lock whose process is gone
is stale by construction and the next command takes it; a live owner's lock refuses the second
command in one line that names it. A lock covers its folder and everything under it: a run into a
job folder of a sweep being written is refused as well.

The file stays in place only while it is held (removed on release, left by a killed owner, whose
contents the next owner replaces); its inode is checked after locking, so that a command that opened
the file just before its owner removed it never believes it holds a lock nobody else can see.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import shlex
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from lossheads.config.validators import ConfigError
from lossheads.run.guards import unusable_folder

LOCK_NAME = ".writer.lock"


class FolderBusy(ConfigError):
    """Another live process writes the folder (or one above it): refused, nothing written."""


class FolderLock:
    """A held lock; `release` (or the process's end) lets it go."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd

    def release(self) -> None:
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)  # while still locked: a newcomer then opens a new file
        os.close(self.fd)
        self.fd = -1
        HELD.pop(self.path.parent, None)


HELD: dict[Path, FolderLock] = {}  # the locks this process holds, by folder


def holder(lock_file: Path) -> str:
    """Who holds `lock_file`, as its owner wrote it: `PID 123 on host, since ... (command)`."""
    try:
        owner = json.loads(lock_file.read_text())
        return f"PID {owner['pid']} on {owner['host']}, since {owner['started']} ({owner['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not written its PID yet"


def _try_flock(fd: int) -> bool:
    """True: now locked by us; False: another process holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def is_held(folder: Path) -> bool:
    """Whether a live process (this one included) holds `folder`'s lock."""
    folder = Path(folder).resolve()
    lock_file = folder / LOCK_NAME
    if folder in HELD:
        return True
    try:
        fd = os.open(lock_file, os.O_RDONLY)
    except OSError:
        return False
    try:
        return not _try_flock(fd)
    except OSError:  # a filesystem without flock: no lock can be held there either
        return False
    finally:
        os.close(fd)  # closing our descriptor drops the probe's own lock, if it got one


def held_above(folder: Path) -> Path | None:
    """The nearest folder above `folder` whose lock a live process holds."""
    for parent in folder.resolve().parents:
        if (parent / LOCK_NAME).exists() and is_held(parent):
            return parent
    return None


def acquire(folder: Path, key: str, *, inside_own: bool = False) -> FolderLock:
    """Take `folder`'s lock for this process, creating the folder if needed; `key` (`hydra.run.dir`)
    names it in the refusal. `inside_own`: a job of this process's (or its parent's) sweep, whose
    folder lies inside the sweep's own lock."""
    shown, folder = folder, Path(folder).resolve()
    if folder in HELD:
        return HELD[folder]
    above = None if inside_own else held_above(folder)
    if above is not None:
        raise busy(key, shown, above / LOCK_NAME, f"the folder {str(above)!r} above it is being written")
    reason = unusable_folder(Path(shown))  # a file, or a link to nothing, on the way: the guard's own words
    if reason:
        raise ConfigError(f"{key}={str(shown)!r} is not valid: {reason}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{key}={str(shown)!r} is not valid: cannot create it ({exc.strerror}); "
                          "choose another folder") from None  # fmt: skip
    lock_file = folder / LOCK_NAME
    while True:
        try:
            fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"{key}={str(shown)!r} is not valid: cannot create {lock_file} "
                              f"({exc.strerror}); make the folder writable or choose another") from None  # fmt: skip
        try:
            locked = _try_flock(fd)
        except OSError:  # no flock on this filesystem (some network mounts): write without a lock
            os.close(fd)
            return FolderLock(lock_file, -1)
        if not locked:
            os.close(fd)
            raise busy(key, shown, lock_file, "it is being written")
        try:
            same = os.stat(lock_file).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # its owner removed that file as we locked it: lock the new one
    lock = FolderLock(lock_file, fd)
    HELD[folder] = lock  # before its record: a stop arriving from here on finds it to release (`held_in`)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(owner_record()).encode())
    os.fsync(fd)
    return lock


def held_in(folder: Path) -> FolderLock | None:
    """This process's lock of `folder`, if it holds one (also one whose `acquire` a stop interrupted)."""
    return HELD.get(Path(folder).resolve())


def owner_record() -> dict[str, object]:
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    command = " ".join(["python", Path(sys.argv[0]).name, *(shlex.quote(a) for a in sys.argv[1:])])
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": started, "command": command[:300]}


def busy(key: str, folder: Path, lock_file: Path, why: str) -> FolderBusy:
    return FolderBusy(
        f"{key}={str(folder)!r} is not valid: {why} by {holder(lock_file)}; one folder has one writer: "
        "wait until that command ends (or stop it), or choose another folder"
    )


def held_jobs(sweep_dir: Path) -> list[tuple[int, Path]]:
    """(PID, folder) of each job folder under `sweep_dir` whose lock a process other than this one
    holds: the sweep's jobs running in worker processes."""
    found = []
    sweep_dir = Path(sweep_dir).resolve()
    for lock_file in sorted(sweep_dir.glob(f"**/{LOCK_NAME}")):
        folder = lock_file.parent
        if folder == sweep_dir or folder in HELD or not is_held(folder):
            continue
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            pid = int(json.loads(lock_file.read_text())["pid"])
            if pid != os.getpid():
                found.append((pid, folder))
    return found


@contextlib.contextmanager
def holding(folder: Path, key: str, *, inside_own: bool = False) -> Iterator[FolderLock]:
    lock = acquire(folder, key, inside_own=inside_own)
    try:
        yield lock
    finally:
        lock.release()


def close_inherited() -> None:
    """In a forked process that writes nothing (the report's drawing ahead): its copies of the locks'
    files are closed, so that each lock ends with the process that took it, not with the last of its
    children (`release` would let the parent's lock go too: the two share the file)."""
    for lock in list(HELD.values()):
        with contextlib.suppress(OSError):
            os.close(lock.fd)
        lock.fd = -1
    HELD.clear()


@atexit.register
def _release_all() -> None:
    for lock in list(HELD.values()):
        lock.release()
