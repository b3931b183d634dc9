"""`data.sampler=balanced`: classes equally often per epoch, the order a function of (seed, epoch)."""

from __future__ import annotations

import torch

from lossheads.data import InMemoryBatches
from lossheads.data.sampler import BalancedPermutation

LABELS = torch.tensor([0] * 70 + [1] * 20 + [2] * 7 + [3] * 3)  # long-tailed: 70, 20, 7, 3


def test_each_class_fills_its_share_of_the_epoch_within_one_sample():
    sampler = BalancedPermutation(seed=5, labels=LABELS)
    for epoch in range(4):
        sampler.set_epoch(epoch)
        counts = torch.bincount(LABELS[sampler.order(len(LABELS))], minlength=4)
        assert counts.sum() == 100 and counts.max() - counts.min() <= 1, counts.tolist()
    sampler.set_epoch(0)
    order = sampler.order(len(LABELS))
    minority = order[LABELS[order] == 3]
    assert set(minority.tolist()) == {97, 98, 99}  # the 3 samples of class 3, repeated to fill 25 places


def test_the_same_seed_and_epoch_give_the_same_order_and_others_differ():
    first, second = BalancedPermutation(3, LABELS), BalancedPermutation(3, LABELS)
    first.set_epoch(2)
    second.set_epoch(2)
    assert torch.equal(first.order(100), second.order(100))
    second.set_epoch(3)
    assert not torch.equal(first.order(100), second.order(100))
    other_seed = BalancedPermutation(4, LABELS)
    other_seed.set_epoch(2)
    assert not torch.equal(first.order(100), other_seed.order(100))


def test_ddp_shards_and_steps_per_call_serve_the_same_balanced_order():
    """Two processes' shards interleave back into the single process's order; K mini-batches per call
    concatenate to the K = 1 batches."""
    features = torch.arange(100, dtype=torch.float32).unsqueeze(1)

    def make(**options) -> InMemoryBatches:
        return InMemoryBatches(features, LABELS, 10, shuffle=True, sampler=BalancedPermutation(1, LABELS), **options)

    single = torch.cat([x for x, _ in make()])
    per_call = torch.cat([x for x, _ in make(batches_per_item=4)])
    assert torch.equal(single, per_call)
    ranks = [torch.cat([x for x, _ in make(rank=r, world_size=2)]) for r in (0, 1)]
    assert torch.equal(torch.stack(ranks, dim=1).reshape(-1), single.reshape(-1))
