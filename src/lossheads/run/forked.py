"""A computation in a forked process, for the process that forks it: used where a core would otherwise
wait (the report's figures drawn while a sweep's last groups train). The forked process writes
nothing, keeps none of its parent's folder locks, ends with its parent (Linux's parent-death signal, so
a SIGKILL of the sweep leaves none behind) and quietly on a stop; its result comes back pickled through
a pipe, read by a thread so that it never waits on a full pipe. Linux only: elsewhere `forked` gives
None and the caller computes in its own process."""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Forked(Generic[T]):
    def __init__(self, pid: int, read: int) -> None:
        self.pid = pid
        self.received: list[bytes] = []
        self.reaped = False  # its PID may be another process's from then on
        self.reader = threading.Thread(target=self._receive, args=(read,), daemon=True)
        self.reader.start()
        atexit.register(self.end)

    def _receive(self, read: int) -> None:
        with os.fdopen(read, "rb") as pipe:
            while chunk := pipe.read(1 << 16):
                self.received.append(chunk)

    def result(self) -> T | None:
        """What the computation returned, once it has ended; None where it failed or was stopped."""
        self.reader.join()
        if self.reaped:
            return None
        _, status = os.waitpid(self.pid, 0)
        self.reaped = True
        try:
            return pickle.loads(b"".join(self.received)) if status == 0 else None
        except Exception:  # noqa: BLE001 -- cut short
            return None

    def end(self) -> None:
        """The computation is not wanted (or this process exits): ended now, if it still runs."""
        if self.reaped:
            return
        self.reaped = True
        with contextlib.suppress(ChildProcessError, ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)


def forked(compute: Callable[[], T]) -> Forked[T] | None:
    """`compute()` in a forked process (None where processes are not forked here)."""
    if not sys.platform.startswith("linux"):
        return None
    read, write = os.pipe()
    parent = os.getpid()
    gc.freeze()  # what is alive now is shared with the child, not copied by its collections
    try:
        pid = os.fork()
    finally:
        gc.unfreeze()
    if pid == 0:
        code = 1
        try:
            _end_with(parent)
            os.close(read)
            payload = pickle.dumps(compute(), protocol=pickle.HIGHEST_PROTOCOL)
            with os.fdopen(write, "wb") as pipe:
                pipe.write(payload)
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    return Forked(pid, read)


def _end_with(parent: int) -> None:
    from lossheads.run.lock import close_inherited

    close_inherited()
    for stop in (signal.SIGINT, signal.SIGTERM):  # a stop ends it quietly: its parent says what stopped
        signal.signal(stop, signal.SIG_DFL)
    with contextlib.suppress(Exception):  # PR_SET_PDEATHSIG (1): no such call outside Linux's C library
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)
    if os.getppid() != parent:  # gone before the signal was asked for
        os._exit(1)
