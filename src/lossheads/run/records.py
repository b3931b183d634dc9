"""What a run leaves in its folder once trained: the test of the chosen weights, metrics.json,
predictions.npz, per_class.json and the loggers' hyperparameters. One place for a run trained on
its own (train.py) and for a member of a vectorized-seeds group (lossheads.seeds)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from lossheads.config.validators import ConfigError
from lossheads.data import ArrayDataModule
from lossheads.evaluation.threshold import tune_threshold
from lossheads.run.atomic import write_bytes, write_text
from lossheads.run.checkpoints import read_checkpoint
from lossheads.run.folder import evaluation_names, fingerprint, outcome
from lossheads.run.loggers import log_run_hparams
from lossheads.run.resume import length_of
from lossheads.training.module import ClassifierModule, Diverged


@dataclass(frozen=True)
class Trained:
    """What training left for the record: epochs and optimizer steps done, where it resumed from."""

    epochs: int
    steps: int
    resumed_from: dict[str, Any] | None = None


def logged(trainer: Trainer, prefix: str) -> dict[str, float]:
    """The last values the module logged under `prefix` (callback_metrics is reset by the next stage)."""
    return {k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith(prefix)}


def write_metrics(path: Path, record: dict[str, Any]) -> None:
    """Atomically (a unique temporary name beside it, fsync, rename): a reader never sees half a file."""
    write_text(path, json.dumps(record, indent=2, allow_nan=True) + "\n")


def save_config(cfg: DictConfig, output_dir: Path) -> None:
    """The run's config beside its checkpoints (Hydra writes it for `python train.py`; runs started
    in-process or by a recipe get it here)."""
    config_file = output_dir / ".hydra" / "config.yaml"
    if not config_file.exists():
        write_text(config_file, OmegaConf.to_yaml(cfg))


Predictions = dict[str, tuple[torch.Tensor, torch.Tensor]]  # stage -> (probabilities, targets)


def module_predictions(module: ClassifierModule) -> Predictions:
    """The module's last val and test probabilities with their targets, joined over batches."""
    return {stage: (torch.cat([p for p, _ in batches]), torch.cat([t for _, t in batches]))
            for stage, batches in module.predictions.items() if batches}  # fmt: skip


def save_predictions(predictions: Predictions, path: Path) -> None:
    """The final model's val and test probabilities with their targets: what ROC, PR, reliability
    and threshold plots need, a few kB for these datasets."""
    arrays = {}
    for stage, (probabilities, targets) in predictions.items():
        arrays[f"{stage}_probs"] = probabilities.numpy()
        arrays[f"{stage}_targets"] = targets.numpy()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_bytes(path, buffer.getvalue())


def choose_threshold(
    trainer: Trainer, module: ClassifierModule, datamodule: ArrayDataModule, ckpt_path: str | None
) -> dict[str, float]:
    """`threshold=auto`: validate the weights to be tested (at threshold 0.5), set the head's threshold
    to the one that maximizes validation F1 (per label on multi-label data), and return the val metrics."""
    trainer.validate(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True, verbose=False)
    batches = module.predictions["val"]
    chosen = tune_threshold(torch.cat([p for p, _ in batches]), torch.cat([t for _, t in batches]))
    module.head.threshold = chosen if isinstance(chosen, float) else torch.tensor(chosen, device=module.device)
    return logged(trainer, "val/")


def threshold_value(threshold: float | torch.Tensor) -> float | list[float]:
    return threshold.tolist() if isinstance(threshold, torch.Tensor) else float(threshold)


def tested_weights(epochs: int, ckpt_path: str | None) -> dict[str, Any]:
    """Which weights `test/*` came from: `last` (the weights training ended with) or, evaluating a
    checkpoint, `last`/`best` by its file name (else the name), with the 0-based epoch they were
    saved at, as Lightning numbers epochs in checkpoint names and TensorBoard."""
    if ckpt_path is None:
        return {"test_weights": "last", "test_weights_epoch": epochs - 1}
    stem = Path(ckpt_path).stem
    kind = next((k for k in ("last", "best") if stem.startswith(k)), stem)
    return {"test_weights": kind, "test_weights_epoch": read_checkpoint("ckpt_path", Path(ckpt_path)).get("epoch")}


def test_and_record(
    cfg: DictConfig, trainer: Trainer, module: ClassifierModule, datamodule: ArrayDataModule,
    metrics: dict[str, float], ckpt_path: str | None, trained: Trained | None, beside: bool = False, *,
    config: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """Test the weights chosen (`ckpt_path`, or the module's own for None), after `threshold=auto`
    has set the threshold on validation, and write the run's records. `metrics`: the val/* numbers
    of the weights training ended with; `trained` None: an evaluation of `ckpt_path` only; `beside`:
    an evaluation written beside a training run's own record; `config`: the run's `resolved(cfg)`.
    Under DDP only rank 0 writes."""
    if cfg.threshold == "auto":
        metrics = choose_threshold(trainer, module, datamodule, ckpt_path)
    trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True, verbose=False)
    metrics = {**metrics, **logged(trainer, "test/")}
    tested = Tested(metrics, module_predictions(module), module.per_class)
    return write_record(cfg, module, datamodule, tested, ckpt_path, trained, beside, config=config,
                        loggers=trainer.loggers, writes=trainer.is_global_zero)  # fmt: skip


@dataclass(frozen=True)
class Tested:
    """What a test left: the val/* and test/* numbers, the val and test probabilities with their
    targets, and the per-class numbers of the test."""

    metrics: dict[str, float]
    predictions: Predictions
    per_class: dict[str, list]


def write_record(
    cfg: DictConfig, module: ClassifierModule, datamodule: ArrayDataModule, tested: Tested, ckpt_path: str | None,
    trained: Trained | None, beside: bool = False, *, config: dict[str, Any], loggers: list[Logger],
    writes: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """metrics.json, predictions.npz and per_class.json of a tested run, and its hyperparameters in
    its loggers (`writes` false: another process writes them); returns the record."""
    output_dir = Path(cfg.paths.output_dir)
    not_finite = [stage for stage, (p, _) in tested.predictions.items() if not bool(torch.isfinite(p).all())]
    if not_finite and trained is None:  # an evaluation of weights that blew up: no result to record
        raise ConfigError(f"ckpt_path={ckpt_path} is not valid: the network's {' and '.join(not_finite)} outputs "
                          "are not finite (NaN or inf), so its weights diverged; evaluate a checkpoint from before "
                          "they did (e.g. its run's best-epochNNN.ckpt)")  # fmt: skip
    if not_finite:  # a loss that saturates (bce) can stay finite while the weights blow up
        lr = OmegaConf.select(cfg, "optimizer.lr")
        raise Diverged(f"training diverged: the network's {' and '.join(not_finite)} outputs are not finite (NaN or "
                       f"inf) after {trained.epochs} epochs: lower optimizer.lr"
                       f"{f'={lr:g}' if isinstance(lr, (int, float)) else ''} or check the inputs")  # fmt: skip
    metrics = tested.metrics
    record = {
        "status": "ok",
        "task": datamodule.task,
        "head": module.head.name,
        "loss": module.loss.name,
        "data": datamodule.name,
        "seed": cfg.seed,
        **({"epochs": trained.epochs, "steps": trained.steps} if trained else {"evaluated": ckpt_path}),
        **tested_weights(trained.epochs if trained else 0, ckpt_path),
        "threshold": None if datamodule.task == "multiclass" else threshold_value(module.head.threshold),
        **({"resumed_from": trained.resumed_from} if trained and trained.resumed_from else {}),
        **length_of(config.get("trainer") or {}),  # what a sweep run again compares (`folder.finished`)
        "fingerprint": fingerprint(config),
        "outcome": outcome(config),
        **metrics,
    }
    if not writes:
        return record
    metrics_file, predictions_file = output_dir / "metrics.json", output_dir / "predictions.npz"
    per_class_file = output_dir / "per_class.json"
    if beside:
        metrics_file, predictions_file = evaluation_names(output_dir)  # beside the training run's own record
        per_class_file = metrics_file.with_name(f"per_class-{metrics_file.name}")  # per_class-eval-<time>.json
        record["record"] = metrics_file.name
    if not beside:  # a failure of an earlier attempt (a full disk, then a resume) is no longer the run's state
        (output_dir / "failure.json").unlink(missing_ok=True)
    save_predictions(tested.predictions, predictions_file)
    if tested.per_class:
        write_metrics(per_class_file, tested.per_class)
    write_metrics(metrics_file, record)
    params = {k: v for k, v in record.items() if "/" not in k}
    params.update(flat_overrides(cfg))
    log_run_hparams(loggers, params, metrics)
    return record


def flat_overrides(cfg: DictConfig) -> dict[str, Any]:
    """Scalar hyperparameters of the groups users sweep, flattened to dotted keys for the hparams tab."""
    flat: dict[str, Any] = {}
    for group in ("loss", "model", "optimizer", "data"):
        node = OmegaConf.to_container(cfg[group], resolve=True)
        for key, value in node.items():
            if key != "_target_" and (value is None or isinstance(value, (int, float, str, bool, list))):
                flat[f"{group}.{key}"] = str(value) if isinstance(value, list) or value is None else value
    return flat
