from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from lossheads.config.validators import is_int, require
from lossheads.models.cnn import conv_bn_relu, image_shape


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and an identity (or 1x1 projection) shortcut (He et al. 2016)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(c_in, c_out, stride)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn2(self.conv2(self.conv1(x))) + self.shortcut(x))


class ResNet(nn.Module):
    """A CIFAR-style ResNet for small images (8-32 px): a 3x3 stem without pooling, then one stage per
    entry of `channels`, each `blocks` BasicBlocks, stride 2 from the second stage on while the
    image is at least 4 px; global average pooling and a linear layer to logits.
    channels=[16,32,64], blocks=3 is ResNet-20 of the paper."""

    def __init__(
        self, input_shape: Sequence[int], num_logits: int, channels: Sequence[int] = (16, 32, 64), blocks: int = 2
    ) -> None:
        super().__init__()
        c_in, height, width = image_shape("model=resnet input_shape", input_shape)
        channels = list(channels)
        require(len(channels) >= 1 and all(is_int(c) and c >= 1 for c in channels), "model.channels", channels,
                "use a list of stage widths >= 1, e.g. model.channels=[16,32,64]")  # fmt: skip
        require(is_int(blocks) and blocks >= 1, "model.blocks", blocks, "use a whole number >= 1")
        self.stem = conv_bn_relu(c_in, channels[0])
        stages, c_in, size = [], channels[0], min(height, width)
        for i, c_out in enumerate(channels):
            stride = 2 if i > 0 and size >= 4 else 1
            size //= stride
            stages += [BasicBlock(c_in if b == 0 else c_out, c_out, stride if b == 0 else 1) for b in range(blocks)]
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_logits))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.stages(self.stem(images)))
