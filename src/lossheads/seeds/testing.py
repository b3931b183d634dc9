"""The members of a trained group tested in one pass, and each recorded as its own run.

The stacked network runs the members' val (for `threshold=auto`) and test splits together, each
member on its own split; each member's numbers then come from its own module's metrics (its head,
its threshold), and its records (metrics.json, predictions.npz, per_class.json, its loggers' test
row and hyperparameters) are written by `records.write_record`, as a run's are."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer
from torch import Tensor

from lossheads.evaluation.metrics import HeadMetrics
from lossheads.evaluation.threshold import tune_threshold
from lossheads.run.atomic import StorageError
from lossheads.run.checkpoints import read_checkpoint
from lossheads.run.execute import record_diverged_job, record_failed_job
from lossheads.run.records import Tested, Trained, write_record
from lossheads.run.stops import StopSignals
from lossheads.seeds.data import StackedBatches, StackedData
from lossheads.seeds.members import Member, current_job
from lossheads.seeds.module import SeedsModule
from lossheads.training.module import Diverged


@dataclass
class Pass:
    """One split's pass over the stacked members: logits (K, N, ...), targets (K, N, ...), and each
    batch's loss per member (B, K) with the batch sizes (B,)."""

    logits: Tensor
    targets: Tensor
    losses: Tensor
    sizes: Tensor

    def loss(self, k: int) -> float:
        """Member k's mean loss as its run's `MeanMetric` takes it: batch means weighted by batch size."""
        return float((self.losses[:, k] * self.sizes).sum() / self.sizes.sum())


@torch.no_grad()
def run_pass(
    members: list[Member], module: SeedsModule, data: StackedData, trainer: Trainer, split: str,
    state: dict[str, Tensor] | None = None,
) -> Pass:  # fmt: skip
    """Each member's own network, with its weights from the stack (or from `state`, a state_dict of
    the stacked network), on its own batches of `split`: the same operations as its run's own
    evaluation, so that tied scores rank as there (a rank metric such as AP turns the stacked
    forward's last-bit differences into more)."""
    StopSignals.stage = {"val": "validate", "test": "test"}[split]  # a stop now names this phase
    own = [m.module for m in members]
    for k, member in enumerate(own):
        member.to(module.device).eval()
        member.net.load_state_dict(module.net.member_state(k, state))
    loaders = [getattr(dm, f"{split}_dataloader")() for dm in data.members]
    logits, targets, losses, sizes = [], [], [], []
    with trainer.precision_plugin.forward_context():
        for batch in StackedBatches(loaders):
            features, batch_targets = data.on_after_batch_transfer(batch, 0)
            per_member = [member(features[k]) for k, member in enumerate(own)]
            logits.append(torch.stack(per_member).float())
            targets.append(batch_targets)
            losses.append(
                torch.stack(
                    [m.loss(z, batch_targets[k], None) for k, (m, z) in enumerate(zip(own, per_member, strict=True))]
                ).float()
            )
            sizes.append(features.shape[1])
    return Pass(torch.cat(logits, 1), torch.cat(targets, 1), torch.stack(losses), torch.tensor(sizes).float())


def member_numbers(
    member: Member, split: Pass, k: int, metrics: HeadMetrics
) -> tuple[dict[str, float], tuple[Tensor, Tensor]]:
    """Member k's numbers (`metrics`' stage) on its slice of `split`, by its own head, and its
    probabilities with targets (predictions.npz)."""
    head, stage = member.module.head, metrics.stage
    logits, targets = split.logits[k], head.metric_target(split.targets[k])
    probabilities = head.probabilities(logits)
    metrics.reset()
    metrics.update(head.predict(logits), probabilities, targets)
    computed = {f"{stage}/loss": split.loss(k), **{name: float(v) for name, v in metrics.compute().items()}}
    values = dict(sorted(computed.items()))  # in the order its run alone records them (`records.logged`)
    if stage == "test":
        member.module.per_class = metrics.per_class()
    metrics.reset()
    return values, (probabilities.cpu(), targets.cpu())


def test_members(
    members: list[Member], module: SeedsModule, trainer: Trainer, data: StackedData, trained: Trained,
    tested: dict[int, str | None],
) -> dict[int, dict[str, Any]]:  # fmt: skip
    """Members `tested` (k -> the checkpoint it tests, None: its final weights) tested together;
    returns each one's record. Best weights are put into the stack first."""
    for k, path in tested.items():
        if path is not None:
            state = read_checkpoint("ckpt_path", Path(path))["state_dict"]
            module.net.load_member(k, {n.removeprefix("net."): v for n, v in state.items() if n.startswith("net.")})
    first = members[0].datamodule
    labels = getattr(first, "label_names", None) or None

    def stage_metrics(stage: str) -> HeadMetrics:  # one for all members, reset between them
        return HeadMetrics(first.task, first.num_classes, f"{stage}/", per_class=stage == "test", labels=labels)

    val_numbers: dict[int, tuple[dict[str, float], tuple[Tensor, Tensor]]] = {}
    if any(members[k].cfg.threshold == "auto" for k in tested):
        val, val_metrics = run_pass(members, module, data, trainer, "val"), stage_metrics("val")  # at 0.5
        for k in tested:
            if members[k].cfg.threshold == "auto":
                val_numbers[k] = member_numbers(members[k], val, k, val_metrics)
                probabilities, targets = val_numbers[k][1]
                chosen = tune_threshold(probabilities, targets)
                head = members[k].module.head
                head.threshold = chosen if isinstance(chosen, float) else torch.tensor(chosen, device=module.device)
    if module.validated is not None and any(k not in val_numbers for k in tested):
        # the val/* numbers of the weights of the last validation in training, as a run alone records them
        last, last_metrics = run_pass(members, module, data, trainer, "val", module.validated), stage_metrics("val")
        for k in tested:
            val_numbers.setdefault(k, member_numbers(members[k], last, k, last_metrics))
    test, test_metrics = run_pass(members, module, data, trainer, "test"), stage_metrics("test")
    StopSignals.stage = "record writing"
    records = {}
    for k, path in tested.items():
        member = members[k]
        with current_job(member):
            try:
                metrics, test_predictions = member_numbers(member, test, k, test_metrics)
                # none: training ran no validation, and its run alone records no val/* numbers either
                val_metrics, val_predictions = val_numbers.get(k, ({}, None))
                predictions = ({"val": val_predictions} if val_predictions else {}) | {"test": test_predictions}
                for logger in member.loggers:  # the test's row, at the steps its weights took, as its run logs it
                    logger.log_metrics(metrics, step=trained.steps)
                    logger.finalize("success")
                outcome = Tested({**val_metrics, **metrics}, predictions, member.module.per_class)
                records[k] = write_record(member.cfg, member.module, member.datamodule, outcome, path, trained,
                                          config=member.config, loggers=member.loggers)  # fmt: skip
            except Diverged as error:  # as its run alone's job records it; the others go on
                record_diverged_job(member.cfg, error)
            except StorageError:
                raise
            except Exception as exc:  # noqa: BLE001 -- as its run alone's job: recorded, the sweep goes on
                record_failed_job(member.cfg, exc)
    return records
