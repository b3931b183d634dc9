"""Python's garbage collector, set for a command that builds and keeps many objects.

A 120-run sweep holds about a million objects by its end (configs, modules, records). With CPython's
defaults a full collection walks all of them every few thousand allocations (2.1 s of that sweep), and
the interpreter's last collection at exit walks them once more (1.7 s after the report, with nothing
left to free): docs/speed.md."""

from __future__ import annotations

import atexit
import gc

FIRST_GENERATION = 10_000  # objects allocated between collections of the youngest generation (CPython: 700)

_set = False


def collect_less() -> None:
    """Collect the youngest generation every 10,000 allocations, and freeze what is alive at exit, so
    that the interpreter's last collection skips it. Files are flushed and closed before that (the
    commands close what they write; `logging`'s own exit hook runs after this one)."""
    global _set
    if _set:
        return
    _set = True
    gc.set_threshold(FIRST_GENERATION, *gc.get_threshold()[1:])
    atexit.register(gc.freeze)  # atexit runs last-registered first: this comes after the commands' own hooks
