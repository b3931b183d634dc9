"""The LightningModule: network -> head -> loss, with per-task metrics.

Metrics and loss means are updated per step (state only) and computed, logged and reset once per
epoch: `self.log(metric)` per step costs ~1 ms, and for AUROC/AP grows with the epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torchmetrics import MeanMetric

from lossheads.evaluation.metrics import HeadMetrics
from lossheads.heads import Head
from lossheads.training.clipping import clip_grad_norm_on_cpu
from lossheads.training.schedules import Schedule, steps_in_epoch, total_optimizer_steps
from lossheads.training.stepping import Stepping

STAGES = ("train", "val", "test")


class Diverged(RuntimeError):
    """A non-finite training loss: the run stops at once instead of training on NaN weights."""


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
        batch_size: int = 64,
        steps_per_call: int = 1,
        schedule: Schedule | None = None,
        stepping: Stepping | None = None,
        labels: list[str] | None = None,
        metrics: bool = True,
    ) -> None:
        """`metrics` False: no per-stage metrics (a seeds group's members: the group computes theirs)."""
        super().__init__()
        self.batch_size = batch_size
        self.automatic_optimization = steps_per_call == 1
        self.schedule = schedule
        self.stepping = stepping or Stepping(steps_per_call)
        self.epoch_steps = 0  # optimizer steps taken in this epoch by the fast path
        self.sample_dim = 0  # the samples' dimension of a batch (1 when members are stacked first: lossheads.seeds)
        self.trained_steps: int | None = None  # a seeds member: steps its weights took (the logs x-axis)
        self.net, self.head, self.loss = net, head, loss
        self.teacher = teacher  # frozen, eval mode, logits in this head's form (a loss that needs_teacher)
        self.make_optimizer = make_optimizer
        # the last epoch's val and test probabilities with their targets, for the report's curves
        self.predictions: dict[str, list[tuple[Tensor, Tensor]]] = {"val": [], "test": []}
        self.per_class: dict[str, list] = {}  # the last test's per-class numbers, for per_class.json
        for stage in STAGES if metrics else ():
            setattr(self, f"{stage}_metrics", HeadMetrics(task, num_classes, prefix=f"{stage}/", full=stage != "train",
                                                          per_class=stage == "test", labels=labels))  # fmt: skip
            setattr(self, f"{stage}_loss", MeanMetric())

    def __setattr__(self, name: str, value: object) -> None:
        """Lightning sets `_current_fx_name` before and after every hook, ~13 times per optimizer step;
        `nn.Module.__setattr__` looks for parameters, buffers and submodules each time (~1 us), which
        a plain string never is."""
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, features: Tensor) -> Tensor:
        """Logits in the shape the loss expects ((N,) for the sigmoid head, else (N, C))."""
        return self.head.logits(self.net(features))

    def _forward_loss(
        self, features: Tensor, targets: Tensor, teacher_logits: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """`teacher_logits`: the teacher's, served with the batch where computed once (`on_fit_start`)."""
        logits = self(features)
        if teacher_logits is None and self.teacher is not None:
            teacher_logits = self.teacher(features)
        return logits, self.loss(logits, targets, teacher_logits)

    def _record(self, stage: str, logits: Tensor, targets: Tensor, losses: Tensor, sizes: Tensor | int) -> None:
        """Metric state updates only: the computes happen once per epoch."""
        detached = logits.detach()
        metric_targets = self.head.metric_target(targets)
        probabilities = None if stage == "train" else self.head.probabilities(detached)  # train logs acc only
        getattr(self, f"{stage}_loss").update(losses, weight=sizes)
        getattr(self, f"{stage}_metrics").update(self.head.predict(detached), probabilities, metric_targets)
        if stage in self.predictions:
            self.predictions[stage].append((probabilities.cpu(), metric_targets.cpu()))

    def _evaluate(self, batch: tuple[Tensor, ...], stage: str) -> None:
        features, targets, *teacher_logits = batch
        logits, loss = self._forward_loss(features, targets, *teacher_logits)
        self._record(stage, logits, targets, loss.detach(), len(features))

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor | None:
        features, targets, *teacher_logits = batch  # (features, targets[, the teacher's cached logits])
        if self.automatic_optimization:
            logits, loss = self._forward_loss(features, targets, *teacher_logits)
            detached = loss.detach()
            self._stop_if_diverged(detached.reshape(1), first_step=self.trainer.global_step)
            self._record("train", logits, targets, detached, len(features))
            return loss
        return self._several_steps(features, targets, *teacher_logits)

    def _several_steps(self, features: Tensor, targets: Tensor, teacher_logits: Tensor | None = None) -> None:
        """`steps_per_call` > 1: the batch holds consecutive mini-batches of the epoch's permutation, and
        each gets a real optimizer step (manual optimization), as one Lightning step per mini-batch
        would. Lightning's own per-call cost (0.3-0.7 ms on these CPUs) is paid once per call instead,
        and so is everything here that need not be per step (the step budget, the targets' cast)."""
        optimizer = self.optimizers()
        step_targets = self.loss.prepare_targets(targets)
        dim = self.sample_dim
        parts = (features, step_targets) + (() if teacher_logits is None else (teacher_logits,))
        chunks = list(zip(*(part.split(self.batch_size, dim) for part in parts), strict=True))
        max_steps = self.trainer.max_steps
        if max_steps >= 0:
            chunks = chunks[: max(0, max_steps - self.trainer.global_step)]
        if self.stepping.epoch_step_limit is not None:  # limit_train_batches, in optimizer steps
            chunks = chunks[: max(0, self.stepping.epoch_step_limit - self.epoch_steps)]
        self.epoch_steps += len(chunks)
        schedulers = [c.scheduler for c in self.trainer.lr_scheduler_configs if c.interval == "step"]
        step_logits, step_losses = [], []
        for x, y, *cached in chunks:
            logits, loss = self._forward_loss(x, y, *cached)
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss if loss.ndim == 0 else loss.sum())  # stacked members: one loss each
            optimizer.step()  # clips in on_before_optimizer_step, after AMP's unscale
            for scheduler in schedulers:  # as Lightning steps interval="step" ones under automatic optimization
                scheduler.step()
            step_logits.append(logits)  # detached below, once for all steps (backward freed their graphs)
            step_losses.append(loss)
        if not chunks:
            return
        with torch.no_grad():
            logits, losses = torch.cat(step_logits, dim), torch.stack(step_losses)
        self._stop_if_diverged(losses, first_step=self.trainer.global_step - len(chunks))
        last = chunks[-1][0].shape[dim]
        sizes = torch.full_like(losses, self.batch_size)  # built on the device: only the last size may differ
        sizes[-1] = last
        used = (len(chunks) - 1) * self.batch_size + last
        self._record("train", logits, targets.narrow(dim, 0, used), losses, sizes)

    def _stop_if_diverged(self, losses: Tensor, first_step: int) -> None:
        """One host-device sync per call, not per step: a non-finite loss ends the run, saying where."""
        finite = torch.isfinite(losses)
        if bool(finite.all()):
            return
        bad = int((~finite).nonzero()[0])
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        where = f"the loss became {losses[bad].item()} at epoch {self.current_epoch}, step {first_step + bad}"
        precision = str(self.trainer.precision)
        if precision.startswith("16"):  # fp16 tops out at 65504: large logits or losses overflow
            advice = f": half precision (trainer.precision={precision}) overflowed: use bf16-mixed or 32-true"
            if first_step + bad > 0:
                advice += f", or lower optimizer.lr={lr:g}"
        elif first_step + bad == 0:  # before any update, the learning rate cannot be the cause
            advice = (": before any update, so not the learning rate: check the inputs (features, labels), "
                      "the loss options (e.g. loss.pos_weight), the initial weights or trainer.precision")  # fmt: skip
        else:
            advice = f" with optimizer.lr={lr:g}: lower it, e.g. optimizer.lr={lr / 100:g}"
        raise Diverged(f"training diverged: {where}{advice}")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _log_epoch(self, stage: str) -> None:
        metrics: HeadMetrics = getattr(self, f"{stage}_metrics")
        mean_loss: MeanMetric = getattr(self, f"{stage}_loss")
        values = {f"{stage}/loss": mean_loss.compute(), **metrics.compute()}
        on_bar = {f"{stage}/loss", f"{stage}/acc"} if stage != "test" else set()
        self.log_dict({k: v for k, v in values.items() if k in on_bar}, prog_bar=True)
        self.log_dict({k: v for k, v in values.items() if k not in on_bar})
        step = self.global_step if self.trained_steps is None else self.trained_steps
        self.log("step", float(step))  # the loggers' x-axis: optimizer steps, not Lightning calls
        if stage == "test":
            self.per_class = metrics.per_class()
        mean_loss.reset()
        metrics.reset()

    def _gather_predictions(self, stage: str) -> None:
        """Under DDP each process saw a shard of the split: every process gets them all (rank 0 saves them)."""
        if self.trainer.world_size > 1:
            shards: list[list[tuple[Tensor, Tensor]]] = [[] for _ in range(self.trainer.world_size)]
            torch.distributed.all_gather_object(shards, self.predictions[stage])
            self.predictions[stage] = [item for shard in shards for item in shard]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """The random state too, so that a resumed run draws the same dropout masks as an unbroken one."""
        checkpoint["rng_state"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng_state"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        rng = checkpoint.get("rng_state", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])

    def on_validation_epoch_start(self) -> None:
        self.predictions["val"].clear()

    def on_test_epoch_start(self) -> None:
        self.predictions["test"].clear()

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        """Gradient clipping for the fast path (Lightning clips only under automatic optimization);
        Lightning calls this after unscaling fp16 gradients, before the step. By norm on a CPU without
        the multiply by exactly 1.0 that changes nothing (`clipping.py`); elsewhere Lightning's."""
        if self.stepping.clip_val is None or self.automatic_optimization:
            return
        if self.stepping.clip_algorithm.lower() == "norm" and self.device.type == "cpu":
            clip_grad_norm_on_cpu([p for group in optimizer.param_groups for p in group["params"]],
                                  self.stepping.clip_val)  # fmt: skip
        else:
            self.clip_gradients(optimizer, self.stepping.clip_val, self.stepping.clip_algorithm)

    def on_fit_start(self) -> None:
        datamodule = self.trainer.datamodule
        if self.teacher is not None and datamodule is not None:  # its logits once per run, where they never change
            self.teacher.serve_outputs(datamodule, self.device, self.trainer.precision_plugin.forward_context)

    def on_train_epoch_start(self) -> None:
        self.epoch_steps = 0

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        if not self.automatic_optimization:  # Lightning steps epoch-interval schedulers only under automatic
            for config in self.trainer.lr_scheduler_configs:
                if config.interval != "epoch":
                    continue
                if not isinstance(config.scheduler, ReduceLROnPlateau):
                    config.scheduler.step()
                elif (value := self.trainer.callback_metrics.get(self.schedule.monitor)) is not None:
                    config.scheduler.step(value)  # no validation this epoch: no step, as strict=False

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")
        self._gather_predictions("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
        self._gather_predictions("test")

    def configure_optimizers(self) -> Optimizer | tuple[list[Optimizer], list[dict]]:
        optimizer = self.make_optimizer(self.net.parameters())
        if self.schedule is None:
            return optimizer
        per_epoch = self.optimizer_steps_per_epoch()
        total = total_optimizer_steps(per_epoch, self.trainer.max_epochs, self.trainer.max_steps)
        configs = self.schedule.build(optimizer, total, per_epoch)
        if not self.automatic_optimization:  # the module steps them itself (Lightning warns of unused keys)
            configs = [{k: v for k, v in c.items() if k not in ("monitor", "strict")} for c in configs]
        return [optimizer], configs

    def optimizer_steps_per_epoch(self) -> int:
        """This process's optimizer steps in one training epoch, `limit_train_batches` included."""
        loader = self.trainer.datamodule.train_dataloader()
        limit = self.stepping.epoch_step_limit
        if self.automatic_optimization and isinstance(self.trainer.limit_train_batches, int):
            limit = self.trainer.limit_train_batches
        samples = getattr(loader, "shard_size", None)
        if samples is None:  # a torch DataLoader: one step per batch
            return max(1, min(len(loader), limit) if limit is not None else len(loader))
        return steps_in_epoch(samples, self.batch_size, limit)
