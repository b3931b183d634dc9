"""Experiment loggers (`logger=tensorboard|csv|mlflow|wandb|many`) and what a run records in them."""

from __future__ import annotations

import math
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger


def log_run_hparams(trainer: Trainer, params: dict[str, Any], metrics: dict[str, float]) -> None:
    """The run's hyperparameters in every logger; TensorBoard's HPARAMS tab also gets the final
    metrics beside them (`hp/*`), the others have the metrics already as logged series."""
    finite = {f"hp/{k}": v for k, v in metrics.items() if math.isfinite(v)}
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, finite)
        else:
            logger.log_hyperparams(params)
        logger.save()
