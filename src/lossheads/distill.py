"""Distillation: load a frozen teacher from a run folder, and the teacher -> KD student vs hard-label
student recipe (`experiment=distill`)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor, nn

from lossheads.check import ConfigError, instantiate_checked, require
from lossheads.checkpoints import read_checkpoint, resolve_checkpoint
from lossheads.data import ArrayDataModule
from lossheads.heads import Head
from lossheads.models import build_net
from lossheads.pairing import build_head_for
from lossheads.splits import check_teacher_split

KEY = "teacher.ckpt_path"


class Teacher(nn.Module):
    """A frozen network whose logits come out in the student head's form; always in eval mode."""

    def __init__(self, net: nn.Module, head: Head, student_head: Head) -> None:
        super().__init__()
        self.net, self.head, self.student_head = net, head, student_head
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Teacher:
        """Stay in eval mode when Lightning puts the student's module in training mode."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, features: Tensor) -> Tensor:
        return self.student_head.read_logits(self.head.logits(self.net(features)), self.head)


def load_teacher(ckpt_path: Any, data_cfg: DictConfig, datamodule: ArrayDataModule, student_head: Head) -> Teacher:
    """Rebuild the teacher from the config saved in its run folder and load its weights with
    `weights_only=True` (tensors and plain containers only: nothing in the file can run code)."""
    require(bool(ckpt_path), KEY, ckpt_path,
            "loss=kd needs a teacher: give a run's checkpoints/last.ckpt, or run experiment=distill")  # fmt: skip
    path = resolve_checkpoint(KEY, ckpt_path, Path.cwd())
    config_file = path.parent.parent / ".hydra" / "config.yaml"
    require(config_file.is_file(), KEY, str(path),
            f"{config_file} is missing; give a checkpoint inside a lossheads run folder")  # fmt: skip
    teacher_cfg = OmegaConf.load(config_file)
    theirs, ours = teacher_cfg.data._target_, data_cfg._target_
    require(theirs == ours, KEY, str(path), f"the teacher was trained on {theirs}, the student uses {ours}")
    state = read_checkpoint(KEY, path)["state_dict"]
    head = build_head_for(teacher_cfg.head, teacher_cfg.loss, datamodule.task, datamodule.num_classes,
                          student_head.threshold)  # fmt: skip
    net = build_net(teacher_cfg.model, datamodule.input_shape, head.num_logits)
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
    return Teacher(net, head, student_head)


def run_distillation(cfg: DictConfig, run) -> dict[str, Any]:
    """`experiment=distill`: train a teacher (unless `teacher.ckpt_path` is given), then a KD student
    and a hard-label student with the same seed (same initialization and data order), each in a
    subfolder of this run; this run's metrics.json puts their test metrics side by side."""
    out = Path(cfg.paths.output_dir)
    datamodule: ArrayDataModule = instantiate_checked(cfg.data)
    datamodule.setup()
    head = build_head_for(cfg.head, cfg.loss, datamodule.task, datamodule.num_classes)
    hard_loss = {"name": head.hard_loss}  # the head's own loss: what a teacher and a hard-label student train on
    teacher_ckpt = cfg.teacher.ckpt_path
    results: dict[str, dict[str, Any]] = {}
    if not teacher_ckpt:
        teacher_cfg = _variant(cfg, out / "teacher", head={"name": head.name}, loss=hard_loss)
        with open_dict(teacher_cfg):
            teacher_cfg.model = OmegaConf.merge(teacher_cfg.model, cfg.distill.teacher_model)
        results["teacher"] = run(teacher_cfg)
        teacher_ckpt = str(out / "teacher" / "checkpoints" / "last.ckpt")
    results["kd"] = run(_variant(cfg, out / "kd", head={"name": head.name}, teacher={"ckpt_path": teacher_ckpt}))
    results["hard"] = run(_variant(cfg, out / "hard", head={"name": head.name}, loss=hard_loss))
    record: dict[str, Any] = {"head": results["kd"]["head"], "loss": "kd", "data": results["kd"]["data"],
                              "seed": cfg.seed, "teacher.ckpt_path": teacher_ckpt}  # fmt: skip
    for name, metrics in results.items():
        record.update({f"{name}/{k}": v for k, v in metrics.items() if k.startswith(("val/", "test/"))})
    return record


def _variant(cfg: DictConfig, output_dir: Path, **replace: Any) -> DictConfig:
    """A copy of the run's config for one step of the recipe, in its own subfolder."""
    variant = copy.deepcopy(cfg)
    with open_dict(variant):
        variant.paths.output_dir = str(output_dir)
        variant.distill = None
        for key, value in replace.items():
            variant[key] = value
    return variant
