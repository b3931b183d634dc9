"""The user's own CSV: a header row, numeric feature columns, one label column (binary or
multi-class) or several (multi-label 0/1, or class probabilities with `soft_labels=true`)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lossheads.check import ConfigError, require, require_int
from lossheads.data.base import ArrayDataModule, LabeledArrays


class CsvData(ArrayDataModule):
    name = "csv"

    def __init__(
        self,
        path: str | None = None,
        label_columns: str | Sequence[str] = "label",
        feature_columns: Sequence[str] | None = None,
        num_classes: int | None = None,
        soft_labels: bool = False,
        **split_options,
    ) -> None:
        super().__init__(**split_options)
        require(bool(path), "data.path", path, "give the CSV file, e.g. data.path=/data/train.csv")
        require(Path(str(path)).is_file(), "data.path", path, "no such file; give an existing CSV file")
        labels = [label_columns] if isinstance(label_columns, str) else list(label_columns)
        require(len(labels) >= 1, "data.label_columns", label_columns, "name at least one label column")
        if num_classes is not None:
            require_int("data.num_classes", num_classes, 2)
        require(not soft_labels or len(labels) >= 2, "data.soft_labels", soft_labels,
                "class-probability targets need one label column per class")  # fmt: skip
        self.path, self.label_columns = Path(str(path)), labels
        self.feature_columns = None if feature_columns is None else list(feature_columns)
        require(self.feature_columns is None or len(self.feature_columns) > 0, "data.feature_columns", [],
                "name at least one feature column, or leave it out (null) for all the non-label columns")  # fmt: skip
        used_as_label = [c for c in self.feature_columns or [] if c in labels]
        require(not used_as_label, "data.feature_columns", self.feature_columns,
                f"{used_as_label} is a label column; a label used as a feature gives the answer away")  # fmt: skip
        self.num_classes_given, self.soft_labels = num_classes, soft_labels

    def load(self) -> LabeledArrays:
        header, rows = self._read()
        repeated = sorted({c for c in header if header.count(c) > 1})
        require(not repeated, "data.path", str(self.path),
                f"the header repeats the column name(s) {repeated}; give every column its own name")  # fmt: skip
        missing = [c for c in self.label_columns + (self.feature_columns or []) if c not in header]
        require(not missing, "data.label_columns/feature_columns", missing, f"the CSV has columns {header}")
        features_names = self.feature_columns or [c for c in header if c not in self.label_columns]
        require(len(features_names) > 0, "data.feature_columns", features_names, "name at least one feature column")
        table = self._numbers(header, rows)
        features = table[:, [header.index(c) for c in features_names]]
        labels = table[:, [header.index(c) for c in self.label_columns]]
        if not np.isfinite(labels).all():
            raise ConfigError(f"data.path={self.path}: label columns hold NaN or inf; every row needs a label")
        if not np.isfinite(features).all():
            row = int(np.flatnonzero(~np.isfinite(features).all(axis=1))[0]) + 2
            raise ConfigError(f"data.path={self.path}: row {row} has a NaN or inf feature; clean or impute it")
        if len(self.label_columns) == 1:
            return self._single_label(features, labels[:, 0])
        if self.soft_labels:
            ok = (labels >= 0).all() and np.allclose(labels.sum(axis=1), 1.0, atol=1e-3)
            require(ok, "data.soft_labels", True, "each row's label columns must be probabilities summing to 1")
            return LabeledArrays(features, labels.astype(np.float32), "multiclass", labels.shape[1])
        require(np.isin(labels, (0, 1)).all(), "data.label_columns", self.label_columns,
                "multi-label columns must hold 0 or 1 (or set data.soft_labels=true)")  # fmt: skip
        return LabeledArrays(features, labels.astype(np.float32), "multilabel", labels.shape[1])

    def _read(self) -> tuple[list[str], list[list[str]]]:
        try:
            with self.path.open(newline="", encoding="utf-8-sig") as handle:
                reader = csv.reader(handle)
                header = next(reader, None)
                rows = [row for row in reader if row]
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ConfigError(
                f"data.path={self.path}: not a UTF-8 text CSV ({type(exc).__name__}: {str(exc)[:60]}); "
                "save it as UTF-8 CSV (e.g. pandas: df.to_csv(path, index=False))"
            ) from None
        require(header is not None and len(rows) > 0, "data.path", str(self.path), "the CSV has no data rows")
        return [h.strip() for h in header], rows

    def _numbers(self, header: list[str], rows: list[list[str]]) -> np.ndarray:
        table = np.empty((len(rows), len(header)))
        for r, row in enumerate(rows):
            require(len(row) == len(header), "data.path", str(self.path),
                    f"row {r + 2} has {len(row)} cells, the header {len(header)}")  # fmt: skip
            for c, cell in enumerate(row):
                try:
                    table[r, c] = float(cell) if cell.strip() else math.nan
                except ValueError:
                    raise ConfigError(
                        f"data.path={self.path}: row {r + 2}, column {header[c]!r} holds {cell!r}, not a number"
                    ) from None
        return table

    def _single_label(self, features: np.ndarray, labels: np.ndarray) -> LabeledArrays:
        column = self.label_columns[0]
        require((labels == np.round(labels)).all() and (labels >= 0).all(), "data.label_columns", column,
                "labels must be class indices 0, 1, ..., C-1")  # fmt: skip
        labels = labels.astype(np.int64)
        num_classes = self.num_classes_given or int(labels.max()) + 1
        require(num_classes <= max(len(labels), 2), "data.label_columns", column,
                f"label {int(labels.max())} means {num_classes} classes for {len(labels)} rows; labels must be "
                "class indices 0, 1, ..., C-1 (map other codes to indices first)")  # fmt: skip
        require(int(labels.max()) < num_classes, "data.num_classes", num_classes,
                f"label {int(labels.max())} lies outside the classes 0..{num_classes - 1}")  # fmt: skip
        return LabeledArrays(features, labels, "binary" if num_classes == 2 else "multiclass", num_classes)
