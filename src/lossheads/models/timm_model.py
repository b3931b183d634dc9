"""`model=timm model.name=...`: any timm architecture, where timm and a torchvision built for this
torch import (the GPU machines have them; the CPU wheel of torchvision on the package index fails to
import with the CPU torch, and timm needs torchvision)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lossheads.config.validators import ConfigError, require


def timm_model(input_shape: Sequence[int], num_logits: int, name: str | None = None, **options: Any) -> nn.Module:
    """timm's own module (so a timm state_dict loads by `model.weights=PATH` as it is), built for
    this data's channels and the head's number of logits. No download: weights come from a local file."""
    require(bool(name), "model.name", name, "name a timm architecture, e.g. model=timm model.name=resnet18")
    require(len(tuple(input_shape)) == 3, "model=timm input_shape", tuple(input_shape),
            "timm networks need images (C, H, W): use an image dataset, or model=mlp")  # fmt: skip
    try:
        import timm
    except Exception as exc:  # noqa: BLE001 -- ImportError, or torchvision's RuntimeError at import
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"model=timm needs timm and a torchvision built for torch {torch.__version__} ({reason}): "
            "pip install timm and the matching torchvision, or use model=cnn or model=resnet"
        ) from None
    require(timm.is_model(name), "model.name", name, "not a timm architecture: see timm.list_models()")
    return timm.create_model(name, pretrained=False, num_classes=num_logits, in_chans=input_shape[0], **options)
