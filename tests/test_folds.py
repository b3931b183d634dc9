"""Stratified k-fold cross-validation: `data.folds=K data.fold=i`."""

from __future__ import annotations

import numpy as np
import pytest

from lossheads.config.validators import ConfigError
from lossheads.data.base import stratified_split


def test_folds_share_the_test_split_and_their_validation_folds_partition_the_rest():
    labels = np.array([0] * 70 + [1] * 30)
    splits = [stratified_split(labels, 100, (0.2, 0.2), seed=7, fold=(5, i)) for i in range(5)]
    tests = [set(test) for _, _, test in splits]
    assert all(t == tests[0] for t in tests) and len(tests[0]) == 20
    vals = [set(val) for _, val, _ in splits]
    assert set().union(*vals) == set(range(100)) - tests[0] and sum(len(v) for v in vals) == 80
    for train, val, _ in splits:
        assert not set(train) & set(val) and len(train) + len(val) == 80
        assert labels[val].mean() == pytest.approx(0.3, abs=0.07)  # stratified: each fold keeps the class mix


def test_a_fold_outside_the_folds_is_refused(config):
    from lossheads.run.build import build

    with pytest.raises(ConfigError, match=r"data.fold=5 is not valid: use a fold from 0 to 4"):
        build(config("data.folds=5", "data.fold=5"))


def test_a_fold_run_trains_and_validates_on_its_fold(train):
    metrics = train("data.folds=4", "data.fold=1")
    assert metrics["status"] == "ok" and metrics["val/acc"] > 0.5


def test_folds_beyond_a_third_of_the_smallest_class_are_refused_in_one_line(tmp_path):
    """breast_cancer: 212 malignant, 357 benign; 42 malignant go to test, 170 stay, so at most 56 folds
    give every validation fold >= 3 of them (`data.folds=1000` validated on 1 sample, auroc 1.0)."""
    from lossheads.data import BreastCancer

    with pytest.raises(ConfigError) as refused:
        BreastCancer(folds=1000).setup()
    assert str(refused.value) == (
        "data.folds=1000 is not valid: class '1' has 170 samples outside the test split, so its smallest validation "
        "fold holds 0; every class needs >= 3 in each validation fold and in the test split: use data.folds=56 or "
        "fewer"
    )
    with pytest.raises(ConfigError, match=r"data.folds=57 .* so its smallest validation fold holds 2;"):
        BreastCancer(folds=57, fold=0).setup()  # refused on every fold: fold 56 would hold 2 malignant samples
    allowed = BreastCancer(folds=56, fold=55)
    allowed.setup()
    assert np.bincount(allowed.splits["val"][1].numpy()).min() >= 3


@pytest.mark.parametrize(("options", "message"), [
    ({"val_fraction": 0.05}, r"data.val_fraction=0.05 is not valid: it leaves class 'no' 2 validation sample\(s\) of "
                             r"its 40; every class needs >= 3 in validation and in test: use a larger "
                             r"data.val_fraction or more samples of that class"),
    ({"test_fraction": 0.05}, r"data.test_fraction=0.05 is not valid: it leaves class 'no' 2 test sample\(s\)"),
    ({"folds": 12}, r"data.folds=12 is not valid: class 'no' has 32 samples outside the test split.*use "
                    r"data.folds=10 or fewer"),
])  # fmt: skip
def test_a_split_that_leaves_a_class_fewer_than_3_evaluation_samples_is_refused(tmp_path, options, message):
    from lossheads.data import TableData

    path = tmp_path / "t.csv"
    path.write_text("a,label\n" + "".join(f"{i},{'yes' if i % 4 else 'no'}\n" for i in range(160)))
    with pytest.raises(ConfigError, match=message):
        TableData(path=str(path), **options).setup()
    fixed = {**options, **({"folds": 10} if "folds" in options else {k: 0.1 for k in options})}
    TableData(path=str(path), **fixed).setup()  # the line's fix is accepted


def test_multilabel_splits_need_3_samples(tmp_path):
    from lossheads.data.base import require_evaluable

    splits = {"train": np.arange(10, 30), "val": np.arange(2), "test": np.arange(2, 10)}
    with pytest.raises(ConfigError, match=r"the val split holds 2 sample\(s\); it needs >= 3"):
        require_evaluable(None, splits, (0.2, 0.2), None, [])
    with pytest.raises(ConfigError, match=r"data.folds=8 is not valid: 22 samples outside the test split give folds "
                       r"of 2; each needs >= 3: use data.folds=7 or fewer"):  # fmt: skip
        require_evaluable(None, splits, (0.2, 0.2), (8, 0), [])


def test_a_class_of_one_row_is_refused_with_what_to_do(tmp_path):
    from lossheads.data import TableData

    path = tmp_path / "stray.csv"
    path.write_text("a,label\n" + "".join(f"{i},{i % 3}\n" for i in range(120)) + "9,3\n")
    with pytest.raises(ConfigError, match=r"data.val_fraction=0.2 is not valid: it leaves class '3' 0 validation "
                       r"sample\(s\) of its 1; every class needs >= 3 in validation and in test: give that class >= 7 "
                       r"samples, or remove its rows$"):  # fmt: skip
        TableData(path=str(path)).setup()
