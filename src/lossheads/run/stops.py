"""Every stop is recorded: Ctrl-C and SIGTERM in any phase become one exception the entry point
records (metrics.json with the status, the resume command) before it exits 130 / 143.

Python turns SIGINT into `KeyboardInterrupt` wherever the program is; SIGTERM would kill the process
without a word, so `install` makes it raise Lightning's `SIGTERMException` the same way. Lightning's
own SIGTERM handler (registered while a trainer runs) calls the handler found before it, this one,
so the stop arrives at once in every phase: sanity check, training, validation, test, between runs.
A second signal while the first stop is being recorded is ignored (a SIGKILL still ends it).
"""

from __future__ import annotations

import contextlib
import shlex
import signal
from collections.abc import Iterator
from typing import Any

from lightning.pytorch.utilities.exceptions import SIGTERMException

EXIT_SIGINT, EXIT_SIGTERM = 130, 143  # 128 + the signal's number, as shells report them
NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}


class StopSignals:
    """Which signal stopped the run (None: none did)."""

    received: signal.Signals | None = None
    trainer: Any = None  # the trainer at work, whose stage names the phase a stop came in
    phase = ""  # that stage when the signal came (Lightning clears it while it handles the stop)

    @classmethod
    def name(cls) -> str:
        return NAMES.get(cls.received, "a signal") if cls.received else ""

    @classmethod
    def exit_code(cls) -> int:
        return EXIT_SIGTERM if cls.received == signal.SIGTERM else EXIT_SIGINT


def _handler(signum: int, frame: Any) -> None:
    if StopSignals.received is not None:
        return  # already stopping: let the first stop finish its records
    StopSignals.received = signal.Signals(signum)
    stage = getattr(getattr(StopSignals.trainer, "state", None), "stage", None)
    StopSignals.phase = stage.value.replace("_", " ") if stage is not None else "set-up or record writing"
    if signum == signal.SIGTERM:
        raise SIGTERMException
    raise KeyboardInterrupt


@contextlib.contextmanager
def caught() -> Iterator[None]:
    """Within: SIGINT and SIGTERM raise in the main thread, remembering which one came; after: the
    handlers found before (a caller such as a test process keeps its own)."""
    StopSignals.received, StopSignals.trainer, StopSignals.phase = None, None, ""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in before:
        signal.signal(sig, _handler)
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def hydra_string(key: str, value: str) -> str:
    """`key='value'`: Hydra reads a quoted value as one string whatever it holds (`=`, `,`, spaces,
    brackets), where unquoted `a,b` would be a sweep and `a=b` a syntax error."""
    escaped = value.replace("'", "\\'")
    return f"{key}='{escaped}'"


def resume_command(overrides: list[str], output_dir: str, has_checkpoint: bool) -> str:
    """The command that continues this run in its own folder: from its newest checkpoint, or, when it
    stopped before training took a step, the same command again in the same folder."""
    kept = [o for o in overrides if not o.startswith(("ckpt_path=", "hydra.run.dir=", "+ckpt_path="))]
    words = [*kept, hydra_string("hydra.run.dir", output_dir), *(["ckpt_path=last"] if has_checkpoint else [])]
    return " ".join(["python", "train.py", *(shell_word(w) for w in words)])  # the user's overrides as typed


def shell_word(word: str) -> str:
    """`word` as one shell word: bare when safe, in double quotes when that needs no escapes (readable
    around Hydra's single quotes), else as `shlex.quote` makes it."""
    if shlex.quote(word) == word:
        return word
    if not any(c in word for c in '"$`\\!'):
        return f'"{word}"'
    return shlex.quote(word)
