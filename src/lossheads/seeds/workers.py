"""A sweep's groups shared among forked worker processes, one per CPU core (`hydra.launcher.workers`).

A group's stacked step is small: on a CPU, one process keeps about one core busy, and a second
thread per operation gains nothing. Two groups trained at once in two processes, one thread each,
finish in about the time of one. Workers are forked after the imports, so they start in milliseconds
and with the parent's modules; each takes the next launch unit when it is done with its last,
prepares, trains, tests and records it exactly as the launcher would in process, and sends back its
jobs' `JobReturn`s.

Stops: a signal to the sweep process is passed on to every worker; each records its members' stops
as a group does in process, and the sweep exits with the stop's code once all have ended. A worker
whose sweep process is gone (a SIGKILL, which cannot be passed on) stops as on SIGTERM. A worker that
ends without its results (killed, or failed) makes the sweep exit non-zero after the others finish:
nothing a worker finished is lost, and the sweep run again continues it.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import selectors
import signal
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

Unit = TypeVar("Unit")
STOPS = (signal.SIGINT, signal.SIGTERM)


def worker_count(setting: Any, units: int, on_cpu: bool) -> int:
    """How many worker processes share `units` launch units: `auto` is one per CPU core this process may
    run on, where the jobs train on the CPU and `os.fork` exists (a GPU's context does not survive a
    fork, and macOS's system libraries are not fork-safe), else 1; never more than the units."""
    if setting == "auto":
        usable = on_cpu and sys.platform.startswith("linux")
        setting = cpu_cores() if usable else 1
    return max(1, min(int(setting), units))


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def dealing_order(costs: Sequence[float]) -> list[int]:
    """The units' indices as the workers take them, largest first: each worker takes the next unit
    when it is done with its last, so the slowest ends about as early as any order allows."""
    return sorted(range(len(costs)), key=lambda i: -costs[i])


@dataclass
class Worker:
    slot: int
    pid: int
    results: int  # the read end of its results pipe
    message: bytes = b""
    status: int = 0  # as `os.waitstatus_to_exitcode`: the exit code, or -N for a signal N


@dataclass
class Outcome:
    """What the workers did: each one's returns merged, each one's summary, and how the sweep ends
    (`exit_code` 0: every worker sent its results)."""

    returns: dict[int, Any] = field(default_factory=dict)
    summaries: list[Any] = field(default_factory=list)
    exit_code: int = 0
    stop: signal.Signals | None = None
    killed: bool = False  # a second stop killed the workers


ORPHAN_GRACE = 60.0  # seconds a worker whose sweep is gone has to record its stops before it ends anyway
RECORD = struct.Struct(">I")  # a unit's index in the queue pipe


def run_in_workers(units: Sequence[Unit], costs: Sequence[float], count: int, work: Callable[[Unit], dict[int, Any]],
                   summary: Callable[[], Any], meanwhile: Callable[[], None] = lambda: None,
                   tail: Callable[[set[int]], None] = lambda running: None) -> Outcome:  # fmt: skip
    """`work(unit)` for every unit, in `count` forked processes that take the units one at a time,
    largest first; `summary()` once in each after its last unit (counts the parent cannot see);
    `meanwhile()` in this process while they work (what it would do after them and may do before);
    `tail(running)` once, when a worker has ended while others still work and no stop came: the
    indices of the units not finished then (a core is free from here on). Returns when every worker
    has ended."""
    queue, queued = os.pipe()
    finished, done = os.pipe()  # each worker writes a unit's index here once its jobs are recorded
    consoles = [Captured.of(sys.stdout), Captured.of(sys.stderr)]
    workers: list[Worker] = []
    with blocked(STOPS):  # a stop before the handlers below are in place waits for them, in either process
        for slot in range(count):
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:
                for fd in (read, queued, finished, *(earlier.results for earlier in workers)):
                    os.close(fd)
                _serve(slot, units, queue, work, summary, write, consoles, done)
            os.close(write)
            workers.append(Worker(slot, pid, read))
        os.close(queue)
        os.close(done)
        outcome = Outcome()
        restore = _pass_stops_on(workers, outcome)
    # the queue: every unit's index, largest first, then its end; written by a thread, as a pipe holds
    # 16,384 of them before its writer waits for the workers to read
    threading.Thread(target=_deal, args=(queued, dealing_order(costs)), name="lossheads-deal", daemon=True).start()
    try:
        with contextlib.suppress(Exception):  # what it does is done again later, where it can fail in full
            meanwhile()
        _read_messages(workers, finished, len(units), lambda running: outcome.stop is None and tail(running))
        for worker in workers:
            worker.status = os.waitstatus_to_exitcode(os.waitpid(worker.pid, 0)[1])
    finally:
        restore()
    for worker in workers:
        body, printed = _unpacked(worker.message)
        for console, text in zip(consoles, printed, strict=True):
            console.show(text)
        results = pickle.loads(body) if body is not None else None
        if worker.status == 0 and results is not None:
            outcome.returns.update(results[0])
            outcome.summaries.append(results[1])
        elif outcome.exit_code == 0:
            outcome.exit_code = worker.status if worker.status > 0 else 1
            if worker.status < 0 and outcome.stop is None:
                print(f"error: worker process {worker.pid} was ended by {signal.Signals(-worker.status).name} "
                      "before its jobs were recorded: run the same command again to continue the sweep "
                      "(finished jobs are kept)", file=sys.stderr)  # fmt: skip
    return outcome


def _read_messages(workers: Sequence[Worker], finished: int, units: int, tail: Callable[[set[int]], None]) -> None:
    """Each worker's message, read as it comes (a worker blocked on a full pipe waits only for this
    read), and the units' ends from the `finished` pipe; `tail(running)` once, when a worker has sent
    its message while another still works. Closes the pipes."""
    ended: set[int] = set()
    parts: dict[int, list[bytes]] = {worker.results: [] for worker in workers}
    told = len(workers) < 2
    with selectors.DefaultSelector() as selector:
        selector.register(finished, selectors.EVENT_READ)
        for worker in workers:
            selector.register(worker.results, selectors.EVENT_READ, worker)
        while parts:
            for key, _ in selector.select():
                if key.data is None:  # units' ends; none left to read once every worker has ended
                    if not _read_ends(finished, ended):
                        selector.unregister(finished)
                elif chunk := os.read(key.fd, 1 << 16):
                    parts[key.fd].append(chunk)
                else:  # the worker's end: its message whole
                    selector.unregister(key.fd)
                    os.close(key.fd)
                    key.data.message = b"".join(parts.pop(key.fd))
                    if not told and parts:  # another worker still works
                        told = True
                        os.set_blocking(finished, False)  # what the ended worker wrote before its message
                        with contextlib.suppress(BlockingIOError):
                            _read_ends(finished, ended)
                        os.set_blocking(finished, True)
                        with contextlib.suppress(Exception):  # a head start only: the sweep goes on without it
                            tail(set(range(units)) - ended)
    os.close(finished)


def _read_ends(finished: int, ended: set[int]) -> bool:
    """The units' ends in the `finished` pipe (whole records: each is written at once), into `ended`;
    False at the pipe's end."""
    chunk = os.read(finished, RECORD.size * 1024)
    ended.update(index for (index,) in RECORD.iter_unpack(chunk))
    return bool(chunk)


def _deal(queued: int, order: list[int]) -> None:
    with contextlib.suppress(OSError), os.fdopen(queued, "wb") as pipe:  # OSError: every worker has ended
        pipe.write(b"".join(RECORD.pack(i) for i in order))


def _next_unit(queue: int) -> int | None:
    """The index of the next unit in the queue, or None at its end (every unit taken)."""
    record = b""
    while len(record) < RECORD.size and (more := os.read(queue, RECORD.size - len(record))):
        record += more
    return RECORD.unpack(record)[0] if len(record) == RECORD.size else None


def _unpacked(message: bytes) -> tuple[bytes | None, tuple[str, str]]:
    """A worker's message: its pickled results (None: it has none) and its captured console text. A
    message cut short (the worker killed while it wrote it) counts as none."""
    try:
        body, printed = pickle.loads(message)
        return body, printed
    except Exception:  # noqa: BLE001 -- empty or cut short
        return None, ("", "")


@dataclass
class Captured:
    """The sweep's console stream as a worker sees it: where it is a Python stream and not a file
    descriptor (`contextlib.redirect_stdout` to a StringIO: a caller capturing the sweep's output), a
    worker's writes land in its own copy of it, so the worker sends them back and the sweep writes
    them there; a terminal's or file's descriptor the workers share and write themselves."""

    stream: Any
    start: int | None  # the text already in the stream when the workers were forked; None: a descriptor

    @classmethod
    def of(cls, stream: Any) -> Captured:
        try:
            stream.fileno()
            return cls(stream, None)
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError and a ValueError
            return cls(stream, len(stream.getvalue()) if hasattr(stream, "getvalue") else None)

    def written(self, stream: Any) -> str:
        """In the worker: what it wrote to its copy of the stream."""
        return stream.getvalue()[self.start :] if self.start is not None and hasattr(stream, "getvalue") else ""

    def show(self, text: str) -> None:
        if text:
            self.stream.write(text)


@contextlib.contextmanager
def blocked(signals: Sequence[signal.Signals]) -> Iterator[None]:
    before = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _pass_stops_on(workers: Sequence[Worker], outcome: Outcome) -> Callable[[], None]:
    """In the sweep process while its workers run: a stop is passed on to each (a terminal's Ctrl-C
    reaches them anyway; a SIGTERM to the sweep alone would not), and the sweep waits for them. A
    second stop kills the workers that are still recording the first: each group resumes from its
    last saved epoch when the sweep runs again."""

    def handler(signum: int, frame: Any) -> None:
        again = outcome.stop is not None
        outcome.stop, outcome.killed = outcome.stop or signal.Signals(signum), again
        if again:
            print("a second stop: the workers are killed; run the same command again to continue the sweep "
                  "(each group resumes from its last saved epoch)", file=sys.stderr)  # fmt: skip
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL if again else signum)

    from lossheads.run.stops import handle_stops

    return handle_stops(handler)


def _serve(slot: int, units: Sequence[Any], queue: int, work: Callable[[Any], dict[int, Any]],
           summary: Callable[[], Any], results: int, consoles: list[Captured], ends: int) -> NoReturn:  # fmt: skip
    """The worker: units from the queue one after another, as the launcher runs them in process, each
    one's index on `ends` once its jobs are recorded; its results and captured console text down the
    pipe; then `os._exit`, so that nothing of the parent's (its atexit work, a test runner's frames)
    runs here."""
    from lossheads.run.console import draw_bars_here
    from lossheads.run.stops import SWEEP_PID, caught

    code, done = 0, None
    try:
        parent = os.getppid()
        os.environ[SWEEP_PID] = str(os.getpid())  # its jobs stop and exit as in the sweep process, not `park`
        draw_bars_here(slot == 0)  # one terminal bar at a time; every worker logs its epoch lines
        _stop_when_gone(parent)
        import torch

        # one intra-op thread, as PyTorch's DataLoader workers: OpenMP's thread pool does not survive a
        # fork (a worker of a parent that ran parallel ops hangs in its first one with two threads), and
        # at a group's size a second thread gains nothing (two processes each spinning two threads on
        # two cores took 3x the time)
        torch.set_num_threads(1)
        returns: dict[int, Any] = {}
        with caught():  # between units: a stop ends the worker as it would end the launcher
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
            while (index := _next_unit(queue)) is not None:
                returns.update(work(units[index]))
                with contextlib.suppress(OSError):  # the sweep process is gone: this worker stops anyway
                    os.write(ends, RECORD.pack(index))
        for sig in STOPS:  # every job is recorded: a stop now would only lose the results
            signal.signal(sig, signal.SIG_IGN)
        done = (returns, summary())
    except BaseException as error:  # noqa: BLE001 -- the worker's end, said as the launcher's would be
        code = _exit_code(error)
    finally:
        try:
            body = pickle.dumps(done, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as error:  # noqa: BLE001 -- a job's return value that does not pickle
            traceback.print_exception(error)
            code, body = code or 1, pickle.dumps(None)
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
            printed = (consoles[0].written(sys.stdout), consoles[1].written(sys.stderr))
            with os.fdopen(results, "wb") as pipe:
                pipe.write(pickle.dumps((body, printed), protocol=pickle.HIGHEST_PROTOCOL))
        os._exit(code)


def _exit_code(error: BaseException) -> int:
    """The exit code of a worker that `error` ended, its reason said as the launcher would say it."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from lossheads.run.stops import StopSignals

    if StopSignals.received is not None:  # KeyboardInterrupt, Lightning's SIGTERMException, or a stop's exit
        if not isinstance(error, SystemExit) or isinstance(error, SIGTERMException):  # not yet said
            print(StopSignals.between_seeds_jobs(), file=sys.stderr)
        return StopSignals.exit_code()
    if isinstance(error, SystemExit):
        if isinstance(error.code, str):
            print(error.code, file=sys.stderr)
        return error.code if isinstance(error.code, int) else (0 if error.code is None else 1)
    traceback.print_exception(error)
    return 1


def _stop_when_gone(parent: int) -> None:
    """A sweep process that is gone (a SIGKILL, which it cannot pass on) stops this worker as a SIGTERM
    would: its members record their stops."""

    from lossheads.run.stops import EXIT_SIGTERM

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(ORPHAN_GRACE)  # still here: stuck where no signal handler runs; no worker outlives its sweep
        os._exit(EXIT_SIGTERM)

    threading.Thread(target=watch, name="lossheads-sweep-watch", daemon=True).start()
