"""Every private attribute of Lightning, Hydra or torch that lossheads relies on, each with a test
that fails the day the framework changes it (a rename would otherwise pass silently: a lost
speed-up, a wrong fallback, an order that no longer changes between epochs)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from conftest import QUIET, built
from lossheads.data.base import InMemoryBatches, SeededPermutation
from lossheads.run.checkpoints import epochs_done, read_checkpoint
from lossheads.seeds.stack import why_not_stackable
from lossheads.training.selection import checkpoint_callback

TINY = ["steps_per_call=4", *QUIET]  # breast_cancer: 6 mini-batches an epoch, in 2 Lightning calls


class EpochRows(Callback):
    """The training rows each epoch served, in the order served."""

    def __init__(self) -> None:
        self.rows: dict[int, list[torch.Tensor]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.rows.setdefault(trainer.current_epoch, []).append(batch[0].detach().cpu().clone())


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A real run's datamodule, module and Trainer after Lightning's own fit loop ran 2 epochs."""
    datamodule, module, trainer = built([*TINY, "trainer.max_epochs=2"], tmp_path_factory.mktemp("fit") / "run")
    rows = EpochRows()
    trainer.callbacks.append(rows)
    trainer.fit(module, datamodule=datamodule)
    return datamodule, module, trainer, rows


def test_lightnings_fit_loop_gives_each_epoch_of_the_in_memory_loader_its_own_order(fitted):
    """Lightning calls `set_epoch` on the loader's `sampler` (fabric's `_set_sampler_epoch`): no
    test calls it by hand here. Each epoch serves every training row once, in (seed, epoch)'s order."""
    datamodule, _, trainer, rows = fitted
    loader = trainer.train_dataloader
    assert isinstance(loader, InMemoryBatches) and isinstance(loader.sampler, SeededPermutation)
    assert loader.sampler.epoch == 1  # set by Lightning at the second epoch's start
    features = datamodule.network_inputs(datamodule.splits["train"][0])
    served = {epoch: torch.cat(batches)[: loader.usable] for epoch, batches in rows.rows.items()}
    assert sorted(served) == [0, 1]
    for epoch, order in served.items():
        expected = SeededPermutation(datamodule.seed)
        expected.epoch = epoch
        assert torch.equal(order, features[expected.order(len(features))][: loader.usable])
    assert not torch.equal(served[0], served[1])


def test_lightning_names_the_hook_it_runs_current_fx_name():
    """ClassifierModule.__setattr__ skips nn.Module's lookup for `_current_fx_name`, which Lightning
    sets around every hook; renamed, the speed-up would silently stop."""
    seen = []

    class Probe(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            seen.append(self._current_fx_name)
            return self.layer(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 2)), batch_size=2)
    trainer = Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False)  # fmt: skip
    trainer.fit(Probe(), data)
    assert seen == ["training_step", "training_step"]


def test_module_compile_sets_compiled_call_impl_which_keeps_it_out_of_the_seed_stack():
    net = nn.Sequential(nn.Linear(2, 2))
    assert net._compiled_call_impl is None and why_not_stackable(net) is None
    net.compile()  # compiles lazily: nothing runs until the first call
    assert net._compiled_call_impl is not None
    assert why_not_stackable(net) == "model.compile=true"


@pytest.mark.parametrize("register", ["register_forward_pre_hook", "register_forward_hook"])
def test_forward_hooks_land_in_the_dicts_the_seed_stack_reads(register):
    net = nn.Sequential(nn.Linear(2, 2))
    handle = getattr(net, register)(lambda *args: None)
    assert len(net._forward_pre_hooks) + len(net._forward_hooks) == 1
    assert why_not_stackable(net) == "Sequential has forward hooks (e.g. model.channels_last=true)"
    handle.remove()
    assert why_not_stackable(net) is None


def test_a_checkpoint_counts_its_epochs_in_the_fit_loops_progress(fitted, tmp_path):
    """`epochs_done` reads loops.fit_loop.epoch_progress.current.processed, not the fallback."""
    _, _, trainer, _ = fitted
    trainer.save_checkpoint(tmp_path / "two.ckpt")
    checkpoint = read_checkpoint("ckpt_path", tmp_path / "two.ckpt")
    assert checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"] == 2
    assert epochs_done(checkpoint) == 2
    assert epochs_done({"epoch": 7}) == 7  # a checkpoint without loop state: Lightning's own `epoch`


def test_model_checkpoints_rule_for_saving_at_the_training_epochs_end(fitted):
    """seeds/checkpoints.py asks `ModelCheckpoint._should_save_on_train_epoch_end` where a member's
    best checkpoint is saved: at the training epoch's end when the run validates once each epoch,
    else after validation."""
    _, _, trainer, _ = fitted
    best = checkpoint_callback(trainer.callbacks)
    assert isinstance(best, ModelCheckpoint) and best._should_save_on_train_epoch_end(trainer) is True
    trainer.check_val_every_n_epoch = 2
    try:
        assert best._should_save_on_train_epoch_end(trainer) is False
    finally:
        trainer.check_val_every_n_epoch = 1


def test_hydras_basic_sweeper_expands_a_grid_in_launch_order():
    """sweeps.expected_jobs uses `hydra._internal...BasicSweeper.split_arguments`."""
    overrides = OverridesParser.create().parse_overrides(["loss=ce,focal", "seed=1,2"])
    (jobs,) = BasicSweeper.split_arguments(overrides, None)
    assert [list(job) for job in jobs] == [
        ["loss=ce", "seed=1"], ["loss=ce", "seed=2"], ["loss=focal", "seed=1"], ["loss=focal", "seed=2"],
    ]  # fmt: skip


def test_a_job_return_holds_a_failed_jobs_exception_in_return_value_field():
    """The seeds launcher reads `JobReturn._return_value`: the public `return_value` raises for a
    failed job, and the launcher wants to look at what the job returned or raised."""
    assert "_return_value" in {f.name for f in dataclasses.fields(JobReturn)}
    error = ValueError("bad")
    failed = JobReturn(status=JobStatus.FAILED, _return_value=error)
    assert failed._return_value is error
    with pytest.raises(ValueError):
        failed.return_value  # noqa: B018


class Recorder:
    """A `_target_` that keeps what it was called with."""

    def __init__(self, **arguments: object) -> None:
        if arguments.get("fail"):
            raise TypeError("Recorder got an unexpected keyword argument 'fail'")
        self.arguments = arguments


def test_a_plain_node_is_built_as_hydras_instantiate_builds_it():
    """`config.validators.plain_call` skips Hydra's `instantiate` for a node that is one call: the
    same arguments (interpolations resolved, containers plain, keyword arguments over the node's
    own), the same one-line refusal; anything else Hydra's own instantiate builds."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from lossheads.config.validators import ConfigError, instantiate_checked, plain_call

    target = f"{__name__}.Recorder"
    root = OmegaConf.create({"dir": "/runs/7", "node": {"_target_": target, "path": "${dir}/ckpt", "sizes": [1, 2],
                             "options": {"a": {"b": None}}, "rate": 0.5, "name": "x"}})  # fmt: skip
    marker = object()
    plain = plain_call(root.node, {"rate": 0.25, "objects": [marker]})
    assert plain is not None
    ours, hydras = plain(), instantiate(root.node, _convert_="all", rate=0.25, objects=[marker])
    assert ours.arguments == hydras.arguments
    assert ours.arguments["path"] == "/runs/7/ckpt" and type(ours.arguments["options"]) is dict
    for other in ({"_target_": target, "_partial_": True}, {"_target_": target, "inner": {"_target_": target}},
                  {"_target_": target, "x": "???"}, {"_target_": "no_such_module.Thing"}, {"x": 1}):  # fmt: skip
        assert plain_call(OmegaConf.create(other), {}) is None, other
    with pytest.raises(ConfigError, match=r"^thing: Recorder got an unexpected keyword argument 'fail': fix the thing"):
        instantiate_checked(OmegaConf.create({"_target_": target, "fail": True}), "thing")
