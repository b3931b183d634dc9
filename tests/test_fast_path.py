"""The fast path: several optimizer steps per Lightning call give the run one step per call gives."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

from conftest import QUIET, ROOT, built, compose_config
from lossheads.data import InMemoryBatches


def test_items_of_k_batches_are_the_k1_batches_joined():
    features, targets = torch.arange(30, dtype=torch.float32).unsqueeze(1), torch.arange(30)
    for drop_last, expected_samples in ((False, 30), (True, 28)):
        one = InMemoryBatches(features, targets, 4, shuffle=True, drop_last=drop_last, seed=3)
        many = InMemoryBatches(features, targets, 4, shuffle=True, drop_last=drop_last, seed=3, batches_per_item=3)
        for loader in (one, many):
            loader.sampler.set_epoch(2)
        assert torch.equal(torch.cat([y for _, y in one]), torch.cat([y for _, y in many]))
        assert sum(len(y) for _, y in many) == expected_samples
        assert [len(y) for _, y in many] == ([12, 12, 6] if not drop_last else [12, 12, 4])
        assert len(many) == 3 and len(one) == (8 if not drop_last else 7)


def test_loaders_serve_tensors_on_the_training_device(tmp_path):
    datamodule, module, trainer = built(["print_config=false", "trainer.max_epochs=1"], tmp_path)
    trainer.fit(module, datamodule=datamodule)
    device = trainer.strategy.root_device
    for loader in (datamodule.train_dataloader(), datamodule.val_dataloader()):
        assert loader.features.device == device and loader.targets.device == device


def train(tmp_path, *overrides: str):
    datamodule, module, trainer = built([*QUIET, *overrides], tmp_path)
    trainer.fit(module, datamodule=datamodule)
    return trainer, module


@pytest.mark.parametrize("loss", ["bce_logits", "ce", "bce", "focal", "mse"])
def test_steps_per_call_8_trains_exactly_like_one_step_per_call(tmp_path, loss):
    """Also for the losses whose targets are cast once per call rather than per step, and for the
    epoch's train/loss, weighted by mini-batch sizes (the last of 6 has 23 samples)."""
    runs = {}
    for k in (1, 8):
        trainer, module = train(tmp_path / f"k{k}", f"loss={loss}", "trainer.max_epochs=3", f"steps_per_call={k}")
        metrics = {name: trainer.callback_metrics[name].item() for name in ("val/loss", "train/loss", "train/acc")}
        runs[k] = (trainer.global_step, metrics, module.net.state_dict())
    assert runs[1][0] == runs[8][0] == 3 * 6  # 343 training samples in batches of 64: 6 steps an epoch
    assert runs[1][1] == pytest.approx(runs[8][1], abs=1e-6)
    for name, value in runs[1][2].items():
        torch.testing.assert_close(value, runs[8][2][name], rtol=1e-5, atol=1e-6)


def test_max_steps_is_exact_with_several_steps_per_call(tmp_path):
    trainer, _ = train(tmp_path, "trainer.max_steps=10", "trainer.max_epochs=-1", "steps_per_call=8")
    assert trainer.global_step == 10


def test_gradient_clipping_needs_one_step_per_call(tmp_path):
    from lossheads.check import ConfigError
    from lossheads.train import run

    cfg = compose_config(["print_config=false", "+trainer.gradient_clip_val=1.0"], tmp_path)
    with pytest.raises(ConfigError, match="also set steps_per_call=1"):
        run(cfg)


def test_benchmark_quick_mode_prints_its_ratio_line(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"bench: ratio@64=\d+\.\d\d ratio@256=\d+\.\d\d ratio@1024=\d+\.\d\d", last)
    assert re.search(r"startup: import lightning.pytorch [\d.]+ s; train.py to first step [\d.]+ s", result.stdout)
