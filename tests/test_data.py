"""The in-memory data path, the splits, and every dataset's labels."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from lossheads.config.validators import ConfigError
from lossheads.data import (
    BreastCancer,
    CsvData,
    Digits,
    DigitsMultilabel,
    InMemoryBatches,
    SyntheticBinary,
    SyntheticMulticlass,
    SyntheticMultilabel,
)


def epoch(loader: InMemoryBatches, number: int) -> list[torch.Tensor]:
    loader.sampler.set_epoch(number)
    return [y for _, y in loader]


def test_batches_cover_every_sample_once_in_a_seeded_order():
    features = torch.arange(10, dtype=torch.float32).unsqueeze(1)
    loader = InMemoryBatches(features, torch.arange(10), 4, shuffle=True, seed=7)
    assert len(loader) == 3
    first = epoch(loader, 0)
    assert [len(b) for b in first] == [4, 4, 2]
    assert sorted(torch.cat(first).tolist()) == list(range(10))
    assert torch.equal(torch.cat(first), torch.cat(epoch(loader, 0)))  # same seed and epoch, same order
    assert not torch.equal(torch.cat(first), torch.cat(epoch(loader, 1)))
    other = InMemoryBatches(features, torch.arange(10), 4, shuffle=True, seed=8)
    assert not torch.equal(torch.cat(first), torch.cat(epoch(other, 0)))
    for x, y in loader:  # features and targets stay paired
        assert torch.equal(x.squeeze(1).long(), y)


def test_drop_last_and_unshuffled_order():
    loader = InMemoryBatches(torch.zeros(10, 1), torch.arange(10), 4, shuffle=True, drop_last=True)
    assert len(loader) == 2 and [len(y) for y in epoch(loader, 0)] == [4, 4]
    plain = InMemoryBatches(torch.zeros(10, 1), torch.arange(10), 4, shuffle=False)
    assert torch.cat([y for _, y in plain]).tolist() == list(range(10))


def test_split_is_stratified_seeded_and_standardized_on_train():
    data = BreastCancer(split_seed=3)
    data.setup()
    sizes = {k: len(v[1]) for k, v in data.splits.items()}
    assert sizes == {"train": 343, "val": 113, "test": 113}  # per class: round(0.2 * 212) + round(0.2 * 357)
    for _, targets in data.splits.values():  # 212 of 569 are malignant: ~37% in each split
        assert targets.float().mean().item() == pytest.approx(212 / 569, abs=0.01)
    train_x = data.splits["train"][0]
    assert train_x.mean(0).abs().max().item() < 1e-5
    assert train_x.std(0, unbiased=False).sub(1).abs().max().item() < 1e-4
    again = BreastCancer(split_seed=3)
    again.setup()
    assert torch.equal(again.splits["test"][0], data.splits["test"][0])


def test_embedded_datasets_know_their_task():
    found = {}
    for cls in (BreastCancer, Digits, DigitsMultilabel):
        data = cls()
        data.setup()
        found[data.name] = (data.task, data.num_classes, data.num_features)
    assert found == {
        "breast_cancer": ("binary", 2, 30),
        "digits": ("multiclass", 10, 64),
        "digits_multilabel": ("multilabel", 4, 64),
    }


def test_embedded_datasets_equal_scikit_learns_loaders_without_importing_it():
    """The CSVs that scikit-learn ships are parsed without importing scikit-learn (~0.3 s a run)."""
    import subprocess
    import sys

    code = ("import sys; from lossheads.data.embedded import sklearn_data; sklearn_data('breast_cancer'); "
            "sklearn_data('digits'); print('sklearn' in sys.modules)")  # fmt: skip
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    import sklearn.datasets

    from lossheads.data.embedded import sklearn_data

    for name in ("breast_cancer", "digits"):
        features, labels = sklearn_data(name)
        expected_features, expected_labels = getattr(sklearn.datasets, f"load_{name}")(return_X_y=True)
        np.testing.assert_array_equal(features, expected_features)
        np.testing.assert_array_equal(labels, expected_labels)
        assert features.dtype == expected_features.dtype and labels.dtype == expected_labels.dtype


@pytest.mark.parametrize("n_samples", [50, 2000])
def test_synthetic_generators_equal_scikit_learns_without_importing_it(n_samples):
    """The synthetic sets draw scikit-learn's make_classification and make_multilabel_classification
    themselves (its import costs ~0.7 s a run): the same arrays, dtypes included, over sizes, class counts,
    weights and every branch of the hypercube's vertex draw (a permutation, draws until unseen, a
    reservoir, more than 30 informative features)."""
    import subprocess
    import sys

    from sklearn.datasets import make_classification, make_multilabel_classification

    from lossheads.data.generators import gaussian_clusters, word_counts

    code = ("import sys; from lossheads.data import SyntheticLongTail, SyntheticMultilabel, SyntheticBinary; "
            "[d(val_fraction=0.1, test_fraction=0.1).load() for d in (SyntheticLongTail, SyntheticMultilabel, "
            "SyntheticBinary)]; print('sklearn' in sys.modules)")  # fmt: skip
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    long_tail = [0.3, 0.2, 0.15, 0.1, 0.08, 0.06, 0.05, 0.03, 0.02, 0.01]
    cases = [(1, 1, 2, None), (3, 1, 2, [0.9]), (20, 10, 2, [0.1]), (20, 10, 5, None), (4, 2, 4, [0.4, 0.3, 0.2]),
             (20, 10, 10, long_tail), (64, 32, 3, None), (7, 7, 3, None)]  # fmt: skip
    for n_features, informative, classes, weights in cases:
        for seed in (0, 5):
            expected = make_classification(n_samples=n_samples, n_features=n_features, n_informative=informative,
                                           n_redundant=0, n_classes=classes, n_clusters_per_class=1, weights=weights,
                                           flip_y=0.0, random_state=seed)  # fmt: skip
            for ours, theirs in zip(gaussian_clusters(n_samples, n_features, informative, classes, weights, seed),
                                    expected, strict=True):  # fmt: skip
                np.testing.assert_array_equal(ours, theirs)
                assert ours.dtype == theirs.dtype
    for n_features, classes, seed in [(20, 5, 0), (1, 2, 3), (5, 30, 1)]:
        expected = make_multilabel_classification(n_samples=n_samples, n_features=n_features, n_classes=classes,
                                                  n_labels=2, random_state=seed)  # fmt: skip
        for ours, theirs in zip(word_counts(n_samples, n_features, classes, 2, seed), expected, strict=True):
            np.testing.assert_array_equal(ours, theirs)
            assert ours.dtype == theirs.dtype


def test_digits_multilabel_labels_follow_the_digit():
    from sklearn.datasets import load_digits

    digits = load_digits().target
    data = DigitsMultilabel(val_fraction=0.1, test_fraction=0.1)
    labels = data.load().targets
    expected = {0: [1, 0, 0, 1], 3: [0, 0, 1, 0], 7: [0, 1, 1, 0], 8: [1, 1, 0, 1]}
    for digit, row in expected.items():
        assert labels[np.flatnonzero(digits == digit)[0]].tolist() == row


def test_synthetic_imbalance_noise_and_classes():
    imbalanced = SyntheticBinary(n_samples=2000, pos_fraction=0.1).load()
    assert imbalanced.targets.mean() == pytest.approx(0.1, abs=0.01)
    clean = SyntheticMulticlass(num_classes=4, n_samples=1000).load()
    noisy = SyntheticMulticlass(num_classes=4, n_samples=1000, label_noise=0.3).load()
    assert (clean.targets != noisy.targets).mean() == pytest.approx(0.3, abs=0.04)
    assert set(np.unique(clean.targets)) == {0, 1, 2, 3}
    multilabel = SyntheticMultilabel(num_classes=6, n_samples=500).load()
    assert multilabel.targets.shape == (500, 6) and multilabel.task == "multilabel"


@pytest.mark.parametrize(
    ("cls", "options", "message"),
    [
        (SyntheticBinary, {"pos_fraction": 1.0}, "data.pos_fraction=1.0 is not valid: use a number in (0, 1)"),
        (SyntheticBinary, {"n_samples": 10}, "data.n_samples=10 is not valid: use a whole number >= 50"),
        (SyntheticBinary, {"label_noise": -0.1}, "data.label_noise=-0.1 is not valid"),
        (SyntheticMulticlass, {"num_classes": 2}, "data.num_classes=2 is not valid: use a whole number >= 3"),
        (SyntheticMulticlass, {"n_features": 0}, "data.n_features=0 is not valid"),
        (BreastCancer, {"batch_size": 0}, "data.batch_size=0 is not valid: use a whole number >= 1"),
        (BreastCancer, {"val_fraction": 0.5, "test_fraction": 0.45}, "leave at least 10% of the data for training"),
    ],
)
def test_impossible_data_options_are_refused(cls, options, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        cls(**options).setup()


def write_csv(path, header: str, rows: list[str]) -> str:
    path.write_text("\n".join([header, *rows]) + "\n")
    return str(path)


def test_csv_binary_multiclass_multilabel_and_soft_labels(tmp_path):
    rows = [f"{i},{i % 7},{i % 2}" for i in range(40)]
    binary = CsvData(path=write_csv(tmp_path / "b.csv", "a,b,label", rows))
    binary.setup()
    assert (binary.task, binary.num_classes, binary.num_features) == ("binary", 2, 2)
    multi = CsvData(path=write_csv(tmp_path / "m.csv", "a,b,label", [f"{i},{i},{i % 3}" for i in range(40)]))
    multi.setup()
    assert (multi.task, multi.num_classes) == ("multiclass", 3)
    ml_rows = [f"{i},{i % 2},{(i // 2) % 2}" for i in range(40)]
    multilabel = CsvData(path=write_csv(tmp_path / "ml.csv", "a,y1,y2", ml_rows), label_columns=["y1", "y2"])
    multilabel.setup()
    assert (multilabel.task, multilabel.num_classes) == ("multilabel", 2)
    soft_rows = [f"{i},{0.25 if i % 2 else 0.75},{0.75 if i % 2 else 0.25}" for i in range(40)]
    soft = CsvData(
        path=write_csv(tmp_path / "s.csv", "a,p0,p1", soft_rows), label_columns=["p0", "p1"], soft_labels=True
    )
    soft.setup()
    assert soft.task == "multiclass" and soft.train_targets.dtype == torch.float32


@pytest.mark.parametrize(
    ("header", "rows", "options", "message"),
    [
        ("a,label", ["1,0", "nan,1", "2,1"], {}, "missing feature values in a (1): clean the file, or impute"),
        ("a,label", ["1,0", "inf,1", "2,1"], {}, "column 'a' holds an infinite value (data row 2)"),
        ("a,label", ["1,0", "2,1", "-inf,1"], {}, "column 'a' holds an infinite value (data row 3)"),
        ("a,label", ["1,0", "x,1", "2,1"], {}, "row 3, column 'a' holds 'x', not a number"),
        ("a,label", ["1,0", "2,0", "3,0"], {}, "the labels hold 1 class; a classifier needs >= 2"),
        ("a,label", ["1,0", "2,1", "3,5"], {"num_classes": 3}, "label 5 lies outside the classes 0..2"),
        ("a,label", ["1,0", "2,1.5"], {}, "labels must be class indices"),
        ("a,label", ["1,0", "2,1"], {"label_columns": ["y"]}, "the file has columns ['a', 'label']"),
    ],
)
def test_bad_csv_input_is_refused(tmp_path, header, rows, options, message):
    path = write_csv(tmp_path / "bad.csv", header, rows)
    with pytest.raises(ConfigError, match=re.escape(message)):
        CsvData(path=path, **options).setup()


def test_missing_csv_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=re.escape("no such file")):
        CsvData(path=str(tmp_path / "nope.csv"))
