"""What a run trained, validated and tested on, recorded in its folder (`split.json`), so that a
distillation student can refuse a teacher that trained on the student's validation or test samples.

A sample is identified by a hash of its raw features and targets (8 bytes of BLAKE2b), not by its
row number: the same sample is recognized whichever option (split_seed, fractions, generator seed,
another file or row order) put it where. The dataset's fingerprint is the hash of its sorted sample
hashes, so it does not depend on row order.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from lossheads.config.validators import require
from lossheads.run.atomic import write_text

FILENAME = "split.json"
SPLITS = ("train", "val", "test")


def sample_hashes(features: np.ndarray, targets: np.ndarray) -> list[str]:
    """One hex hash per sample (row) of the raw features and targets, as loaded. Object arrays (e.g.
    file names of data decoded lazily) are hashed by their text, not by their pointers."""
    rows = np.asarray(features).reshape(len(features), -1)
    labels = np.ascontiguousarray(targets).reshape(len(targets), -1)
    if rows.dtype == object:
        as_bytes = ["\x1f".join(map(str, row)).encode() for row in rows]
    else:
        as_bytes = [row.tobytes() for row in np.ascontiguousarray(rows)]
    return [hashlib.blake2b(x + y.tobytes(), digest_size=8).hexdigest() for x, y in zip(as_bytes, labels, strict=True)]


def split_record(name: str, hashes: list[str], indices: dict[str, np.ndarray]) -> dict[str, Any]:
    """What `split.json` holds: the dataset's name, fingerprint and size, and each split's sample hashes."""
    fingerprint = hashlib.blake2b("".join(sorted(hashes)).encode(), digest_size=16).hexdigest()
    record: dict[str, Any] = {"data": name, "fingerprint": fingerprint, "samples": len(hashes)}
    record.update({split: [hashes[i] for i in indices[split]] for split in SPLITS})
    return record


def split_digest(record: dict[str, Any]) -> str:
    """A hash of which samples are in which split, in loader order: the same samples split otherwise
    (rows reordered in the file) give the same fingerprint but another digest."""
    text = "|".join(",".join(record[split]) for split in SPLITS)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def write_split(output_dir: Path, record: dict[str, Any]) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text(output_dir / FILENAME, json.dumps(record))


def check_teacher_split(key: str, checkpoint: Path, run_dir: Path, student: dict[str, Any]) -> None:
    """Refuse a teacher trained on another dataset (another fingerprint: other samples, generator
    seed or file), or on samples the student validates or tests on and does not itself train on (a
    sample duplicated across the student's own splits is no leak of the teacher's)."""
    path = run_dir / FILENAME
    require(path.is_file(), key, str(checkpoint),
            f"{path} is missing, so what the teacher trained on is unknown: retrain the teacher with this "
            "version of lossheads")  # fmt: skip
    try:
        teacher = json.loads(path.read_text())
        teacher_train = set(teacher["train"])
    except (OSError, ValueError, KeyError, TypeError):
        require(False, key, str(checkpoint), f"{path} is not a readable split record: retrain the teacher")
    require(teacher.get("fingerprint") == student["fingerprint"], key, str(checkpoint),
            f"the teacher was trained on other data ({teacher.get('data')}, {teacher.get('samples')} samples, "
            f"fingerprint {teacher.get('fingerprint')}) than the student's ({student['data']}, {student['samples']} "
            f"samples, fingerprint {student['fingerprint']}): train the teacher on the student's data")  # fmt: skip
    own = set(student["train"])
    seen = {split: len((teacher_train & set(student[split])) - own) for split in ("val", "test")}
    require(not any(seen.values()), key, str(checkpoint),
            f"the teacher trained on {seen['val']} of the student's {len(student['val'])} validation and "
            f"{seen['test']} of its {len(student['test'])} test samples (another split, data or file): train "
            "the teacher with the student's data, seed/data.split_seed and val/test fractions")  # fmt: skip
