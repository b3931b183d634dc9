"""What a run prints: a short config summary, a progress bar in optimizer steps that stays readable
in a log file, and at the end the test metrics with the run folder's path."""

from __future__ import annotations

import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar
from omegaconf import DictConfig, OmegaConf

SUMMARY_GROUPS = ("data", "head", "loss", "model", "optimizer", "scheduler", "trainer", "logger")
# the keys worth a glance before a run starts (the full tree: print_config=full)
SUMMARY_KEYS = ("seed", "steps_per_call", "threshold", "optimizer.lr", "data.batch_size", "trainer.max_epochs",
                "trainer.precision", "early_stopping.patience", "test_on")  # fmt: skip


_BARS = {"here": True}  # whether this process draws terminal bars (of a sweep's workers, one does)


def draw_bars_here(draw: bool) -> None:
    """Whether this process draws a terminal bar: two processes redrawing one terminal line garble it."""
    _BARS["here"] = draw


class _LightningInfoInLogOnly(logging.Filter):
    """On a console handler: Lightning's info lines (GPU/TPU available, "`Trainer.fit` stopped", its
    tips) are dropped; its warnings and errors, and every line of lossheads, stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.name.startswith("lightning")


def quiet_lightning() -> None:
    """Lightning logs through its own console handler and the root logger, which Hydra prints and
    writes to the run's train.log: drop Lightning's handler, so that its lines go through the root
    logger, and keep its info lines out of the console (they stay in train.log)."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
    for handler in logging.getLogger().handlers:
        on_console = isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
        if on_console and not any(isinstance(f, _LightningInfoInLogOnly) for f in handler.filters):
            handler.addFilter(_LightningInfoInLogOnly())
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")  # the frozen KD teacher
    # a resumed run's own checkpoints/ (another run's folder is refused before: `run.folder.claim`)
    warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    # torchmetrics on a network's NaN outputs: the run is recorded as diverged, saying so in one line
    warnings.filterwarnings("ignore", message=".*Encountered `?nan`? values in tensor.*")
    # a checkpoint evaluated or continued in another folder: that folder's best records are its run's own
    warnings.filterwarnings("ignore", message="The dirpath has changed from .* won't be reloaded")
    # DDP: the logged values come from torchmetrics' compute(), which has already synced the ranks
    warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed setting.*")


def _choices() -> dict[str, str]:
    try:
        return {k: str(v) for k, v in HydraConfig.get().runtime.choices.items() if k in SUMMARY_GROUPS}
    except ValueError:  # no Hydra run: a test or a script
        return {}


def print_summary(cfg: DictConfig) -> None:
    """Three lines: the chosen config groups, the key numbers, the run folder."""
    choices = _choices()
    groups = "  ".join(f"{g}={choices[g]}" for g in SUMMARY_GROUPS if g in choices)
    values = []
    for key in SUMMARY_KEYS:
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None:
            values.append(f"{key}={value}")
    if groups:
        print(groups)
    print("  ".join(values))
    print(f"run folder: {cfg.paths.output_dir}  (print_config=full shows the whole config)", flush=True)


def print_config(cfg: DictConfig) -> None:
    """The composed config as a tree, one branch per group (as lightning-hydra-template prints it)."""
    from rich import print as rich_print
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    for key, node in cfg.items():
        text = OmegaConf.to_yaml(node, resolve=True) if OmegaConf.is_config(node) else str(node)
        tree.add(str(key)).add(Syntax(text, "yaml"))
    rich_print(tree)


def show_config(cfg: DictConfig) -> None:
    """`print_config`: true (a summary), `full` (the tree) or false."""
    mode = cfg.get("print_config", True)
    if mode == "full":
        print_config(cfg)
    elif mode:
        print_summary(cfg)


def results_table(record: dict[str, Any]) -> list[str]:
    """The test metrics, one row per metric; one column per model where the record holds several
    (distillation: teacher, KD student, hard-label student)."""
    columns: dict[str, dict[str, float]] = {}
    for key, value in record.items():
        model, found, name = key.rpartition("test/")  # "test/acc" or "kd/test/acc"
        if found and isinstance(value, (int, float)) and (not model or model.count("/") == 1 == model.endswith("/")):
            columns.setdefault(model.rstrip("/") or "test", {})[name] = float(value)
    if not columns:
        return []
    names = sorted({n for metrics in columns.values() for n in metrics})
    width = max(len(n) for n in names) + 2
    lines = ["".ljust(width) + "".join(c.rjust(10) for c in columns)]
    for name in names:
        cells = "".join((f"{columns[c][name]:.4f}" if name in columns[c] else "-").rjust(10) for c in columns)
        lines.append(name.ljust(width) + cells)
    return lines


def print_results(record: dict[str, Any], output_dir: str) -> None:
    weights = record.get("test_weights")
    heading = "test metrics"
    if weights:
        epoch = record.get("test_weights_epoch")  # 0-based, as in checkpoint names
        heading += f" ({weights} weights, after {epoch + 1} epochs)" if isinstance(epoch, int) else f" ({weights})"
    lines = results_table(record)
    print("\n".join([heading, *lines] if lines else []))
    folder = Path(output_dir).resolve()
    shown = folder.relative_to(Path.cwd()) if folder.is_relative_to(Path.cwd()) else folder
    print(f"results in {shown}", flush=True)


class StepProgressBar(ProgressBar):
    """Counts optimizer steps (not Lightning calls, of which there are 1/steps_per_call as many).

    On a terminal: a tqdm bar per epoch, redrawn at most every `refresh_rate` steps. Always: one line
    per finished epoch with its time and metrics, so a log file holds one line per epoch instead of
    carriage-return redraws. `refresh_rate=0` turns both off."""

    def __init__(self, refresh_rate: int = 10) -> None:
        super().__init__()
        self.refresh_rate = refresh_rate
        self._enabled = refresh_rate > 0
        self._bar: Any = None
        self._epoch: int | None = None
        self._started = 0.0
        self._steps = 0

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = self.refresh_rate > 0

    def _steps_done(self, module: LightningModule, batch_idx: int) -> int:
        return getattr(module, "epoch_steps", 0) if not module.automatic_optimization else batch_idx + 1

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._enabled:
            return
        self._epoch_line(trainer)
        self._epoch, self._started, self._steps = trainer.current_epoch, time.perf_counter(), 0
        if sys.stdout.isatty() and _BARS["here"]:
            from tqdm import tqdm

            total = pl_module.optimizer_steps_per_epoch() if hasattr(pl_module, "optimizer_steps_per_epoch") else None
            self._bar = tqdm(total=total, desc=f"epoch {trainer.current_epoch + 1}", unit="step", leave=False,
                             dynamic_ncols=True, file=sys.stdout)  # fmt: skip

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx) -> None:
        if not self._enabled:
            return
        self._steps = self._steps_done(pl_module, batch_idx)
        if self._bar is not None and self._steps - self._bar.n >= self.refresh_rate:
            self._bar.update(self._steps - self._bar.n)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._enabled:
            self._epoch_line(trainer)

    def _epoch_line(self, trainer: Trainer) -> None:
        """The line of the epoch that just ended (its training and validation metrics are all logged
        by the next epoch's start)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._epoch is None:
            return
        seconds = time.perf_counter() - self._started
        metrics = self.get_metrics(trainer, trainer.lightning_module)
        shown = "  ".join(f"{k} {float(metrics[k]):.4g}" for k in ("train/loss", "train/acc", "val/loss", "val/acc")
                          if k in metrics)  # fmt: skip
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        print(f"epoch {self._epoch + 1}/{total}  {self._steps} steps  {seconds:.1f} s  {shown}", flush=True)
        self._epoch = None

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        return {k: v for k, v in trainer.callback_metrics.items() if k.count("/") == 1}
