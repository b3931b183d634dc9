"""Your own table: CSV (delimiter and encoding detected), Parquet or .npz, read with pandas/pyarrow.

Labels of any kind (strings, booleans, 1/2, -1/+1) become classes 0..C-1 in sorted order; feature
columns are numbers or categories (one-hot encoded); columns that are not features (IDs, the
label, anything outside `feature_columns`) are never parsed as features. How a file becomes
features (`Table.encode`) is kept in `preprocessing.json` and reapplied to new files by predict.py.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lossheads.check import ConfigError, require, require_choice, require_int
from lossheads.data.base import ArrayDataModule, LabeledArrays

MISSING = ("refuse", "mean", "median", "zero")
MAX_LEVELS = 50  # a text column with more distinct values is an ID or free text, not a category
DELIMITERS = ",;\t|"
SNIFF_LINES = 20  # lines shown to csv.Sniffer to detect the delimiter
BOM = b"\xef\xbb\xbf"


def is_number_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def split_line(line: str, delimiter: str) -> list[str]:
    """One CSV line's cells, however long a cell is (the csv module refuses cells over 128 kB by default;
    pandas, which reads the rows, has no such limit)."""
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, len(line) + 1))
    try:
        return next(csv.reader([line], delimiter=delimiter), [])
    finally:
        csv.field_size_limit(limit)


class CsvLayout:
    """How to read a CSV: encoding, delimiter, rows to skip, and the column names when the file has
    no header row (scikit-learn's own CSVs: a first line `n_samples,n_features,class names...`)."""

    def __init__(self, path: Path, encoding: str | None, delimiter: str | None, skip_rows: int | None) -> None:
        raw, whole = head_bytes(path, (skip_rows or 1) + SNIFF_LINES + 1)
        self.encoding = encoding or self.detect_encoding(raw)
        require(self.encoding.startswith("utf-16") or b"\x00" not in raw, "data.path", str(path),
                "it is not a text table (it holds NUL bytes): give a CSV of UTF-8, UTF-16 or Latin-1 text, "
                "a Parquet or an .npz file")  # fmt: skip
        text = raw.decode(self.encoding, errors="ignore").removeprefix("\ufeff")
        lines = text.splitlines() if whole else text.splitlines()[:-1]  # the last line may be cut
        lines = [line for line in lines if line.strip()]
        require(len(lines) >= 2, "data.path", str(path), "the file needs a header row and at least one data row")
        self.skip_rows = skip_rows or 0
        self.class_names: list[str] = []
        first = lines[0]
        self.delimiter = delimiter or self.detect_delimiter(lines[self.skip_rows + (1 if skip_rows is None else 0) :])
        cells = split_line(first, self.delimiter)
        if skip_rows is None and self.is_sklearn_counts(cells, lines[1]):
            self.skip_rows, self.class_names = 1, [c.strip() for c in cells[2:]]
        require(len(lines) > self.skip_rows + 1, "data.skip_rows", self.skip_rows, "it skips every row of the file")
        header = [c.strip() for c in split_line(lines[self.skip_rows], self.delimiter)]
        self.has_header = not all(is_number_text(c) for c in header)
        # no header row (scikit-learn's layout): x0, x1, ... and the last column is the label
        self.columns = header if self.has_header else [f"x{i}" for i in range(len(header) - 1)] + ["label"]

    @staticmethod
    def detect_encoding(raw: bytes) -> str:
        if raw.startswith(BOM):
            return "utf-8-sig"
        if raw.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16's byte order mark (Excel's "Unicode text")
            return "utf-16"
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.start < len(raw) - 3:  # not merely a character cut by the 64 kB read
                return "latin-1"
        return "utf-8"

    @staticmethod
    def detect_delimiter(lines: list[str]) -> str:
        try:
            return csv.Sniffer().sniff("\n".join(lines[:SNIFF_LINES]), delimiters=DELIMITERS).delimiter
        except csv.Error:
            return ","

    def is_sklearn_counts(self, cells: list[str], second_line: str) -> bool:
        """`150,4,setosa,versicolor,virginica` above rows of 4 features and a label."""
        widths = len(split_line(second_line, self.delimiter))
        return len(cells) >= 2 and cells[0].strip().isdigit() and cells[1].strip().isdigit() and \
            int(cells[1]) == widths - 1  # fmt: skip

    def options(self) -> dict[str, Any]:
        return {"encoding": self.encoding, "delimiter": self.delimiter, "skip_rows": self.skip_rows}


def head_bytes(path: Path, lines: int) -> tuple[bytes, bool]:
    """The file's first bytes: 64 kB, or more until they hold `lines` line ends (a 10,000-column
    header alone is longer than 64 kB). Also whether that is the whole file."""
    with path.open("rb") as handle:
        raw = handle.read(1 << 16)
        while raw.count(b"\n") < lines:
            more = handle.read(len(raw))
            if not more:
                return raw, True
            raw += more
        return raw, not handle.read(1)


def file_columns(path: Path, layout: CsvLayout | None) -> list[str]:
    """The column names of a file, without reading its rows (an .npz: after checking its arrays' shapes)."""
    if layout is not None:
        return layout.columns
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        with read_errors(path, layout):
            return list(pq.read_schema(path).names)
    return list(npz_table(path))


def npz_table(path: Path) -> dict[str, np.ndarray]:
    """The columns of an .npz: X (N, F) and y (N,) become x0.. and label; otherwise each array, 1-D and
    of one length, is a column. Any other shape is refused: one line naming the array and its shape."""
    import zipfile

    where = f"data.path={str(path)!r}"
    try:
        with np.load(path, allow_pickle=False) as arrays:
            loaded = {key: arrays[key] for key in arrays.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"{where}: not a readable .npz ({exc}): save it with numpy.savez(path, X=..., y=...)") \
            from None  # fmt: skip
    except TypeError:  # np.load gave one array (a .npy renamed), not a file of named arrays
        raise ConfigError(f"{where}: it holds one unnamed array, not a table: save it with "
                          "numpy.savez(path, X=features, y=labels)") from None  # fmt: skip
    if "X" in loaded and "y" in loaded:
        features, labels = loaded["X"], loaded["y"]
        require(features.ndim == 2, "data.path", str(path), f"its X has shape {features.shape}; a table needs X of "
                "shape (samples, features): reshape it, e.g. X.reshape(len(X), -1)")  # fmt: skip
        require(labels.ndim == 1, "data.path", str(path), f"its y has shape {labels.shape}; one label per sample "
                "(samples,) is read: for several labels save one 1-D array per column and name them in "
                "data.label_columns")  # fmt: skip
        require(len(features) == len(labels), "data.path", str(path),
                f"its X has {len(features)} rows but y has {len(labels)} labels: give one label per row")  # fmt: skip
        return {**{f"x{i}": features[:, i] for i in range(features.shape[1])}, "label": labels}
    shapes = {key: array.shape for key, array in loaded.items()}
    require(len(loaded) > 0, "data.path", str(path), "it holds no arrays: save X and y with numpy.savez")
    require(all(len(shape) == 1 for shape in shapes.values()) and len({s[0] for s in shapes.values()}) == 1,
            "data.path", str(path), f"its arrays have shapes {shapes}: give X (samples, features) and y "
            "(samples,), or one 1-D array per column, all of one length")  # fmt: skip
    return loaded


@contextlib.contextmanager
def read_errors(path: Path, layout: CsvLayout | None) -> Iterator[None]:
    """A file that cannot be parsed (a CSV row with extra cells, bytes that are not its encoding, a
    damaged Parquet file) becomes one line naming the file and what the parser said."""
    import pandas as pd

    where = f"data.path={str(path)!r}"
    try:
        with warnings.catch_warnings():  # a number past float32's range: named by Table.encode, not a warning
            warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)
            yield
    except pd.errors.ParserError as exc:
        said = " ".join(str(exc).split())
        raise ConfigError(f"{where}: it cannot be read as a table ({said}): give every row the header's cells") \
            from None  # fmt: skip
    except UnicodeDecodeError as exc:
        assert layout is not None
        raise ConfigError(f"{where}: it is not {layout.encoding} text further down ({exc.reason}): give its "
                          "encoding, e.g. data.encoding=latin-1") from None  # fmt: skip
    except (OSError, ValueError) as exc:
        if layout is not None:  # a CSV's ValueError: a word in a float32 column, found and named by the caller
            raise
        raise ConfigError(f"{where}: not a readable Parquet file ({' '.join(str(exc).split())})") from None


def read_frame(path: Path, columns: list[str], layout: CsvLayout | None, numeric: Sequence[str] = ()):
    """The named columns of the file as a DataFrame; `numeric` columns are parsed as float32."""
    import pandas as pd

    if layout is None and path.suffix.lower() in (".parquet", ".pq"):
        with read_errors(path, layout):
            return pd.read_parquet(path, columns=columns)
    if layout is None:
        arrays = npz_table(path)
        return pd.DataFrame({c: arrays[c] for c in columns})
    options = dict(sep=layout.delimiter, encoding=layout.encoding, skiprows=layout.skip_rows, skipinitialspace=True)
    with read_errors(path, layout):
        if layout.has_header:
            wanted = set(columns)
            frame = pd.read_csv(path, header=0, usecols=lambda c: c.strip() in wanted, **options,
                                dtype={c: np.float32 for c in numeric} or None)  # fmt: skip
            frame.columns = [c.strip() for c in frame.columns]
        else:
            frame = pd.read_csv(path, header=None, names=layout.columns, usecols=columns, **options,
                                dtype={c: np.float32 for c in numeric} or None)  # fmt: skip
    return frame[columns]


def unusable_kind(values) -> str | None:
    """What a column holds that no feature or label is made of, or None for numbers, booleans and text.

    Refused, not converted: dates, times and durations (which number a date becomes -- days since
    when? its weekday? -- is a modelling choice, and predict.py must make the same one), lists,
    structs, maps and bytes (one-hot encoding their text would make each distinct list a category),
    complex numbers. Decimals are numbers and are read as such.
    """
    import datetime
    import decimal

    import pandas as pd

    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return unusable_kind(pd.Series(dtype.categories))
    if pd.api.types.is_datetime64_any_dtype(dtype) or isinstance(dtype, pd.PeriodDtype):
        return f"dates or times ({dtype})"
    if pd.api.types.is_timedelta64_dtype(dtype):
        return f"durations ({dtype})"
    if pd.api.types.is_complex_dtype(dtype):
        return f"complex numbers ({dtype})"
    if dtype.kind in "SV":  # a NumPy bytes or structured array (an .npz)
        return f"bytes or records ({dtype})"
    if not pd.api.types.is_object_dtype(dtype):
        return None
    kinds = {type(value) for value in values.dropna()}
    for kind in kinds:
        if issubclass(kind, (datetime.date, datetime.time, datetime.timedelta)):
            return f"dates or times ({kind.__name__})"
        if issubclass(kind, (list, tuple, np.ndarray)):
            return "lists or maps"
        if issubclass(kind, dict):
            return "structs"
        if issubclass(kind, (bytes, bytearray)):
            return "bytes"
        if not issubclass(kind, (str, bool, int, float, decimal.Decimal, np.number, np.bool_)):
            return f"{kind.__name__} values"
    return None


def require_usable(values, column: str, where: str, use: str) -> None:
    kind = unusable_kind(values)
    if kind is not None:
        raise ConfigError(f"{where}: column {column!r} holds {kind}, which the table reader does not convert: {use}")


FEATURE_USE = ("turn it into numbers or text first (e.g. a date into days since a fixed date, a list into one "
               "column per item), or leave it out with data.feature_columns")  # fmt: skip


class Table:
    """From a file's feature columns to a float32 matrix: numbers as they are, categories one-hot in
    sorted level order; missing values refused (column names and counts) or imputed. Built from the
    training file, saved as plain data, reapplied to new files. Columns of other kinds (dates, lists,
    structs, bytes) are refused: see `unusable_kind`."""

    def __init__(self, columns: list[str], numeric: list[str], categories: dict[str, list[str]], missing: str):
        self.columns, self.numeric, self.categories, self.missing = columns, numeric, categories, missing

    @property
    def feature_names(self) -> list[str]:
        names = []
        for column in self.columns:
            names += [f"{column}={level}" for level in self.categories[column]] if column in self.categories \
                else [column]  # fmt: skip
        return names

    @classmethod
    def infer(cls, frame, columns: list[str], missing: str, where: str, first_row: int) -> Table:
        """Numbers or categories, per column; a column of numbers with a stray word is refused."""
        import pandas as pd

        numeric, categories = [], {}
        for column in columns:
            values = frame[column]
            require_usable(values, column, where, FEATURE_USE)
            if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
                numeric.append(column)
                continue
            present = values.dropna()
            parsed = pd.to_numeric(present, errors="coerce")
            words = present[parsed.isna()]
            if len(words) == 0:  # numbers held as objects (Parquet decimals, an .npz of number strings)
                numeric.append(column)
                continue
            if len(words) * 2 < len(present):  # mostly numbers: a stray word is an error in the file
                row = words.index[0]
                raise ConfigError(
                    f"{where}: row {row + first_row}, column {column!r} holds {words.iloc[0]!r}, not a number "
                    "(the column is numbers elsewhere): fix the file or mark the cell missing"
                )
            levels = sorted(present.astype(str).unique().tolist())
            require(len(levels) <= MAX_LEVELS, "data.feature_columns", column,
                    f"{len(levels)} distinct text values (an ID?): leave it out of data.feature_columns, or give it "
                    f"as data.id_column; at most {MAX_LEVELS} categories are one-hot encoded")  # fmt: skip
            categories[column] = levels
        return cls(list(columns), numeric, categories, missing)

    def encode(self, frame, where: str, source: Callable[[str], Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(float32 features with NaN where a value is missing, a row mask of missing values).

        A value past float32's range (|x| > 3.4e38) is named as such, not as infinite; `source`, if
        given, returns a column as the file holds it, for a frame already read as float32."""
        import pandas as pd

        n = len(frame)
        out = np.empty((n, len(self.feature_names)), dtype=np.float32)
        missing = np.zeros(n, dtype=bool)
        counts: dict[str, int] = {}
        j = 0
        for column in self.columns:
            values = frame[column]  # (infer has checked a training file's columns; this is a new file's)
            require_usable(values, column, where, "give it the numbers or text the training file had")
            if column in self.categories:
                levels = self.categories[column]
                codes = pd.Categorical(values.astype("string"), categories=levels).codes
                absent = values.isna().to_numpy()
                unseen = (codes < 0) & ~absent
                if unseen.any():
                    raise ConfigError(f"{where}: column {column!r} holds {values[unseen].iloc[0]!r}, not one of its "
                                      f"training categories {levels[:8]}")  # fmt: skip
                block = out[:, j : j + len(levels)]
                block[:] = 0.0
                block[np.flatnonzero(codes >= 0), codes[codes >= 0]] = 1.0
                block[absent] = np.nan
                hole, j = absent, j + len(levels)
            else:
                try:
                    numbers = pd.to_numeric(values, errors="raise")
                except (ValueError, TypeError):
                    raise ConfigError(f"{where}: column {column!r} holds text where the training file had numbers") \
                        from None  # fmt: skip
                with np.errstate(over="ignore"):
                    out[:, j] = numbers.to_numpy(dtype=np.float32, na_value=np.nan)
                infinite = np.flatnonzero(np.isinf(out[:, j]))
                if len(infinite):
                    row = int(infinite[0])
                    if numbers.dtype == np.float32 and source is not None:
                        numbers = pd.to_numeric(source(column))
                    raise infinite_value(where, column, row, float(numbers.iloc[row]))
                hole, j = np.isnan(out[:, j]), j + 1
            if hole.any():
                counts[column] = int(hole.sum())
                missing |= hole
        if counts and self.missing == "refuse":
            listed = ", ".join(f"{c} ({k})" for c, k in counts.items())
            raise ConfigError(f"{where}: missing feature values in {listed}: clean the file, or impute them with "
                              "data.missing=mean|median|zero")  # fmt: skip
        return out, missing

    def state(self) -> dict[str, Any]:
        return {"columns": self.columns, "numeric": self.numeric, "categories": self.categories,
                "missing": self.missing}  # fmt: skip

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Table:
        return cls(list(state["columns"]), state["numeric"], state["categories"], state["missing"])


def infinite_value(where: str, column: str, row: int, value: float) -> ConfigError:
    """An infinite feature: one the file spells as such, or a number float32 cannot hold."""
    if np.isfinite(value):
        return ConfigError(f"{where}: column {column!r} holds {value:g} (data row {row + 1}), which overflows "
                           f"float32 (largest {np.finfo(np.float32).max:.4g}): rescale the column, e.g. to other "
                           "units or a log scale")  # fmt: skip
    return ConfigError(f"{where}: column {column!r} holds an infinite value (data row {row + 1})")


def impute_and_standardize(features: np.ndarray, rows: np.ndarray, missing: str) -> tuple[np.ndarray, ...]:
    """In place, with the statistics of `rows` (the training split): missing values become the
    column's mean, median or 0, then every column is standardized. Returns (fill, mean, std)."""
    train = features[rows]
    if missing == "median":
        fill = np.nanmedian(train, axis=0)
    elif missing == "mean":
        fill = np.nanmean(train, axis=0, dtype=np.float64)
    else:
        fill = np.zeros(features.shape[1])
    fill = np.nan_to_num(fill).astype(np.float32)  # a column missing in every training row: 0
    holes = np.isnan(features)
    if holes.any():
        features[holes] = np.take(fill, np.nonzero(holes)[1])
    train = features[rows]
    mean = train.mean(axis=0, dtype=np.float64)
    std = train.std(axis=0, dtype=np.float64)
    std[std == 0] = 1.0
    features -= mean.astype(np.float32)
    features /= std.astype(np.float32)
    return fill, mean, std


class TableData(ArrayDataModule):
    name = "table"

    def __init__(
        self,
        path: str | None = None,
        label_columns: str | Sequence[str] = "label",
        feature_columns: Sequence[str] | None = None,
        id_column: str | None = None,
        num_classes: int | None = None,
        soft_labels: bool = False,
        missing: str = "refuse",
        encoding: str | None = None,
        delimiter: str | None = None,
        skip_rows: int | None = None,
        **split_options: Any,
    ) -> None:
        super().__init__(**split_options)
        require(bool(path), "data.path", path, "give the file (CSV, Parquet or .npz), e.g. data.path=/data/train.csv")
        require(Path(str(path)).is_file(), "data.path", path, "no such file; give an existing CSV, Parquet or .npz")
        labels = [label_columns] if isinstance(label_columns, str) else list(label_columns)
        require(len(labels) >= 1, "data.label_columns", label_columns, "name at least one label column")
        if num_classes is not None:
            require_int("data.num_classes", num_classes, 2)
        require(not soft_labels or len(labels) >= 2, "data.soft_labels", soft_labels,
                "class-probability targets need one label column per class")  # fmt: skip
        if feature_columns is not None:
            require(len(feature_columns) > 0, "data.feature_columns", feature_columns,
                    "name at least one feature column, or null for every column that is not a label")  # fmt: skip
            listed = sorted(set(labels) & set(feature_columns))
            require(not listed, "data.feature_columns", listed, "a label column cannot also be a feature")
        require_choice("data.missing", missing, MISSING)
        if skip_rows is not None:
            require_int("data.skip_rows", skip_rows, 0)
        require(delimiter is None or (isinstance(delimiter, str) and len(delimiter) == 1), "data.delimiter",
                delimiter, "use one character, e.g. data.delimiter=';' (null: detected)")  # fmt: skip
        if encoding is not None:
            try:
                "".encode(encoding)
            except (LookupError, TypeError):
                raise ConfigError(f"data.encoding={encoding!r} is not valid: use e.g. utf-8 or latin-1") from None
        self.path, self.label_columns = Path(str(path)), labels
        self.feature_columns = None if feature_columns is None else list(feature_columns)
        self.id_column, self.num_classes_given, self.soft_labels = id_column, num_classes, soft_labels
        self.missing, self.reader = missing, {"encoding": encoding, "delimiter": delimiter, "skip_rows": skip_rows}
        self.label_names: list[str] = []

    def layout(self, path: Path) -> CsvLayout | None:
        if path.suffix.lower() in (".parquet", ".pq", ".npz"):
            return None
        return CsvLayout(path, **self.reader)

    def select_columns(self, columns: list[str]) -> list[str]:
        """The feature columns: named ones, or every column but labels, the ID and a pandas index."""
        where = f"data.path={str(self.path)!r}"
        duplicated = sorted(c for c, n in collections.Counter(columns).items() if n > 1)  # linear: 10,000 columns
        if duplicated:
            raise ConfigError(f"{where}: duplicated column names {duplicated}: rename them so each is unique")
        named = self.label_columns + (self.feature_columns or []) + ([self.id_column] if self.id_column else [])
        absent = [c for c in named if c not in columns]
        require(not absent, "data.label_columns/feature_columns/id_column", absent, f"the file has columns {columns}")
        if self.feature_columns is not None:
            return self.feature_columns
        index = [c for c in columns if c == "" or c.startswith("Unnamed: ")]  # pandas' to_csv index column
        features = [c for c in columns if c not in self.label_columns and c != self.id_column and c not in index]
        require(len(features) > 0, "data.feature_columns", features, "the file has no column besides the labels")
        return features

    def load(self) -> LabeledArrays:
        layout = self.layout(self.path)
        columns = file_columns(self.path, layout)
        features = self.select_columns(columns)
        where = f"data.path={str(self.path)!r}"
        first_row = (layout.skip_rows + (2 if layout.has_header else 1)) if layout else 0
        numeric: list[str] = []
        if layout is not None:  # numbers straight to float32: 4 bytes a cell in the frame, not 8 or an object
            numeric = Table.infer(_head(self.path, features, layout, 5000), features, "zero", where, first_row).numeric
        try:
            frame = read_frame(self.path, features + self.label_columns, layout, numeric=numeric)
        except ConfigError:
            raise
        except (ValueError, TypeError):  # a word further down a numeric column: found and named by infer
            frame = read_frame(self.path, features + self.label_columns, layout)
        table = Table.infer(frame, features, self.missing, where, first_row)
        self.table = table
        # read as float32, a cell of 1e39 and one of inf both arrive as inf: the column's text tells them apart
        matrix, _ = table.encode(frame, where, source=lambda column: read_frame(self.path, [column], layout)[column])
        targets, task, num_classes = self.labels(frame, where, layout)
        del frame
        self.reader_options = layout.options() if layout else {}
        self.file_columns = columns
        return LabeledArrays(matrix, targets, task, num_classes)

    def labels(self, frame, where: str, layout: CsvLayout | None) -> tuple[np.ndarray, str, int]:
        import pandas as pd

        values = frame[self.label_columns]
        for column in self.label_columns:
            require_usable(values[column], column, where, "labels are class names or indices; give such a column")
        absent = values.isna().sum()
        require(not absent.any(), "data.label_columns", self.label_columns,
                f"{int(absent.sum())} row(s) have no label: every row needs one")  # fmt: skip
        if len(self.label_columns) > 1:
            labels = values.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
            require(np.isfinite(labels).all(), "data.label_columns", self.label_columns, "they must hold numbers")
            self.label_names = list(self.label_columns)
            if self.soft_labels:
                ok = (labels >= 0).all() and np.allclose(labels.sum(axis=1), 1.0, atol=1e-3)
                require(ok, "data.soft_labels", True, "each row's label columns must be probabilities summing to 1")
                return labels.astype(np.float32), "multiclass", labels.shape[1]
            require(np.isin(labels, (0, 1)).all(), "data.label_columns", self.label_columns,
                    "multi-label columns must hold 0 or 1 (or set data.soft_labels=true)")  # fmt: skip
            return labels.astype(np.float32), "multilabel", labels.shape[1]
        column = values.iloc[:, 0]
        numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
        if numeric:
            raw = column.to_numpy(dtype=np.float64)
            require(bool((raw == np.round(raw)).all()), "data.label_columns", self.label_columns[0],
                    "labels must be class indices or names, not fractions (e.g. 1.5)")  # fmt: skip
        if self.num_classes_given is not None:
            require(numeric, "data.num_classes", self.num_classes_given, "give class indices 0..C-1, or leave it null")
            labels = raw.astype(np.int64)
            top = int(labels.max())
            require(top < self.num_classes_given and labels.min() >= 0, "data.num_classes", self.num_classes_given,
                    f"label {top} lies outside the classes 0..{self.num_classes_given - 1}")  # fmt: skip
            self.label_names = [str(i) for i in range(self.num_classes_given)]
            num_classes = self.num_classes_given
        else:
            kinds = raw.astype(np.int64) if numeric else column.to_numpy()
            if not numeric and not pd.api.types.is_bool_dtype(column):
                kinds = column.astype(str).str.strip().to_numpy()
            classes, labels = np.unique(kinds, return_inverse=True)
            names = [str(c.item() if hasattr(c, "item") else c) for c in classes]
            if layout is not None and layout.class_names and names == [str(i) for i in range(len(classes))] \
                    and len(layout.class_names) == len(classes):  # fmt: skip
                names = layout.class_names  # scikit-learn's header line names the classes
            self.label_names, num_classes = names, len(classes)
            if names != [str(i) for i in range(num_classes)]:
                print(f"data.label_columns={self.label_columns[0]}: "
                      + ", ".join(f"class {i} = {n!r}" for i, n in enumerate(names)))  # fmt: skip
        task = "binary" if num_classes == 2 else "multiclass"
        return labels.astype(np.int64), task, num_classes

    def prepare_features(self, features: np.ndarray, train: np.ndarray) -> Tensor:
        """Impute (with data.missing) and standardize in place, with the training split's statistics."""
        fill, mean, std = impute_and_standardize(features, train, self.missing)
        self.fill, self.standardization = fill, (mean, std)
        return torch.from_numpy(features)

    def preprocessing(self) -> dict[str, Any]:
        state = super().preprocessing()
        state.update(table=self.table.state(), fill=self.fill.tolist(), reader=self.reader_options,
                     file_columns=self.file_columns, label_columns=self.label_columns,
                     id_column=self.id_column)  # fmt: skip
        return state


def _head(path: Path, columns: list[str], layout: CsvLayout, rows: int):
    """The first `rows` rows, to tell numbers from categories before the full, typed read."""
    import pandas as pd

    options = dict(sep=layout.delimiter, encoding=layout.encoding, skiprows=layout.skip_rows, skipinitialspace=True,
                   nrows=rows)  # fmt: skip
    with read_errors(path, layout):
        if layout.has_header:
            wanted = set(columns)
            frame = pd.read_csv(path, header=0, usecols=lambda c: c.strip() in wanted, **options)
            frame.columns = [c.strip() for c in frame.columns]
            return frame[columns]
        return pd.read_csv(path, header=None, names=layout.columns, usecols=columns, **options)[columns]


class CsvData(TableData):
    """`data=csv`: the same reader under its earlier name."""

    name = "csv"
