"""Benchmark: the fast path's CPU norm clipping (`training/clipping.py`) against PyTorch's
`torch.nn.utils.clip_grad_norm_`, on the gradients of the benchmark's MLP (32 -> 256 -> 256 -> 1),
and one AdamW training step of that MLP for scale.

Both are timed alternately, call by call, on the same gradients: with the norm within the bound
(`max_norm` 1e3: the case the hand-written one skips the multiply in, as on most steps once training
settles) and beyond it (`max_norm` 1e-3: both multiply). Prints the median and minimum microseconds
per call of each, the step's, and the load average.

    python scripts/bench_clipping.py                 # 2000 calls each, 2 threads
    python scripts/bench_clipping.py --calls 200     # seconds
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn

from lossheads.training.clipping import clip_grad_norm_on_cpu


def mlp_with_gradients(batch_size: int) -> tuple[nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1))
    features, targets = torch.randn(batch_size, 32), torch.randint(0, 2, (batch_size,)).float()
    nn.functional.binary_cross_entropy_with_logits(net(features).squeeze(1), targets).backward()
    return net, torch.optim.AdamW(net.parameters(), lr=1e-3), features, targets


def timed(function, calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1e6)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    net, optimizer, features, targets = mlp_with_gradients(64)
    parameters = list(net.parameters())
    saved = [p.grad.clone() for p in parameters]
    print(f"torch {torch.__version__}, {args.threads} threads, load average {os.getloadavg()[0]:.1f}")
    for label, max_norm in (("within the bound", 1e3), ("beyond the bound", 1e-3)):
        ours, theirs = [], []
        for _ in range(args.calls):  # alternating call by call, the same gradients each time
            for grad, p in zip(saved, parameters, strict=True):
                p.grad.copy_(grad)
            ours += timed(lambda: clip_grad_norm_on_cpu(parameters, max_norm), 1)  # noqa: B023
            for grad, p in zip(saved, parameters, strict=True):
                p.grad.copy_(grad)
            theirs += timed(lambda: nn.utils.clip_grad_norm_(parameters, max_norm), 1)  # noqa: B023
        print(f"{label:>17}: clip_grad_norm_on_cpu median {statistics.median(ours):7.1f} us (min {min(ours):6.1f}), "
              f"clip_grad_norm_ median {statistics.median(theirs):7.1f} us (min {min(theirs):6.1f})")  # fmt: skip

    for batch_size in (64, 1024):
        net, optimizer, features, targets = mlp_with_gradients(batch_size)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)  # noqa: B023
            loss = nn.functional.binary_cross_entropy_with_logits(net(features).squeeze(1), targets)  # noqa: B023
            loss.backward()
            optimizer.step()  # noqa: B023

        steps = timed(step, max(50, args.calls // 10))
        print(f"one AdamW step at batch {batch_size:>4}: median {statistics.median(steps):7.1f} us")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
