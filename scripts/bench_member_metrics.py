"""Benchmark: a stage's metrics for K stacked members, K `HeadMetrics` (what a seeds group kept
before) against one `MemberMetrics`, on the same tensors, in one process.

One "epoch" is the validation split in `--batches` batches: every batch updates the metrics, the
epoch ends with compute (values read as Python floats, as a logger needs them) and reset. The split
defaults to breast_cancer's validation size (114 samples, binary). Times are medians of
`--repeats` interleaved repeats of `--epochs` epochs each, after one untimed warm-up epoch.
One line per batch count:
`bench-member-metrics: task=... batches=... head_metrics=...s member_metrics=...s speedup=...x`.

    python scripts/bench_member_metrics.py                      # K = 10, 20 epochs, 1 and 4 batches
    python scripts/bench_member_metrics.py --task multiclass --classes 10 --samples 1000
    python scripts/bench_member_metrics.py --train --samples 341 --batches 6    # a training epoch, acc only
    python scripts/bench_member_metrics.py --threads 1              # torch on one thread
    python scripts/bench_member_metrics.py --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from lossheads.evaluation.members import MemberMetrics
from lossheads.evaluation.metrics import HeadMetrics

Batch = tuple[Tensor, Tensor, Tensor]
Epoch = Callable[[list[Batch]], None]


def make_batches(task: str, classes: int, members: int, samples: int, batches: int, device: str) -> list[Batch]:
    """Random probabilities per member, predictions by the heads' rules, and targets."""
    g = torch.Generator().manual_seed(0)
    if task == "binary":
        probabilities = torch.rand(members, samples, generator=g)
        targets = (torch.rand(members, samples, generator=g) < 0.37).long()
        predictions = (probabilities >= 0.5).long()
    elif task == "multiclass":
        probabilities = torch.rand(members, samples, classes, generator=g).softmax(-1)
        targets = torch.randint(0, classes, (members, samples), generator=g)
        predictions = probabilities.argmax(-1)
    else:
        probabilities = torch.rand(members, samples, classes, generator=g)
        targets = (torch.rand(members, samples, classes, generator=g) < 0.3).long()
        predictions = (probabilities >= 0.5).long()
    parts = [x.to(device).tensor_split(batches, dim=1) for x in (predictions, probabilities, targets)]
    return list(zip(*parts, strict=True))


def head_metrics_epoch(task: str, classes: int, members: int, device: str, full: bool) -> Epoch:
    metrics = [HeadMetrics(task, classes, "val/", full=full).to(device) for _ in range(members)]

    def epoch(batches: list[Batch]) -> None:
        for predictions, probabilities, targets in batches:
            for k, member in enumerate(metrics):
                member.update(predictions[k], probabilities[k] if full else None, targets[k])
        for member in metrics:
            {name: float(value) for name, value in member.compute().items()}
            member.reset()

    return epoch


def member_metrics_epoch(task: str, classes: int, members: int, device: str, full: bool) -> Epoch:
    metrics = MemberMetrics(task, classes, members, "val/", full=full)

    def epoch(batches: list[Batch]) -> None:
        for predictions, probabilities, targets in batches:
            metrics.update(predictions, probabilities if full else None, targets)
        metrics.compute()
        metrics.reset()

    return epoch


def seconds(epoch: Epoch, batches: list[Batch], epochs: int, device: str) -> float:
    start = time.perf_counter()
    for _ in range(epochs):
        epoch(batches)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="binary", choices=("binary", "multiclass", "multilabel"))
    parser.add_argument("--classes", type=int, default=2, help="classes (multi-class) or labels (multi-label)")
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--samples", type=int, default=114, help="validation samples per member")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--train", action="store_true", help="a training stage's metrics: accuracy only (full=False)")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for count in args.batches:
        batches = make_batches(args.task, args.classes, args.members, args.samples, count, args.device)
        runners = {
            "head_metrics": head_metrics_epoch(args.task, args.classes, args.members, args.device, not args.train),
            "member_metrics": member_metrics_epoch(args.task, args.classes, args.members, args.device, not args.train),
        }
        times: dict[str, list[float]] = {name: [] for name in runners}
        for epoch in runners.values():
            epoch(batches)  # warm-up: first-call costs stay out of the timing
        for _ in range(args.repeats):
            for name, epoch in runners.items():
                times[name].append(seconds(epoch, batches, args.epochs, args.device))
        head, member = (statistics.median(times[name]) for name in runners)
        print(
            f"bench-member-metrics: task={args.task} full={not args.train} members={args.members} "
            f"samples={args.samples} epochs={args.epochs} batches={count} "
            f"head_metrics={head:.3f}s member_metrics={member:.3f}s speedup={head / member:.1f}x "
            f"threads={torch.get_num_threads()}"
        )


if __name__ == "__main__":
    main()
