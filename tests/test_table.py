"""Real tabular files: the shapes users have (BOM, `;`, Latin-1, string labels, IDs, categories,
missing values, scikit-learn's own CSVs, Parquet, .npz), read as training and predictions need."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from lossheads.config.validators import ConfigError
from lossheads.data import TableData


def loaded(path: Path, **options) -> TableData:
    data = TableData(path=str(path), **options)
    data.setup()
    return data


def rows(n: int = 40) -> list[tuple[float, float, str]]:
    rng = np.random.default_rng(0)
    return [(round(float(rng.normal()), 3), round(float(rng.normal()), 3), "yes" if i % 3 else "no") for i in range(n)]


def test_bom_semicolons_string_labels_and_an_id_column(tmp_path, capsys):
    text = "id;a;b;label\n" + "".join(f"row{i};{a};{b};{y}\n" for i, (a, b, y) in enumerate(rows()))
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    data = loaded(path, id_column="id")
    assert data.reader_options["delimiter"] == ";" and data.reader_options["encoding"] == "utf-8-sig"
    assert (data.task, data.num_classes, data.input_shape, data.label_names) == ("binary", 2, (2,), ["no", "yes"])
    assert "class 0 = 'no', class 1 = 'yes'" in capsys.readouterr().out
    assert data.preprocessing()["table"]["columns"] == ["a", "b"]  # the ID is never a feature


@pytest.mark.parametrize(("values", "names"), [((1, 2), ["1", "2"]), ((-1, 1), ["-1", "1"]),
                                               (("True", "False"), ["False", "True"])])  # fmt: skip
def test_labels_of_any_kind_become_classes_in_sorted_order(tmp_path, values, names):
    path = tmp_path / "t.csv"
    path.write_text("a,label\n" + "".join(f"{i},{values[i % 2]}\n" for i in range(30)))
    data = loaded(path)
    assert (data.num_classes, data.label_names) == (2, names)  # 1/2 is two classes, not three with an empty 0
    assert sorted(set(data.train_targets.tolist())) == [0, 1]


def test_latin1_categories_and_a_pandas_index_column(tmp_path):
    cities = ["Zürich", "Genève", "Köln"]
    text = ",city,x,label\n" + "".join(f"{i},{cities[i % 3]},{i * 0.1},{i % 2}\n" for i in range(30))
    path = tmp_path / "latin.csv"
    path.write_bytes(text.encode("latin-1"))
    data = loaded(path)
    assert data.reader_options["encoding"] == "latin-1"
    table = data.preprocessing()["table"]
    assert table["columns"] == ["city", "x"]  # the unnamed index column is not a feature
    assert table["categories"] == {"city": sorted(cities)} and data.input_shape == (4,)  # one-hot city + x


def test_missing_values_are_refused_with_counts_or_imputed(tmp_path):
    lines = [f"{'' if i % 10 == 0 else i},{'NA' if i % 15 == 0 else 1.5},{i % 2}" for i in range(30)]
    path = tmp_path / "holes.csv"
    path.write_text("a,b,label\n" + "\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=re.escape("missing feature values in a (3), b (2): clean the file, or "
                                                    "impute them with data.missing=mean|median|zero")):  # fmt: skip
        loaded(path)
    for missing in ("mean", "median", "zero"):
        data = loaded(path, missing=missing)
        assert np.isfinite(data.splits["train"][0].numpy()).all()


@pytest.mark.parametrize(
    ("header", "options", "message"),
    [
        ("a,a,label", {}, "duplicated column names ['a']: rename them"),
        ("a,b,label", {"feature_columns": ["a", "label"]}, "data.feature_columns=['label'] is not valid: a label"),
        ("a,b,label", {"feature_columns": []}, "data.feature_columns=[] is not valid: name at least one"),
        ("a,b,label", {"delimiter": ";;"}, "data.delimiter=';;' is not valid: use one character"),
        ("a,b,label", {"encoding": "klingon"}, "data.encoding='klingon' is not valid"),
    ],
)
def test_bad_tables_are_refused_in_one_line(tmp_path, header, options, message):
    path = tmp_path / "bad.csv"
    path.write_text(header + "\n" + "".join(f"{i},{i},{i % 2}\n" for i in range(20)))
    with pytest.raises(ConfigError, match=re.escape(message)):
        loaded(path, **options)


def test_an_id_like_text_column_is_not_one_hot_encoded(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text("name,a,label\n" + "".join(f"user{i},{i},{i % 2}\n" for i in range(80)))
    with pytest.raises(ConfigError, match="data.feature_columns='name' is not valid: 80 distinct text values"):
        loaded(path)
    assert loaded(path, id_column="name").input_shape == (1,)


def test_scikit_learns_own_csv_is_detected(tmp_path):
    import sklearn

    iris = Path(sklearn.__file__).parent / "datasets" / "data" / "iris.csv"
    data = loaded(iris)
    assert (data.num_classes, data.input_shape, data.label_names) == (3, (4,), ["setosa", "versicolor", "virginica"])
    assert len(data.train_targets) + len(data.splits["val"][1]) + len(data.splits["test"][1]) == 150
    assert loaded(iris, skip_rows=1).input_shape == (4,)  # said explicitly: the same


def test_parquet_and_npz_read_like_csv(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"a": np.arange(30.0), "kind": ["x", "y", "z"] * 10, "label": ["cat", "dog"] * 15})
    frame.to_parquet(tmp_path / "t.parquet")
    data = loaded(tmp_path / "t.parquet")
    assert (data.input_shape, data.label_names) == ((4,), ["cat", "dog"])
    np.savez(tmp_path / "t.npz", X=np.random.default_rng(0).normal(size=(45, 3)), y=np.arange(45) % 3)
    npz = loaded(tmp_path / "t.npz")
    assert (npz.input_shape, npz.num_classes, npz.task) == ((3,), 3, "multiclass")


def test_a_utf16_export_is_read_and_a_binary_file_is_refused_in_one_line(tmp_path):
    text = "a,b,label\n" + "".join(f"{a},{b},{y}\n" for a, b, y in rows())
    path = tmp_path / "unicode.csv"
    path.write_text(text, encoding="utf-16")  # Excel's "Unicode text": a byte order mark, then UTF-16
    data = loaded(path)
    assert data.reader_options["encoding"] == "utf-16" and data.label_names == ["no", "yes"]
    binary = tmp_path / "photo.csv"
    binary.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ConfigError, match="it is not a text table \\(it holds NUL bytes\\)") as refused:
        loaded(binary)
    assert "\n" not in str(refused.value)
