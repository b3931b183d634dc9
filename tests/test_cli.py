"""The command line as a user meets it: the help page, the installed command, a joblib sweep (mistyped
overrides: test_startup.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv

import pytest

from conftest import ROOT, run_train_py, train_py_in_process
from lossheads.cli.help import config_dir, help_page


def test_help_lists_groups_options_and_top_level_keys_from_the_configs():
    page = help_page(config_dir())
    assert "loss            asl, auto*, bce, bce_logits, ce" in page
    assert "scheduler       cosine, none*, onecycle, plateau, step" in page
    assert "_split" not in page and "test_on" in page and "early_stopping" in page


@pytest.mark.slow
def test_non_editable_install_runs_lossheads_train_and_predict_from_another_folder(tmp_path):
    """`pip install .` (not editable) into a fresh venv that borrows torch, Lightning and Hydra from
    this environment (--system-site-packages), then `lossheads-train` in a folder holding only a table: its configs
    come from the package, its run folder lands under that folder's outputs/; then `lossheads-predict`
    scores the table with that run. pip builds in isolation, as `scripts/install.sh` does: the build
    gets pyproject.toml's setuptools from the index, whatever setuptools (or no `wheel`) this
    interpreter has."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("src", "configs", "pyproject.toml", "setup.py", "README.md"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(ROOT / name, source / name)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=False)
    python = env_dir / "bin" / "python"
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(source)],
                   check=True, env=environment, timeout=300)  # fmt: skip
    shutil.rmtree(source)  # nothing may come from the source tree any more
    work = tmp_path / "work"
    work.mkdir()
    rows = ["id,x,y,label"] + [f"r{i},{i % 7},{(i * 3) % 5},{'yes' if i % 7 > 3 else 'no'}" for i in range(60)]
    (work / "table.csv").write_text("\n".join(rows) + "\n")
    table = [str(env_dir / "bin" / "lossheads-train"), "trainer.max_epochs=1", "data=table", "data.path=table.csv",
             "data.id_column=id"]  # fmt: skip
    result = subprocess.run(table, cwd=work, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "results in outputs/" in result.stdout and "test metrics" in result.stdout
    (record,) = (work / "outputs").glob("*/*/metrics.json")
    predict = [str(env_dir / "bin" / "lossheads-predict"), f"ckpt_path={record.parent}", "data.path=table.csv"]
    result = subprocess.run(predict, cwd=work, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("wrote predictions.csv: 60 rows, binary (no, yes)")
    assert (work / "predictions.csv").read_text().splitlines()[0] == "id,p_yes,predicted"


@pytest.mark.slow
def test_a_joblib_sweep_runs_jobs_in_parallel_processes_named_by_their_overrides(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    result = run_train_py("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "loss=bce_logits,ce",
                          "trainer.max_epochs=1", "hydra.sweep.dir=sweep", cwd=tmp_path, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "sweep"
    assert {p.parent.name for p in sweep.glob("*/metrics.json")} == {"0", "1"}
    assert (sweep / "0" / "tensorboard" / "loss=bce_logits,trainer.max_epochs=1").is_dir()
    assert (sweep / "report.md").is_file()


def test_the_multirun_flag_may_come_after_the_overrides(tmp_path):
    """Hydra's parser takes -m only before the overrides and prints its usage otherwise."""
    from lossheads.cli.train import flags_first

    assert flags_first(["train.py", "loss=ce,focal", "-m", "seed=1"]) == ["train.py", "-m", "loss=ce,focal", "seed=1"]
    assert flags_first(["train.py", "loss=ce"]) == ["train.py", "loss=ce"]
    result = train_py_in_process("trainer.max_epochs=1", "-m", "seed=1,2",
                                 f"hydra.sweep.dir={tmp_path / 'sweep'}", "~hydra.callbacks.report")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.parent.name for p in (tmp_path / "sweep").glob("*/metrics.json")) == ["0", "1"]


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.1, 0.3, 1.0])  # 0.1: while train.py imports Hydra
def test_ctrl_c_while_the_command_starts_is_one_line_and_leaves_no_run_folder(tmp_path, delay):
    """Before a run handles its own stops (its imports loading, its config composed), Ctrl-C is one line
    and exit 130; the run folder Hydra made holds only Hydra's files, and goes. Later, the run's own
    stop handling answers it (`tests/test_durability.py`)."""
    import signal
    import time

    folder = tmp_path / "run"
    process = subprocess.Popen([sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={folder}",
                                "print_config=false", "trainer.max_epochs=1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    if last == "interrupted by Ctrl-C (SIGINT) while the command started: nothing was trained":
        assert not folder.exists()
    else:  # a fast machine: the run had started, and recorded its stop
        assert last.startswith("interrupted by Ctrl-C (SIGINT)")
