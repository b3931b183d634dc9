"""Build the network of a config: `Model(input_shape, num_logits, **options)`, then the options every
network shares (`weights`, `channels_last`, `compile`), which the constructor never sees."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from lossheads.config.validators import ConfigError, first_line, instantiate_checked, require

SHARED_OPTIONS = ("weights", "channels_last", "compile")


def build_net(model_cfg: DictConfig, input_shape: Sequence[int], num_logits: int) -> nn.Module:
    """The network for data of `input_shape` (without the batch dimension) and a head of `num_logits`."""
    require(not OmegaConf.is_missing(model_cfg, "_target_"), "model._target_", "???",
            "name your network's class, e.g. model=custom model._target_=my_nets.TinyNet")  # fmt: skip
    options = {key: model_cfg.get(key) for key in SHARED_OPTIONS}
    constructor = OmegaConf.masked_copy(model_cfg, [k for k in model_cfg if k not in SHARED_OPTIONS])
    target = model_cfg.get("_target_")
    net = instantiate_checked(constructor, explain=lambda cause: model_error(target, cause),
                              input_shape=list(input_shape), num_logits=num_logits)  # fmt: skip
    require(isinstance(net, nn.Module), "model._target_", target, "it must build a torch.nn.Module")
    if options["weights"]:
        load_weights(net, options["weights"])
    if options["channels_last"]:
        require(len(input_shape) == 3, "model.channels_last", True, "channels-last is for images (C, H, W)")
        net.to(memory_format=torch.channels_last)
        net.register_forward_pre_hook(lambda _, args: (args[0].contiguous(memory_format=torch.channels_last),))
    if options["compile"]:
        net.compile()  # in place: the state_dict keys stay those of the plain network
    return net


def model_error(target: Any, cause: BaseException) -> str | None:
    """The line for a network class that cannot be imported or called as a model; None for a bug
    inside its constructor, which keeps its traceback."""
    if isinstance(cause, ImportError):  # Hydra's message spreads the module's own error over lines
        return (
            f"model._target_={target!r} could not be imported ({' '.join(str(cause).split())}): put its module's "
            "folder on PYTHONPATH, e.g. PYTHONPATH=. python train.py ... (the README's 'Your own network')"
        )
    if isinstance(cause, (AttributeError, TypeError)) or "callable target" in str(cause):  # e.g. a module
        return (
            f"model._target_={target!r} could not be built ({first_line(cause)}): a model's constructor "
            "takes (input_shape, num_logits, **options), see the README's 'Your own network'"
        )
    return None


def load_weights(net: nn.Module, path: Any) -> None:
    """Tensors of a local file by name, with `weights_only=True` (nothing in the file can run code): a
    plain state_dict, or a lossheads/Lightning checkpoint (its `net.` weights). A lossheads checkpoint's
    checksum is verified (an altered file is refused); a file without one (a plain state_dict, another
    tool's checkpoint) is loaded and the line it prints says its integrity is not checked. A tensor
    whose shape differs (e.g. a classifier trained for other classes) keeps its fresh initialization;
    this is said."""
    from lossheads.run.checkpoints import META, verify_checksum

    file = Path(str(path)).expanduser()
    require(file.is_file(), "model.weights", str(path), "no such file; give a local state_dict or checkpoint file")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- pickle errors of many kinds; one line for each
        raise ConfigError(
            f"model.weights={str(path)!r} cannot be read as weights: {str(exc).splitlines()[0]}"
        ) from None
    verified = isinstance(state, dict) and META in state
    if verified:
        verify_checksum("model.weights", file, state)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = {k.removeprefix("net."): v for k, v in state["state_dict"].items() if k.startswith("net.")}
    require(isinstance(state, dict), "model.weights", str(path), "the file holds no state_dict of tensors")
    ours = net.state_dict()
    fitting = {k: v for k, v in state.items() if k in ours and tuple(v.shape) == tuple(ours[k].shape)}
    require(len(fitting) > 0, "model.weights", str(path), "none of its tensors fit this network's names and shapes")
    net.load_state_dict(fitting, strict=False)
    fresh = [k for k in ours if k not in fitting]
    integrity = "checksum verified" if verified else "no checksum in the file, so its integrity is not verified"
    print(f"model.weights: loaded {len(fitting)} of {len(ours)} tensors from {file} ({integrity})"
          + (f"; fresh: {', '.join(fresh[:6])}{' ...' if len(fresh) > 6 else ''}" if fresh else ""))  # fmt: skip
