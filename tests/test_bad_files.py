"""Bad files, as a user hands them over: each reader ends the run before training with one line on
stderr that names the file and the problem, exit code 2, no traceback, and no metrics.json; predict.py
does the same on new data. Wide tables and large numbers are read or named truthfully."""

from __future__ import annotations

import contextlib
import datetime
import decimal
import io
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import QUICK, QUIET, compose_config, train_py_in_process
from lossheads.config.validators import ConfigError
from lossheads.data import ImageFolder, TableData

N = 40  # rows of each table: 20 a class, so every split holds >= 3 of each


def train_line(tmp_path: Path, *overrides: str) -> str:
    """`python train.py OVERRIDES` in-process: asserts exit 2, one line on stderr and no results; returns the line."""
    from lossheads.run.execute import EXIT_BAD_INPUT, main

    output_dir = tmp_path / "run"
    cfg = compose_config([*QUICK, *overrides], output_dir)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as stopped:
        main(cfg)
    lines = stderr.getvalue().strip().splitlines()
    assert stopped.value.code == EXIT_BAD_INPUT and len(lines) == 1 and lines[0].startswith("error: "), lines
    written = {p.name for p in output_dir.rglob("*")}
    assert not written & {"metrics.json", "last.ckpt", "predictions.npz"}, written
    return lines[0]


def table(**columns) -> pa.Table:
    return pa.table({**columns, "x": np.arange(N, dtype=np.float64), "label": np.arange(N) % 2})


def parquet(path: Path, **columns) -> Path:
    pq.write_table(table(**columns), path)
    return path


def repeat(value, arrow_type=None) -> pa.Array:
    return pa.array([value] * N, arrow_type)


UNUSABLE = {  # a Parquet column of each kind the table reader refuses: (its arrow array, what the line says)
    "datetime": (pa.array(pd.date_range("2024-01-01", periods=N)), "holds dates or times (datetime64"),
    "timezone": (repeat(datetime.datetime(2024, 1, 1), pa.timestamp("us", tz="UTC")), "holds dates or times"),
    "date": (repeat(datetime.date(2024, 1, 1)), "holds dates or times (date)"),
    "time": (repeat(datetime.time(12, 30)), "holds dates or times (time)"),
    "duration": (repeat(datetime.timedelta(days=1)), "holds durations"),
    "list": (repeat([1.0, 2.0]), "holds lists or maps"),
    "struct": (repeat({"a": 1, "b": 2}), "holds structs"),
    "map": (repeat([("k", 1)], pa.map_(pa.string(), pa.int64())), "holds lists or maps"),
    "bytes": (repeat(b"\x00\x01"), "holds bytes"),
}


@pytest.mark.parametrize("kind", list(UNUSABLE))
def test_parquet_columns_the_reader_cannot_use_are_refused_in_one_line(tmp_path, kind):
    """Not one-hot encoded by their text (a list column became one category per distinct list)."""
    values, said = UNUSABLE[kind]
    path = parquet(tmp_path / "t.parquet", odd=values)
    line = train_line(tmp_path, "data=table", f"data.path={path}")
    assert f"data.path='{path}': column 'odd' {said}" in line, line
    assert "leave it out with data.feature_columns" in line
    kept = TableData(path=str(path), feature_columns=["x"])  # the fix the line gives
    kept.setup()
    assert kept.input_shape == (1,)


def test_an_unusable_label_column_is_refused_in_one_line(tmp_path):
    pq.write_table(pa.table({"x": np.arange(N, dtype=float), "label": repeat([0, 1])}), tmp_path / "t.parquet")
    with pytest.raises(ConfigError, match=r"column 'label' holds lists or maps.*labels are class names or indices"):
        TableData(path=str(tmp_path / "t.parquet")).setup()


def test_decimals_and_number_text_are_read_as_numbers(tmp_path):
    """Parquet decimals (and an .npz of number strings) are numbers, not 40 one-hot categories."""
    path = parquet(tmp_path / "t.parquet", price=pa.array([decimal.Decimal(f"{i}.25") for i in range(N)]))
    data = TableData(path=str(path))
    data.setup()
    assert data.preprocessing()["table"]["numeric"] == ["price", "x"] and data.input_shape == (2,)
    np.savez(tmp_path / "t.npz", a=np.array([f"{i}.5" for i in range(N)]), label=np.arange(N) % 2)
    npz = TableData(path=str(tmp_path / "t.npz"))
    npz.setup()
    assert npz.input_shape == (1,)


NPZ = {  # arrays of an .npz, and what the one line says
    "lengths": ({"X": np.zeros((N, 3)), "y": np.arange(N - 5) % 2}, "its X has 40 rows but y has 35 labels"),
    "3-D X": (
        {"X": np.zeros((N, 3, 2)), "y": np.arange(N) % 2},
        r"its X has shape \(40, 3, 2\); a table needs X "
        r"of shape \(samples, features\)",
    ),
    "1-D X": ({"X": np.zeros(N), "y": np.arange(N) % 2}, r"its X has shape \(40,\)"),
    "2-D y": ({"X": np.zeros((N, 3)), "y": np.zeros((N, 2))}, r"its y has shape \(40, 2\); one label per sample"),
    "columns": (
        {"a": np.zeros(N), "label": np.arange(N - 1) % 2},
        r"its arrays have shapes \{'a': \(40,\), "
        r"'label': \(39,\)\}",
    ),
}


@pytest.mark.parametrize("case", list(NPZ))
def test_npz_shapes_that_are_not_a_table_are_refused_in_one_line(tmp_path, case):
    arrays, said = NPZ[case]
    np.savez(tmp_path / "t.npz", **arrays)
    line = train_line(tmp_path, "data=table", f"data.path={tmp_path / 't.npz'}")
    assert line.startswith(f"error: data.path='{tmp_path / 't.npz'}' is not valid: ")
    assert re.search(said, line), line


@pytest.mark.parametrize(
    ("name", "content", "said"),
    [
        ("t.parquet", b"PAR1 not really" * 8, "not a readable Parquet file (Parquet magic bytes not found"),
        ("t.npz", b"PK\x03\x04 not really", "not a readable .npz (File is not a zip file)"),
        ("t.npz", b"\x93NUMPY", "not a readable .npz"),
    ],
)  # fmt: skip
def test_damaged_parquet_and_npz_files_are_refused_in_one_line(tmp_path, name, content, said):
    (tmp_path / name).write_bytes(content)
    assert said in train_line(tmp_path, "data=table", f"data.path={tmp_path / name}")


def test_an_npy_saved_under_an_npz_name_is_refused_in_one_line(tmp_path):
    with (tmp_path / "t.npz").open("wb") as handle:
        np.save(handle, np.zeros((N, 3)))
    with pytest.raises(ConfigError, match=r"it holds one unnamed array, not a table: save it with numpy.savez"):
        TableData(path=str(tmp_path / "t.npz")).setup()


def test_a_csv_that_is_not_its_detected_encoding_further_down_is_refused_in_one_line(tmp_path):
    """The encoding is detected on the first 64 kB; a Latin-1 byte after them is named, not a traceback."""
    rows = "a,b,label\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(20_000))
    (tmp_path / "t.csv").write_bytes(rows.encode() + "Köln,1,0\n".encode("latin-1"))
    line = train_line(tmp_path, "data=table", f"data.path={tmp_path / 't.csv'}")
    assert "it is not utf-8 text further down" in line and "data.encoding=latin-1" in line, line


def test_a_10000_column_csv_is_read(tmp_path):
    """Its header alone (150 kB) is longer than the first read of the file (64 kB)."""
    names = [f"feature_{i:05d}" for i in range(10_000)]
    values = np.random.default_rng(0).integers(0, 9, size=(30, 10_000))
    lines = [",".join([*names, "label"])] + [",".join([*map(str, row), str(i % 2)]) for i, row in enumerate(values)]
    (tmp_path / "wide.csv").write_text("\n".join(lines) + "\n")
    data = TableData(path=str(tmp_path / "wide.csv"))
    data.setup()
    assert data.input_shape == (10_000,) and data.preprocessing()["table"]["columns"][-1] == "feature_09999"
    assert data.num_classes == 2 and len(data.split_indices["train"]) + len(data.split_indices["val"]) == 24


@pytest.mark.parametrize("width", [10, 70_000, 1_000_000])  # characters of each column name
@pytest.mark.parametrize("delimiter", [",", ";"])
def test_the_layout_is_found_whatever_the_header_length(tmp_path, width, delimiter):
    from lossheads.data.table_files import CsvLayout

    names = ["a" * width, "b" * width, "label"]
    rows = [delimiter.join(names)] + [delimiter.join([str(i), str(i * 2), str(i % 2)]) for i in range(40)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    layout = CsvLayout(tmp_path / "t.csv", encoding=None, delimiter=None, skip_rows=None)
    assert (layout.columns, layout.delimiter, layout.has_header, layout.skip_rows) == (names, delimiter, True, 0)


def test_a_value_past_float32_is_named_as_overflowing_not_infinite(tmp_path):
    rows = [f"{i},{'1e39' if i == 5 else i * 0.5},{i % 2}" for i in range(N)]
    (tmp_path / "big.csv").write_text("id,a,label\n" + "\n".join(rows) + "\n")
    line = train_line(tmp_path, "data=table", f"data.path={tmp_path / 'big.csv'}")
    said = "overflows float32 (largest 3.403e+38): rescale the column, e.g. to other units or a log scale"
    assert line == f"error: data.path='{tmp_path / 'big.csv'}': column 'a' holds 1e+39 (data row 6), which {said}"
    (tmp_path / "inf.csv").write_text("a,label\n" + "\n".join(f"{'inf' if i == 7 else i},{i % 2}" for i in range(N)))
    with pytest.raises(ConfigError, match=r"column 'a' holds an infinite value \(data row 8\)$"):
        TableData(path=str(tmp_path / "inf.csv")).setup()
    np.savez(tmp_path / "big.npz", X=np.full((N, 2), -3e40), y=np.arange(N) % 2)
    with pytest.raises(ConfigError, match=r"column 'x0' holds -3e\+40 \(data row 1\), which overflows float32"):
        TableData(path=str(tmp_path / "big.npz")).setup()


def truncate(file: Path) -> None:
    content = file.read_bytes()
    file.write_bytes(content[: len(content) // 2])


def image_folder(root: Path, per_class: int = 15, suffix: str = ".png") -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(root / label / f"{i}{suffix}")
    return root


@pytest.mark.parametrize("in_memory", ["true", "false"])
@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_a_truncated_image_is_refused_in_one_line_before_training(tmp_path, in_memory, suffix):
    folder = image_folder(tmp_path / "images", suffix=suffix)
    data = ImageFolder(path=str(folder), in_memory=in_memory, num_workers=0)
    data.setup()
    bad = data.files[data.split_indices["val"][0]]  # a file that only validation reads
    truncate(bad)
    line = train_line(tmp_path, "data=image_folder", f"data.path={folder}", f"data.in_memory={in_memory}",
                      "model=cnn", "model.channels=[4]", "data.num_workers=0")  # fmt: skip
    assert line.startswith(f"error: data.path: {bad} is not a readable image (") and line.endswith("remove or fix it")


def test_a_bad_image_found_by_a_dataloader_worker_is_still_one_line(tmp_path):
    """A JPEG is only checked by decoding it: when a DataLoader worker finds it, torch rebuilds the error
    in the main process from the worker's traceback text; the message stays one line."""
    from torch.utils.data import DataLoader

    from lossheads.data.image_folder import DecodedFiles, UnreadableImage

    folder = image_folder(tmp_path / "images", per_class=2, suffix=".jpg")
    files = sorted(folder.rglob("*.jpg"))
    truncate(files[1])
    loader = DataLoader(DecodedFiles(files, np.zeros(len(files)), "L", (8, 8)), batch_size=4, num_workers=1)
    with pytest.raises(UnreadableImage) as raised:
        next(iter(loader))
    message = str(raised.value)
    assert message.startswith(f"data.path: {files[1]} is not a readable image (")
    assert message.endswith("remove or fix it") and "\n" not in message


def test_predict_refuses_a_truncated_image_in_one_line(train, tmp_path, monkeypatch, capsys):
    """`python predict.py ckpt_path=RUN data.path=FOLDER` decodes new images with the training reader:
    the same one line, exit 2, no output."""
    from lossheads.cli.predict import cli

    folder = image_folder(tmp_path / "images")
    train("data=image_folder", f"data.path={folder}", "model=cnn", "model.channels=[4]")
    truncate(folder / "cat" / "3.png")
    output = tmp_path / "predictions.csv"
    monkeypatch.setattr(sys, "argv", ["predict.py", f"ckpt_path={tmp_path / 'run'}", f"data.path={folder}",
                                      f"output={output}"])  # fmt: skip
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        cli()
    lines = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: data.path: {folder / 'cat' / '3.png'} is not a readable image (")
    assert not output.exists()


def test_predict_refuses_new_columns_of_the_wrong_kind_in_one_line(train, tmp_path):
    from lossheads.cli.predict import main as predict

    pq.write_table(table(a=np.arange(N) * 0.5), tmp_path / "train.parquet")
    train("data=table", f"data.path={tmp_path / 'train.parquet'}")
    dates = parquet(tmp_path / "dates.parquet", a=pa.array(pd.date_range("2024-01-01", periods=N)))
    new = [f"ckpt_path={tmp_path / 'run'}", f"output={tmp_path / 'p.csv'}"]
    with pytest.raises(ConfigError, match=r"column 'a' holds dates or times .*: give it the numbers or text the "
                       "training file had"):  # fmt: skip
        predict([*new, f"data.path={dates}"])
    big = parquet(tmp_path / "big.parquet", a=np.full(N, 1e39))
    with pytest.raises(ConfigError, match=r"column 'a' holds 1e\+39 \(data row 1\), which overflows float32"):
        predict([*new, f"data.path={big}"])
    assert not (tmp_path / "p.csv").exists()


def test_a_labels_csv_that_is_not_utf8_is_refused_in_one_line(tmp_path):
    folder = image_folder(tmp_path / "images")
    (tmp_path / "labels.csv").write_bytes(b"file,furry\n" + "cat/0.png,1 ü\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"data.labels_csv='.*labels.csv': not a UTF-8 CSV \('utf-8' codec can't "
                       r"decode byte 0xfc"):  # fmt: skip
        ImageFolder(path=str(folder), labels_csv=str(tmp_path / "labels.csv")).setup()


@pytest.mark.parametrize(("cell", "shown"), [("inf", "inf"), ("1e30", r"1e\+30")])
def test_a_label_that_is_no_class_index_is_refused_in_one_line(tmp_path, cell, shown):
    """It became a class named '-9223372036854775808'."""
    rows = [f"{i},{cell if i == 4 else i % 2}" for i in range(N)]
    (tmp_path / "t.csv").write_text("a,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(ConfigError, match=rf"label column 'label' holds {shown} \(data row 5\), not a class index"):
        TableData(path=str(tmp_path / "t.csv")).setup()


@pytest.mark.parametrize(
    "launcher",
    [[], ["hydra/launcher=seeds", "hydra.launcher.workers=1"], ["hydra/launcher=seeds", "hydra.launcher.workers=2"]],
    ids=["basic", "seeds", "seeds-workers"],
)
def test_a_file_where_a_job_folder_goes_stops_the_sweep_in_one_line(tmp_path: Path, launcher: list[str]) -> None:
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "1").write_text("not a folder")
    result = train_py_in_process("-m", *QUIET, "~hydra.callbacks.report", f"hydra.sweep.dir={sweep}", *launcher,
                                 "loss=bce_logits,ce", "seed=1", "trainer.max_epochs=1")  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: a job's folder '{sweep / '1'}' cannot be made: it is a file, not a folder: choose another "
        "folder, or move the file"
    )
    assert "Traceback" not in result.stderr
    assert (sweep / "1").read_text() == "not a folder"
