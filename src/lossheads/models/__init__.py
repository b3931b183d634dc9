"""Networks: each maps (N, in_features) to (N, out_features) logits; the head decides out_features."""

from lossheads.models.mlp import MLP

__all__ = ["MLP"]
