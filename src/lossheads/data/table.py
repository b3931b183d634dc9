"""Your own table: CSV (delimiter and encoding detected), Parquet or .npz, read with pandas/pyarrow.

Labels of any kind (strings, booleans, 1/2, -1/+1) become classes 0..C-1 in sorted order; feature
columns are numbers or categories (one-hot encoded); columns that are not features (IDs, the
label, anything outside `feature_columns`) are never parsed as features. How a file becomes
features (`Table.encode`) is kept in `preprocessing.json` and reapplied to new files by predict.py.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lossheads.config.validators import ConfigError, require, require_choice, require_int
from lossheads.data.base import ArrayDataModule, LabeledArrays
from lossheads.data.table_files import CsvLayout, file_columns, read_frame, read_head

MISSING = ("refuse", "mean", "median", "zero")
MAX_LEVELS = 50  # a text column with more distinct values is an ID or free text, not a category


# what pandas' infer_dtype calls an object column of numbers, booleans or text alone (any mix: looked at)
READABLE_OBJECTS = {"empty", "string", "boolean", "integer", "floating", "mixed-integer-float", "decimal"}


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
    inferred = pd.api.types.infer_dtype(values, skipna=True)  # in C: a million strings in microseconds
    if inferred in READABLE_OBJECTS:
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
            if len(words) == 0 and len(present):  # numbers held as objects (Parquet decimals, an .npz of text)
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
            numeric = Table.infer(
                read_head(self.path, features, layout, 5000), features, "zero", where, first_row
            ).numeric
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
            odd = np.flatnonzero(~(np.abs(raw) < 2**53))  # inf, or past the whole numbers a float holds
            if len(odd):
                raise ConfigError(f"{where}: label column {self.label_columns[0]!r} holds {raw[odd[0]]:g} (data row "
                                  f"{odd[0] + 1}), not a class index: give class indices or names")  # fmt: skip
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
        """Impute (with data.missing) and standardize in place, with the training split's statistics;
        on a copy where the runs of a seeds group share the loaded arrays (`keep_loaded`)."""
        if getattr(self, "keep_loaded", False):
            features = features.copy()
        fill, mean, std = impute_and_standardize(features, train, self.missing)
        self.fill, self.standardization = fill, (mean, std)
        return torch.from_numpy(features)

    def preprocessing(self) -> dict[str, Any]:
        state = super().preprocessing()
        state.update(table=self.table.state(), fill=self.fill.tolist(), reader=self.reader_options,
                     file_columns=self.file_columns, label_columns=self.label_columns,
                     id_column=self.id_column)  # fmt: skip
        return state


class CsvData(TableData):
    """`data=csv`: the same reader under its earlier name."""

    name = "csv"
