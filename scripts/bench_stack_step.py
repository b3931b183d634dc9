"""Benchmark: the two ways a seeds group's step can take its members' losses, on K stacked default
MLPs (30 -> 64 -> 64 -> 1, `bce_logits`, batch 64 per member): one call over the member axis
(`seeds.module.member_axis_loss`, what an elementwise loss gets) against `torch.func.vmap` of each
member's own call (`seeds.module.vmapped_loss`, what any other loss gets), timed as forward + loss +
backward, alternately, call by call. Prints the median milliseconds of each and the load average.

    python scripts/bench_stack_step.py                    # K = 10 and 40, 500 calls each
    python scripts/bench_stack_step.py --members 3 10 20 --calls 200
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

from lossheads.heads import Head, build_head
from lossheads.losses import LOSSES
from lossheads.models.mlp import MLP
from lossheads.seeds.module import member_axis_loss, vmapped_loss
from lossheads.seeds.stack import StackedNet


def alternating(first: Callable[[], object], second: Callable[[], object], calls: int) -> tuple[float, float]:
    """Median milliseconds per call of each, timed one call of each in turn."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(calls):
        for function, found in zip((first, second), times, strict=True):
            start = time.perf_counter()
            function()
            found.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times[0]), statistics.median(times[1])


def forward_and_backward(stacked: StackedNet, loss: Callable, features: torch.Tensor, targets: torch.Tensor,
                         head: Head) -> Callable[[], None]:  # fmt: skip
    return lambda: loss(head.logits(stacked(features)), targets).sum().backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[10, 40])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    head = build_head("sigmoid", 2, "binary")
    for members in args.members:
        torch.manual_seed(0)
        stacked = StackedNet([MLP((30,), 1, hidden=[64, 64]) for _ in range(members)])
        losses = [LOSSES["bce_logits"](head, torch.randint(0, 2, (300,)).float()) for _ in range(members)]
        features = torch.randn(members, args.batch_size, 30)
        targets = torch.randint(0, 2, (members, args.batch_size)).float()
        together, vmapped = member_axis_loss(losses), vmapped_loss(losses)
        assert together is not None
        ours, theirs = (forward_and_backward(stacked, loss, features, targets, head) for loss in (together, vmapped))
        for _ in range(20):  # warm-up
            ours(), theirs()
        axis, vmap = alternating(ours, theirs, args.calls)
        print(f"K={members}: forward + loss + backward {axis:.3f} ms over the member axis, {vmap:.3f} ms vmapped")


if __name__ == "__main__":
    main()
