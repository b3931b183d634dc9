"""K networks of one architecture trained as one: parameters stacked along a leading member
dimension, inputs (K, N, ...) -> logits (K, N, L).

Two ways to run the stack forward:
- a plain multi-layer perceptron (lossheads' `MLP`, or an `nn.Sequential` of `Flatten`, `Linear`
  and element-wise layers) as batched matrix products: `baddbmm` per linear layer, the element-wise
  layers (activations, dropout) applied to the whole (K, N, H) tensor, so dropout draws its own mask
  per member. On 2 CPU cores a step of 10 default MLPs this way costs ~1.5 steps of one;
- any other network through `torch.func`: `functional_call` on a copy of the first network, `vmap`ped over
  the members with `randomness="different"`; buffers are stacked too, so BatchNorm's running
  statistics are each member's own (vmap updates the stacked buffer in place). vmap's dispatch
  costs ~0.7 ms a step on these CPUs, so the gain is smaller than the MLP's.
Networks compiled (`model.compile`) or with forward hooks (`model.channels_last`) are not stacked:
`why_not_stackable` says why, and their seeds run one after another.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from lossheads.models.mlp import MLP

ELEMENTWISE = (nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.Dropout, nn.Identity)


def why_not_stackable(net: nn.Module) -> str | None:
    """None when `StackedNet` can train copies of `net` exactly as separate runs would."""
    if getattr(net, "_compiled_call_impl", None) is not None:  # what nn.Module.compile() sets (torch 2.x)
        return "model.compile=true"
    if net._forward_pre_hooks or net._forward_hooks:
        return f"{type(net).__name__} has forward hooks (e.g. model.channels_last=true)"
    return None


def _sequential_layers(net: nn.Module) -> list[nn.Module] | None:
    """The layers of a network whose forward is `flatten(1)` then its layers in order, made only of
    linear and element-wise layers; None for any other network."""
    if type(net) is MLP:
        layers = list(net)
    elif type(net) is nn.Sequential:
        layers = list(net)
        if layers and type(layers[0]) is nn.Flatten and layers[0].start_dim == 1 and layers[0].end_dim == -1:
            layers = layers[1:]
        else:
            return None
    else:
        return None
    if all(type(layer) is nn.Linear or type(layer) in ELEMENTWISE for layer in layers):
        return layers
    return None


class StackedNet(nn.Module):
    """`nets` (same architecture, each with its own initialization) stacked into one module."""

    def __init__(self, nets: list[nn.Module]) -> None:
        super().__init__()
        self.size = len(nets)
        self.names = [name for name, _ in nets[0].named_parameters()]
        first = {id(p): name for name, p in reversed(list(nets[0].named_parameters()))}
        # tied weights (`c.weight = b.weight`): one stacked tensor, every name the state_dict has for it
        self.aliases = {name: first[id(p)] for name, p in nets[0].named_parameters(remove_duplicate=False)}
        members = [dict(net.named_parameters()) for net in nets]
        self.stacked = nn.ParameterList(  # a frozen parameter stays frozen: no member trains it
            [
                nn.Parameter(torch.stack([m[name].detach() for m in members]).clone(), members[0][name].requires_grad)
                for name in self.names
            ]
        )
        tied = len(self.aliases) != len(self.names)
        layers = None if tied else _sequential_layers(nets[0])
        self.matmul = layers is not None
        if layers is not None:
            index = {name: i for i, name in enumerate(self.names)}
            prefix = {id(layer): name for name, layer in nets[0].named_children()}
            self.plan: list[tuple[str, int, int | None]] = []
            self.elementwise = nn.ModuleList()  # registered so that train()/eval() reach dropout
            for layer in layers:
                if type(layer) is nn.Linear:
                    name = prefix[id(layer)]
                    bias = index.get(f"{name}.bias")
                    self.plan.append(("linear", index[f"{name}.weight"], bias))
                else:
                    self.plan.append(("elementwise", len(self.elementwise), None))
                    self.elementwise.append(copy.deepcopy(layer))
        else:
            # the architecture; each call binds one member's tensors to it. A copy with its tensors, not
            # one moved to the meta device: moving unties tied weights (`c.weight = b.weight`), which
            # functional_call ties again only where the module itself still shares them
            self.base = [copy.deepcopy(nets[0]).requires_grad_(False)]  # a list: not a submodule of this one
            self.buffer_names = [name for name, _ in nets[0].named_buffers()]
            for i, name in enumerate(self.buffer_names):
                self.register_buffer(
                    f"buffer{i}", torch.stack([dict(net.named_buffers())[name] for net in nets]).clone()
                )

            def member_forward(params: list[Tensor], buffers: list[Tensor], features: Tensor) -> Tensor:
                tensors = dict(zip(self.names, params, strict=True)) | dict(
                    zip(self.buffer_names, buffers, strict=True)
                )
                return functional_call(self.base[0], tensors, (features,))

            self.vmapped = vmap(member_forward, randomness="different")

    def forward(self, features: Tensor) -> Tensor:
        if not self.matmul:
            if self.base[0].training != self.training:
                # read here, not set in train(): Lightning restores the modes of registered submodules
                # after validation by setting their flags directly, and the copy is not registered
                self.base[0].train(self.training)
            return self.vmapped(list(self.stacked), self.stacked_buffers(), features)
        h = features.flatten(2)
        for kind, first, second in self.plan:
            if kind == "elementwise":
                h = self.elementwise[first](h)
                continue
            weight = self.stacked[first].transpose(1, 2)
            h = torch.bmm(h, weight) if second is None else torch.baddbmm(self.stacked[second].unsqueeze(1), h, weight)
        return h

    def stacked_buffers(self) -> list[Tensor]:
        return [getattr(self, f"buffer{i}") for i in range(len(self.buffer_names))] if not self.matmul else []

    @torch.no_grad()
    def load_member(self, k: int, state: dict[str, Tensor]) -> None:
        """Member k's parameters and buffers set from `state` (`member_state`'s names), e.g. its best."""
        for name, stacked in zip(self.names, self.stacked, strict=True):
            stacked[k].copy_(state[name])
        if not self.matmul:
            for name, buffer in zip(self.buffer_names, self.stacked_buffers(), strict=True):
                buffer[k].copy_(state[name])

    def member_state(self, k: int, state: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Member k's parameters and buffers by the names of its own network's state_dict, copied from
        this module or from `state` (a state_dict of it, e.g. from a saved group checkpoint)."""
        state = dict(self.named_parameters()) | dict(self.named_buffers()) if state is None else state
        params = [state[f"stacked.{i}"] for i in range(len(self.names))]
        own = {name: p[k].detach().clone() for name, p in zip(self.names, params, strict=True)}
        result = {alias: own[name] for alias, name in self.aliases.items()}
        if not self.matmul:
            result.update({name: state[f"buffer{i}"][k].clone() for i, name in enumerate(self.buffer_names)})
        return result
