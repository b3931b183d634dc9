"""The report reads what a sweep folder really holds: a job refused because its folder holds another run
is listed as refused (never reported as that other run), a damaged step record is one line in the
report, and a run folder given as a sweep folder is refused in one line."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import yaml

from lossheads.config.validators import ConfigError
from lossheads.report import main
from lossheads.report.collect import collect, read_job

GRID = {"hydra": {"sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": None},
                  "sweep": {"dir": ".", "subdir": "${hydra.job.num}"},
                  "overrides": {"task": ["loss=bce_logits,ce", "seed=1,2,3"]}}}  # fmt: skip


def job(sweep: Path, name: str, overrides: list[str], auroc: float) -> None:
    (sweep / name / ".hydra").mkdir(parents=True)
    (sweep / name / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    record = {"status": "ok", "task": "binary", "data": "breast_cancer", "val/auroc": auroc, "test/auroc": auroc}
    (sweep / name / "metrics.json").write_text(json.dumps(record))


def test_a_job_whose_folder_holds_another_run_is_listed_as_refused(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(GRID))
    jobs = [(loss, seed) for loss in ("bce_logits", "ce") for seed in (1, 2, 3)]
    for number, (loss, seed) in enumerate(jobs):
        job(sweep, str(number), [f"loss={loss}", f"seed={seed}"], 0.9)
    # job 4 (loss=ce seed=2) was refused: its folder holds a run of another sweep, with other overrides
    for name in (".hydra/overrides.yaml", "metrics.json"):
        (sweep / "4" / name).unlink()
    job(tmp_path / "other", "x", ["data=digits", "seed=7"], 0.5)
    for name in (".hydra/overrides.yaml", "metrics.json"):
        (sweep / "4" / name).write_bytes((tmp_path / "other" / "x" / name).read_bytes())
    runs = collect(sweep)
    assert [(r.job, r.status) for r in runs] == [(str(i), "ok") for i in range(4)] + [("4", "refused"), ("5", "ok")]
    refused = runs[4]
    assert refused.overrides == {"loss": "ce", "seed": "2"}  # the job's own, never the other run's
    assert refused.reason == "refused: its folder holds another run (data=digits, seed=7), which is not this job's"
    main([str(sweep)])
    report = (sweep / "report.md").read_text()
    assert "digits" not in report.split("| refused |")[0]  # no section of the other run's dataset
    assert "| refused | refused: its folder holds another run (data=digits, seed=7)" in report


def test_a_sweep_run_again_with_other_logging_reads_its_jobs_runs_and_not_those_of_another_length(tmp_path):
    """A finished job run again keeps its own `.hydra/`: overrides that only change logging or display
    (logger=csv) do not make its run another's, and it is named as the sweep names it; a run of another
    length than the sweep asks (3 epochs where it asks 1: refused, as a resume to fewer epochs) is not
    this sweep's."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    for number, (loss, seed) in enumerate((loss, seed) for loss in ("bce_logits", "ce") for seed in (1, 2, 3)):
        job(sweep, str(number), [f"loss={loss}", f"seed={seed}", "trainer.max_epochs=3"], 0.9)
    for length, statuses in (("3", ["ok"] * 6), ("1", ["refused"] * 6)):
        task = ["loss=bce_logits,ce", "seed=1,2,3", "logger=csv", f"trainer.max_epochs={length}"]
        grid = {**GRID, "hydra": {**GRID["hydra"], "overrides": {"task": task}}}
        (sweep / "multirun.yaml").write_text(yaml.safe_dump(grid))
        runs = collect(sweep)
        assert [r.status for r in runs] == statuses
        assert runs[0].overrides == {"loss": "bce_logits", "seed": "1", "logger": "csv", "trainer.max_epochs": length}


@pytest.mark.parametrize("per_seed", [False, True], ids=["changed", "by seed"])
def test_paired_runs_on_different_data_are_said_first_in_the_summary(tmp_path, capsys, per_seed):
    """A table edited before its sweep was run again: the finished jobs kept the old data, the others
    read the new; split.json's fingerprint tells them apart, and the summary says so before any verdict.
    Data that differs by seed (`'data.generator_seed=${seed}'`) but is the same for both arms of a
    seed is no warning."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(GRID))
    for number, (loss, seed) in enumerate((loss, seed) for loss in ("bce_logits", "ce") for seed in (1, 2, 3)):
        job(sweep, str(number), [f"loss={loss}", f"seed={seed}"], 0.9)
        fingerprint = str(seed) * 32 if per_seed else "b" * 32 if number == 5 else "a" * 32
        (sweep / str(number) / "split.json").write_text(json.dumps({"data": "t", "fingerprint": fingerprint}))
    main([str(sweep)])
    warning = ("- **the data changed during this sweep**: job 5 (`loss=ce`) against job 2 (`bbbbbbbb` against "
               "`aaaaaaaa`) trained on different data")  # fmt: skip
    summary = (sweep / "report.md").read_text().split("## Summary")[1].split("\n\n")[1]
    if per_seed:
        assert "the data changed" not in summary
        return
    assert summary.splitlines()[1].startswith(warning), summary
    assert warning in capsys.readouterr().out


def test_a_damaged_step_record_of_a_distillation_is_one_line_in_the_report(tmp_path):
    folder = tmp_path / "0"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["experiment=distill"]))
    (folder / "metrics.json").write_text(json.dumps({"status": "ok", "teacher/test/acc": 0.9, "kd/test/acc": 0.8}))
    (folder / "teacher").mkdir()
    (folder / "teacher" / "metrics.json").write_text('{"head": "softm')  # truncated
    teacher, kd = read_job(folder)
    assert (teacher.status, kd.status) == ("failed", "ok")
    assert teacher.reason.startswith("unreadable teacher/metrics.json: Unterminated string")


def test_a_run_folder_given_as_a_sweep_folder_is_refused_in_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    job(tmp_path, "run", ["loss=ce"], 0.9)
    with pytest.raises(SystemExit) as stopped:
        main([str(run)])
    assert stopped.value.code == 2
    line = capsys.readouterr().err.strip()
    assert line == (f"error: sweep_dir={run} is a run folder, not a sweep folder: give the folder of a "
                    "multirun (it holds multirun.yaml and one folder per job); a run's own numbers are in its "
                    "metrics.json")  # fmt: skip
    assert sorted(p.name for p in run.iterdir()) == [".hydra", "metrics.json"]  # nothing written into the run


def test_a_resumed_runs_curve_holds_its_epochs_before_and_after_the_resume(tmp_path):
    """A run killed after its third validation and resumed from its second epoch's checkpoint: its
    TensorBoard folder holds two event files; the curve is epochs 1-2 of the first and 3-4 of the second."""
    from types import SimpleNamespace

    from torch.utils.tensorboard import SummaryWriter

    from lossheads.report.plots import _scalars

    folder = tmp_path / "run" / "tensorboard" / "version_0"
    for points in ({6: 0.1, 12: 0.2, 18: 0.99}, {18: 0.3, 24: 0.4}):  # 0.99: lost with the kill
        writer = SummaryWriter(str(folder))
        for step, value in points.items():
            writer.add_scalar("val/acc", value, step)
        writer.close()
        time.sleep(1.1)  # the next file's name carries a later second
    assert _scalars(SimpleNamespace(folder=tmp_path / "run"), ("val/acc",)) == {
        "val/acc": pytest.approx([0.1, 0.2, 0.3, 0.4])
    }


def test_figures_drawn_by_a_forked_child_come_back_in_order_and_a_dead_child_is_covered(tmp_path):
    """`drawing.draw` hands every other figure to a forked copy of the process; their paths come back in
    the calls' order, a child that dies leaves its figures to the parent, and an error is the parent's."""
    import os

    from lossheads.report.drawing import draw

    parent = os.getpid()

    def drawn(name: str) -> Path:
        (tmp_path / name).write_text(str(os.getpid()))
        return tmp_path / name

    calls = [lambda: drawn("a"), lambda: None, lambda: drawn("c"), lambda: drawn("d")]
    assert draw(calls) == [tmp_path / "a", None, tmp_path / "c", tmp_path / "d"]
    if (os.cpu_count() or 1) > 1 and sys.platform == "linux":
        assert (tmp_path / "d").read_text() != str(parent)  # drawn by the child
    dies = [lambda: drawn("e"), lambda: os._exit(9) if os.getpid() != parent else drawn("f")]
    assert draw(dies) == [tmp_path / "e", tmp_path / "f"]
    assert (tmp_path / "f").read_text() == str(parent)

    def broken() -> Path:
        raise ValueError("no figure")

    with pytest.raises(ValueError, match="no figure"):
        draw([lambda: drawn("g"), broken])


def test_a_figure_is_saved_with_the_pixels_of_bbox_inches_tight(tmp_path):
    """`plots._save` measures the tight box itself instead of letting `savefig(bbox_inches="tight")`
    draw the figure once more first: the same pixels, for figures laid out by `tight_layout` with a
    legend right of the axes and a title wider than the figure, and for a colorbar's. Fails the day
    matplotlib's tight box changes under us."""
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    from lossheads.report.plots import DPI, _legend_right, _save

    def figures() -> list:
        lines, axes = plt.subplots(2, 3, figsize=(6, 4))
        for axis in axes.flat:
            axis.plot([0, 1, 2], [2, 0, 1], label="loss=bce_logits loss.pos_weight=null")
            axis.set(title="val/nll: mean over seeds", ylabel="val/nll")
        _legend_right(lines, axes[0][0])
        lines.suptitle("a dataset with a long name: arm − control, adjusted intervals; grey band ±margin " * 2)
        lines.tight_layout()
        matrix, axes = plt.subplots(1, 2, figsize=(6, 3))
        image = axes[0].imshow(np.eye(3), cmap="Blues")
        matrix.colorbar(image, ax=axes, shrink=0.8, label="share of the true class")
        return [lines, matrix]

    for k, (ours, theirs) in enumerate(zip(figures(), figures(), strict=True)):
        _save(ours, tmp_path / f"ours-{k}.png")
        theirs.savefig(tmp_path / f"theirs-{k}.png", format="png", dpi=DPI, bbox_inches="tight")
        plt.close(theirs)
        pixels = [np.asarray(Image.open(tmp_path / f"{who}-{k}.png")) for who in ("ours", "theirs")]
        assert pixels[0].shape == pixels[1].shape and (pixels[0] == pixels[1]).all()


def test_a_recipes_baseline_with_no_finished_run_is_no_error(tmp_path):
    """A distillation sweep run again longer: every job refused, none finished, so its recipe's control
    (`hard-label student`) names no arm; the report is written (nothing judged), not refused."""
    from lossheads.report.arms import control
    from lossheads.report.collect import Run

    runs = [Run(tmp_path / str(n), str(n), {"seed": str(n)}, "refused", reason="refused") for n in (1, 2)]
    assert control(runs, [], "hard-label student") == "hard-label student"
    runs.append(Run(tmp_path / "3", "3", {"seed": "3"}, "ok", {"status": "ok"}, config="all"))
    with pytest.raises(ConfigError, match="names no arm of this sweep"):
        control(runs, [], "hard-label student")


def test_a_swept_key_that_a_resume_may_change_is_compared(tmp_path):
    """`callbacks.model_checkpoint.mode=min,max` run again as `max,min`, or as `max` alone: each finished
    job keeps its run (a resume may change callbacks), but the sweep renumbered the jobs, so job 0's
    folder holds the `min` run and is refused, never reported as the `max` arm; job 1's folder is an
    earlier sweep's where the sweep has one job."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    for number, mode in enumerate(("min", "max")):
        job(sweep, str(number), [f"callbacks.model_checkpoint.mode={mode}", "seed=1"], 0.9)
    for order, statuses in (("min,max", ["ok", "ok"]), ("max,min", ["refused", "refused"]), ("max", ["refused"] * 2)):
        task = [f"callbacks.model_checkpoint.mode={order}", "seed=1"]
        (sweep / "multirun.yaml").write_text(yaml.safe_dump({**GRID, "hydra": {**GRID["hydra"],
                                                             "overrides": {"task": task}}}))  # fmt: skip
        assert [r.status for r in collect(sweep)] == statuses
