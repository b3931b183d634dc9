"""Score new data with a trained run, read exactly as the run read its own data (the command is
`lossheads.cli.predict`).

The run folder is data: its `preprocessing.json` (standardization, category levels, label names,
image size; checksum verified) and the config its checkpoint carries (covered by the checkpoint's
checksum) say how to read the file and rebuild the network; a model `_target_` outside lossheads is
imported only when the command line names it too.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from lossheads.config.pairing import build_head_for
from lossheads.config.validators import require
from lossheads.heads import Head
from lossheads.models import build_net
from lossheads.run.atomic import write_text
from lossheads.run.checkpoints import checkpoint_config, read_checkpoint, resolve_checkpoint
from lossheads.run.sealed import read_sealed

log = logging.getLogger(__name__)
# the command's usage, named in its errors
USAGE = "lossheads-predict ckpt_path=RUN_FOLDER_OR_CKPT data.path=FILE_OR_DIR [output=predictions.csv]"


def load_run(
    ckpt_value: Any, model_target: str | None
) -> tuple[Path, DictConfig, dict[str, Any], Head, torch.nn.Module]:
    """The run's config, preprocessing, head (with the run's threshold) and network with its weights."""
    require(bool(ckpt_value), "ckpt_path", ckpt_value, f"give the trained run: {USAGE}")
    ckpt = resolve_checkpoint("ckpt_path", ckpt_value, Path.cwd())
    run_dir = ckpt.parent.parent
    prep_file = run_dir / "preprocessing.json"
    require(prep_file.is_file(), "ckpt_path", str(ckpt_value),
            f"{prep_file} is missing: give a run folder written by this version of train.py")  # fmt: skip
    prep = read_sealed("ckpt_path", ckpt_value, prep_file)  # checksum verified
    checkpoint = read_checkpoint("ckpt_path", ckpt)  # checksum verified
    # the config the checkpoint carries (covered by its checksum), not the editable .hydra/config.yaml
    cfg = OmegaConf.create(checkpoint_config(checkpoint) or {})
    require("model" in cfg, "ckpt_path", str(ckpt_value),
            "the checkpoint carries no config: give a checkpoint written by this version of train.py")  # fmt: skip
    saved_target = str(cfg.model.get("_target_"))
    if not saved_target.startswith("lossheads."):
        require(model_target == saved_target, "model._target_", model_target,
                f"the run used your network {saved_target}: name it on the command line, "
                f"model._target_={saved_target} (a run folder never chooses code to import)")  # fmt: skip
    model_cfg = OmegaConf.masked_copy(cfg.model, [k for k in cfg.model if k not in ("weights", "compile")])
    head = build_head_for(cfg.head, cfg.loss, prep["task"], prep["num_classes"], run_threshold(run_dir, cfg))
    net = build_net(model_cfg, prep["input_shape"], head.num_logits)
    state = checkpoint["state_dict"]
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
    return run_dir, cfg, prep, head, net.eval()


def run_threshold(run_dir: Path, cfg: DictConfig) -> float | torch.Tensor:
    """The threshold the run's own test predictions used. A number the run was given comes from the
    config its checkpoint carries (checksum verified); `threshold=auto` was tuned after training, so
    its value (a number, or one per label) is read from metrics.json, which carries no checksum, and
    a warning says so."""
    chosen = cfg.get("threshold", 0.5)
    if chosen == "auto":
        metrics_file = run_dir / "metrics.json"
        chosen = json.loads(metrics_file.read_text()).get("threshold") if metrics_file.is_file() else None
        log.warning("threshold=auto: the run's tuned threshold (%s) is read from %s, which carries no checksum",
                    chosen, metrics_file)  # fmt: skip
    if isinstance(chosen, list):
        return torch.tensor(chosen, dtype=torch.float32)
    return float(chosen) if isinstance(chosen, (int, float)) else 0.5


def table_inputs(prep: dict[str, Any], path: Path, data_options: dict[str, Any]) -> tuple[list[str], torch.Tensor]:
    """The new file's rows as the run's standardized features; the ID column (or row numbers) as ids."""
    from lossheads.data.table import CsvLayout, Table, file_columns, read_frame

    where = f"data.path={str(path)!r}"
    reader = {
        **prep["reader"],
        **{k: v for k, v in data_options.items() if k in ("encoding", "delimiter", "skip_rows")},
    }
    layout = None if path.suffix.lower() in (".parquet", ".pq", ".npz") else CsvLayout(path, **reader)
    columns = file_columns(path, layout)
    table = Table.from_state(prep["table"])
    known = set(prep["file_columns"])
    extra = [c for c in columns if c not in known]
    absent = [c for c in table.columns if c not in columns]
    require(not absent and not extra, "data.path", str(path),
            f"its columns differ from the training file's: missing {absent}, extra {extra}")  # fmt: skip
    id_column = prep.get("id_column")
    wanted = table.columns + ([id_column] if id_column and id_column in columns else [])
    frame = read_frame(path, wanted, layout)
    features, holes = table.encode(frame, where)
    if holes.any():
        features[np.isnan(features)] = np.take(np.asarray(prep["fill"], np.float32), np.nonzero(np.isnan(features))[1])
    features -= np.asarray(prep["mean"], np.float32)
    features /= np.asarray(prep["std"], np.float32)
    ids = frame[id_column].astype(str).tolist() if id_column in frame else [str(i) for i in range(len(frame))]
    return ids, torch.from_numpy(features)


def image_inputs(prep: dict[str, Any], folder: Path) -> tuple[list[str], torch.Tensor]:
    """Every image under the folder (sub-folders too), decoded to the run's channels and size."""
    from lossheads.data.image_folder import EXTENSIONS, decode
    from lossheads.data.images import ImageTransform

    files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in EXTENSIONS and f.is_file())
    require(len(files) > 0, "data.path", str(folder), f"no images ({sorted(EXTENSIONS)}) under it")
    image = prep["image"]
    pixels = torch.from_numpy(np.stack([decode(f, image["mode"], tuple(image["size"])) for f in files]))
    normalized = ImageTransform(prep["mean"], prep["std"])(pixels)
    return [str(f.relative_to(folder)) for f in files], normalized


@torch.no_grad()
def predict(head: Head, net: torch.nn.Module, features: torch.Tensor, batch_size: int = 1024):
    """The head's probabilities and predictions, batch by batch."""
    probs, preds = [], []
    for start in range(0, len(features), batch_size):
        logits = head.logits(net(features[start : start + batch_size]))
        probs.append(head.probabilities(logits))
        preds.append(head.predict(logits))
    return torch.cat(probs).numpy(), torch.cat(preds).numpy()


def write_predictions(path: Path, prep: dict[str, Any], ids: list[str], probs: np.ndarray, preds: np.ndarray) -> None:
    """One row per input: its id, p_<label> per class (binary: the positive class), the predicted
    label name (multi-label: the names predicted, joined by `;`). Written atomically."""
    names = prep["label_names"]
    task = prep["task"]
    id_name = prep.get("id_column") or "row"
    prob_names = [f"p_{names[1]}"] if probs.ndim == 1 else [f"p_{n}" for n in names]
    probs = probs.reshape(len(ids), -1)
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow([id_name, *prob_names, "predicted"])
    for i, row_id in enumerate(ids):
        if task == "multilabel":
            label = ";".join(n for n, on in zip(names, preds[i], strict=True) if on)
        else:
            label = names[int(preds[i])]
        writer.writerow([row_id, *(f"{p:.6g}" for p in probs[i]), label])
    write_text(path, buffer.getvalue())
