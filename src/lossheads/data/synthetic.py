"""Synthetic data with controllable size, imbalance and label noise, for controlled comparisons.

The data itself depends on `generator_seed` only, so runs that differ in `seed` see the same
dataset (split and initialization differ).
"""

from __future__ import annotations

import math

import numpy as np

from lossheads.config.validators import require, require_fraction, require_int
from lossheads.data.base import ArrayDataModule, LabeledArrays
from lossheads.data.generators import gaussian_clusters, word_counts


class _Synthetic(ArrayDataModule):
    def __init__(
        self,
        n_samples: int = 2000,
        n_features: int = 20,
        label_noise: float = 0.0,
        generator_seed: int = 0,
        **split_options,
    ) -> None:
        super().__init__(**split_options)
        require_int("data.n_samples", n_samples, 50)
        require_int("data.n_features", n_features, 1)
        require_fraction("data.label_noise", label_noise, low_open=False, high_open=True)
        require_int("data.generator_seed", generator_seed, 0)
        self.n_samples, self.n_features = n_samples, n_features
        self.label_noise, self.generator_seed = label_noise, generator_seed

    def _clusters(self, num_classes: int, weights: list[float] | None) -> tuple[np.ndarray, np.ndarray]:
        """Gaussian clusters, one per class, on informative features (scikit-learn's make_classification)."""
        needed = math.ceil(math.log2(num_classes))
        require(self.n_features >= needed, "data.n_features", self.n_features,
                f"{num_classes} classes need at least {needed} features")  # fmt: skip
        informative = max(needed, self.n_features // 2)
        seed = self.generator_seed
        return gaussian_clusters(self.n_samples, self.n_features, informative, num_classes, weights, seed)

    def _with_noise(self, labels: np.ndarray, num_classes: int) -> np.ndarray:
        """Move a `label_noise` fraction of the samples to a different class, chosen uniformly."""
        rng = np.random.default_rng(self.generator_seed + 1)
        noisy = rng.random(len(labels)) < self.label_noise
        shift = rng.integers(1, num_classes, size=len(labels))
        return np.where(noisy, (labels + shift) % num_classes, labels)


class SyntheticBinary(_Synthetic):
    """Two classes; `pos_fraction` sets the share of positives (imbalance)."""

    name = "synthetic_binary"

    def __init__(self, pos_fraction: float = 0.5, **options) -> None:
        super().__init__(**options)
        require_fraction("data.pos_fraction", pos_fraction, low_open=True, high_open=True)
        self.pos_fraction = pos_fraction

    def load(self) -> LabeledArrays:
        features, labels = self._clusters(2, [1 - self.pos_fraction])
        return LabeledArrays(features, self._with_noise(labels, 2), "binary", 2)


class SyntheticMulticlass(_Synthetic):
    """`num_classes` >= 3 balanced classes (use synthetic_binary for two)."""

    name = "synthetic_multiclass"

    def __init__(self, num_classes: int = 5, **options) -> None:
        super().__init__(**options)
        require_int("data.num_classes", num_classes, 3)
        self.n_classes = num_classes

    def load(self) -> LabeledArrays:
        num_classes = self.n_classes
        features, labels = self._clusters(num_classes, None)
        return LabeledArrays(features, self._with_noise(labels, num_classes), "multiclass", num_classes)


class SyntheticLongTail(SyntheticMulticlass):
    """Long-tailed classes: class c has a share proportional to imbalance^(-c / (C - 1)), so class sizes
    fall geometrically by `imbalance` (10x by default) from the first class to the last."""

    name = "synthetic_longtail"

    def __init__(self, imbalance: float = 10.0, **options) -> None:
        super().__init__(**options)
        require(isinstance(imbalance, (int, float)) and imbalance >= 1, "data.imbalance", imbalance,
                "use a number >= 1: the ratio of the first class's size to the last's")  # fmt: skip
        self.imbalance = float(imbalance)

    def load(self) -> LabeledArrays:
        c = self.n_classes
        shares = [self.imbalance ** (-k / (c - 1)) for k in range(c)]
        features, labels = self._clusters(c, [s / sum(shares) for s in shares])
        return LabeledArrays(features, self._with_noise(labels, c), "multiclass", c)


class SyntheticMultilabel(_Synthetic):
    """`num_classes` labels per sample (scikit-learn's make_multilabel_classification, about 2 on per
    sample); `label_noise` flips each label bit with that probability."""

    name = "synthetic_multilabel"

    def __init__(self, num_classes: int = 5, **options) -> None:
        super().__init__(**options)
        require_int("data.num_classes", num_classes, 2)
        self.n_classes = num_classes

    def load(self) -> LabeledArrays:
        features, labels = word_counts(self.n_samples, self.n_features, self.n_classes, 2, self.generator_seed)
        rng = np.random.default_rng(self.generator_seed + 1)
        flips = rng.random(labels.shape) < self.label_noise
        labels = np.where(flips, 1 - labels, labels).astype(np.float32)
        return LabeledArrays(features.astype(np.float64), labels, "multilabel", self.n_classes)
