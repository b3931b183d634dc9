"""What a run trained on is recorded (split.json), a teacher that saw the student's validation or test
samples is refused whatever option made it so, and `seed` vs `data.split_seed` mean what they say."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import QUICK, built, compose_config
from lossheads.config.validators import ConfigError
from lossheads.run.build import build
from lossheads.run.execute import run

SMALL = ["data=synthetic_binary", "data.n_samples=200", *QUICK]


def teacher(folder: Path, *overrides: str) -> str:
    run(compose_config([*SMALL, *overrides], folder))
    return str(folder / "checkpoints" / "last.ckpt")


def student(folder: Path, ckpt: str, *overrides: str):
    return build(compose_config([*SMALL, "loss=kd", f"teacher.ckpt_path={ckpt}", *overrides], folder))


@pytest.fixture(scope="module")
def base_teacher(tmp_path_factory) -> str:
    return teacher(tmp_path_factory.mktemp("teacher"))


def test_split_json_records_each_splits_samples(base_teacher):
    record = json.loads((Path(base_teacher).parent.parent / "split.json").read_text())
    assert record["data"] == "synthetic_binary" and record["samples"] == 200
    assert [len(record[s]) for s in ("train", "val", "test")] == [120, 40, 40]
    assert len(set(record["train"]) | set(record["val"]) | set(record["test"])) == 200


def test_the_same_teacher_is_accepted_with_its_split_whatever_the_students_seed(tmp_path, base_teacher):
    _, module = student(tmp_path / "a", base_teacher)
    assert module.teacher is not None
    _, module = student(tmp_path / "b", base_teacher, "seed=3", "data.split_seed=42")  # other init, same split
    assert module.teacher is not None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # the teacher's train split is 60% of each class from the 40% mark on: the student's test part
        (["data.val_fraction=0.1", "data.test_fraction=0.1"], "trained on 0 of the student's 40 validation and 40 of"),
        (["seed=7"], "the teacher trained on "),
        (["data.generator_seed=1"], "the teacher was trained on other data (synthetic_binary, 200 samples"),
        (["data.n_samples=300"], "the teacher was trained on other data (synthetic_binary, 300 samples"),
    ],
)
def test_a_teacher_from_another_split_or_dataset_is_refused(tmp_path, base_teacher, overrides, message):
    ckpt = teacher(tmp_path / "t", *overrides)
    with pytest.raises(ConfigError, match=re.escape(message)):
        student(tmp_path / "s", ckpt)
    del base_teacher


def _write_csv(path: Path, rows: np.ndarray) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["a", "b", "label"])
        writer.writerows(rows.tolist())


def test_a_teacher_from_another_csv_is_refused_and_one_from_the_same_accepted(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(120, 2))
    rows = np.column_stack([features, (features[:, 0] > 0).astype(int)])
    _write_csv(tmp_path / "data.csv", rows)
    _write_csv(tmp_path / "shuffled.csv", rows[rng.permutation(len(rows))])  # the same samples, another order
    _write_csv(tmp_path / "other.csv", np.column_stack([features + 1, rows[:, 2]]))
    csv_data = ["data=csv", *QUICK]
    for name in ("data", "shuffled", "other"):
        run(compose_config([*csv_data, f"data.path={tmp_path / f'{name}.csv'}"], tmp_path / name))
    student_data = [*csv_data, f"data.path={tmp_path / 'data.csv'}", "loss=kd"]
    ckpt = {
        name: f"teacher.ckpt_path={tmp_path / name / 'checkpoints' / 'last.ckpt'}"
        for name in ("data", "shuffled", "other")
    }
    assert build(compose_config([*student_data, ckpt["data"]], tmp_path / "s1"))[1].teacher is not None
    with pytest.raises(ConfigError, match="the teacher trained on .* of the student's 24 validation"):
        build(compose_config([*student_data, ckpt["shuffled"]], tmp_path / "s2"))
    with pytest.raises(ConfigError, match="trained on other data"):
        build(compose_config([*student_data, ckpt["other"]], tmp_path / "s3"))


def test_a_teacher_folder_without_split_json_is_refused(tmp_path, base_teacher):
    folder = Path(base_teacher).parent.parent
    moved = folder / "split.json.away"
    (folder / "split.json").rename(moved)
    try:
        with pytest.raises(ConfigError, match="split.json is missing, so what the teacher trained on is unknown"):
            student(tmp_path / "s", base_teacher)
    finally:
        moved.rename(folder / "split.json")


def _first_batch_and_weights(tmp_path: Path, name: str, *overrides: str):
    datamodule, module, _ = built([*SMALL, *overrides], tmp_path / name)
    features, _ = next(iter(datamodule.train_dataloader()))
    return datamodule.split_record, features, [p.detach().clone() for p in module.net.parameters()]


def test_seed_sets_init_and_order_and_split_seed_only_the_split(tmp_path):
    split_1, batch_1, init_1 = _first_batch_and_weights(tmp_path, "a", "seed=1", "data.split_seed=5")
    split_2, batch_2, init_2 = _first_batch_and_weights(tmp_path, "b", "seed=2", "data.split_seed=5")
    assert split_1 == split_2  # pinned split: the same samples in each split...
    assert not torch.equal(batch_1, batch_2)  # ...served in another order
    assert not torch.equal(init_1[0], init_2[0])  # and another initialization
    split_3, batch_3, init_3 = _first_batch_and_weights(tmp_path, "c", "seed=1", "data.split_seed=6")
    assert split_3["train"] != split_1["train"]  # another split...
    assert all(torch.equal(a, b) for a, b in zip(init_1, init_3, strict=True))  # ...the same initialization
    default = compose_config(["seed=9"], tmp_path / "d")
    assert default.data.split_seed == 9  # split_seed follows seed unless pinned


def test_a_seeds_groups_runs_hash_the_shared_samples_once() -> None:
    """The members of a seeds group share the loaded arrays (`keep_loaded`); each sample's hash, which
    split.json records, is computed once for them, and is the hash a run alone records."""
    from lossheads.data.base import LabeledArrays
    from lossheads.run.splits import sample_hashes

    rng = np.random.default_rng(0)
    data = LabeledArrays(rng.normal(size=(50, 3)), rng.integers(0, 2, size=50), "binary", 2)
    assert data.hashes == sample_hashes(data.features, data.targets)
    assert data.hashes is data.hashes  # cached
