from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from lossheads.config.validators import is_int, require, require_fraction


class MLP(nn.Sequential):
    """Linear -> ReLU (-> Dropout) per hidden layer, then a linear layer to logits. No final
    sigmoid/softmax: the loss and the head decide what the logits mean. Any input shape: each
    sample is flattened first (an image of C x H x W is C*H*W features)."""

    def __init__(
        self, input_shape: Sequence[int], num_logits: int, hidden: Sequence[int] = (64, 64), dropout: float = 0.0
    ) -> None:
        hidden = list(hidden)
        require(all(is_int(h) and h >= 1 for h in hidden), "model.hidden", hidden,
                "use a list of layer widths >= 1, e.g. model.hidden=[64,64] (or [] for a linear model)")  # fmt: skip
        require_fraction("model.dropout", dropout, low_open=False, high_open=True)
        layers: list[nn.Module] = []
        width = math.prod(input_shape)
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, num_logits))
        super().__init__(*layers)

    def forward(self, features: Tensor) -> Tensor:
        # flattened here rather than by an nn.Flatten layer, which would shift the state_dict keys
        # of every saved MLP checkpoint ("0.weight" -> "1.weight")
        return super().forward(features.flatten(1))
