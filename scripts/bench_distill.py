"""Benchmark of distillation's teacher outputs (run by `python scripts/bench.py --distill`, or alone):
a KD student's `trainer.fit` (validation and checkpoints included) with the teacher's logits computed
once per run (`teacher.cache_outputs=true`, the default) against the teacher run on every batch
(`false`), alternating, in one process, after training the teacher once.

- `experiment=distill`'s pair: data=digits, teacher MLP [256, 256] (dropout 0.1), student MLP [32];
- a convolutional teacher: data=digits_images, teacher model=resnet, student MLP [32].
Last line: `bench-distill: mlp=<per-batch s / cached s> resnet=<...>` (how many times faster).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

import torch  # noqa: E402
from bench import accelerator  # noqa: E402

from conftest import compose_config  # noqa: E402
from lossheads.run.build import build, build_trainer, plan_run  # noqa: E402
from lossheads.run.console import quiet_lightning  # noqa: E402
from lossheads.run.execute import run  # noqa: E402

QUIET = ["print_config=false", "callbacks.progress_bar.refresh_rate=0"]
PAIRS = {  # name: (data, the teacher's model overrides, the student's)
    "mlp": (["data=digits"], ["model.hidden=[256,256]", "model.dropout=0.1"], ["model.hidden=[32]"]),
    "resnet": (["data=digits_images"], ["model=resnet"], ["model=mlp", "model.hidden=[32]"]),
}


def student_fit_seconds(overrides: list[str], folder: Path) -> float:
    cfg = compose_config(overrides, folder)
    plan = plan_run(cfg)
    datamodule, module = build(cfg, plan)
    trainer = build_trainer(cfg, plan)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 epoch, one repeat: seconds")
    parser.add_argument("--epochs", type=int, default=20, help="the student's epochs (train.yaml's default: 20)")
    parser.add_argument("--repeats", type=int, default=3, help="measured pairs per teacher (default 3)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    quiet_lightning()
    epochs, repeats = (1, 1) if args.quick else (args.epochs, args.repeats)
    speedups = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, (data, teacher_model, student_model) in PAIRS.items():
            common = [*data, *QUIET, f"trainer.accelerator={accelerator(args.device)}"]
            teacher = [*common, "loss=ce", *teacher_model, f"trainer.max_epochs={min(epochs, 2)}"]
            run(compose_config(teacher, folder / name))
            student = [*common, "loss=kd", f"teacher.ckpt_path={folder / name / 'checkpoints' / 'last.ckpt'}",
                       *student_model, f"trainer.max_epochs={epochs}"]  # fmt: skip
            seconds: dict[str, list[float]] = {"true": [], "false": []}
            for r in range(repeats + 1):  # the first pair warms up and is not counted
                for cache in ("true", "false"):
                    overrides = [*student, f"teacher.cache_outputs={cache}"]
                    took = student_fit_seconds(overrides, folder / f"{name}{cache}{r}")
                    if r > 0:
                        seconds[cache].append(took)
            cached, per_batch = statistics.median(seconds["true"]), statistics.median(seconds["false"])
            speedups[name] = per_batch / cached
            print(f"{name} teacher ({' '.join(teacher_model)}), student {' '.join(student_model)}, {epochs} epochs: "
                  f"fit {cached:.2f} s with the teacher's logits computed once, {per_batch:.2f} s per batch "
                  f"(median of {len(seconds['true'])}; saved {per_batch - cached:.2f} s)")  # fmt: skip
    print("bench-distill: " + " ".join(f"{name}={speedup:.2f}" for name, speedup in speedups.items()))


if __name__ == "__main__":
    main()
