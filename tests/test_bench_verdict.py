"""scripts/bench_verdict.py (`python scripts/bench.py --verdict`): the time to a verdict under both launchers."""

from __future__ import annotations

import json
import re
import runpy
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench_verdict(monkeypatch):
    """The script as a module, with scripts/ importable as when it runs (its `from bench_seeds import ...`)."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    monkeypatch.delitem(sys.modules, "bench_verdict", raising=False)
    import bench_verdict

    return bench_verdict


def fake_sweep(folder: Path, statuses: list[str], report_after_timer: bool = False) -> float:
    """A sweep folder as train.py leaves it: job folders with metrics.json, the timer's file, the report."""
    for job, status in enumerate(statuses):
        (folder / str(job)).mkdir(parents=True)
        (folder / str(job) / "metrics.json").write_text(json.dumps({"status": status}))
    files = ["report.md", "seconds.json"] if not report_after_timer else ["seconds.json", "report.md"]
    for name in files:
        (folder / name).write_text("12.5" if name == "seconds.json" else "# report")
        time.sleep(0.02)  # distinct modification times
    (folder / "comparisons.csv").write_text(
        "data,config,metric,verdict\nbreast_cancer,loss=bce loss.pos_weight=auto,recall,better\n"
    )
    return 12.5  # what timed_sweep returns: the timer's seconds


def test_a_sweep_is_read_back_with_its_jobs_time_and_verdicts(bench_verdict, monkeypatch, tmp_path):
    monkeypatch.setattr(bench_verdict, "timed_sweep", lambda folder, overrides, name: fake_sweep(folder, ["ok"] * 2))
    sweep = bench_verdict.run_sweep(tmp_path / "s", "basic", "cpu", [])
    verdicts = {("breast_cancer", "loss=bce loss.pos_weight=auto", "recall"): "better"}
    assert (sweep.seconds, sweep.jobs, sweep.verdicts) == (12.5, 2, verdicts)


def test_a_sweep_with_an_unfinished_job_ends_the_benchmark(bench_verdict, monkeypatch, tmp_path):
    monkeypatch.setattr(bench_verdict, "timed_sweep", lambda folder, *a: fake_sweep(folder, ["ok", "failed", "ok"]))
    with pytest.raises(SystemExit, match=r"^the vectorized sweep finished 2 of 3 jobs: "):
        bench_verdict.run_sweep(tmp_path / "s", "vectorized", "cpu", [])


def test_a_timer_that_stopped_before_the_report_ends_the_benchmark(bench_verdict, monkeypatch, tmp_path):
    """Hydra ends callbacks in reverse order: a timer stopped in its own on_multirun_end would leave the report out."""
    monkeypatch.setattr(bench_verdict, "timed_sweep", lambda folder, *a: fake_sweep(folder, ["ok"], True))
    with pytest.raises(SystemExit, match="the basic sweep's timer stopped before its report was written"):
        bench_verdict.run_sweep(tmp_path / "s", "basic", "cpu", [])


def test_differing_verdicts_are_one_warning_line_each(bench_verdict):
    key = ("synthetic_imbalanced", "loss=bce loss.pos_weight=auto", "balanced_acc")
    same = ("breast_cancer", "loss=ce loss.pos_weight=null", "auroc")
    basic = {key: "better", same: "equivalent"}
    vectorized = {key: "no evidence", same: "equivalent"}
    assert bench_verdict.differences(basic, vectorized) == [
        "warning: verdicts differ on synthetic_imbalanced, loss=bce loss.pos_weight=auto, balanced_acc: "
        "basic 'better', vectorized 'no evidence'"
    ]
    assert bench_verdict.differences(basic, {same: "equivalent"})[0].endswith("basic 'better', vectorized 'absent'")


def test_bench_py_hands_verdict_its_options_and_overrides(monkeypatch):
    """`python scripts/bench.py --verdict --quick --repeats 3 trainer.max_epochs=5`, run in-process."""
    handed: list[list[str]] = []
    monkeypatch.setitem(sys.modules, "bench_verdict", types.SimpleNamespace(main=handed.append))
    argv = ["bench.py", "--verdict", "--quick", "--repeats", "3", "--device", "cpu", "trainer.max_epochs=5"]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts tests/ and scripts/ first
    runpy.run_path(str(ROOT / "scripts" / "bench.py"), run_name="__main__")
    assert handed == [["--quick", "--device", "cpu", "--repeats", "3", "trainer.max_epochs=5"]]


def test_bench_py_refuses_an_override_without_verdict(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["bench.py", "--steps-only", "trainer.max_epochs=5"])
    monkeypatch.setattr(sys, "path", list(sys.path))
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(ROOT / "scripts" / "bench.py"), run_name="__main__")
    assert exited.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "bench.py: error: unrecognized arguments: trainer.max_epochs=5"


@pytest.mark.slow
def test_the_verdict_benchmark_prints_its_line():
    """Both launchers run the quick sweep (8 jobs: 4 arms, 2 seeds, 1 epoch), the basic one between two
    vectorized ones, finish every job and write a report. bench_verdict.py itself, without bench.py's
    imports of torch and Lightning."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_verdict.py"), "--quick"],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    for launcher in ("basic", "vectorized"):
        assert any(re.fullmatch(rf" *{launcher} launcher, sweep 1: 8 jobs ok, report\.md with \d+ comparisons, "
                                r"\d+\.\d s", line) for line in lines), lines  # fmt: skip
    assert any(re.fullmatch(r"verdicts: the two reports agree on all \d+ comparisons", line) for line in lines)
    assert sum(line.startswith("vectorized launcher, sweep") for line in lines) == 2  # before and after the basic one
    ratios = re.fullmatch(r"speed-ups, each basic sweep against the mean of the vectorized sweeps before and after "
                          r"it: (\d+\.\d\d)", lines[-2])  # fmt: skip
    assert ratios, lines
    assert re.fullmatch(r"bench-verdict: basic=\d+\.\ds vectorized=\d+\.\ds speedup=\d+\.\d\d", lines[-1])
