"""Compose the real Hydra config (as `python train.py` would) and run it in-process."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

# one torch thread per test process: the suite's workers (and the processes they start) share the
# machine's cores, and two processes each spinning two threads on two cores wait on each other
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402 -- after the thread count, which torch reads when it loads
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
QUIET = ["print_config=false", "callbacks.progress_bar.refresh_rate=0"]  # no config tree, no progress bar
QUICK = ["trainer.max_epochs=1", *QUIET]


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """The config `python train.py OVERRIDES` would run, with its run folder at `output_dir`."""
    return as_run(compose_with_hydra(overrides), output_dir)


def compose_with_hydra(overrides: list[str]) -> DictConfig:
    """Hydra's composition of `overrides`, its own `hydra` node included."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def as_run(composed: DictConfig, output_dir: Path) -> DictConfig:
    """What a run gets from Hydra: `HydraConfig` set, the config without its `hydra` node."""
    HydraConfig.instance().set_config(composed)
    cfg = copy.deepcopy(composed)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        del cfg.hydra
    return cfg


def built(overrides: list[str], output_dir: Path) -> tuple[Any, Any, Any]:
    """What `run` builds for these overrides: (datamodule, module, trainer), for a test to fit itself."""
    from lossheads.run.build import build, build_trainer, plan_run

    cfg = compose_config(overrides, output_dir)
    plan = plan_run(cfg)
    return *build(cfg, plan), build_trainer(cfg, plan)


@pytest.fixture
def train(tmp_path: Path):
    """Run one configuration in-process; returns its metrics.json as a dict."""
    from lossheads.run.execute import run

    def _train(*overrides: str, quick: bool = True, folder: str = "run") -> dict[str, Any]:
        output_dir = tmp_path / folder
        cfg = compose_config([*(QUICK if quick else []), *overrides], output_dir)
        run(cfg)
        return json.loads((output_dir / "metrics.json").read_text())

    return _train


@pytest.fixture(scope="session")
def one_epoch_run(tmp_path_factory) -> Path:
    """The default job trained in-process for one epoch, once for every test that reads its folder or its
    last.ckpt; a test that changes a file works on a copy (`shutil.copytree` / `copy`)."""
    from lossheads.run.execute import run

    folder = tmp_path_factory.mktemp("one_epoch") / "run"
    run(compose_config([*QUICK], folder))
    return folder


@pytest.fixture
def config(tmp_path: Path):
    return lambda *overrides: compose_config(list(overrides), tmp_path / "run")


def run_train_py(*overrides: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """The real entry point in a subprocess, as a user types it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def train_py_in_process(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python train.py ARGS` (e.g. a `-m` sweep under Hydra's basic launcher) run in this process, as
    `run_train_py` would run it (in `cwd`) but without a new interpreter's imports (~6 s of the suite's
    CPU each). Its console output comes back as the CompletedProcess's stdout and stderr; the working
    folder, environment, logging and Hydra state it changes are put back. A test of a stop or a kill needs a process
    of its own, and starts one."""
    from lossheads.cli.train import train

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    hydra_config = HydraConfig.instance().cfg
    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    argv, here, environment = sys.argv, Path.cwd(), dict(os.environ)  # a sweep marks its workers in it
    sys.argv = [str(ROOT / "train.py"), *args]
    os.chdir(cwd or here)
    GlobalHydra.instance().clear()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            train()
    except SystemExit as exit_:
        code = exit_.code
    finally:
        sys.argv = argv
        os.chdir(here)
        os.environ.clear()
        os.environ.update(environment)
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = hydra_config
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
    returncode = code if isinstance(code, int) else 0 if code is None else 1
    return subprocess.CompletedProcess(args, returncode, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def default_train_py(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """`python train.py trainer.max_epochs=2 hydra.run.dir=run` in a fresh folder, run once for the tests
    that read what the default job prints and writes (its console, train.log, the run folder)."""
    cwd = tmp_path_factory.mktemp("default_train_py")
    result = run_train_py("trainer.max_epochs=2", "hydra.run.dir=run", cwd=cwd)
    assert result.returncode == 0, result.stderr[-2000:]
    return result, cwd / "run"
