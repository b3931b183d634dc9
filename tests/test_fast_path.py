"""The fast path: several optimizer steps per Lightning call give the run one step per call gives."""

from __future__ import annotations

import copy
import re
import runpy
import sys
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import QUIET, ROOT, built
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


class KernelOps(TorchDispatchMode):
    """Counts the tensor ops that run a kernel (a view runs none): on a GPU each is a launch that
    costs CPU time whatever the batch size, so they decide the speed of small steps."""

    def __init__(self) -> None:
        super().__init__()
        self.counting: Counter[str] | None = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.counting is not None and not func.is_view:
            self.counting[str(func)] += 1
        return func(*args, **(kwargs or {}))


def ops_per_training_call(tmp_path, steps_per_call: int, overrides: list[str]) -> list[Counter[str]]:
    steps = ["data.batch_size=8", "trainer.max_steps=48", "trainer.max_epochs=-1", f"steps_per_call={steps_per_call}"]
    datamodule, module, trainer = built([*QUIET, *overrides, *steps], tmp_path)
    mode, calls = KernelOps(), []
    module.on_train_batch_start = lambda batch, batch_idx: setattr(mode, "counting", Counter())
    module.on_train_batch_end = lambda outputs, batch, batch_idx: calls.append(mode.counting)
    with mode:
        trainer.fit(module, datamodule=datamodule)
    return calls


def ops_per_plain_step(tmp_path, overrides: list[str], targets: torch.Tensor, loss_of) -> Counter[str]:
    """A plain PyTorch step with the run's own network and optimizer, after a first step that
    creates the optimizer's state."""
    _, module, _ = built([*QUIET, *overrides], tmp_path)
    net = copy.deepcopy(module.net)
    optimizer = module.make_optimizer(net.parameters())
    features = torch.randn(len(targets), next(net.parameters()).shape[1])
    mode = KernelOps()
    with mode:
        for counting in (None, Counter()):
            mode.counting = counting
            loss = loss_of(net(features), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return mode.counting


PLAIN_STEPS = {  # overrides, a mini-batch's targets, the loss of the network's output
    "bce_logits": (["loss=bce_logits"], torch.ones(8),
                   lambda output, y: F.binary_cross_entropy_with_logits(output.squeeze(-1), y)),
    "ce": (["data=synthetic_multiclass", "loss=ce"], torch.zeros(8, dtype=torch.long), F.cross_entropy),
}  # fmt: skip


@pytest.mark.parametrize("loss", sorted(PLAIN_STEPS))
def test_each_extra_step_in_a_call_runs_only_the_kernels_of_a_plain_pytorch_step(tmp_path, loss):
    """Lightning's hooks around each step run Python only; the metrics, the divergence check and the
    loss bookkeeping run once per call, so 16 steps a call cost 8 plain steps more than 8 do."""
    overrides, targets, loss_of = PLAIN_STEPS[loss]
    calls = {k: ops_per_training_call(tmp_path / f"k{k}", k, overrides) for k in (8, 16)}
    # the second call: the first also creates the optimizer's state, the last also saves last.ckpt
    assert len(calls[8]) > 2 and len(calls[16]) > 2
    per_step = calls[16][1] - calls[8][1]
    assert calls[16][1] - per_step == calls[8][1]  # nothing fewer in the longer call
    plain = ops_per_plain_step(tmp_path / "plain", overrides, targets, loss_of)
    assert {op: n / 8 for op, n in per_step.items()} == dict(plain)
    # the per-call work, all told (45 ops with bce_logits, 35 with ce, when written)
    assert sum(calls[8][1].values()) - 8 * sum(plain.values()) < 60


def test_max_steps_is_exact_with_several_steps_per_call(tmp_path):
    trainer, _ = train(tmp_path, "trainer.max_steps=10", "trainer.max_epochs=-1", "steps_per_call=8")
    assert trainer.global_step == 10


def test_accumulation_makes_the_fast_path_step_aside(tmp_path):
    """Lightning's own loop accumulates (and counts limit_train_batches in mini-batches, as its docs say)."""
    trainer, module = train(tmp_path, "trainer.accumulate_grad_batches=2", "trainer.max_epochs=1", "steps_per_call=8")
    assert module.automatic_optimization and trainer.global_step == 3  # 6 mini-batches of breast_cancer


@pytest.mark.slow
def test_benchmark_quick_mode_prints_its_ratio_line(tmp_path, monkeypatch, capfd):
    """`python scripts/bench.py --quick`, run in-process (its start-up and grid measurements start
    processes of their own)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["bench.py", "--quick"])
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts tests/ and scripts/ first
    runpy.run_path(str(ROOT / "scripts" / "bench.py"), run_name="__main__")
    out, err = capfd.readouterr()
    last = out.strip().splitlines()[-1]
    assert re.fullmatch(r"bench: ratio@64=\d+\.\d\d ratio@256=\d+\.\d\d ratio@1024=\d+\.\d\d", last)
    assert re.search(r"startup: import lightning.pytorch [\d.]+ s; train.py to first step [\d.]+ s", out)
    assert "Tip" not in out + err  # Lightning's advertisement is silenced, as in train.py


def test_benchmark_refuses_a_bad_count_in_one_line(monkeypatch, capsys):
    """`python scripts/bench.py --steps 0`, run in-process: argparse refuses before anything is measured."""
    monkeypatch.setattr(sys, "argv", ["bench.py", "--steps", "0"])
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts tests/ and scripts/ first
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(ROOT / "scripts" / "bench.py"), run_name="__main__")
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "bench.py: error: argument --steps: '0' is not a whole number >= 1"
    )
