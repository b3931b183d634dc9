"""Real datasets that ship inside scikit-learn: no download, so they work offline and in CI."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from lossheads.data.base import ArrayDataModule, LabeledArrays


@functools.cache
def _read(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(features, labels) as `sklearn.datasets.load_<name>(return_X_y=True)` gives them, once per
    process for the many runs of a sweep. The CSV that scikit-learn ships is parsed here without
    importing scikit-learn, which costs ~0.3 s of every run's start on 2 CPU cores; where the file is
    not where this scikit-learn keeps it, its loader reads it (tests/test_data.py compares the two)."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    folders = list(spec.submodule_search_locations or []) if spec else []
    files = {"breast_cancer": "breast_cancer.csv", "digits": "digits.csv.gz"}
    path = next((p for f in folders if (p := Path(f, "datasets", "data", files.get(name, ""))).is_file()), None)
    if path is None or name not in files:
        import sklearn.datasets

        return getattr(sklearn.datasets, f"load_{name}")(return_X_y=True)
    with gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8") as text:
        table = np.loadtxt(text, delimiter=",", skiprows=0 if path.suffix == ".gz" else 1)  # breast_cancer: a header
    return table[:, :-1], table[:, -1].astype(int)


def sklearn_data(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(features, labels) of `sklearn.datasets.load_<name>`, copies the caller may change."""
    features, labels = _read(name)
    return features.copy(), labels.copy()


class BreastCancer(ArrayDataModule):
    """Wisconsin breast cancer: 569 samples, 30 features, binary. Label 1 = malignant (37%):
    scikit-learn codes benign as 1, flipped here so that the positive class is the one to detect."""

    name = "breast_cancer"

    def load(self) -> LabeledArrays:
        features, labels = sklearn_data("breast_cancer")
        return LabeledArrays(features, 1 - labels, "binary", 2)


class Digits(ArrayDataModule):
    """8x8 handwritten digits: 1797 samples, 64 pixel features, 10 classes."""

    name = "digits"

    def load(self) -> LabeledArrays:
        features, labels = sklearn_data("digits")
        return LabeledArrays(features, labels, "multiclass", 10)


DIGIT_LABELS = {
    "even": {0, 2, 4, 6, 8},
    "at_least_5": {5, 6, 7, 8, 9},
    "prime": {2, 3, 5, 7},
    "closed_loop": {0, 4, 6, 8, 9},
}


class DigitsMultilabel(ArrayDataModule):
    """The digit images with four yes/no labels per image, a real multi-label task:
    is even, is >= 5, is prime, has a closed loop (0, 4, 6, 8, 9)."""

    name = "digits_multilabel"

    def load(self) -> LabeledArrays:
        features, digits = sklearn_data("digits")
        labels = np.stack([np.isin(digits, sorted(s)) for s in DIGIT_LABELS.values()], axis=1)
        self.label_names = list(DIGIT_LABELS)
        return LabeledArrays(features, labels.astype(np.float32), "multilabel", len(DIGIT_LABELS))
