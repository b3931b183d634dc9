"""Reading a table file into a DataFrame: a CSV's layout (encoding, delimiter, header, rows to skip)
found from its first lines, Parquet through pyarrow, an .npz's arrays checked for a table's shapes.
A file that cannot be read is one line naming it and what is wrong (`read_errors`)."""

from __future__ import annotations

import contextlib
import csv
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lossheads.config.validators import ConfigError, require

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


def read_head(path: Path, columns: list[str], layout: CsvLayout, rows: int):
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
