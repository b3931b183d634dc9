"""JSON records that carry their own checksum: a file a later command reads to decide how to read
data (`preprocessing.json`) is verified when read, so that an edited or damaged copy is refused
instead of silently reading new data otherwise than the run read its own."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from lossheads.config.validators import ConfigError
from lossheads.run.atomic import write_text

CHECKSUM = "sha256"


def json_digest(record: dict[str, Any]) -> str:
    """SHA-256 of the record's canonical JSON (sorted keys), its checksum field left out."""
    body = {k: v for k, v in record.items() if k != CHECKSUM}
    return hashlib.sha256(json.dumps(body, sort_keys=True, allow_nan=True).encode()).hexdigest()


def write_sealed(path: Path, record: dict[str, Any]) -> None:
    """The record with its checksum, written atomically."""
    write_text(path, json.dumps({**record, CHECKSUM: json_digest(record)}, indent=2, allow_nan=True) + "\n")


def read_sealed(key: str, value: Any, path: Path) -> dict[str, Any]:
    """The record, checksum verified, or one line naming the command's `key=value`, the file and the fix."""
    start = f"{key}={str(value)!r} is not valid: {path}"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{start} cannot be read ({type(exc).__name__}): it is damaged; retrain the run") from None
    if not isinstance(record, dict) or CHECKSUM not in record:
        raise ConfigError(f"{start} carries no checksum (written by an earlier version of lossheads), so it "
                          "cannot be verified: retrain the run with this version")  # fmt: skip
    if record[CHECKSUM] != json_digest(record):
        raise ConfigError(
            f"{start} does not match its checksum (the file was edited or damaged), so new data would not be "
            "read as the run read its own: restore the run's own file, or retrain"
        )
    return {k: v for k, v in record.items() if k != CHECKSUM}
