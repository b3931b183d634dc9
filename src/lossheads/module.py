"""The LightningModule: network -> head -> loss, with per-task metrics.

Metrics and loss means are updated per step (state only) and computed, logged and reset once per
epoch: `self.log(metric)` per step costs ~1 ms, and for AUROC/AP grows with the epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import MeanMetric

from lossheads.heads import Head
from lossheads.metrics import HeadMetrics

STAGES = ("train", "val", "test")


class ClassifierModule(LightningModule):
    def __init__(
        self,
        net: nn.Module,
        head: Head,
        loss: nn.Module,
        make_optimizer: Callable[[Iterable[nn.Parameter]], Optimizer],
        task: str,
        num_classes: int,
        teacher: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.net, self.head, self.loss = net, head, loss
        self.teacher = teacher  # frozen, eval mode, logits in this head's form (loss=kd)
        self.make_optimizer = make_optimizer
        # the last epoch's val and test probabilities with their targets, for the report's curves
        self.predictions: dict[str, list[tuple[Tensor, Tensor]]] = {"val": [], "test": []}
        for stage in STAGES:
            metrics = HeadMetrics(task, num_classes, prefix=f"{stage}/", full=stage != "train")
            setattr(self, f"{stage}_metrics", metrics)
            setattr(self, f"{stage}_loss", MeanMetric())

    def forward(self, features: Tensor) -> Tensor:
        """Logits in the shape the loss expects ((N,) for the sigmoid head, else (N, C))."""
        return self.head.logits(self.net(features))

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        features, targets = batch
        logits = self(features)
        if self.teacher is None:
            loss = self.loss(logits, targets)
        else:
            loss = self.loss(logits, targets, self.teacher(features))
        detached = logits.detach()
        probabilities, metric_targets = self.head.probabilities(detached), self.head.metric_target(targets)
        getattr(self, f"{stage}_loss").update(loss.detach(), weight=len(features))
        getattr(self, f"{stage}_metrics").update(self.head.predict(detached), probabilities, metric_targets)
        if stage in self.predictions:
            self.predictions[stage].append((probabilities.cpu(), metric_targets.cpu()))
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def _log_epoch(self, stage: str) -> None:
        metrics: HeadMetrics = getattr(self, f"{stage}_metrics")
        mean_loss: MeanMetric = getattr(self, f"{stage}_loss")
        values = {f"{stage}/loss": mean_loss.compute(), **metrics.compute()}
        on_bar = {f"{stage}/loss", f"{stage}/acc"} if stage != "test" else set()
        self.log_dict({k: v for k, v in values.items() if k in on_bar}, prog_bar=True)
        self.log_dict({k: v for k, v in values.items() if k not in on_bar})
        mean_loss.reset()
        metrics.reset()

    def on_validation_epoch_start(self) -> None:
        self.predictions["val"].clear()

    def on_test_epoch_start(self) -> None:
        self.predictions["test"].clear()

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self) -> Optimizer:
        return self.make_optimizer(self.net.parameters())
