"""Benchmark: the harness's real training path against a plain PyTorch loop, in one process.

Trains the same MLP (32 -> 256 -> 256 -> 1, sigmoid head, BCEWithLogits, AdamW) on the same
synthetic data for the same number of steps, two ways, alternating and repeated:
  (a) harness: the LightningModule, the project's datamodule, metrics, TensorBoard logging, the
      progress bar and the other default callbacks, built from the real Hydra config as train.py
      builds it; validation and checkpoint writes are off (per-epoch work, not training steps);
  (b) raw: a PyTorch loop over preloaded tensors, one permutation per epoch, contiguous slices.
Prints the median steps/s of each and their ratio per batch size, then start-up and grid times.
Last line: `bench: ratio@64=... ratio@256=... ratio@1024=...` (harness / raw).

    python scripts/bench.py            # full run (a few minutes on 2 cores)
    python scripts/bench.py --quick    # seconds: keeps the script from rotting (a test runs it)
    python scripts/bench.py --batch-sizes 256 --steps-per-call 64 --steps-only   # one setting
    python scripts/bench.py --steps 1000 --repeats 7   # longer, steadier pairs (a GPU's runs vary more)
    python scripts/bench.py --images   # model=cnn on data=mnist vs a raw loop; DataLoader path; 1M-row CSV load
    python scripts/bench.py --distill  # a KD student with the teacher's logits computed once vs per batch
    python scripts/bench.py --seeds    # K-seed sweeps: basic launcher vs hydra/launcher=seeds (scripts/bench_seeds.py)
    python scripts/bench.py --verdict  # experiment=compare_binary, 10 seeds, report included, both launchers
                                       # (scripts/bench_verdict.py; train.py overrides after it go to both sweeps)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # compose_config: the same config path train.py uses

import torch  # noqa: E402
from lightning.pytorch import LightningModule  # noqa: E402

from conftest import compose_config  # noqa: E402
from lossheads.run.build import build, build_trainer, plan_run  # noqa: E402
from lossheads.run.console import quiet_lightning  # noqa: E402

FEATURES = 32


STEPS_PER_CALL: list[str] = []  # --steps-per-call K: the harness's override, e.g. 1 for Lightning's own loop
# --schedule-and-clip: a cosine schedule and norm clipping at 1.0 in both loops
SCHEDULE_AND_CLIP = ["scheduler=cosine", "trainer.gradient_clip_val=1.0"]
EXTRA: list[str] = []
GRID_LAUNCHER: list[str] = []  # --grid-launcher joblib: the grids' jobs in parallel processes


def data_overrides(batch_size: int, n_samples: int) -> list[str]:
    """drop_last: the raw loop skips an epoch's last, smaller mini-batch, so the harness does too."""
    return [*STEPS_PER_CALL, *EXTRA, "data=synthetic_binary", f"data.n_features={FEATURES}",
            f"data.n_samples={n_samples}", f"data.batch_size={batch_size}", "data.drop_last=true",
            "data.val_fraction=0.1", "data.test_fraction=0.1", "model.hidden=[256,256]", "loss=bce_logits",
            "print_config=false"]  # fmt: skip


def accelerator(device: str) -> str:
    return "gpu" if device == "cuda" else "cpu"


class StepClock:
    """Wall time from the first training call's start to the last one's end (no set-up, no teardown).

    Hooked onto the module's own per-call hooks, not added as a callback: Lightning hands every
    per-step hook to every callback, so a measuring callback would itself slow the harness. On a GPU
    the last call waits for its kernels, as the raw loop does before it stops its clock."""

    def __init__(self, module: LightningModule, steps: int, device: str) -> None:
        self.start = self.end = 0.0
        self.module, self.steps, self.wait = module, steps, device == "cuda"
        module.on_train_batch_start = self.on_start
        module.on_train_batch_end = self.on_end

    def on_start(self, batch, batch_idx) -> None:
        if self.start == 0.0:
            self.start = time.perf_counter()

    def on_end(self, outputs, batch, batch_idx) -> None:
        if self.wait and self.module.trainer.global_step == self.steps:
            torch.cuda.synchronize()
        self.end = time.perf_counter()


def harness_steps_per_s(batch_size: int, steps: int, n_samples: int, folder: Path, device: str) -> float:
    """As train.py builds the run, callbacks included, minus per-epoch work that is not a training
    step: no validation and no checkpoint files (ModelCheckpoint stays, saving nothing; LastCheckpoint,
    which writes last.ckpt at every epoch end, is left out)."""
    overrides = [*data_overrides(batch_size, n_samples), f"trainer.max_steps={steps}", "trainer.max_epochs=-1",
                 "+trainer.limit_val_batches=0", f"trainer.accelerator={accelerator(device)}",
                 "+callbacks.model_checkpoint.save_top_k=0", "callbacks.model_checkpoint.save_last=false",
                 "~callbacks.last_checkpoint"]  # fmt: skip
    cfg = compose_config(overrides, folder)
    plan = plan_run(cfg)
    datamodule, module = build(cfg, plan)
    trainer = build_trainer(cfg, plan)
    clock = StepClock(module, steps, device)
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == steps, trainer.global_step
    assert not any(folder.rglob("*.ckpt")), "the benchmark should not time checkpoint writes"
    return steps / (clock.end - clock.start)


def raw_steps_per_s(batch_size: int, steps: int, n_samples: int, folder: Path, device: str) -> float:
    cfg = compose_config(data_overrides(batch_size, n_samples), folder)
    datamodule, module = build(cfg)  # the same data and the same initial weights
    features, targets = (t.to(device) for t in datamodule.splits["train"])
    net = module.net.to(device)
    targets = targets.float()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.0)  # train.yaml's
    loss_fn = torch.nn.BCEWithLogitsLoss()
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps) if EXTRA else None
    n, done, start = len(features), 0, 0.0
    while done < steps:
        order = torch.randperm(n, device=device)
        x_epoch, y_epoch = features[order], targets[order]
        for i in range(0, n - batch_size + 1, batch_size):
            if done == 0:
                start = time.perf_counter()  # as for the harness: from the first step's start
            loss = loss_fn(net(x_epoch[i : i + batch_size]).squeeze(-1), y_epoch[i : i + batch_size])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if scheduler is not None:
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            done += 1
            if done == steps:
                break
    if device == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def startup_seconds(folder: Path, device: str) -> tuple[float, float]:
    """`python -c "import lightning.pytorch"` and `python train.py` up to its first training step. On a
    GPU the baseline also creates the CUDA context, which any program that trains there pays."""
    cuda_context = "; import torch; torch.zeros(1, device='cuda')"
    baseline = "import lightning.pytorch" + (cuda_context if device == "cuda" else "")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", baseline], check=True)
    import_time = time.perf_counter() - t0
    first_step = "lambda *a, **k: (print('FIRST_STEP', flush=True), sys.exit(0))"
    probe = ("import sys; sys.argv=['train.py','trainer.max_steps=1','print_config=false',"
             f"'hydra.run.dir={folder}/startup','callbacks.progress_bar.refresh_rate=0',"
             f"'trainer.accelerator={accelerator(device)}']; "
             f"import lightning.pytorch as L; L.LightningModule.on_train_batch_start={first_step}; "
             f"import runpy; runpy.run_path('{ROOT}/train.py', run_name='__main__')")  # fmt: skip
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert "FIRST_STEP" in out.stdout, out.stderr[-2000:]
    return import_time, time.perf_counter() - t0


GRIDS = {
    # the grid: on digits (10 classes) only the softmax head fits, so 15 of its 24 jobs are
    # refused pairs that stop before training
    "2 heads x 2 losses": ["head=sigmoid,softmax", "loss=bce_logits,ce"],
    # one where all 24 jobs train: four softmax losses
    "4 losses": ["head=softmax", "loss=ce,nll,focal,mse"],
}


def grid_seconds(
    folder: Path, arms: list[str], epochs: int, seeds: str, datasets: str, device: str
) -> tuple[float, int, int]:
    """Wall time of a multirun through train.py over `datasets`; jobs, and how many trained."""
    t0 = time.perf_counter()
    command = [sys.executable, str(ROOT / "train.py"), "-m", *arms, f"seed={seeds}", f"data={datasets}",
               f"trainer.max_epochs={epochs}", f"hydra.sweep.dir={folder}",
               "callbacks.progress_bar.refresh_rate=0", f"trainer.accelerator={accelerator(device)}",
               *GRID_LAUNCHER]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    seconds = time.perf_counter() - t0
    jobs = [p for p in folder.iterdir() if p.is_dir()]
    trained = sum(json.loads((p / "metrics.json").read_text()).get("status") == "ok"
                  for p in jobs if (p / "metrics.json").exists())  # fmt: skip
    return seconds, len(jobs), trained


def count(text: str) -> int:
    """argparse type: a whole number >= 1, or a one-line usage error naming the bad value."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a few steps, one round, one grid on one dataset: seconds, not minutes")  # fmt: skip
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps-per-call", type=count, help="the harness's steps_per_call (default: the config's)")
    parser.add_argument("--batch-sizes", type=count, nargs="+", default=[64, 256, 1024], metavar="N")
    parser.add_argument("--steps-only", action="store_true", help="skip the start-up and grid measurements")
    parser.add_argument("--steps", type=count, default=300, help="optimizer steps per measurement (default 300)")
    parser.add_argument(
        "--repeats",
        type=count,
        help="measured pairs per batch size (default 5); --verdict: basic sweeps, each between two vectorized "
        "ones (default 1)",
    )
    parser.add_argument("--images", action="store_true", help="the image and table data paths (scripts/bench_data.py)")
    parser.add_argument("--distill", action="store_true", help="the teacher's outputs (scripts/bench_distill.py)")
    parser.add_argument("--seeds", action="store_true", help="vectorized seeds vs one job after another")
    parser.add_argument("--verdict", action="store_true",
                        help="the time to a verdict: experiment=compare_binary under both launchers; train.py "
                        "overrides after it go to both sweeps (scripts/bench_verdict.py)")  # fmt: skip
    parser.add_argument("--schedule-and-clip", action="store_true",
                        help="a cosine schedule and gradient clipping (norm 1.0) in both loops")  # fmt: skip
    parser.add_argument("--grid-launcher", choices=["basic", "joblib"], default="basic",
                        help="Hydra launcher of the grids (joblib: one process per core)")  # fmt: skip
    parser.add_argument("--grid-only", action="store_true", help="only the start-up and grid measurements")
    args, overrides = parser.parse_known_args()
    if overrides and not args.verdict:
        parser.error(f"unrecognized arguments: {' '.join(overrides)}")
    quiet_lightning()  # as train.py: no "Tip" lines, each Lightning line once
    if args.verdict:
        from bench_verdict import main as bench_verdict

        repeats = ["--repeats", str(args.repeats)] if args.repeats else []
        return bench_verdict([*(["--quick"] if args.quick else []), "--device", args.device, *repeats, *overrides])
    if args.seeds:
        from bench_seeds import main as bench_seeds

        return bench_seeds([*(["--quick"] if args.quick else []), "--device", args.device])
    if args.images:
        from bench_data import main as bench_data

        return bench_data([*(["--quick"] if args.quick else []), "--device", args.device])
    if args.distill:
        from bench_distill import main as bench_distill

        return bench_distill([*(["--quick"] if args.quick else []), "--device", args.device])
    if args.grid_launcher == "joblib":
        GRID_LAUNCHER.append("hydra/launcher=joblib")
    if args.grid_only:
        args.batch_sizes = []
    if args.schedule_and_clip:
        EXTRA.extend(SCHEDULE_AND_CLIP)
    if args.steps_per_call is not None:
        STEPS_PER_CALL.append(f"steps_per_call={args.steps_per_call}")
    batches = args.batch_sizes
    steps, repeats, n_samples = (20, 1, 4000) if args.quick else (args.steps, args.repeats or 5, 40000)
    print(f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} steps={steps} "
          f"repeats={repeats} {' '.join(EXTRA)}")  # fmt: skip
    ratios = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for batch in batches:
            harness, raw = [], []
            # the first round warms up and is not counted; --quick only checks the script runs: one round
            for r in range(1 if args.quick else repeats + 1):
                h = harness_steps_per_s(batch, steps, n_samples, folder / f"h{batch}_{r}", args.device)
                w = raw_steps_per_s(batch, steps, n_samples, folder / f"r{batch}_{r}", args.device)
                if r > 0 or args.quick:
                    harness.append(h)
                    raw.append(w)
            h, w = statistics.median(harness), statistics.median(raw)
            ratios[batch] = h / w
            print(f"batch={batch:5d}  harness {h:8.1f} steps/s  raw {w:8.1f} steps/s  ratio {h / w:.2f}")
        if not args.steps_only:
            import_time, startup = startup_seconds(folder, args.device)
            baseline = "import lightning.pytorch" + (" + CUDA context" if args.device == "cuda" else "")
            print(f"startup: {baseline} {import_time:.2f} s; train.py to first step {startup:.2f} s "
                  f"(+{startup - import_time:.2f} s)")  # fmt: skip
            seeds, epochs = ("1", 1) if args.quick else ("1,2,3", 10)
            datasets = "breast_cancer" if args.quick else "breast_cancer,digits"
            grids = list(GRIDS.items())[: 1 if args.quick else None]  # quick: one grid runs the code of both
            for i, (name, arms) in enumerate(grids):
                grid, jobs, trained = grid_seconds(folder / f"grid{i}", arms, epochs, seeds, datasets, args.device)
                n_seeds, n_datasets = len(seeds.split(",")), len(datasets.split(","))
                print(f"grid ({name} x {n_seeds} seeds x {n_datasets} datasets, {epochs} epochs): {jobs} jobs, "
                      f"{trained} trained, in {grid:.1f} s")  # fmt: skip
    if ratios:
        print("bench: " + " ".join(f"ratio@{b}={ratios[b]:.2f}" for b in batches))


if __name__ == "__main__":
    main()
