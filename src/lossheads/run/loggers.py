"""Experiment loggers (`logger=tensorboard|csv|mlflow|wandb|many`) and what a run records in them.

MLflow and W&B are optional extras: a config that names one whose package is missing is refused in
one line naming the extra. Every logger gets the same hyperparameters, head, loss, threshold and the
swept keys first, and in a sweep each run is named by its overrides.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import datetime as dt
import hashlib
import inspect
import io
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict
from tensorboard.compat.proto.summary_pb2 import Summary
from torch import Tensor

from lossheads.config.validators import ConfigError, first_line, instantiate_checked
from lossheads.run.atomic import write_text
from lossheads.run.folder import owns_training_record
from lossheads.run.stops import deferred_stops

# the package each optional logger needs, and the extra that installs it
EXTRAS = {"mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb")}
FIRST_PARAMS = ("head", "loss", "threshold", "data", "seed")
SQLITE = "sqlite:///"  # an MLflow tracking URI of a local SQLite file


def run_name(outside_sweeps: str = "") -> str | None:
    """A sweep job's overrides (`loss=ce,seed=2`): the name TensorBoard, MLflow and W&B show for it.
    Outside a sweep `outside_sweeps` ("none": None, so that MLflow and W&B pick their own name)."""
    try:
        hydra = HydraConfig.get()
        name = hydra.job.override_dirname
        if hydra.mode == RunMode.MULTIRUN and name:
            # a folder name for TensorBoard: an Optuna trial's overrides can pass the 255-byte limit
            return name if len(name) <= 150 else f"{name[:140]}~{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    except ValueError:  # no Hydra run
        pass
    return None if outside_sweeps == "none" else outside_sweeps


def register_resolvers() -> None:
    """`${lossheads.run_name:}` for the logger configs. Called by each job, not only at import: Hydra's
    joblib launcher puts its parent's resolvers back before every job a worker process runs."""
    if not OmegaConf.has_resolver("lossheads.run_name"):
        OmegaConf.register_new_resolver("lossheads.run_name", run_name)


register_resolvers()


# the custom-scalars page: train and val on one chart, then the yardsticks a comparison looks at first
LAYOUT = {
    "lossheads": {
        "loss: train and val": ["Multiline", [r"^train/loss$", r"^val/loss$"]],
        "accuracy: train and val": ["Multiline", [r"^train/acc$", r"^val/acc$"]],
        "AUROC (val)": ["Multiline", [r"^val/auroc$"]],
        "calibration: ECE, NLL, Brier (val)": ["Multiline", [r"^val/ece$", r"^val/nll$", r"^val/brier$"]],
        "learning rate": ["Multiline", [r"^train/lr$"]],
    }
}


class KeptRowsWriter(ExperimentWriter):
    """Lightning's CSV writer deletes a `metrics.csv` it finds (with a warning on the console); this
    one keeps it, so that a resumed run's file goes on from its earlier epochs. Rows of the steps the
    resumed run logs again (those after its checkpoint, written before a kill) give way to the new."""

    def _check_log_dir_exists(self) -> None:  # Lightning's private hook (tests/test_loggers.py holds it)
        self.found_rows = os.path.isfile(self.metrics_file_path)

    def save(self) -> None:
        if getattr(self, "found_rows", False) and self.metrics:
            first_new = min(int(m["step"]) for m in self.metrics)
            with open(self.metrics_file_path, newline="") as handle:
                reader = csv.DictReader(handle)
                header, rows = list(reader.fieldnames or []), [r for r in reader if int(float(r["step"])) < first_new]
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)
            write_text(Path(self.metrics_file_path), text.getvalue())
            self.metrics_keys, self.found_rows = header, False
        super().save()


class CSV(CSVLogger):
    """`logger=csv`: Lightning's CSV logger with `KeptRowsWriter` (a resume keeps the run's rows)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:  # Lightning's own property, with the writer above
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = KeptRowsWriter(log_dir=self.log_dir)
        return self._experiment


class TensorBoard(TensorBoardLogger):
    """Lightning's TensorBoard logger, arranged for comparing runs: no `epoch` chart (Lightning adds
    one to every log call, and it sorted first), no single-point `hp/*` charts (the HPARAMS tab reads
    the final values of the `val/*` and `test/*` series themselves), and a custom-scalars page with
    train and val loss on one chart, accuracy, AUROC and calibration."""

    _hparams_metrics = False

    def __init__(self, *args: Any, prefix: str = "", **kwargs: Any) -> None:
        # Lightning hands unknown options to the SummaryWriter it creates at the first log: checked now
        from torch.utils.tensorboard import SummaryWriter

        own = inspect.signature(TensorBoardLogger.__init__).parameters
        try:
            inspect.signature(SummaryWriter).bind_partial(**{k: v for k, v in kwargs.items() if k not in own})
        except TypeError as exc:
            raise ConfigError(f"logger: TensorBoard {first_line(exc)}: fix the logger.* overrides") from None
        super().__init__(*args, prefix=prefix, **kwargs)
        self.prefix = f"{prefix}{self.LOGGER_JOIN_CHAR}" if prefix else ""  # Lightning's `_add_prefix`

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        with deferred_stops():  # the writer's queue whole (`run.stops.deferred_stops`)
            self._log_metrics(metrics, step)

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        with deferred_stops():
            super().log_graph(model, input_array)

    def save(self) -> None:
        with deferred_stops():
            super().save()

    def finalize(self, status: str) -> None:
        with deferred_stops():
            super().finalize(status)

    def _log_metrics(self, metrics: dict[str, Any], step: int | None) -> None:
        """One event for the call's numbers, each the `simple_value` that `SummaryWriter.add_scalar`
        writes, under Lightning's prefix: ~3 µs a number instead of ~25 (a seeds group logs a dozen
        numbers per member twice an epoch). TensorBoard reads them alike (tests/test_loggers.py)."""
        if self._hparams_metrics:
            return
        numbers = {k: v.item() if isinstance(v, Tensor) else v for k, v in metrics.items() if k != "epoch"}
        if any(isinstance(v, dict) for v in numbers.values()):  # add_scalars' own layout
            return super().log_metrics(numbers, step)
        try:
            values = [Summary.Value(tag=self.prefix + k, simple_value=float(v)) for k, v in numbers.items()]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"you tried to log {metrics} which is not a dict of numbers") from exc
        # `_get_file_writer` reopens the file after a `finalize`, as add_scalar does (a test logs after one)
        self.experiment._get_file_writer().add_summary(Summary(value=values), step)

    def log_hyperparams(self, params: Any, metrics: dict[str, float] | None = None, step: int | None = None) -> None:
        self._hparams_metrics = True  # Lightning logs `metrics` as scalars too: they exist already
        try:
            with deferred_stops():
                super().log_hyperparams(params, metrics, step)
        finally:
            self._hparams_metrics = False
        if metrics:
            with deferred_stops():
                self.experiment.add_custom_scalars(LAYOUT)


@contextlib.contextmanager
def store_lock(node: DictConfig) -> Iterator[bool]:
    """MLflow creates a fresh SQLite store (its tables, then the experiment) with no lock of its own:
    two runs starting together raced (`table tags already exists`) and the second was refused. Runs
    on one machine take turns on a lock file beside the store while it is opened; yields whether it
    locked (a SQLite store, on a system with `fcntl`)."""
    uri = str(node.get("tracking_uri") or "")
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; MLflow's own behaviour
        fcntl = None
    if not uri.startswith(SQLITE) or fcntl is None:
        yield False
        return
    store = Path(uri.removeprefix(SQLITE))
    store.parent.mkdir(parents=True, exist_ok=True)
    with open(store.with_name(f"{store.name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed, or the process ends
        yield True


def create_experiment(node: DictConfig) -> None:
    """The MLflow experiment the logger will use, created now (under the store's lock) if it is new,
    rather than at the run's first log, where two new runs raced to create it; no MLflow run is
    started here, so a run refused before training leaves none."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(str(node.tracking_uri))
    name = str(node.get("experiment_name") or "lightning_logs")
    if client.get_experiment_by_name(name) is None:
        client.create_experiment(name, artifact_location=node.get("artifact_location"))


def _one_logger(node: DictConfig) -> Logger:
    target = str(node.get("_target_", ""))

    def explain(cause: BaseException) -> str:
        for name, (package, extra) in EXTRAS.items():
            if name in target.lower() and isinstance(cause, ImportError):
                return (f"logger={name} needs the {package} package: pip install 'lossheads[{extra}]' "
                        f"(or pip install -e '.[{extra}]' in the repository), or use logger=tensorboard")  # fmt: skip
        return f"logger: {first_line(cause)}: fix the logger.* overrides"

    with store_lock(node) as locked:
        logger = instantiate_checked(node, explain=explain)  # MLflow creates a fresh store's tables here
        if locked:
            create_experiment(node)
    return logger


def build_loggers(cfg: DictConfig) -> list[Logger] | bool:
    """`logger` is one logger's config (`_target_`) or, for `logger=many`, a mapping of them. An
    evaluation (`train=false`) in a run's folder logs into a version of its own (`eval-<UTC time>`):
    in the run's own version, the CSV logger would rewrite the run's hparams.yaml and metrics.csv."""
    node = cfg.get("logger")
    if not node:
        return False
    nodes = [node] if "_target_" in node else [child for child in node.values() if child]
    if not cfg.get("train", True) and owns_training_record(Path(cfg.paths.output_dir)):
        version = f"eval-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%d-%H%M%S-%f')}"
        nodes = [_with_version(child, version) for child in nodes]
    return [_one_logger(child) for child in nodes]


def _with_version(node: DictConfig, version: str) -> DictConfig:
    if "version" not in node:
        return node
    node = copy.deepcopy(node)
    with open_dict(node):
        node.version = version
    return node


def swept_keys() -> list[str]:
    try:
        overrides = HydraConfig.get().overrides.task
    except ValueError:
        return []
    return [o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o]


def ordered_params(params: dict[str, Any]) -> dict[str, Any]:
    """Head, loss, threshold, then the keys this run overrode, then the rest: the columns a reader
    of the HPARAMS table or the MLflow run list wants first."""
    first = [k for k in (*FIRST_PARAMS, *swept_keys()) if k in params]
    return {**{k: params[k] for k in dict.fromkeys(first)}, **params}


def log_run_hparams(loggers: list[Logger], params: dict[str, Any], metrics: dict[str, float]) -> None:
    """The run's hyperparameters in every logger; TensorBoard's HPARAMS tab gets the final metrics
    beside them (the other loggers hold the metrics as logged series already)."""
    params = ordered_params({k: (str(v) if isinstance(v, (list, tuple)) else v) for k, v in params.items()})
    finite = {k: v for k, v in metrics.items() if math.isfinite(v)}
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, finite)
        else:
            logger.log_hyperparams(params)
        logger.save()
