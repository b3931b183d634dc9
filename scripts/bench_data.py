"""Benchmark of the data paths (run by `python scripts/bench.py --images`, or alone):

- images: the harness training model=cnn on data=mnist (in memory, augmentation on the device)
  against a raw PyTorch loop over the same uint8 tensors with the same augmentation, model and
  optimizer, alternating, in one process; then images/s of the DataLoader path (0 and 2 workers);
- table: seconds and peak memory to load a generated 1M x 20 CSV with data=table, in a subprocess.
Last line: `bench-images: ratio@256=...` (harness / raw).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

from bench import StepClock, accelerator  # noqa: E402

from conftest import compose_config  # noqa: E402
from lossheads.run.build import build, build_trainer, plan_run  # noqa: E402


def image_overrides(batch: int, steps: int, device: str, *extra: str) -> list[str]:
    return ["data=mnist", "model=cnn", "loss=ce", f"data.batch_size={batch}", "data.drop_last=true",
            f"trainer.max_steps={steps}", "trainer.max_epochs=-1", "+trainer.limit_val_batches=0",
            f"trainer.accelerator={accelerator(device)}", "+callbacks.model_checkpoint.save_top_k=0",
            "callbacks.model_checkpoint.save_last=false", "print_config=false", *extra]  # fmt: skip


def harness_images_per_s(batch: int, steps: int, folder: Path, device: str, *extra: str) -> float:
    cfg = compose_config(image_overrides(batch, steps, device, *extra), folder)
    plan = plan_run(cfg)
    datamodule, module = build(cfg, plan)
    trainer = build_trainer(cfg, plan)
    clock = StepClock(module, steps, device)
    # from the first epoch's start: the first call's batch (and its augmentation, done when the batch
    # reaches the device) is fetched before the first on_train_batch_start
    module.on_train_epoch_start = lambda: setattr(clock, "start", clock.start or time.perf_counter())
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == steps, trainer.global_step
    return steps * batch / (clock.end - clock.start)


def raw_images_per_s(batch: int, steps: int, folder: Path, device: str) -> float:
    """The same uint8 images on the device, the same crop + normalization (the datamodule's
    ImageTransform), the same network, loss and optimizer: a plain loop."""
    cfg = compose_config(image_overrides(batch, steps, device), folder)
    datamodule, module = build(cfg)
    images, targets = (t.to(device) for t in datamodule.splits["train"])
    net, transform = module.net.to(device).train(), datamodule.transform
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.0)
    generator = torch.Generator(device=device).manual_seed(0)
    n, done, start = len(images), 0, 0.0
    while done < steps:
        order = torch.randperm(n, device=device)
        x_epoch, y_epoch = images[order], targets[order]
        for i in range(0, n - batch + 1, batch):
            if done == 0:
                start = time.perf_counter()
            x = transform(x_epoch[i : i + batch], generator)
            loss = torch.nn.functional.cross_entropy(net(x), y_epoch[i : i + batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
            if done == steps:
                break
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


TABLE_PROBE = """
import os, resource, sys, time
import numpy as np, pandas
import lossheads.data as data
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
table = data.TableData(path=sys.argv[1])
table.setup()
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(seconds, peak - before, os.path.getsize(sys.argv[1]) / 2**20)
"""


def table_load(folder: Path, rows: int) -> tuple[float, float, float]:
    """(seconds, peak memory added by loading in MiB, file size in MiB) for a rows x 20 CSV."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    features = rng.normal(size=(rows, 20)).astype(np.float32)
    frame = pd.DataFrame(features, columns=[f"f{i}" for i in range(20)])
    frame["label"] = (features[:, 0] > 0).astype(int)
    path = folder / "table.csv"
    frame.to_csv(path, index=False, float_format="%.6f")
    del frame, features
    out = subprocess.run([sys.executable, "-c", TABLE_PROBE, str(path)], capture_output=True, text=True, check=True)
    seconds, added, size = (float(v) for v in out.stdout.split())
    return seconds, added, size


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-table", action="store_true", help="skip the 1M-row CSV (a minute to write)")
    args = parser.parse_args(argv)
    batch = 256
    steps, repeats, rows = (3, 1, 20_000) if args.quick else (22, 3, 1_000_000)
    print(f"images: data=mnist model=cnn batch={batch} steps={steps} repeats={repeats} device={args.device} "
          f"threads={torch.get_num_threads()}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        harness, raw = [], []
        for r in range(repeats + 1):  # the first round warms up and is not counted
            h = harness_images_per_s(batch, steps, folder / f"h{r}", args.device)
            w = raw_images_per_s(batch, steps, folder / f"r{r}", args.device)
            if r > 0 or repeats == 1:
                harness.append(h)
                raw.append(w)
        h, w = statistics.median(harness), statistics.median(raw)
        print(f"in memory: harness {h:8.0f} images/s  raw {w:8.0f} images/s  ratio {h / w:.2f}")
        for workers in (0, 2):
            loader = harness_images_per_s(batch, steps, folder / f"dl{workers}", args.device, "data.in_memory=false",
                                          f"data.num_workers={workers}")  # fmt: skip
            print(f"DataLoader path, {workers} workers: {loader:8.0f} images/s")
        if not args.no_table:
            seconds, added, size = table_load(folder, rows)
            print(f"table: {rows} x 20 CSV ({size:.0f} MiB) loaded in {seconds:.1f} s, peak memory +{added:.0f} MiB "
                  f"({added / size:.2f}x the file)")  # fmt: skip
    print(f"bench-images: ratio@{batch}={h / w:.2f}")


if __name__ == "__main__":
    main()
