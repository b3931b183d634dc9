"""Known effects the report must find under its default settings; exit 1 if one is missed.

    python scripts/known_effects.py                # all three, 10 seeds each (hydra/launcher=seeds)
    python scripts/known_effects.py --only bce     # one of them
    python scripts/known_effects.py --out runs/    # keep the sweep folders there (default: a temporary folder)

- logit adjustment raises balanced accuracy and worst-class recall on long-tailed classes (Menon et al.,
  ICLR 2021), at some cost in accuracy: `data=synthetic_longtail loss=ce,logit_adjusted`, 40 epochs;
- pos_weight=auto raises recall at the 0.5 threshold on imbalanced binary data (it weighs the rare
  positives up): `data=synthetic_imbalanced loss.pos_weight=null,auto`;
- bce (sigmoid, then BCELoss) and bce_logits (the fused form) are one model up to rounding: equivalent
  on every metric.

A report that cannot recover these is wrong, whatever its arithmetic. docs/verdicts.md gives the time
this takes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEEDS = "seed=range(1,11)"
EFFECTS = {
    "logit_adjustment": (
        ["data=synthetic_longtail", "loss=ce,logit_adjusted", "trainer.max_epochs=40"],
        {("loss=logit_adjusted", "balanced_acc"): "better", ("loss=logit_adjusted", "worst_recall"): "better"},
    ),
    "pos_weight": (
        ["data=synthetic_imbalanced", "loss=bce_logits", "loss.pos_weight=null,auto", "trainer.max_epochs=20"],
        {("loss.pos_weight=auto", "recall"): "better"},
    ),
    "bce": (
        ["loss=bce_logits,bce", "trainer.max_epochs=10"],
        {("loss=bce", metric): "equivalent" for metric in ("auroc", "ap", "f1", "recall", "nll", "brier", "ece")},
    ),
}


def check(name: str, out: Path) -> bool:
    from lossheads.report import load

    overrides, expected = EFFECTS[name]
    sweep = out / name
    start = time.perf_counter()
    command = [sys.executable, str(ROOT / "train.py"), "-m", "hydra/launcher=seeds", SEEDS, *overrides,
               "print_config=false", "callbacks.progress_bar.refresh_rate=0", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        print(f"{name}: the sweep failed ({seconds:.0f} s):\n{result.stderr[-2000:]}")
        return False
    _, comparisons = load(sweep)
    found = {(r.config, r.metric): r for r in comparisons.itertuples()}
    ok = True
    for (arm, metric), verdict in expected.items():
        row = found.get((arm, metric))
        got = "missing" if row is None else row.verdict
        words = "" if row is None else f" {row.mean_diff:+.4f} [{row.ci_low:+.4f}, {row.ci_high:+.4f}]"
        print(f"{name}: {arm} {metric}{words}: {got} (expected {verdict})")
        ok &= got == verdict
    print(f"{name}: {'found' if ok else 'MISSED'} in {seconds:.0f} s; report: {sweep / 'report.md'}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(EFFECTS), action="append")
    parser.add_argument("--out", type=Path, help="keep the sweep folders here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        out = args.out or Path(temporary)
        results = [check(name, out) for name in args.only or EFFECTS]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
