"""Distillation: load a frozen teacher from a run folder, and the teacher -> KD student vs hard-label
student recipe (`experiment=distill`)."""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor, nn

from lossheads.config.check import require_finite_numbers
from lossheads.config.pairing import build_head_for
from lossheads.config.validators import ConfigError, instantiate_checked, require
from lossheads.data import ArrayDataModule
from lossheads.heads import Head
from lossheads.models import build_net
from lossheads.run.checkpoints import checkpoint_config, checksum, read_checkpoint, resolve_checkpoint
from lossheads.run.folder import RefusedFolder, finished, owns_training_record, read_record, require_data_only
from lossheads.run.guards import keep_hydra_files
from lossheads.run.splits import check_teacher_split

KEY = "teacher.ckpt_path"
log = logging.getLogger(__name__)


class Teacher(nn.Module):
    """A frozen network whose logits come out in the student head's form; always in eval mode."""

    def __init__(
        self, net: nn.Module, head: Head, student_head: Head, cache_outputs: bool = True, checksum: str | None = None
    ) -> None:
        super().__init__()
        self.net, self.head, self.student_head = net, head, student_head
        self.cache_outputs = cache_outputs
        self.checksum = checksum  # the teacher checkpoint's, recorded in the student's checkpoints for its resume
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Teacher:
        """Stay in eval mode when Lightning puts the student's module in training mode."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, features: Tensor) -> Tensor:
        return self.student_head.read_logits(self.head.logits(self.net(features)), self.head)

    def serve_outputs(
        self, datamodule: ArrayDataModule, device: torch.device,
        forward_context: Callable[[], AbstractContextManager] = contextlib.nullcontext,
    ) -> None:  # fmt: skip
        """Frozen weights on inputs that never change give the same logits every epoch: compute them
        once on the train and val splits (in the training's precision, `forward_context`) and let the
        loaders serve them beside the batches, in the same order and shard. Where the inputs change
        (augmentation, files decoded per batch) the teacher runs per batch, and one line says why."""
        reason = datamodule.varying_inputs() if self.cache_outputs else "teacher.cache_outputs=false"
        if reason:
            log.info("distillation: the teacher runs on every batch: %s", reason)
            return
        start, samples = time.perf_counter(), 0
        for split in ("train", "val"):
            features = datamodule.splits[split][0]
            with forward_context():
                outputs = [self(datamodule.network_inputs(chunk.to(device)))
                           for chunk in features.split(datamodule.eval_batch_size)]  # fmt: skip
            datamodule.teacher_outputs[split] = torch.cat(outputs)
            samples += len(features)
        log.info("distillation: the teacher's logits on the train and val splits computed once (%d samples, %.2f s)",
                 samples, time.perf_counter() - start)  # fmt: skip


def load_teacher(
    ckpt_path: Any, data_cfg: DictConfig, datamodule: ArrayDataModule, student_head: Head,
    student_model: DictConfig | None = None, cache_outputs: bool = True,
) -> Teacher:  # fmt: skip
    """Rebuild the teacher from the config saved with it, read as data (only lossheads' own classes,
    or the model class the student's own config names, are built), and load its weights with
    `weights_only=True` (tensors and plain containers only: nothing in the file can run code)."""
    require(bool(ckpt_path), KEY, ckpt_path,
            "loss=kd needs a teacher: give a run's checkpoints/last.ckpt, or run experiment=distill")  # fmt: skip
    path = resolve_checkpoint(KEY, ckpt_path, Path.cwd())
    checkpoint = read_checkpoint(KEY, path)
    teacher_cfg = OmegaConf.create(checkpoint_config(checkpoint) or _folder_config(path))
    theirs, ours = teacher_cfg.data._target_, data_cfg._target_
    require(theirs == ours, KEY, str(path), f"the teacher was trained on {theirs}, the student uses {ours}")
    state = checkpoint["state_dict"]
    head = build_head_for(teacher_cfg.head, teacher_cfg.loss, datamodule.task, datamodule.num_classes,
                          student_head.threshold)  # fmt: skip
    model = OmegaConf.to_container(teacher_cfg.model, resolve=True)
    require_data_only(KEY, model, student_model)  # lossheads' own model class or the student's, plain options
    net = build_net(OmegaConf.create(model), datamodule.input_shape, head.num_logits)
    weights = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    try:
        net.load_state_dict(weights)
    except RuntimeError:
        raise ConfigError(
            f"{KEY}={str(path)!r}: the teacher's network does not fit this data "
            f"(input shape {tuple(datamodule.input_shape)}, {head.num_logits} logits): it was trained with another "
            "number of classes or features"
        ) from None
    check_teacher_split(KEY, path, path.parent.parent, datamodule.split_record)
    require(isinstance(cache_outputs, bool), "teacher.cache_outputs", cache_outputs,
            "use true (the teacher's logits computed once per run where its inputs never change) or false")  # fmt: skip
    return Teacher(net, head, student_head, cache_outputs, checksum(checkpoint))


def _folder_config(path: Path) -> Any:
    """The config beside a checkpoint that carries none (`.hydra/config.yaml`), read as data."""
    config_file = path.parent.parent / ".hydra" / "config.yaml"
    require(config_file.is_file(), KEY, str(path),
            f"{config_file} is missing; give a checkpoint inside a lossheads run folder")  # fmt: skip
    return OmegaConf.load(config_file)


def run_distillation(cfg: DictConfig, run, continue_own: bool = False) -> dict[str, Any]:
    """`experiment=distill`: train a teacher (unless `teacher.ckpt_path` is given), then a KD student
    and a hard-label student with the same seed (same initialization and data order), each in a
    subfolder of this run; this run's metrics.json puts their test metrics side by side.
    `ckpt_path=last`, or `continue_own` (a sweep job run again), continues a stopped recipe: finished
    steps are kept, stopped ones resumed. Once every step is done, the recipe's `.hydra/` is kept aside,
    as a run's is, for a later command refused for this folder to put back."""
    require_finite_numbers(cfg)  # the recipe builds its data before any of its runs checks the config
    out = Path(cfg.paths.output_dir)
    require(cfg.get("ckpt_path") in (None, "last"), "ckpt_path", cfg.get("ckpt_path"),
            "experiment=distill continues in its own folder: use ckpt_path=last with hydra.run.dir=RUN")  # fmt: skip
    again = continue_own or cfg.get("ckpt_path") == "last"
    datamodule: ArrayDataModule = instantiate_checked(cfg.data, "data")
    datamodule.setup()
    head = build_head_for(cfg.head, cfg.loss, datamodule.task, datamodule.num_classes)
    hard_loss = {"name": head.hard_loss}  # the head's own loss: what a teacher and a hard-label student train on
    teacher_ckpt = cfg.teacher.ckpt_path
    stages = ([] if teacher_ckpt else ["teacher"]) + ["KD student", "hard-label student"]
    results: dict[str, dict[str, Any]] = {}
    if not teacher_ckpt:
        teacher_cfg = _variant(cfg, out / "teacher", head={"name": head.name}, loss=hard_loss)
        with open_dict(teacher_cfg):
            teacher_cfg.model = OmegaConf.merge(teacher_cfg.model, cfg.distill.teacher_model)
        if again:
            refuse_retraining_a_teacher(out, teacher_cfg)
        announce(stages, "teacher", f"{head.name} head, loss={head.hard_loss}", teacher_cfg)
        results["teacher"] = run(teacher_cfg, continue_own=again)
        teacher_ckpt = str(out / "teacher" / "checkpoints" / "last.ckpt")
    kd = _variant(cfg, out / "kd", head={"name": head.name}, teacher={**cfg.teacher, "ckpt_path": teacher_ckpt})
    announce(stages, "KD student", f"loss=kd from {teacher_ckpt}", kd)
    results["kd"] = run(kd, continue_own=again)
    hard = _variant(cfg, out / "hard", head={"name": head.name}, loss=hard_loss)
    announce(stages, "hard-label student", f"loss={head.hard_loss}, the same seed and data order", hard)
    results["hard"] = run(hard, continue_own=again)
    record: dict[str, Any] = {"head": results["kd"]["head"], "loss": "kd", "data": results["kd"]["data"],
                              "seed": cfg.seed, "teacher.ckpt_path": teacher_ckpt}  # fmt: skip
    record = {"status": "ok", **record}
    for name, metrics in results.items():
        record.update({f"{name}/{k}": v for k, v in metrics.items() if k.startswith(("val/", "test/"))})
    keep_hydra_files(out)
    return record


def refuse_retraining_a_teacher(out: Path, teacher_cfg: DictConfig) -> None:
    """A recipe run again longer would train its finished teacher on under a KD student distilled from
    it, whose resume is then refused (another teacher), and the folder could not be finished again:
    refused before anything trains."""
    teacher = read_record(out / "teacher")
    if teacher is None or teacher.get("status") != "ok" or not owns_training_record(out / "kd"):
        return
    epochs, asked = teacher.get("epochs"), teacher_cfg.trainer.max_epochs
    shorter = isinstance(epochs, int) and isinstance(asked, int) and asked != -1 and asked < epochs
    if not shorter and not finished(teacher, {"trainer": teacher_cfg.trainer}):  # shorter: the resume refuses it
        raise RefusedFolder(
            f"trainer.max_epochs={asked} is not valid: this recipe's teacher finished "
            f"{epochs} epoch{'' if epochs == 1 else 's'} and its KD student learned from it; training the teacher "
            "on would leave that student distilled from another teacher: run the longer recipe into a new folder"
        )


def announce(stages: list[str], stage: str, what: str, variant: DictConfig) -> None:
    """One console line per stage of the recipe, so that its trainings' epoch lines can be told apart."""
    print(f"[{stages.index(stage) + 1}/{len(stages)}] {stage}: {what}  ({variant.paths.output_dir})", flush=True)


def _variant(cfg: DictConfig, output_dir: Path, **replace: Any) -> DictConfig:
    """A copy of the run's config for one step of the recipe, in its own subfolder."""
    variant = copy.deepcopy(cfg)
    with open_dict(variant):
        variant.paths.output_dir = str(output_dir)
        variant.distill = None
        variant.ckpt_path = None  # each step finds its own checkpoints (`run(continue_own=...)`)
        for key, value in replace.items():
            variant[key] = value
    return variant
