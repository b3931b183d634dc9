"""Where and when the report's figures are drawn: in two processes (`draw`), and some ahead of the report.

The last groups of a sweep often train on one core while the other waits, its worker out of units. The
seeds launcher then calls `draw_ahead` with the jobs still running, and a forked process draws, in
memory, the figures of every dataset whose jobs have all ended. When the sweep ends, the report
(`drawn`) writes each of those whose inputs are still the same, and draws the rest meanwhile. Nothing
reaches the sweep folder before the report writes it, and a figure whose runs changed (or that the
process could not draw) is drawn again.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossheads.report.settings import Settings
from lossheads.run.forked import Forked, forked

log = logging.getLogger(__name__)

Call = Callable[[], Path | None]  # a figure call of `plots.dataset_figures`: a partial whose last argument is its path


@dataclass
class _Expected:
    sweep_dir: Path
    chosen: Settings


@dataclass
class _Drawing:
    forked: Forked[dict[str, tuple[str, bytes | None]]]  # path -> (inputs' key, PNG bytes or None: nothing to show)
    running: set[str]  # the job folders that were still running


def draw(calls: list[Callable[[], Path | None]]) -> list[Path | None]:
    """Each call's figure. matplotlib draws in one thread, and a sweep's report spends most of its
    time there (~4 s for two datasets on 2 cores); on Linux with two cores or more, a forked copy of
    this process draws every other figure meanwhile and hands back their paths through a pipe. A
    child that fails or dies leaves its figures to this process, which then raises what they raise."""
    theirs = calls[1::2] if len(calls) > 1 and sys.platform == "linux" and (os.cpu_count() or 1) > 1 else []
    ours = calls[::2] if theirs else calls
    if not theirs:
        return [call() for call in ours]
    read, write = os.pipe()
    gc.freeze()  # neither process's collections walk (and the child's copy) the objects alive now
    try:
        with warnings.catch_warnings():  # Python 3.12 warns of fork() in a process with threads: none draws
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except BaseException:
        gc.unfreeze()
        raise
    if pid == 0:  # the child: its figures, their paths on the pipe, and out without any cleanup of the parent's
        code = 1
        try:
            # a stop ends it quietly (the parent says what stopped), as a KeyboardInterrupt: the file being
            # written removes its temporary
            for stop in (signal.SIGINT, signal.SIGTERM):
                signal.signal(stop, signal.default_int_handler)
            os.close(read)
            made = [call() for call in theirs]
            os.write(write, json.dumps([str(p) if p else None for p in made]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    try:
        drawn = [call() for call in ours]
    finally:
        with os.fdopen(read, "rb") as pipe:
            answer = pipe.read()
        _, status = os.waitpid(pid, 0)
        gc.unfreeze()
    try:
        theirs_made = [Path(p) if p else None for p in json.loads(answer)] if status == 0 else None
    except ValueError:
        theirs_made = None
    if theirs_made is None or len(theirs_made) != len(theirs):
        theirs_made = [call() for call in theirs]
    made: list[Path | None] = []
    for k in range(len(calls)):
        made.append(drawn[k // 2] if k % 2 == 0 else theirs_made[k // 2])
    return made


_expected: _Expected | None = None  # the report this process writes when its sweep ends (ReportCallback)
_drawing: _Drawing | None = None


def expect(sweep_dir: Path, chosen: Settings) -> None:
    """The sweep this process runs writes a report into `sweep_dir` with `chosen` when it ends (an
    earlier sweep's figures drawn ahead, which its report did not take, are dropped)."""
    global _expected, _drawing
    _expected = _Expected(sweep_dir.absolute(), chosen)
    if _drawing is not None:
        _drawing.forked.end()
        _drawing = None


def draw_ahead(sweep_dir: Path, running: set[str]) -> None:
    """In a forked process (`run.forked`), the figures of the datasets none of whose jobs runs in the job
    folders `running` (names in `sweep_dir`), kept in memory for the report."""
    global _drawing
    if _expected is None or _expected.sweep_dir != sweep_dir.absolute() or _drawing is not None:
        return
    expected = _expected
    process = forked(lambda: _draw(expected, running))
    if process is not None:
        _drawing = _Drawing(process, set(running))


def _draw(expected: _Expected, running: set[str]) -> dict[str, tuple[str, bytes | None]]:
    import matplotlib

    matplotlib.use("Agg")  # as the report draws (markdown.draw_figures)
    from lossheads.report import plots
    from lossheads.report.verdicts import analyse

    analysis = analyse(expected.sweep_dir, expected.chosen)
    busy = _busy(analysis.runs, running)
    slugs: set[str] = set()
    figures = {}
    for section in analysis.sections:
        calls = plots.dataset_figures(section, expected.sweep_dir, slugs)
        if section.dataset not in busy:
            for call in calls:
                figures[str(path_of(call))] = (figure_key(call, section), plots.in_memory(call))
    return figures


def _busy(runs: list[Any], running: set[str]) -> set[str]:
    """The datasets of the runs in the job folders `running`."""
    return {run.dataset for run in runs if run.job.split("/")[0] in running}


def path_of(call: Call) -> Path:
    assert isinstance(call, functools.partial)
    return Path(call.args[-1])


def figure_key(call: Call, section: Any) -> str:
    """What a figure is drawn from: its call's arguments (the section's runs, records and verdicts), and
    the size and time of each run's predictions.npz (the ROC and reliability figures read it)."""
    stats = []
    for runs in section.arms.values():
        for run in runs:
            try:
                found = (run.folder / "predictions.npz").stat()
                stats.append((str(run.folder), found.st_size, found.st_mtime_ns))
            except OSError:
                stats.append((str(run.folder), None, None))
    assert isinstance(call, functools.partial)
    text = repr((call.func.__qualname__, call.args, sorted(call.keywords.items()), stats))
    return hashlib.sha256(text.encode()).hexdigest()


def drawn(calls: list[Call], sections: list[Any], runs: list[Any], draw: Callable[[list[Call]], list[Path | None]]
          ) -> list[Path | None]:  # fmt: skip
    """Each call's figure (`sections`: the section of each): those drawn ahead are written from memory
    where their inputs are the same; the others are drawn by `draw` meanwhile."""
    global _drawing
    drawing, _drawing = _drawing, None
    if drawing is None:
        return draw(calls)
    busy = _busy(runs, drawing.running)
    ahead = [section.dataset not in busy for section in sections]
    now = iter(draw([call for call, taken in zip(calls, ahead, strict=True) if not taken]))
    figures = drawing.forked.result() or {}
    made: list[Path | None] = []
    again: list[int] = []
    for k, (call, section, taken) in enumerate(zip(calls, sections, ahead, strict=True)):
        if not taken:
            made.append(next(now))
            continue
        key, png = figures.get(str(path_of(call)), (None, None))
        if key != figure_key(call, section):
            made.append(None)
            again.append(k)
        elif png is None:
            made.append(None)
        else:
            made.append(_write(path_of(call), png))
    for k, path in zip(again, draw([calls[k] for k in again]), strict=True):
        made[k] = path
    log.debug(f"figures drawn ahead: {sum(ahead) - len(again)} taken, {len(again)} drawn again")
    return made


def _write(path: Path, png: bytes) -> Path:
    from lossheads.run.atomic import write_bytes

    write_bytes(path, png, durable=False)
    return path
