"""A test-only callback that holds a run in one phase, so that a test can signal it there.

Added by a test as `+callbacks.pause._target_=pause_callback.Pause +callbacks.pause.hook=on_test_start ...`
with this folder on PYTHONPATH; nothing in the product refers to it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback

SEEN: dict[str, int] = {}  # per process, across the runs of a recipe or a sweep


class Pause(Callback):
    """At the `occurrence`-th call of `hook` in this process: touch `marker`, then sleep; never again
    once `marker` exists (a resumed run goes straight through)."""

    def __init__(self, hook: str, marker: str, occurrence: int = 1, seconds: float = 60) -> None:
        self.hook, self.marker, self.occurrence, self.seconds = hook, marker, occurrence, seconds
        setattr(self, hook, self._maybe_pause)

    def _maybe_pause(self, *args: Any, **kwargs: Any) -> None:
        SEEN[self.hook] = SEEN.get(self.hook, 0) + 1
        if SEEN[self.hook] == self.occurrence and not Path(self.marker).exists():
            Path(self.marker).touch()
            time.sleep(self.seconds)
