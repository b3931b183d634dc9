"""Benchmark: the checkpoint checksum's walk over the checkpoint's contents (`run/checkpoints.py`
`digest`) against SHA-256 over the bytes `torch.save` writes (the library's way: hashlib on the
serialized file), for a save and a load, beside the `torch.save` / `torch.load` they go with.

Checkpoints of the shape Lightning writes (state_dict, AdamW's two moments per weight, loop
counters, callbacks' state, the run's config): the default MLP's (32 -> 256 -> 256 -> 1, ~75 k
parameters) and a ~11 M-parameter one (resnet18's size). Prints the median milliseconds of each.

    python scripts/bench_checksum.py             # 7 repeats
    python scripts/bench_checksum.py --repeats 3
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import statistics
import time
from typing import Any

import torch

from lossheads.run.checkpoints import digest


def checkpoint_of(parameter_shapes: list[tuple[int, ...]]) -> dict[str, Any]:
    torch.manual_seed(0)
    state = {f"net.{i}.weight": torch.randn(shape) for i, shape in enumerate(parameter_shapes)}
    moments = {i: {"step": torch.tensor(100.0), "exp_avg": torch.randn(s), "exp_avg_sq": torch.rand(s)}
               for i, s in enumerate(parameter_shapes)}  # fmt: skip
    return {
        "epoch": 3, "global_step": 600, "pytorch-lightning_version": "2.6.6", "state_dict": state,
        "loops": {"fit_loop": {"epoch_progress": {"current": {"processed": 3, "completed": 3}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val/auroc'}": {"best_model_score": torch.tensor(0.97)}},
        "optimizer_states": [{"state": moments, "param_groups": [{"lr": 1e-3, "params": list(moments)}]}],
        "lr_schedulers": [], "lossheads": {"config": {"seed": 42, "loss": {"name": "bce_logits"}}},
    }  # fmt: skip


def median_ms(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    sizes = {
        "MLP (75 k parameters)": [(256, 32), (256,), (256, 256), (256,), (1, 256), (1,)],
        "11 M parameters": [(512, 512, 3, 3)] * 4 + [(256, 256, 3, 3)] * 4 + [(1000, 512)] + [(64, 64, 3, 3)] * 8,
    }
    for name, shapes in sizes.items():
        checkpoint = checkpoint_of(shapes)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getvalue()
        loaded = torch.load(io.BytesIO(data), weights_only=True)
        save = median_ms(lambda: torch.save(checkpoint, io.BytesIO()), args.repeats)  # noqa: B023
        load = median_ms(lambda: torch.load(io.BytesIO(data), weights_only=True), args.repeats)  # noqa: B023
        walk_save = median_ms(lambda: digest(checkpoint), args.repeats)  # noqa: B023
        walk_load = median_ms(lambda: digest(loaded), args.repeats)  # noqa: B023
        raw = median_ms(lambda: hashlib.sha256(data).hexdigest(), args.repeats)  # noqa: B023
        print(f"{name}, {len(data) / 1e6:.1f} MB: torch.save {save:.2f} ms, torch.load {load:.2f} ms; "
              f"walk after save {walk_save:.2f} ms, walk after load {walk_load:.2f} ms; "
              f"sha256 of the bytes {raw:.2f} ms (the same on save and load)")  # fmt: skip
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
