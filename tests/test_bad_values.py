"""Bad values are refused in one line before anything trains: NaN and infinity anywhere in the config,
a run folder that is a file or a dangling link, and a fresh MLflow store created by two runs at once."""

from __future__ import annotations

import multiprocessing
import sys

import pytest

from conftest import QUIET, compose_config, run_train_py
from lossheads.config.check import check_config
from lossheads.run.execute import main
from lossheads.run.guards import unusable_folder


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("early_stopping.min_delta=nan", "early_stopping.min_delta=nan is not valid"),
        ("trainer.gradient_clip_val=nan", "trainer.gradient_clip_val=nan is not valid"),
        ("loss.gamma=inf", "loss.gamma=inf is not valid"),
        # beyond the examples: a list item, minus infinity, a key added with +, an interpolation's target
        ("loss.weight=[1.0,nan]", "loss.weight[1]=nan is not valid"),
        ("scheduler.min_lr=-inf", "scheduler.min_lr=-inf is not valid"),
        ("+optimizer.eps=inf", "optimizer.eps=inf is not valid"),
    ],
)
def test_nan_and_infinity_are_refused_anywhere_in_the_config_in_one_line(tmp_path, capsys, override, line):
    group = {"loss.gamma": "loss=focal", "loss.weight": "loss=ce", "scheduler.min_lr": "scheduler=cosine"}
    extra = [g for k, g in group.items() if override.startswith(k)]
    cfg = compose_config([*QUIET, "trainer.max_epochs=1", *extra, override], tmp_path / "run")
    with pytest.raises(SystemExit) as stopped:
        main(cfg)
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {line}: NaN and infinity are not numbers a run can use") and "\n" not in err
    assert not (tmp_path / "run" / "metrics.json").exists()  # refused before anything trained or was recorded


def test_the_distillation_recipe_refuses_nan_before_its_teacher_trains(tmp_path, capsys):
    cfg = compose_config([*QUIET, "experiment=distill", "loss.temperature=nan"], tmp_path / "run")
    with pytest.raises(SystemExit) as stopped:
        main(cfg)
    assert stopped.value.code == 2 and not (tmp_path / "run" / "teacher").exists()
    assert capsys.readouterr().err.startswith("error: loss.temperature=nan is not valid: NaN and infinity are not")


def test_every_finite_number_passes_the_rule(tmp_path):
    check_config(compose_config([*QUIET, "loss=focal", "loss.gamma=1e30", "early_stopping.min_delta=-0.0"], tmp_path))


# ---- run folders Hydra cannot create --------------------------------------------------------------------


def test_unusable_folders_are_named_with_the_reason(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    (tmp_path / "folder").mkdir()
    (tmp_path / "to_folder").symlink_to(tmp_path / "folder")
    assert unusable_folder(tmp_path / "file") == "it is a file, not a folder: choose another folder, or move the file"
    assert unusable_folder(tmp_path / "file" / "sub").startswith(f"its parent '{tmp_path / 'file'}' is a file")
    assert unusable_folder(tmp_path / "dangling") == (
        f"it is a link to '{tmp_path / 'gone'}', which does not exist: create that folder, remove the link, "
        "or choose another folder"
    )
    assert unusable_folder(tmp_path / "dangling" / "a" / "b").startswith(f"its parent '{tmp_path / 'dangling'}' is")
    for fine in ("folder", "to_folder", "to_folder/new/deeper", "new"):
        assert unusable_folder(tmp_path / fine) is None


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("hydra.run.dir=file", "error: hydra.run.dir='file' is not valid: it is a file, not a folder"),
        pytest.param("hydra.run.dir=dangling",
                     "error: hydra.run.dir='dangling' is not valid: it is a link to 'gone', which does",
                     marks=pytest.mark.slow),  # a second start of train.py: the rule is unit-tested above
    ],
)  # fmt: skip
def test_a_run_folder_that_is_a_file_or_a_dangling_link_is_one_line_and_exit_2(tmp_path, override, line):
    (tmp_path / "file").write_text("mine\n")
    (tmp_path / "dangling").symlink_to("gone")
    done = run_train_py(override, "trainer.max_epochs=1", *QUIET, cwd=tmp_path, timeout=120)
    assert (done.returncode, done.stderr.strip().splitlines()) == (2, [done.stderr.strip()])
    assert done.stderr.startswith(line) and "Traceback" not in done.stdout + done.stderr
    assert (tmp_path / "file").read_text() == "mine\n" and not (tmp_path / "gone").exists()


@pytest.mark.slow  # a start of train.py -m (about 12 s on a busy 2-core machine)
def test_a_sweep_folder_that_is_a_file_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "file").write_text("mine\n")
    done = run_train_py("-m", "hydra.sweep.dir=file", "seed=1,2", "trainer.max_epochs=1", *QUIET, cwd=tmp_path,
                        timeout=120)  # fmt: skip
    assert done.returncode == 2 and done.stderr.strip() == (
        "error: hydra.sweep.dir='file' is not valid: it is a file, not a folder: choose another folder, "
        "or move the file"
    )


# ---- a fresh MLflow store created by two runs at once ---------------------------------------------------


def open_mlflow_store(uri: str, barrier, results) -> None:
    from omegaconf import OmegaConf

    from lossheads.run.loggers import build_loggers

    barrier.wait()
    try:
        node = OmegaConf.create({"logger": {"_target_": "lightning.pytorch.loggers.MLFlowLogger",
                                            "experiment_name": "lossheads", "tracking_uri": uri}})  # fmt: skip
        build_loggers(node)[0].log_hyperparams({"seed": 1})
        results.put("ok")
    except BaseException as exc:  # noqa: BLE001 -- the test reports what each run saw
        results.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.slow  # MLflow creates its SQLite tables in about 15 s on a 2-core machine
@pytest.mark.skipif(sys.platform == "win32", reason="the store lock needs fcntl")
def test_two_runs_starting_together_on_a_fresh_mlflow_store_both_get_it(tmp_path):
    pytest.importorskip("mlflow")
    context = multiprocessing.get_context("fork")  # the two start at the same moment, lossheads imported
    barrier, results = context.Barrier(2), context.Queue()
    uri = f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"
    runs = [context.Process(target=open_mlflow_store, args=(uri, barrier, results)) for _ in range(2)]
    for process in runs:
        process.start()
    for process in runs:
        process.join(timeout=240)
    assert sorted(results.get(timeout=5) for _ in runs) == ["ok", "ok"]  # was: "fix the logger.* overrides"
    from mlflow.tracking import MlflowClient

    experiment = MlflowClient(uri).get_experiment_by_name("lossheads")
    assert len(MlflowClient(uri).search_runs([experiment.experiment_id])) == 2
