"""Where the synapses are: which spiking layer feeds each conv/linear, and how many MACs it holds.

Found once from a one-sample, one-step forward with hooks on the leaf modules: a conv/linear's
input is traced back through parameter-free layers (pooling, flatten) to the LIF layer that
produced it, or to analog values (the input image). The result is plain data stored in the
ONNX metadata, so the efficiency report needs nothing but the graph's spike counts.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from math import prod
from typing import Optional

import torch
from torch import nn

from snnkit.spiking import SpikingNet, spiking_layers

TRANSPARENT = (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Identity, nn.Dropout)


def _conv_macs(m: nn.Conv2d, out: torch.Tensor) -> int:
    return out[0].numel() * (m.in_channels // m.groups) * prod(m.kernel_size)


def _linear_macs(m: nn.Linear, out: torch.Tensor) -> int:
    return out[0].numel() * m.in_features


MACS = {nn.Conv2d: _conv_macs, nn.Linear: _linear_macs}


@dataclass(frozen=True)
class Synapses:
    """One parametric layer: ``macs`` per sample and step; ``source`` the index of the spiking
    layer feeding it, or None when it is fed analog values (counted as MACs, not spikes)."""

    name: str
    source: Optional[int]
    macs: int


@dataclass(frozen=True)
class Topology:
    layer_names: list[str]  # spiking layers, in spike-count column order
    neurons: list[int]  # per sample, per spiking layer
    synapses: list[Synapses]

    def fan_out(self) -> list[float]:
        """Synaptic operations per spike of each spiking layer: the MACs of the layers it feeds
        per neuron (a spike through a 2×2 average pool drives a quarter of the next conv's MACs)."""
        fan = [0.0] * len(self.layer_names)
        for s in self.synapses:
            if s.source is not None:
                fan[s.source] += s.macs / self.neurons[s.source]
        return fan

    def as_dict(self) -> dict:
        return {"layer_names": self.layer_names, "neurons": self.neurons,
                "synapses": [asdict(s) for s in self.synapses], "fan_out": self.fan_out()}

    @classmethod
    def from_dict(cls, d: dict) -> "Topology":
        return cls(list(d["layer_names"]), [int(n) for n in d["neurons"]],
                   [Synapses(s["name"], s["source"], int(s["macs"])) for s in d["synapses"]])


@torch.no_grad()
def topology(net: SpikingNet, input_shape: tuple[int, ...]) -> Topology:
    """Trace ``net`` on one zero sample of ``input_shape`` (C, H, W) for one step."""
    names = {m: n for n, m in net.body.named_modules()}
    lif_index = {m: i for i, m in enumerate(spiking_layers(net.body))}
    producers: dict[int, tuple[nn.Module, torch.Tensor]] = {}  # id(output) -> (module, its input)
    alive: list[torch.Tensor] = []  # outputs stay referenced so that their ids are not reused
    fed: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []  # (parametric layer, input, output)
    neurons: dict[nn.Module, int] = {}

    def hook(module, inputs, out):
        if out is not inputs[0]:  # Identity returns its input: no new producer
            producers[id(out)] = (module, inputs[0])
            alive.append(out)
        if type(module) in MACS:
            fed.append((module, inputs[0], out))
        if module in lif_index:
            neurons[module] = out[0].numel()

    def source(t: torch.Tensor) -> Optional[int]:
        while id(t) in producers:
            module, t = producers[id(t)]
            if module in lif_index:
                return lif_index[module]
            if not isinstance(module, TRANSPARENT):
                return None
        return None

    leaves = [m for m in net.body.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        net.eval().run_multistep(torch.zeros(1, 1, *input_shape))
    finally:
        for h in handles:
            h.remove()
    synapses = [Synapses(names[m], source(x), MACS[type(m)](m, y)) for m, x, y in fed]
    return Topology(net.layer_names(), [neurons[m] for m in lif_index], synapses)
