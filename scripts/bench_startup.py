"""Benchmark: how fast `python train.py` answers a bad command, against the time it takes to import
Lightning (`python -c "import lightning.pytorch"`), each run as a fresh process.

Each command runs `--repeats` times, the commands interleaved; prints the median and the range in
seconds of each, and each bad command's median as a fraction of Lightning's import.

    python scripts/bench_startup.py              # 5 repeats
    python scripts/bench_startup.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BAD = ["loss=bce_logit", "trainer.max_epoch=3", "seed=-1", "threshold=2", "optimizer.lr=0"]


def seconds(command: list[str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, capture_output=True, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    commands = {"import lightning.pytorch": [sys.executable, "-c", "import lightning.pytorch"]}
    commands.update({f"train.py {bad}": [sys.executable, str(ROOT / "train.py"), bad] for bad in BAD})
    times: dict[str, list[float]] = {name: [] for name in commands}
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as cwd:  # a refused run leaves nothing, but not in the repository
        for _ in range(args.repeats):
            for name, command in commands.items():
                times[name].append(seconds(command, cwd))
    lightning = statistics.median(times["import lightning.pytorch"])
    for name, measured in times.items():
        median = statistics.median(measured)
        print(f"{name:<34} median {median:5.2f} s  (range {min(measured):.2f}-{max(measured):.2f} s)  "
              f"{median / lightning:4.0%} of Lightning's import")  # fmt: skip
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
