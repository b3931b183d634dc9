"""`data.sampler=balanced`: each epoch's order drawn so that every class appears equally often."""

from __future__ import annotations

import torch
from torch import Tensor


class BalancedPermutation:
    """An epoch of n indices in which each of the C classes fills n // C or n // C + 1 places (within one
    of equal): a class's samples are taken in a fresh random order, cycled when the class has fewer
    samples than its places (the minority is repeated) and cut when it has more (the majority is
    subsampled), then all places are shuffled. A function of (seed, epoch) alone, like
    `SeededPermutation`, so every DDP process and every `steps_per_call` draws the same order."""

    def __init__(self, seed: int, labels: Tensor) -> None:
        self.seed, self.epoch = seed, 0
        labels = labels.cpu().long()
        self.by_class = [torch.nonzero(labels == c).flatten() for c in torch.unique(labels).tolist()]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, n: int) -> Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        classes = len(self.by_class)
        places = [n // classes + (1 if c < n % classes else 0) for c in range(classes)]
        extra = torch.randperm(classes, generator=generator).tolist()  # which classes get the +1 places
        places = [places[extra.index(c)] for c in range(classes)]
        chosen = []
        for members, count in zip(self.by_class, places, strict=True):
            rounds = -(-count // len(members))
            cycled = torch.cat([members[torch.randperm(len(members), generator=generator)] for _ in range(rounds)])
            chosen.append(cycled[:count])
        everything = torch.cat(chosen)
        return everything[torch.randperm(n, generator=generator)]
