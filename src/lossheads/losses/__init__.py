"""Losses, one class per module; each registers itself by subclassing `Loss` (see `losses/base.py`).

Every module of this package is imported here, so that adding a loss is one new file.
"""

from __future__ import annotations

import importlib
import pkgutil

from lossheads.losses.base import LOSSES, SHARED_OPTIONS, Loss

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["LOSSES", "SHARED_OPTIONS", "Loss"]
