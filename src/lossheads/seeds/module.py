"""The LightningModule of a vectorized-seeds group: the members' networks stacked (`StackedNet`),
one optimizer over the stacked parameters, per-member metrics, divergence and gradient clipping.

Why each member steps as its own run would: the loss of the group is the sum of the members'
losses, so member k's gradient is its own loss's gradient; AdamW, Adam and SGD (momentum, weight
decay) update each element from that element's gradient and state alone, so one optimizer over the
stacked tensors makes every member's own update; clipping by norm uses each member's own norm.
So do the other optimizers in `ELEMENTWISE_OPTIMIZERS` (tests/test_seeds.py steps each stacked and
alone); one that is not, e.g. Adafactor (it factors a matrix's second moment over its rows and
columns, so a stacked bias's column factor would be shared by every member), trains each seed alone.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable

import torch
from lightning.pytorch.loggers import Logger
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.optim import SGD, Adadelta, Adagrad, Adam, Adamax, AdamW, NAdam, Optimizer, RAdam, RMSprop

from lossheads.evaluation.members import MemberMetrics
from lossheads.seeds.stack import StackedNet
from lossheads.training.module import STAGES, ClassifierModule, Diverged

ELEMENTWISE_OPTIMIZERS = (AdamW, Adam, SGD, RMSprop, NAdam, RAdam, Adamax, Adagrad, Adadelta)


def why_not_elementwise(make_optimizer: Callable) -> str | None:
    """None when the optimizer updates each element from its own gradient and state alone (then one
    optimizer over the stacked tensors is every member's own); else why the seeds train alone. The
    exact class: a subclass may change the update."""
    optimizer = make_optimizer.func if isinstance(make_optimizer, functools.partial) else make_optimizer
    if optimizer in ELEMENTWISE_OPTIMIZERS:
        return None
    name = getattr(optimizer, "__name__", type(optimizer).__name__)
    names = ", ".join(o.__name__ for o in ELEMENTWISE_OPTIMIZERS)
    return f"optimizer {name} is not among those that update each element on its own ({names}; not their subclasses)"


def same_threshold(head: nn.Module, other: nn.Module) -> bool:
    ours, theirs = getattr(head, "threshold", None), getattr(other, "threshold", None)
    if isinstance(ours, Tensor) or isinstance(theirs, Tensor):
        return isinstance(ours, Tensor) and isinstance(theirs, Tensor) and torch.equal(ours, theirs)
    return ours == theirs


def loss_signature(loss: nn.Module) -> str:
    """What makes two losses the same function up to their buffers (class weights, pos_weight, which
    may differ per member: `auto` is computed from each member's own training split)."""
    plain = {k: repr(v) for k, v in vars(loss).items()
             if not k.startswith("_") and k != "head" and not isinstance(v, (Tensor, nn.Module))}  # fmt: skip
    buffers = {name: tuple(b.shape) for name, b in loss.named_buffers()}
    return f"{type(loss).__module__}.{type(loss).__qualname__}{sorted(plain.items())}{sorted(buffers.items())}"


def same_losses(losses: list[nn.Module]) -> list[list[int]]:
    """The members' indices grouped by loss function (`loss_signature`), in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for k, loss in enumerate(losses):
        groups.setdefault(loss_signature(loss), []).append(k)
    return list(groups.values())


def member_axis_loss(losses: list[nn.Module]) -> Callable[[Tensor, Tensor], Tensor] | None:
    """One call of an elementwise loss (`Loss.elementwise`, declared by its own class) over the
    stacked members' logits and targets, each member's buffers (pos_weight, class weights) broadcast
    along the member axis, reduced per member: (K,). None for any other loss. The same elements and
    rule as each member's own call, in less time than a vmapped one (scripts/bench_stack_step.py)."""
    first = losses[0]
    names = [name for name, _ in first.named_buffers(recurse=False)]
    declared = "elementwise" in type(first).__dict__ and first.elementwise  # by the loss's own class
    if not declared or len(names) != len(list(first.buffers())):
        return None  # not elementwise, or buffers in submodules this does not stack
    stacked = {name: torch.stack([loss.get_buffer(name) for loss in losses]) for name in names}
    prepared: dict[tuple[torch.device, int], Callable[[Tensor, Tensor], Tensor]] = {}  # by device and dimensions

    def prepare(logits: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
        if any(b.ndim > logits.ndim for b in stacked.values()):
            # a buffer with more dimensions than a member's logits broadcasts them (its run alone's
            # loss does so too): one member's numbers would meet the others'
            return vmapped_loss(losses)
        module = copy.deepcopy(first)
        module.member_axis = True
        for name, b in stacked.items():  # (K, 1, ..., own shape): each member's buffer meets its own logits
            module.register_buffer(name, b.reshape(len(losses), *[1] * (logits.ndim - b.ndim), *b.shape[1:]))
        module.to(logits.device)
        return lambda logits, targets: module(logits, targets, None)

    def call(logits: Tensor, targets: Tensor) -> Tensor:
        key = (logits.device, logits.ndim)
        if key not in prepared:
            prepared[key] = prepare(logits)
        return prepared[key](logits, targets)

    return call


def vmapped_loss(losses: list[nn.Module]) -> Callable[[Tensor, Tensor], Tensor]:
    """One loss function over the stacked members' logits and targets, each member with its own buffers."""
    first = losses[0]
    names = [name for name, _ in first.named_buffers()]
    if not names:
        return vmap(lambda logits, targets: first(logits, targets, None))
    stacked = {name: torch.stack([loss.get_buffer(name) for loss in losses]) for name in names}

    def member_loss(buffers: dict[str, Tensor], logits: Tensor, targets: Tensor) -> Tensor:
        return functional_call(first, buffers, (logits, targets, None))

    per_member = vmap(member_loss)

    def call(logits: Tensor, targets: Tensor) -> Tensor:
        on_device = {name: b.to(logits.device) for name, b in stacked.items()}
        return per_member(on_device, logits, targets)

    return call


class SeedsModule(ClassifierModule):
    """`members`' networks stacked; batches come as (K, N, ...), each member's own (`StackedData`)."""

    STATE = "seeds_group"  # the group's own records in its checkpoint

    def __init__(self, members: list[ClassifierModule], seeds: list[int], **options) -> None:
        first = members[0]
        super().__init__(StackedNet([m.net for m in members]), first.head, first.loss, first.make_optimizer,
                         metrics=False, **options)  # fmt: skip
        self.automatic_optimization = False  # the fast path, also at steps_per_call=1
        self.sample_dim = 1
        self.seeds = seeds
        self.size = len(members)
        task, num_classes = options["task"], options["num_classes"]
        # each stage's metrics over the member axis at once, and each member's loss as a weighted mean
        self.member_metrics = {stage: MemberMetrics(task, num_classes, self.size, prefix=f"{stage}/",
                                                    full=stage != "train") for stage in STAGES[:2]}  # fmt: skip
        self.loss_sums: dict[str, list[Tensor]] = {stage: [] for stage in STAGES[:2]}  # (sum of w*l, sum of w) each
        self.member_loggers: list[list[Logger]] = [[] for _ in members]
        self.member_values: list[dict[str, float]] = [{} for _ in members]  # each member's last epoch's numbers
        self.diverged: dict[int, str] = {}  # member -> why; its weights are no longer recorded
        # each member's folder, config fingerprint and inputs (data, split): whose group file it is
        self.identity: list[list[str]] = []
        self.validated: dict[str, Tensor] | None = None  # the stacked weights of the last validation
        self.validated_step: int | None = None  # the optimizer step they were taken at
        self.member_heads = [m.head for m in members]  # each its own threshold (arms may differ in it)
        self.one_threshold = all(same_threshold(m.head, first.head) for m in members)
        self.member_loss_modules = nn.ModuleList([m.loss for m in members])
        self.loss_groups = [(torch.tensor(group), member_axis_loss([members[k].loss for k in group])
                             or vmapped_loss([members[k].loss for k in group]))
                            for group in same_losses([m.loss for m in members])]  # fmt: skip

    def _forward_loss(self, features: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Logits (K, N, ...) and each member's loss on its own batch (K,). Under mixed precision one
        call per member: autocast casts a loss's inputs by its policy (BCE and CE in float32), which
        a vmapped call does not follow (its losses came out in bf16)."""
        logits = self(features)
        if torch.is_autocast_enabled(logits.device.type):
            losses = self.member_loss_modules
            return logits, torch.stack([losses[k](logits[k], targets[k], None) for k in range(self.size)])
        if len(self.loss_groups) == 1:
            return logits, self.loss_groups[0][1](logits, targets)
        found = logits.new_zeros(self.size)
        for index, losses in self.loss_groups:
            index = index.to(logits.device)
            found = found.index_copy(0, index, losses(logits.index_select(0, index), targets.index_select(0, index)))
        return logits, found

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        features, targets = batch
        logits, losses = self._forward_loss(features, targets)
        self._record("val", logits, targets, losses, features.shape[1])

    def _record(self, stage: str, logits: Tensor, targets: Tensor, losses: Tensor, sizes: Tensor | int) -> None:
        """State updates only, for all members at once (a member's own head where thresholds differ)."""
        detached, heads = logits.detach(), self.member_heads
        metric_targets = torch.stack([heads[k].metric_target(targets[k]) for k in range(self.size)])
        probabilities = None if stage == "train" else self.head.probabilities(detached)
        if self.one_threshold:
            predictions = self.head.predict(detached)
        else:
            predictions = torch.stack([heads[k].predict(detached[k]) for k in range(self.size)])
        weights = sizes if isinstance(sizes, Tensor) else torch.full_like(losses, sizes)
        self.loss_sums[stage].append(torch.stack([(losses.detach() * weights).reshape(-1, self.size).sum(0),
                                                  weights.reshape(-1, self.size).sum(0)]))  # fmt: skip
        self.member_metrics[stage].update(predictions, probabilities, metric_targets)

    def _log_epoch(self, stage: str) -> None:
        """Each member's numbers to its own loggers at this optimizer step; the group's mean to the bar."""
        means: dict[str, list[float]] = {}
        if not self.loss_sums[stage]:
            return
        sums = torch.stack(self.loss_sums[stage]).sum(0)
        losses = (sums[0] / sums[1]).tolist()
        computed = self.member_metrics[stage].compute()
        self.loss_sums[stage].clear()
        self.member_metrics[stage].reset()
        if stage == "train":  # the members' one learning rate, as `self.log` logs it (float32)
            lr = float(torch.tensor(self.trainer.optimizers[0].param_groups[0]["lr"], dtype=torch.float32))
        for k in range(self.size):
            if k in self.diverged:
                continue
            values = {f"{stage}/loss": losses[k], **computed[k]}
            if stage == "train":
                values["train/lr"] = lr
            self.member_values[k].update(values)
            if not self.trainer.sanity_checking:
                for logger in self.member_loggers[k]:
                    logger.log_metrics(values, step=self.global_step)
            for name, value in values.items():
                means.setdefault(name, []).append(value)
        bar = self.trainer.progress_bar_callback
        if bar is not None and bar.is_enabled:  # the bar's epoch line is their only reader (~4 ms a call)
            shown = {f"{stage}/loss", f"{stage}/acc"}
            self.log_dict({name: sum(v) / len(v) for name, v in means.items() if name in shown}, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        """The weights are kept too: a run alone records its last validation's numbers, which need
        not be its final weights' (`trainer.check_val_every_n_epoch=2` over 5 epochs: epoch 4's)."""
        self._log_epoch("val")
        if not self.trainer.sanity_checking:
            self.validated = {name: t.detach().clone() for name, t in self.net.state_dict().items()}
            self.validated_step = self.global_step

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """The weights of the last validation are the checkpoint's own when no step came after it (a
        save at an epoch's end that validated): then they are not stored twice."""
        super().on_save_checkpoint(checkpoint)
        same = self.validated_step is not None and self.validated_step == self.global_step
        checkpoint[self.STATE] = {"identity": self.identity, "values": self.member_values, "diverged": self.diverged,
                                  "validated": None if same else self.validated,
                                  "validated_step": self.validated_step}  # fmt: skip

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint[self.STATE]
        self.member_values, self.diverged = [dict(v) for v in state["values"]], dict(state["diverged"])
        self.validated, self.validated_step = state["validated"], state.get("validated_step")
        if self.validated is None and self.validated_step is not None:  # the checkpoint's own weights
            saved = checkpoint["state_dict"]
            self.validated = {n.removeprefix("net."): t.clone() for n, t in saved.items() if n.startswith("net.")}

    def _stop_if_diverged(self, losses: Tensor, first_step: int) -> None:
        """A member whose loss became non-finite is recorded as diverged (with ClassifierModule's
        message) and left out from then on; the others train on. All diverged: the group stops."""
        finite = torch.isfinite(losses.reshape(-1, self.size)).all(dim=0)
        if bool(finite.all()):
            return
        for k in (~finite).nonzero().flatten().tolist():
            if k in self.diverged:
                continue
            try:
                super()._stop_if_diverged(losses.reshape(-1, self.size)[:, k], first_step)
            except Diverged as error:
                self.diverged[k] = str(error)
        if len(self.diverged) == self.size:
            raise Diverged(next(iter(self.diverged.values())))

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        """Always through `clip_gradients` below: the single run's faster paths clip by one global norm."""
        if self.stepping.clip_val is not None:
            self.clip_gradients(optimizer, self.stepping.clip_val, self.stepping.clip_algorithm)

    def clip_gradients(self, optimizer: Optimizer, gradient_clip_val: float | None = None,
                       gradient_clip_algorithm: str | None = None) -> None:  # fmt: skip
        """Per member, as `torch.nn.utils.clip_grad_norm_` / `clip_grad_value_` clip one network."""
        grads = [p.grad for p in self.net.parameters() if p.grad is not None]
        if not grads or gradient_clip_val is None:
            return
        if gradient_clip_algorithm == "value":
            for g in grads:
                g.clamp_(-gradient_clip_val, gradient_clip_val)
            return
        squares = torch.stack([g.reshape(self.size, -1).float().pow(2).sum(dim=1) for g in grads]).sum(dim=0)
        coefficient = (gradient_clip_val / (squares.sqrt() + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coefficient.reshape(-1, *([1] * (g.ndim - 1))).to(g.dtype))

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        for k in self.diverged:  # nothing couples the members; a diverged one just stops counting
            self.member_values[k] = {}
