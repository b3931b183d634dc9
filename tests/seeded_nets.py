"""Test-only networks for tests/test_seeds.py (imported by `model._target_` with tests/ on PYTHONPATH)."""

from __future__ import annotations

import time

import torch

from lossheads.models.mlp import MLP


class BlowsUpForSeed2(MLP):
    """The default MLP, except that the run with seed 2 starts with weights that overflow its logits:
    its loss is not finite at the first step (a diverging member among healthy ones)."""

    def __init__(self, input_shape, num_logits, **options) -> None:
        super().__init__(input_shape, num_logits, **options)
        if torch.initial_seed() == 2:  # train.build seeds torch with the run's seed just before this
            with torch.no_grad():
                self[-1].weight.fill_(3e38)
                self[-1].bias.fill_(float("inf"))


class FailsInForward(MLP):
    """Builds and has weights, then fails in its forward pass: a bug in a user's network."""

    def forward(self, features):
        raise ValueError("a bug in the network's forward")


class FrozenAndTied(torch.nn.Module):
    """A frozen first layer (a pretrained feature extractor) and two layers sharing one weight."""

    def __init__(self, input_shape, num_logits) -> None:
        super().__init__()
        width = int(torch.tensor(input_shape).prod())
        self.frozen = torch.nn.Linear(width, 16).requires_grad_(False)
        self.b, self.c = torch.nn.Linear(16, 16), torch.nn.Linear(16, 16)
        self.c.weight = self.b.weight
        self.out = torch.nn.Linear(16, num_logits)

    def forward(self, features):
        hidden = torch.relu(self.frozen(features.flatten(1)))
        return self.out(torch.relu(self.c(torch.relu(self.b(hidden)))))


class SlowToBuild(MLP):
    """The default MLP, built in 1 s: a stop comes while its seeds' jobs are prepared."""

    def __init__(self, input_shape, num_logits, **options) -> None:
        time.sleep(1.0)
        super().__init__(input_shape, num_logits, **options)


class SlowToTrain(MLP):
    """The default MLP, 0.05 s per training forward: a kill comes in the middle of an epoch."""

    def forward(self, features):
        if self.training:
            time.sleep(0.05)
        return super().forward(features)


class SlowToEvaluate(MLP):
    """The default MLP, slow only in eval mode (validation, test): a stop comes while members are tested."""

    def forward(self, features):
        if not self.training:
            time.sleep(0.3)
        return super().forward(features)
