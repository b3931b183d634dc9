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
