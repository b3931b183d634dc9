"""predict.py: new data read as the run read its own, scored with the run's head and threshold."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from lossheads.cli.predict import cli as predict_cli
from lossheads.cli.predict import main as predict
from lossheads.config.validators import ConfigError
from lossheads.data import TableData


def churn_file(path, n: int = 300) -> pd.DataFrame:
    """A messy real-world shape: `;`, Latin-1, an ID, a text category, string labels."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "id": [f"c{i}" for i in range(n)],
            "age": rng.normal(40, 10, n).round(1),
            "city": rng.choice(["Köln", "Zürich", "Genève"], n),
            "income": rng.normal(50, 20, n).round(2),
        }
    )
    frame["churn"] = np.where(frame.age + rng.normal(0, 5, n) > 42, "yes", "no")
    frame.to_csv(path, sep=";", index=False, encoding="latin-1")
    return frame


def test_predictions_on_held_out_rows_equal_the_runs_test_predictions(train, tmp_path):
    frame = churn_file(tmp_path / "churn.csv")
    options = [f"data.path={tmp_path / 'churn.csv'}", "data.label_columns=[churn]", "data.id_column=id"]
    record = train("data=table", *options, "trainer.max_epochs=3")
    run = tmp_path / "run"
    data = TableData(path=str(tmp_path / "churn.csv"), label_columns=["churn"], id_column="id", split_seed=42)
    data.setup()
    held_out = frame.iloc[data.split_indices["test"]].drop(columns=["churn"])
    held_out.to_csv(tmp_path / "new.csv", sep=";", index=False, encoding="latin-1")
    output = predict([f"ckpt_path={run}", f"data.path={tmp_path / 'new.csv'}", f"output={tmp_path / 'p.csv'}"])
    predicted = pd.read_csv(output)
    expected = np.load(run / "predictions.npz")["test_probs"]
    assert (
        list(predicted.columns) == ["id", "p_yes", "predicted"] and predicted["id"].tolist() == held_out["id"].tolist()
    )
    np.testing.assert_allclose(predicted["p_yes"].to_numpy(), expected, atol=1e-5)
    assert (predicted["predicted"] == np.where(expected >= 0.5, "yes", "no")).all()
    accuracy = (predicted["predicted"].to_numpy() == frame.iloc[data.split_indices["test"]]["churn"].to_numpy()).mean()
    assert accuracy == pytest.approx(record["test/acc"], abs=1e-6)


def test_a_file_with_other_columns_is_refused_in_one_line(train, tmp_path, monkeypatch, capsys):
    frame = churn_file(tmp_path / "churn.csv", n=120)
    train("data=table", f"data.path={tmp_path / 'churn.csv'}", "data.label_columns=[churn]", "data.id_column=id")
    frame.drop(columns=["city"]).to_csv(tmp_path / "less.csv", sep=";", index=False)
    with pytest.raises(ConfigError, match=r"columns differ from the training file's: missing \['city'\], extra \[\]"):
        predict([f"ckpt_path={tmp_path / 'run'}", f"data.path={tmp_path / 'less.csv'}"])
    frame.assign(extra=1).to_csv(tmp_path / "more.csv", sep=";", index=False)
    # `python predict.py ckpt_path=... data.path=more.csv` in tmp_path, in-process: its exit code and stderr
    monkeypatch.chdir(tmp_path)
    arguments = [f"ckpt_path={tmp_path / 'run'}", f"data.path={tmp_path / 'more.csv'}"]
    monkeypatch.setattr(sys, "argv", ["predict.py", *arguments])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        predict_cli()
    stderr = capsys.readouterr().err
    assert exited.value.code == 2 and stderr.strip().endswith("missing [], extra ['extra']")
    assert len(stderr.strip().splitlines()) == 1 and not (tmp_path / "predictions.csv").exists()


def test_predictions_on_an_image_folder(train, tmp_path):
    from test_images import write_folder

    folder = write_folder(tmp_path / "shapes", per_class=15)
    train("data=image_folder", f"data.path={folder}", "model=cnn", "model.channels=[8]", "loss=ce")
    output = predict([f"ckpt_path={tmp_path / 'run'}", f"data.path={folder}", f"output={tmp_path / 'p.csv'}"])
    predicted = pd.read_csv(output)
    assert list(predicted.columns) == ["row", "p_bar", "p_column", "p_cross", "predicted"] and len(predicted) == 45
    assert predicted["row"].iloc[0] == "bar/0.png" and set(predicted["predicted"]) <= {"bar", "column", "cross"}
    np.testing.assert_allclose(predicted[["p_bar", "p_column", "p_cross"]].sum(axis=1), 1.0, atol=1e-4)
