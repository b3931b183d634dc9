"""`lossheads-predict ckpt_path=RUN data.path=FILE_OR_DIR [output=predictions.csv]` (in the repository
also `python predict.py ...`): score new data with a trained run, read exactly as the run read its own data.

The run folder is data: its `preprocessing.json` (standardization, category levels, label names,
image size) and `.hydra/config.yaml` say how to read the file and rebuild the network; a model
`_target_` outside lossheads is imported only when the command line names it too.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from lossheads.check import ConfigError, require
from lossheads.checkpoints import read_checkpoint, resolve_checkpoint
from lossheads.heads import Head
from lossheads.models import build_net
from lossheads.pairing import build_head_for

USAGE = "lossheads-predict ckpt_path=RUN_FOLDER_OR_CKPT data.path=FILE_OR_DIR [output=predictions.csv]"
HELP = f"""usage: {USAGE}
       (in the repository: python predict.py ...)

Scores a table (CSV, Parquet, .npz with the training file's columns) or a folder of images with a run
of lossheads-train, read as that run read its own data. Writes one row per input: its id, p_<label>
per class and the predicted label under the run's threshold.
  ckpt_path   the run folder (its checkpoints/last.ckpt) or a checkpoint file inside it
  data.path   the file or folder to score (a CSV may need data.delimiter, data.encoding or data.skip_rows)
  output      where to write (default predictions.csv in the current folder)
  model._target_   your own network's class, if the run used one (a run folder never chooses code)"""


def load_run(
    ckpt_value: Any, model_target: str | None
) -> tuple[Path, DictConfig, dict[str, Any], Head, torch.nn.Module]:
    """The run's config, preprocessing, head (with the run's threshold) and network with its weights."""
    require(bool(ckpt_value), "ckpt_path", ckpt_value, f"give the trained run: {USAGE}")
    ckpt = resolve_checkpoint("ckpt_path", ckpt_value, Path.cwd())
    run_dir = ckpt.parent.parent
    files = {name: run_dir / name for name in (".hydra/config.yaml", "preprocessing.json")}
    for file in files.values():
        require(file.is_file(), "ckpt_path", str(ckpt_value),
                f"{file} is missing: give a run folder written by this version of train.py")  # fmt: skip
    cfg = OmegaConf.load(files[".hydra/config.yaml"])
    prep = json.loads(files["preprocessing.json"].read_text())
    saved_target = str(cfg.model.get("_target_"))
    if not saved_target.startswith("lossheads."):
        require(model_target == saved_target, "model._target_", model_target,
                f"the run used your network {saved_target}: name it on the command line, "
                f"model._target_={saved_target} (a run folder never chooses code to import)")  # fmt: skip
    model_cfg = OmegaConf.masked_copy(cfg.model, [k for k in cfg.model if k not in ("weights", "compile")])
    head = build_head_for(cfg.head, cfg.loss, prep["task"], prep["num_classes"], run_threshold(run_dir, cfg))
    net = build_net(model_cfg, prep["input_shape"], head.num_logits)
    state = read_checkpoint("ckpt_path", ckpt)["state_dict"]
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
    return run_dir, cfg, prep, head, net.eval()


def run_threshold(run_dir: Path, cfg: DictConfig) -> float | torch.Tensor:
    """The threshold the run's own test predictions used: metrics.json's `threshold` where recorded
    (a number, or one per label), else the config's."""
    metrics_file = run_dir / "metrics.json"
    chosen = json.loads(metrics_file.read_text()).get("threshold") if metrics_file.is_file() else None
    chosen = cfg.get("threshold", 0.5) if chosen is None else chosen
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
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([id_name, *prob_names, "predicted"])
        for i, row_id in enumerate(ids):
            if task == "multilabel":
                label = ";".join(n for n, on in zip(names, preds[i], strict=True) if on)
            else:
                label = names[int(preds[i])]
            writer.writerow([row_id, *(f"{p:.6g}" for p in probs[i]), label])
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def main(argv: list[str]) -> Path:
    try:
        args = OmegaConf.from_dotlist(argv)
    except Exception as exc:  # noqa: BLE001 -- a malformed key=value is the user's input
        raise ConfigError(f"cannot read the arguments ({exc}): {USAGE}") from None
    unknown = sorted(set(args) - {"ckpt_path", "data", "output", "model"})
    require(not unknown, "arguments", unknown, f"use {USAGE}")
    data_options = OmegaConf.to_container(args.get("data") or {})
    path = Path(str(data_options.get("path") or ""))
    require(bool(data_options.get("path")) and path.exists(), "data.path", data_options.get("path"),
            f"give an existing file or folder to score: {USAGE}")  # fmt: skip
    model_target = (args.get("model") or {}).get("_target_")
    run_dir, _, prep, head, net = load_run(args.get("ckpt_path"), model_target)
    require("image" in prep or "table" in prep, "ckpt_path", str(run_dir),
            f"it trained on data={prep['data']}, a built-in set: predict reads tables or images")  # fmt: skip
    if "image" in prep:
        require(path.is_dir(), "data.path", str(path), "this run trained on images: give a folder of images")
        ids, features = image_inputs(prep, path)
    else:
        require(path.is_file(), "data.path", str(path), "this run trained on a table: give a CSV, Parquet or .npz")
        ids, features = table_inputs(prep, path, data_options)
    probs, preds = predict(head, net, features)
    output = Path(str(args.get("output") or "predictions.csv"))
    write_predictions(output, prep, ids, probs, preds)
    print(f"wrote {output}: {len(ids)} rows, {prep['task']} ({', '.join(prep['label_names'][:10])}), run {run_dir}")
    return output


def cli() -> None:
    """Entry point of `python predict.py` and `lossheads-predict`: a bad input is one line on stderr
    and exit code 2."""
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(HELP)
        return
    try:
        main(sys.argv[1:])
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
