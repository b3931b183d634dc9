"""CUDA and mixed precision: every loss trains on the GPU under bf16 and fp16 autocast.

CI has no GPU, so these are skipped there; they run where a GPU is present (`python -m pytest tests/test_gpu.py`).
"""

from __future__ import annotations

import math

import pytest
import torch

from conftest import QUIET, built, compose_config
from lossheads.heads import build_head
from lossheads.losses import LOSSES

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

ARMS = [
    ("breast_cancer", "bce"),
    ("breast_cancer", "bce_logits"),
    ("breast_cancer", "ce"),
    ("breast_cancer", "focal"),
    ("breast_cancer", "mse"),
    ("digits", "nll"),
    ("digits", "ce"),
    ("digits_multilabel", "bce"),
    ("digits_multilabel", "multilabel_soft_margin"),
]


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
@pytest.mark.parametrize(("data", "loss"), ARMS)
def test_every_loss_trains_on_cuda_in_mixed_precision(tmp_path, data, loss, precision):
    overrides = [f"data={data}", f"loss={loss}", "trainer=gpu", f"trainer.precision={precision}",
                 "trainer.max_epochs=10", *QUIET]  # fmt: skip
    datamodule, module, trainer = built(overrides, tmp_path)
    trainer.fit(module, datamodule=datamodule)
    assert trainer.strategy.root_device.type == "cuda"
    assert datamodule.train_dataloader().features.device.type == "cuda"  # the data lives on the GPU
    val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    assert math.isfinite(val["val/loss"])
    assert val["val/acc"] >= 0.85, val


def test_bce_under_cuda_autocast_is_computed_in_fp32_and_matches_bce_logits():
    logits = torch.randn(256, 4, device="cuda")
    targets = (torch.rand(256, 4, device="cuda") > 0.5).float()
    with torch.autocast("cuda", dtype=torch.float16):
        with pytest.raises(RuntimeError, match="unsafe to autocast"):
            torch.nn.functional.binary_cross_entropy(torch.sigmoid(logits), targets)
        head = build_head("multilabel", 4)
        ours = LOSSES["bce"](head, targets)(logits, targets)
        fused = LOSSES["bce_logits"](head, targets)(logits, targets)
    assert ours.dtype == torch.float32
    assert ours.item() == pytest.approx(fused.item(), rel=1e-3)


@pytest.mark.parametrize("head", ["softmax", "sigmoid"])
def test_distillation_runs_on_cuda_in_bf16(tmp_path, head):
    from lossheads.run.distill import run_distillation
    from lossheads.run.execute import run

    overrides = ["experiment=distill", "data=breast_cancer", f"head={head}", "trainer=gpu", "trainer.max_epochs=3",
                 *QUIET]  # fmt: skip
    record = run_distillation(compose_config(overrides, tmp_path), run)
    for arm in ("teacher", "kd", "hard"):
        assert record[f"{arm}/test/acc"] >= 0.8, record


@pytest.mark.parametrize("options", [[], ["model.channels_last=true"], ["model.compile=true"]])
def test_a_cnn_trains_on_mnist_with_images_and_augmentation_on_the_gpu(tmp_path, options):
    overrides = ["data=mnist", "model=cnn", "loss=ce", "trainer=gpu", "trainer.max_epochs=3", *options, *QUIET]
    datamodule, module, trainer = built(overrides, tmp_path)
    trainer.fit(module, datamodule=datamodule)
    images = datamodule.train_dataloader().features
    assert images.device.type == "cuda" and images.dtype == torch.uint8  # decoded once, kept on the GPU
    assert float(trainer.callback_metrics["val/acc"]) >= 0.9


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_a_seeds_group_of_arms_trains_on_cuda_and_each_member_equals_its_run(tmp_path, precision):
    """hydra/launcher=seeds on the GPU, the data resident there: arms of one shape in one group, each
    member's numbers those of its run alone under the basic launcher."""
    import json
    import subprocess
    import sys

    from conftest import ROOT

    overrides = ["-m", *QUIET, "trainer=gpu", f"trainer.precision={precision}", "loss=bce_logits,bce,focal",
                 "seed=1,2", "trainer.max_epochs=3", "~hydra.callbacks.report"]  # fmt: skip
    found = {}
    for name, launcher in (("together", ["hydra/launcher=seeds"]), ("alone", [])):
        command = [sys.executable, str(ROOT / "train.py"), *overrides, *launcher, f"hydra.sweep.dir={tmp_path / name}"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        found[name] = {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / name).glob("*/metrics.json")}
    assert "6 runs: seeds [1, 2] of 3 arms" in (tmp_path / "together" / "0" / "train.log").read_text()
    assert found["together"].keys() == found["alone"].keys() and len(found["alone"]) == 6
    tolerance = 1e-4 if precision == "32-true" else 2e-2  # bf16's rounding grows over steps differently
    for job, record in found["together"].items():
        for key in [k for k in record if k.startswith(("val/", "test/"))]:
            assert record[key] == pytest.approx(found["alone"][job][key], abs=tolerance), (job, key)
