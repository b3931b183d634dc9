"""Data that fits in memory, held as tensors on the training device and served as slices.

Per-sample `Dataset.__getitem__` + collate costs ~5 us a sample on these CPUs, more than the
model's step at small sizes; slicing a per-epoch permuted copy costs a few us a batch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor

from lossheads.config.validators import ConfigError, require, require_fraction, require_int
from lossheads.data.sampler import BalancedPermutation
from lossheads.heads import Task
from lossheads.run.splits import sample_hashes, split_record


class SeededPermutation:
    """The shuffle order of one epoch, a function of (seed, epoch) alone.

    Lightning calls `set_epoch` on a loader's `sampler` at each epoch start (also after a resume),
    so the order never depends on how many epochs this process has already run.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, n: int) -> Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(n, generator=generator)


class InMemoryBatches:
    """A loader over tensors: one gather per epoch, then contiguous slices; no workers, no collate.

    With `batches_per_item` = K each item holds K consecutive mini-batches of the same order (the
    module steps through them one by one), so the samples, their order and the mini-batches are
    those of K = 1.

    Under DDP each of `world_size` processes takes every `world_size`-th sample of the epoch's order
    from `rank` on, so the processes' k-th mini-batches together are the k-th mini-batch of
    batch_size * world_size of a single process. A shuffled (training) loader first drops the
    remainder that would leave the processes with unequal numbers of steps.

    `extra`, if given, holds one row per sample (distillation's teacher logits, computed once): each
    item then carries its rows as a third tensor, in the same order and shard.
    """

    def __init__(
        self,
        features: Tensor,
        targets: Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        drop_last: bool = False,
        seed: int = 0,
        batches_per_item: int = 1,
        rank: int = 0,
        world_size: int = 1,
        sampler: Any = None,
        extra: Tensor | None = None,
    ) -> None:
        self.features, self.targets, self.extra = features, targets, extra
        n = len(features)
        # drop_last drops the last incomplete mini-batch, unless that would leave nothing
        unit = (batch_size if drop_last else 1) * (world_size if shuffle else 1)
        self.usable = n // unit * unit if n >= unit else n
        self.rank, self.world_size = rank, world_size
        self.shard_size = len(range(rank, self.usable, world_size))
        self.item_size = batch_size * batches_per_item
        # `sampler`: another per-epoch order with SeededPermutation's interface (data.sampler=balanced)
        self.sampler = (sampler or SeededPermutation(seed)) if shuffle else None
        self.batch_sampler = None  # Lightning looks for one beside `sampler`

    def __len__(self) -> int:
        return math.ceil(self.shard_size / self.item_size)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        tensors = (self.features, self.targets) + (() if self.extra is None else (self.extra,))
        features = self.features
        order = None if self.sampler is None else self.sampler.order(len(features))
        if self.world_size > 1:
            order = torch.arange(len(features)) if order is None else order
            order = order[: self.usable][self.rank :: self.world_size]
        if order is not None:
            order = order.to(features.device)
            tensors = tuple(t[order] for t in tensors)
        for start in range(0, self.shard_size, self.item_size):
            end = min(start + self.item_size, self.shard_size)
            yield tuple(t[start:end] for t in tensors)


@dataclass
class LabeledArrays:
    """A whole dataset as loaded: targets are class indices (N,) for binary and multi-class data,
    0/1 per label (N, L) for multi-label data, or class probabilities (N, C) for soft targets."""

    features: np.ndarray
    targets: np.ndarray
    task: Task
    num_classes: int

    @functools.cached_property
    def hashes(self) -> list[str]:
        """Each sample's hash (`run.splits.sample_hashes`), computed once for the runs of a seeds group,
        which share these arrays."""
        return sample_hashes(self.features, self.targets)

    @property
    def hard_labels(self) -> np.ndarray | None:
        """Labels to stratify the split by; None for multi-label data."""
        if self.task == "multilabel":
            return None
        return self.targets.argmax(axis=1) if self.targets.ndim == 2 else self.targets


def stratified_split(
    labels: np.ndarray | None, n: int, fractions: tuple[float, float], seed: int, fold: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train/val/test indices; each class is split in the same proportions where labels are given.
    With `fold` = (K, i): stratified K-fold cross-validation; the test split is the same for every i,
    the rest is cut in K folds and fold i validates (the val fraction is then 1/K of the rest)."""
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    parts: tuple[list, list, list] = ([], [], [])
    for group in groups:
        group = rng.permutation(group)
        if fold is not None:
            n_test = round(len(group) * fractions[1])
            folds = np.array_split(group[n_test:], fold[0])
            parts[2].append(group[:n_test])
            parts[1].append(folds[fold[1]])
            parts[0].append(np.concatenate([f for i, f in enumerate(folds) if i != fold[1]]))
            continue
        n_val, n_test = (round(len(group) * f) for f in fractions)
        parts[1].append(group[:n_val])
        parts[2].append(group[n_val : n_val + n_test])
        parts[0].append(group[n_val + n_test :])
    return tuple(rng.permutation(np.concatenate(p)) for p in parts)  # type: ignore[return-value]


MIN_PER_CLASS = 3  # validation and test samples each class needs: with fewer, one sample decides a metric


def require_evaluable(
    labels: np.ndarray | None,
    splits: dict[str, np.ndarray],
    fractions: tuple[float, float],
    fold: tuple[int, int] | None,
    names: list[str],
) -> None:
    """The rule that keeps validation and test meaningful: every class has at least `MIN_PER_CLASS`
    samples in the validation split (each fold's, under data.folds) and in the test split; multi-label
    data, at least that many samples in each. So K folds are refused beyond a third of the smallest
    class's samples outside the test split (`data.folds=1000` on breast_cancer left most validation
    folds empty and the rest one sample), and so is a class too small to reach validation and test."""
    if labels is None:
        if fold is not None:
            rest = len(splits["train"]) + len(splits["val"])
            most = rest // MIN_PER_CLASS
            require(rest // fold[0] >= MIN_PER_CLASS, "data.folds", fold[0],
                    f"{rest} samples outside the test split give folds of {rest // fold[0]}; each needs >= "
                    f"{MIN_PER_CLASS}: " + (f"use data.folds={most} or fewer" if most >= 2 else
                                            "use more samples, or data.folds=null"))  # fmt: skip
        for split in ("val", "test"):
            require(len(splits[split]) >= MIN_PER_CLASS, "data", "multi-label",
                    f"the {split} split holds {len(splits[split])} sample(s); it needs >= {MIN_PER_CLASS}: use "
                    "more samples or a larger data.val_fraction / data.test_fraction")  # fmt: skip
        return
    classes, totals = np.unique(labels, return_counts=True)

    def held(split: str) -> np.ndarray:  # samples of each class in the split
        return np.bincount(np.searchsorted(classes, labels[splits[split]]), minlength=len(classes))

    def name(index: int) -> str:
        label = classes[index].item()
        return names[label] if isinstance(label, int) and 0 <= label < len(names) else str(label)

    if fold is not None:  # the smallest of a class's K folds, whichever fold this run validates on
        rest = totals - held("test")
        worst = int(rest.argmin())  # its smallest fold is the smallest of all
        most = int(rest[worst]) // MIN_PER_CLASS
        fix = f"use data.folds={most} or fewer" if most >= 2 else "use more samples of it, or data.folds=null"
        require(rest[worst] // fold[0] >= MIN_PER_CLASS, "data.folds", fold[0],
                f"class {name(worst)!r} has {rest[worst]} samples outside the test split, so its smallest validation "
                f"fold holds {rest[worst] // fold[0]}; every class needs >= {MIN_PER_CLASS} in each validation fold "
                f"and in the test split: {fix}")  # fmt: skip
    for split, fraction in (("val", fractions[0]), ("test", fractions[1])):
        counts = held(split)
        worst = int(counts.argmin())
        least = 2 * MIN_PER_CLASS + 1  # validation, test, and one to train on
        fix = f"use a larger data.{split}_fraction or more samples of that class" if totals[worst] >= least else \
            f"give that class >= {least} samples, or remove its rows"  # fmt: skip
        require(counts[worst] >= MIN_PER_CLASS, f"data.{split}_fraction", fraction,
                f"it leaves class {name(worst)!r} {counts[worst]} {'validation' if split == 'val' else 'test'} "
                f"sample(s) of its {totals[worst]}; every class needs >= {MIN_PER_CLASS} in validation and in test: "
                f"{fix}")  # fmt: skip


class ArrayDataModule(LightningDataModule):
    """Base of every in-memory dataset: a seeded stratified split, features standardized with the
    training split's statistics only, batches served by `InMemoryBatches` on the training device.
    `split_seed` draws the split; `seed` (the run's seed) the training order."""

    name = ""

    def __init__(
        self,
        batch_size: int = 64,
        eval_batch_size: int = 1024,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        drop_last: bool = False,
        steps_per_call: int = 1,
        folds: int | None = None,
        fold: int = 0,
        seed: int = 0,
        sampler: str = "shuffle",
    ) -> None:
        super().__init__()
        require(sampler in ("shuffle", "balanced"), "data.sampler", sampler,
                "use shuffle (a seeded permutation) or balanced (classes equally often per epoch)")  # fmt: skip
        self.sampler = sampler
        require(folds is None or (isinstance(folds, int) and folds >= 2), "data.folds", folds,
                "use a number of folds >= 2, or null for one train/val split")  # fmt: skip
        require(folds is None or (isinstance(fold, int) and 0 <= fold < folds), "data.fold", fold,
                f"use a fold from 0 to {(folds or 1) - 1}")  # fmt: skip
        self.fold = (folds, fold) if folds else None
        require_int("steps_per_call", steps_per_call, 1)
        self.steps_per_call = steps_per_call
        require_int("data.batch_size", batch_size, 1)
        require_int("data.eval_batch_size", eval_batch_size, 1)
        require_fraction("data.val_fraction", val_fraction, low_open=True, high_open=True)
        require_fraction("data.test_fraction", test_fraction, low_open=True, high_open=True)
        require(val_fraction + test_fraction < 0.9, "data.val_fraction + data.test_fraction",
                val_fraction + test_fraction, "leave at least 10% of the data for training")  # fmt: skip
        require(isinstance(split_seed, int) and not isinstance(split_seed, bool) and 0 <= split_seed < 2**32,
                "data.split_seed", split_seed, f"use a whole number in [0, {2**32 - 1}]")  # fmt: skip
        require(isinstance(drop_last, bool), "data.drop_last", drop_last, "use true or false")
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.fractions = (val_fraction, test_fraction)
        self.split_seed, self.drop_last = split_seed, drop_last
        require_int("seed", seed, 0)
        self.seed = seed
        self.split_record: dict[str, Any] = {}  # what split.json holds: each split's sample hashes
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}
        self.task: Task = "binary"
        self.num_classes = 0
        self.num_features = 0
        self.input_shape: tuple[int, ...] = ()  # one sample's shape: (F,) for tables, (C, H, W) for images
        self.split_indices: dict[str, np.ndarray] = {}  # rows of the loaded data in each split, in loader order
        # per split, a frozen KD teacher's logits for each sample, computed once and served beside the batches
        self.teacher_outputs: dict[str, Tensor] = {}

    def load(self) -> LabeledArrays:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        """Load and split once; later calls (Lightning calls this per stage) reuse the tensors."""
        if self.splits:
            return
        data = self._load_once()
        labels = data.hard_labels
        if labels is not None:
            present = np.unique(labels).size
            require(present >= 2, "data", self.name, f"the labels hold {present} class; a classifier needs >= 2")
        self.task, self.num_classes = data.task, data.num_classes
        require(self.sampler != "balanced" or data.task != "multilabel", "data.sampler", self.sampler,
                "balanced sampling needs single-label data: use data.sampler=shuffle on multi-label data")  # fmt: skip
        self.input_shape = tuple(data.features.shape[1:])
        self.num_features = math.prod(self.input_shape)
        train, val, test = self.split(data.hard_labels, len(data.features))
        hashes = data.hashes
        self.split_record = split_record(self.name, hashes, {"train": train, "val": val, "test": test})
        features = self.prepare_features(data.features, train)
        targets = torch.as_tensor(data.targets)
        targets = targets.float() if targets.is_floating_point() or data.task == "multilabel" else targets.long()
        for split, idx in (("train", train), ("val", val), ("test", test)):
            self.split_indices[split] = idx
            index = torch.as_tensor(idx)
            self.splits[split] = (features[index], targets[index])

    def _load_once(self) -> LabeledArrays:
        """`load()`, or for the runs of a seeds group (`keep_loaded`) what an earlier one loaded
        (`preloaded`: the arrays and the attributes `load()` set, such as a table's columns or the
        label names), so that each splits the same data its own way."""
        preloaded = getattr(self, "preloaded", None)
        if preloaded is not None:
            data, attributes = preloaded
            for name, value in attributes.items():
                setattr(self, name, value)
            return data
        before = dict(vars(self))
        data = self.load()
        if getattr(self, "keep_loaded", False):
            attributes = {k: v for k, v in vars(self).items() if k not in before or before[k] is not v}
            self.preloaded = (data, attributes)
        return data

    def split(self, labels: np.ndarray | None, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(train, val, test) indices: the seeded stratified split, refused when it would leave a class too
        few validation or test samples (`require_evaluable`)."""
        train, val, test = stratified_split(labels, n, self.fractions, self.split_seed, self.fold)
        require(len(train) > 0, "data", self.name, "the train split is empty: use more samples")
        names = list(getattr(self, "label_names", None) or [])
        require_evaluable(labels, {"train": train, "val": val, "test": test}, self.fractions, self.fold, names)
        return train, val, test

    def prepare_features(self, features: np.ndarray, train: np.ndarray) -> Tensor:
        """Standardized with the training split's statistics (kept in `self.standardization` for
        predictions on new data); image datasets keep their uint8 pixels instead."""
        if not np.isfinite(features).all():
            raise ConfigError(f"data={self.name} has NaN or inf features: clean or impute them first")
        mean = features[train].mean(axis=0)
        std = features[train].std(axis=0)
        std[std == 0] = 1.0
        self.standardization = (mean, std)
        return torch.as_tensor((features - mean) / std, dtype=torch.float32)

    def preprocessing(self) -> dict[str, Any]:
        """What predictions on new data need to read it as training did (plain data: predictions.py
        and the run folder's preprocessing.json)."""
        mean, std = getattr(self, "standardization", (np.zeros(0), np.zeros(0)))
        names = getattr(self, "label_names", None) or [str(i) for i in range(self.num_classes)]
        return {"data": self.name, "task": self.task, "num_classes": self.num_classes, "label_names": names,
                "input_shape": list(self.input_shape), "mean": np.asarray(mean).tolist(),
                "std": np.asarray(std).tolist()}  # fmt: skip

    def varying_inputs(self) -> str | None:
        """Why a sample's network input may differ between epochs (then a teacher's outputs cannot be
        computed once); None: tensors held in memory, the same every epoch."""
        return None

    def network_inputs(self, features: Tensor) -> Tensor:
        """A split's stored features as the network receives them (images: normalized on the device)."""
        return features

    @property
    def train_targets(self) -> Tensor:
        return self.splits["train"][1]

    def _loader(self, split: str, batch_size: int, **options: Any) -> InMemoryBatches:
        """The split's tensors on the training device; this process's shard of them under DDP."""
        features, targets = self.splits[split]
        extra = self.teacher_outputs.get(split)
        if self.trainer is not None:
            device = self.trainer.strategy.root_device
            features, targets = features.to(device), targets.to(device)
            extra = None if extra is None else extra.to(device)
            options.update(rank=self.trainer.global_rank, world_size=self.trainer.world_size)
        return InMemoryBatches(features, targets, batch_size, extra=extra, **options)

    def train_dataloader(self) -> InMemoryBatches:
        return self.train_loader_for(self.seed)

    def train_loader_for(self, seed: int) -> InMemoryBatches:
        """The training loader of the run with this seed (lossheads.seeds serves several at once)."""
        return self._loader("train", self.batch_size, shuffle=True, drop_last=self.drop_last, seed=seed,
                            batches_per_item=self.steps_per_call, sampler=self._balanced(seed))  # fmt: skip

    def _balanced(self, seed: int) -> BalancedPermutation | None:
        if self.sampler != "balanced":
            return None
        targets = self.train_targets
        return BalancedPermutation(seed, targets.argmax(dim=1) if targets.ndim == 2 else targets)

    def val_dataloader(self) -> InMemoryBatches:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> InMemoryBatches:
        return self._loader("test", self.eval_batch_size, shuffle=False)
