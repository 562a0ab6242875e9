"""BPTT in the peer libraries users would otherwise pick, on snnkit's own network.

Every snnkit LIF layer of the body is swapped, in place, for the peer's neuron; the conv, BN,
pooling and linear layers stay the very same modules, so only the neuron and its loop differ.

- ``spikingjelly``: ``LIFNode(tau=1/(1−λ), decay_input=False, v_reset=None, detach_reset=True,
  surrogate Sigmoid(α), step_mode="m")``, SpikingJelly's multi-step BPTT: stateless layers on all
  T·B samples, the neuron looping over T inside (the same dynamics as snnkit's LIF).
- ``snntorch``: ``snntorch.Leaky(beta=λ, threshold=V_th, spike_grad=sigmoid(slope=α),
  reset_mechanism="subtract")`` called once per step, as snnTorch is used (batch B per call, so
  BN normalises each step on its own, like ``bptt[single]``). Its reset is detached, but it
  subtracts V_th one step later and undecayed (u_{t+1} = λ·u_t + x_{t+1} − V_th·s_t) and fires
  at u > V_th rather than u ≥ V_th: the same cost, slightly different spikes.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from snnkit.methods import Method, StepOutput
from snnkit.neuron import NeuronParams
from snnkit.spiking import LIF, SpikingNet

def swap_neurons(module: nn.Module, make: Callable[[NeuronParams], nn.Module]) -> list[nn.Module]:
    """Replace every LIF layer under ``module`` by ``make(its NeuronParams)``; returns the new layers."""
    swapped = []
    for name, child in module.named_children():
        if isinstance(child, LIF):
            setattr(module, name, make(child.neuron))
            swapped.append(getattr(module, name))
        else:
            swapped += swap_neurons(child, make)
    return swapped


class SpikingJellyLIF(nn.Module):
    """SpikingJelly's multi-step LIF on a flat ``[T·B, ...]`` input."""

    def __init__(self, p: NeuronParams, T: int):
        from spikingjelly.activation_based import neuron, surrogate

        super().__init__()
        self.T = T
        self.node = neuron.LIFNode(tau=1.0 / (1.0 - p.decay), decay_input=False, v_threshold=p.v_threshold,
                                   v_reset=None if p.reset == "soft" else p.v_reset,
                                   surrogate_function=surrogate.Sigmoid(alpha=p.alpha),
                                   detach_reset=p.detach_reset, step_mode="m")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.node(x.unflatten(0, (self.T, -1))).flatten(0, 1)  # [T·B, ...] -> [T, B, ...] and back


class SnntorchLeaky(nn.Module):
    """snnTorch's Leaky, one step per call, its membrane kept here and cleared by :meth:`clear`."""

    def __init__(self, p: NeuronParams):
        import snntorch
        from snntorch import surrogate

        super().__init__()
        if p.reset != "soft" or not p.detach_reset:
            raise ValueError("the snnTorch peer runs the detached soft reset only")
        self.leaky = snntorch.Leaky(beta=p.decay, threshold=p.v_threshold,
                                    spike_grad=surrogate.sigmoid(slope=p.alpha), reset_mechanism="subtract")
        self.mem = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spk, self.mem = self.leaky(x, torch.zeros_like(x) if self.mem is None else self.mem)
        return spk

    def clear(self) -> None:
        self.mem = None


class SpikingJellyBPTT(Method):
    """Multi-step BPTT with SpikingJelly's LIF in place of snnkit's."""

    def __init__(self, T: int, net: SpikingNet):
        from spikingjelly.activation_based import functional

        super().__init__(T)
        self.reset_net = functional.reset_net
        swap_neurons(net.body, lambda p: SpikingJellyLIF(p, T))

    def train_step(self, net, x_seq, y, step):
        logits = net.body(x_seq.flatten(0, 1)).unflatten(0, (self.T, -1)).mean(0)  # [T·B, ...] in
        loss = F.cross_entropy(logits, y)
        loss.backward()
        step()
        self.reset_net(net.body)
        return StepOutput(loss.item(), logits.detach(), 0.0)


class SnntorchBPTT(Method):
    """BPTT over a loop of T steps with snnTorch's Leaky in place of snnkit's LIF."""

    def __init__(self, T: int, net: SpikingNet):
        super().__init__(T)
        self.neurons = swap_neurons(net.body, SnntorchLeaky)

    def train_step(self, net, x_seq, y, step):
        logits = torch.stack([net.body(x) for x in x_seq]).mean(0)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        step()
        for neuron in self.neurons:
            neuron.clear()
        return StepOutput(loss.item(), logits.detach(), 0.0)


PEERS = {"spikingjelly": SpikingJellyBPTT, "snntorch": SnntorchBPTT}  # row = the package it needs
