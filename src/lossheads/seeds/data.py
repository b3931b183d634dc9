"""The data of a vectorized-seeds group: each member's own datamodule (its own split when
`data.split_seed` follows the seed, as by default; its own standardization), served together: per
call each member's own mini-batches in the order its own run would see them (its permutation by
(seed, epoch)), stacked as (K, N, ...). The members' splits have equal sizes (a stratified split of
the same data with the same fractions), so their batches stack."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor

from lossheads.data.base import ArrayDataModule, InMemoryBatches


class MemberOrders:
    """What Lightning takes for the loader's sampler: it calls `set_epoch` on it each epoch."""

    def __init__(self, loaders: list[Any]) -> None:
        self.loaders = loaders

    def set_epoch(self, epoch: int) -> None:
        for loader in self.loaders:
            if loader.sampler is not None:
                loader.sampler.set_epoch(epoch)


class StackedBatches:
    """The members' loaders as one: each member's batches in its own order, stacked (K, N, ...).

    In-memory loaders (the usual case) are served from the members' tensors stacked once: per epoch
    one gather by the members' orders (K, N), then slices, as each loader would gather and slice its
    own; other loaders are zipped and their batches stacked."""

    def __init__(self, loaders: list[Any]) -> None:
        self.loaders = loaders
        self.shard_size = loaders[0].shard_size
        self.sampler = MemberOrders(loaders)
        self.batch_sampler = None  # Lightning looks for one beside `sampler`
        plain = all(type(x) is InMemoryBatches and x.extra is None and x.world_size == 1 for x in loaders)
        self.stacked = (torch.stack([x.features for x in loaders]), torch.stack([x.targets for x in loaders])) \
            if plain else None  # fmt: skip

    def __len__(self) -> int:
        return len(self.loaders[0])

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        if self.stacked is None:
            for items in zip(*self.loaders, strict=True):
                yield torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])
            return
        features, targets = self.stacked
        first = self.loaders[0]
        if first.sampler is not None:
            orders = torch.stack([x.sampler.order(features.shape[1]) for x in self.loaders]).to(features.device)
            members = torch.arange(len(self.loaders), device=features.device)[:, None]
            features, targets = features[members, orders], targets[members, orders]
        for start in range(0, self.shard_size, first.item_size):
            end = min(start + first.item_size, self.shard_size)
            yield features[:, start:end], targets[:, start:end]


class StackedData(LightningDataModule):
    """The members' datamodules (set up) as one."""

    def __init__(self, datamodules: list[ArrayDataModule]) -> None:
        super().__init__()
        self.members = datamodules

    def setup(self, stage: str | None = None) -> None:
        for datamodule in self.members:
            datamodule.trainer = self.trainer  # their loaders put the tensors on the trainer's device

    def train_dataloader(self) -> StackedBatches:
        return StackedBatches([datamodule.train_dataloader() for datamodule in self.members])

    def val_dataloader(self) -> StackedBatches:
        return StackedBatches([datamodule.val_dataloader() for datamodule in self.members])

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        """Each member's own device-side step (images: uint8 -> floats normalized by its own
        training split's statistics) on its slice (only data without random augmentation is stacked)."""
        features, targets = batch
        slices = [dm.on_after_batch_transfer((features[k], targets[k]), dataloader_idx)[0]
                  for k, dm in enumerate(self.members)]  # fmt: skip
        return torch.stack(slices), targets
