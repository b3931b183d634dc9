"""Bad values are refused in one line before anything trains: NaN and infinity anywhere in the config,
a run folder that is a file or a dangling link, and a fresh MLflow store created by two runs at once."""

from __future__ import annotations

import pytest

from conftest import QUIET, compose_config
from lossheads.config.check import check_config
from lossheads.run.execute import main


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


def test_every_finite_number_passes_the_rule(tmp_path):
    check_config(compose_config([*QUIET, "loss=focal", "loss.gamma=1e30", "early_stopping.min_delta=-0.0"], tmp_path))
