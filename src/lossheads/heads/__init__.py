"""Heads, one class per module; each registers itself by subclassing `Head` (see `heads/base.py`).

Every module of this package is imported here, so that adding a head is one new file.
"""

from __future__ import annotations

import importlib
import pkgutil

from lossheads.heads.base import HEADS, Form, Head, Task, Threshold, build_head

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["HEADS", "Form", "Head", "Task", "Threshold", "build_head"]
