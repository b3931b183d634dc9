"""Start-up as a user sees it: a bad command answered in one line before torch or Lightning is
imported, no folder left behind by a refused run, a console holding lossheads' own lines only
(Lightning's stay in train.log), and each stage of a recipe announced."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import QUICK, ROOT, compose_config, run_train_py

BAD_COMMANDS = {
    "loss=bce_logit": "loss=bce_logit is not an option of loss: did you mean loss=bce_logits?",
    "trainer.max_epoch=3": "trainer.max_epoch is not a key of trainer: did you mean trainer.max_epochs?",
    "seed=-1": "seed=-1 is not valid",
    "threshold=2": "threshold=2 is not valid",
    "optimizer.lr=0": "optimizer.lr=0 is not valid",
    # Lightning's own refusal would come after its import, and say nothing of the fix
    "+trainer.enable_progress_bar=false": "trainer.enable_progress_bar=False is not valid: the console's bar is "
    "callbacks.progress_bar: turn it off with callbacks.progress_bar.refresh_rate=0, or drop it with "
    "~callbacks.progress_bar",
}


def imported_modules(importtime_lines: str) -> set[str]:
    """The modules `python -X importtime` reports as imported (one `import time: ... | name` line each)."""
    return {line.rsplit("|", 1)[1].strip() for line in importtime_lines.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("override", list(BAD_COMMANDS))
def test_a_bad_command_is_answered_in_one_line_before_torch_or_lightning_loads(tmp_path, override):
    result = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "train.py"), override],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    answer = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert len(answer) == 1 and answer[0].startswith(f"error: {BAD_COMMANDS[override]}"), answer
    assert "Traceback" not in result.stdout
    modules = imported_modules(result.stderr)
    assert "omegaconf" in modules  # the parsing works: Hydra's own imports are listed
    assert not {m for m in modules if m.split(".")[0] in ("torch", "lightning", "pytorch_lightning")}
    assert not (tmp_path / "outputs").exists()  # the refused run left no outputs/DATE/TIME/ behind


def test_a_refused_run_removes_only_the_folder_it_created(tmp_path):
    existing = tmp_path / "mine"
    existing.mkdir()
    (existing / "notes.txt").write_text("kept")
    refused = run_train_py("seed=-1", "hydra.run.dir=mine", cwd=tmp_path)
    assert refused.returncode == 2
    assert (existing / "notes.txt").read_text() == "kept" and (existing / ".hydra" / "config.yaml").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_train_py("threshold=2", "hydra.run.dir=empty", cwd=tmp_path).returncode == 2
    assert empty.is_dir()  # it existed before the command: not this command's to remove
    nested = tmp_path / "new" / "day" / "time"
    assert run_train_py("threshold=2", f"hydra.run.dir={nested}", cwd=tmp_path).returncode == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "mine"]


@pytest.mark.slow
def test_a_run_refused_after_the_libraries_load_is_one_line_and_leaves_no_folder_either(tmp_path):
    """A refusal that needs the data (a head that does not fit it) comes after torch is imported. (Other
    such refusals, a pairing or a missing file, are the same path: their messages are tested in-process.)"""
    result = run_train_py("data=digits", "head=sigmoid", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: head=sigmoid does not fit multiclass data: use head=softmax"]
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_the_console_holds_lossheads_lines_and_train_log_keeps_lightnings(default_train_py):
    result, folder = default_train_py
    console = result.stdout + result.stderr
    for line in ("GPU available", "TPU available", "`Trainer.fit` stopped", "Tip"):
        assert line not in console
    assert re.findall(r"^epoch (\d)/2 ", result.stdout, re.M) == ["1", "2"]
    assert "test metrics (last weights, after 2 epochs)" in result.stdout
    log = (folder / "train.log").read_text()
    assert "GPU available: False, used: False" in log and "TPU available" in log
    assert "`Trainer.fit` stopped: `max_epochs=2` reached." in log


@pytest.mark.slow
def test_an_evaluation_elsewhere_prints_its_numbers_only_and_of_diverged_weights_one_line(default_train_py, tmp_path):
    """`train=false` on another folder's checkpoint: no Lightning note about that folder's best
    records; weights that blew up: the one refusal line, exit 2, and no folder."""
    import shutil

    from lossheads.run.checkpoints import META, RunCheckpointIO, read_checkpoint

    _, folder = default_train_py
    result = run_train_py("train=false", f"ckpt_path={folder / 'checkpoints' / 'last.ckpt'}", "hydra.run.dir=eval",
                          "print_config=false", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "test metrics (last weights" in result.stdout
    blown = tmp_path / "blown.ckpt"
    shutil.copy(folder / "checkpoints" / "last.ckpt", blown)
    checkpoint = read_checkpoint("ckpt_path", blown)
    for weight in (w for name, w in checkpoint["state_dict"].items() if name.startswith("net.")):
        weight.fill_(float("nan"))
    RunCheckpointIO(checkpoint[META]["config"], checkpoint[META].get("inputs")).save_checkpoint(checkpoint, blown)
    result = run_train_py(
        "train=false", f"ckpt_path={blown}", "hydra.run.dir=eval2", "print_config=false", cwd=tmp_path
    )
    assert result.returncode == 2 and result.stderr.splitlines() == [
        f"error: ckpt_path='{blown}' is not valid: its weights are not finite (NaN or inf in net.0.weight), so its "
        "run diverged; evaluate a checkpoint from before it did (e.g. its run's best-epochNNN.ckpt)"
    ]
    assert not (tmp_path / "eval2").exists()  # refused before anything was written: no folder left either
    shutil.copytree(folder, tmp_path / "run")  # beside a run, in its folder: the folder as it was
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "run").rglob("*"))
    result = run_train_py("train=false", f"ckpt_path={blown}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "run").rglob("*")) == before


def test_each_stage_of_the_distill_recipe_is_announced(tmp_path, capsys):
    """The recipe's three trainings, each with its line before its epoch lines."""
    from lossheads.run.distill import run_distillation

    cfg = compose_config(["experiment=distill", *QUICK], tmp_path / "run")
    trained = []

    def run(variant, continue_own: bool = False):
        trained.append(Path(variant.paths.output_dir).name)
        print(f"epoch 1/1 of {trained[-1]}")
        return {"head": "softmax", "data": "breast_cancer", "test/acc": 0.5}

    run_distillation(cfg, run)
    lines = capsys.readouterr().out.splitlines()
    assert trained == ["teacher", "kd", "hard"]
    stages = ["[1/3] teacher", "[2/3] KD student", "[3/3] hard-label student"]
    assert [line.split(":")[0] for line in lines[::2]] == stages
    assert lines[1::2] == ["epoch 1/1 of teacher", "epoch 1/1 of kd", "epoch 1/1 of hard"]
    assert lines[2].endswith(f"({tmp_path / 'run' / 'kd'})")


def test_a_run_resolves_its_config_plans_its_steps_and_builds_its_callbacks_once(train, monkeypatch):
    import lossheads.run.build as build_module

    calls: dict[str, int] = {}

    def counted(name, function):
        def wrapper(*args, **kwargs):
            key = name if name != "instantiate_checked" else f"callbacks.{args[1]}" if len(args) > 1 else name
            calls[key] = calls.get(key, 0) + 1
            return function(*args, **kwargs)

        return wrapper

    for name in ("resolved", "plan_stepping", "instantiate_checked"):
        monkeypatch.setattr(build_module, name, counted(name, getattr(build_module, name)))
    record = train()
    assert record["status"] == "ok"
    assert calls["resolved"] == 1 and calls["plan_stepping"] == 1
    assert calls["callbacks.callbacks"] == 3  # each of callbacks/default.yaml's three, once
