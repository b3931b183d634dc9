"""Networks: `Model(input_shape, num_logits, **options)` maps (N, *input_shape) to (N, num_logits)
logits; the data decides input_shape ((F,) for tables, (C, H, W) for images), the head num_logits."""

from lossheads.models.build import build_net
from lossheads.models.cnn import CNN
from lossheads.models.mlp import MLP
from lossheads.models.resnet import ResNet

__all__ = ["CNN", "MLP", "ResNet", "build_net"]
