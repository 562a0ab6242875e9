"""The deployable network: BatchNorm folded away, time unrolled, spike counts as an output.

The body is traced once with torch.fx (LIF layers as leaves). For static input every node that
depends only on the input and the weights (everything before the first LIF: the stem conv, its
pooling, an analog shortcut that reads it) is **computed once per sample** on ``[B, ...]``: a LIF
fed such a value takes it as its current at every step, and any other step-wise consumer gets it
tiled over T. :attr:`TimeUnrolled.computed_once` names those modules; every other module runs at
each of the T steps. The graph runs the toolkit's own :func:`~snnkit.neuron.lif_step` (Heaviside
firing) through a :class:`~snnkit.spiking.Mode`, starting the membrane at the scalar 0 so that a
trace keeps the batch dimension dynamic. :class:`OneStep` is the same network advanced by one step
per call, its membrane potentials coming in and going out (the streaming graph). Nothing here
depends on the training code.
"""
from __future__ import annotations

import copy
import re
from typing import Callable

import torch
from torch import fx, nn

from snnkit.neuron import lif_step
from snnkit.spiking import LIF, Mode, SpikingNet, neuron_mode, spike_counts
from snnkit.tracing import trace

FOLDABLE = (nn.Conv2d, nn.Linear)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
PROBE = re.compile(r"^(?P<layer>.+):(?P<kind>[us])(?P<step>\d+)$")


def probe_name(layer: str, kind: str, step: int) -> str:
    """The graph tensor holding a LIF layer's membrane ``u`` (before reset) or spikes ``s`` at a step."""
    return f"{layer}:{kind}{step}"


@torch.no_grad()
def folded_layer(layer: nn.Module, bn: nn.Module) -> nn.Module:
    """``layer`` followed by eval-mode ``bn`` as one layer: W' = W·γ/√(σ²+ε), b' = (b − μ)·γ/√(σ²+ε) + β.

    Computed in float64 and rounded once to the layer's dtype."""
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = layer.bias.double() if layer.bias is not None else torch.zeros_like(scale)
    fused = copy.deepcopy(layer)
    if fused.bias is None:
        fused.bias = nn.Parameter(torch.empty_like(bn.bias))
    shape = (-1,) + (1,) * (layer.weight.dim() - 1)  # scale per output channel
    fused.weight.copy_(layer.weight.double() * scale.view(shape))
    fused.bias.copy_((bias - bn.running_mean.double()) * scale + bn.bias.double())
    return fused


def fold_batchnorm(body: nn.Module) -> nn.Module:
    """A copy of ``body`` in which every BatchNorm that follows a conv/linear in a Sequential is
    merged into it (and replaced by Identity). Raises if any BatchNorm is left over."""
    body = copy.deepcopy(body).eval()
    for seq in [m for m in body.modules() if isinstance(m, nn.Sequential)]:
        for i in range(1, len(seq)):
            if isinstance(seq[i], BATCHNORMS) and isinstance(seq[i - 1], FOLDABLE):
                seq[i - 1], seq[i] = folded_layer(seq[i - 1], seq[i]), nn.Identity()
    left = [n for n, m in body.named_modules() if isinstance(m, BATCHNORMS)]
    if left:
        raise ValueError(f"BatchNorm layers {left} do not follow a conv/linear in a Sequential; "
                         "they cannot be folded")
    return body


def tile_steps(x: torch.Tensor, T: int) -> torch.Tensor:
    """``[B, ...]`` -> ``[T·B, ...]``, the same value at every step (time-major)."""
    return x.repeat(T, *(1,) * (x.dim() - 1))


def is_lif(gm: fx.GraphModule, node: fx.Node) -> bool:
    return node.op == "call_module" and isinstance(gm.get_submodule(node.target), LIF)


def split_once_per_sample(gm: fx.GraphModule, T: int) -> tuple[list[str], list[str]]:
    """Rewrite ``gm`` (traced on a static ``[B, ...]`` input) so that nodes that depend on the input
    and weights alone run once on ``[B, ...]``; returns (their module names, LIF layers fed by them)."""
    once: set[fx.Node] = set()
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "get_attr") or (
                node.op != "output" and not is_lif(gm, node) and all(a in once for a in node.all_input_nodes)):
            once.add(node)
    tiled: dict[fx.Node, fx.Node] = {}
    for node in [n for n in gm.graph.nodes if n not in once and not is_lif(gm, n)]:
        for arg in [a for a in node.all_input_nodes if a in once]:
            if arg not in tiled:
                with gm.graph.inserting_after(arg):
                    tiled[arg] = gm.graph.call_function(tile_steps, (arg, T))
            node.replace_input_with(arg, tiled[arg])
    gm.recompile()
    modules = [n.target for n in gm.graph.nodes if n in once and n.op == "call_module"]
    fed = [n.target for n in gm.graph.nodes if is_lif(gm, n) and n.args[0] in once]
    return modules, fed


class Unrolled(Mode):
    """T explicit copies of the LIF step on ``[T·B, ...]``, or on ``[B, ...]`` when the current is
    the same at every step (``constant``). The potential starts at ``v`` (the scalar 0 in the
    unrolled graph, an input of the streaming graph) and ends in ``self.v``. With ``probes`` it
    keeps each step's (membrane before reset, spikes)."""

    def __init__(self, T: int, constant: bool, probes: bool, v: torch.Tensor | float = 0.0):
        super().__init__()
        self.T, self.constant, self.probes, self.v = T, constant, probes, v
        self.steps_seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, lif: LIF, x: torch.Tensor) -> torch.Tensor:
        x_seq = [x] * self.T if self.constant else x.unflatten(0, (self.T, -1))  # [T, B, ...]
        spikes = []
        for t in range(self.T):
            s, self.v, u = lif_step(self.v, x_seq[t], lif.neuron)
            spikes.append(s)
            if self.probes:
                self.steps_seen.append((u, s))
        s_seq = torch.stack(spikes)
        self.count(s_seq, self.T)
        return s_seq.flatten(0, 1)


class TimeUnrolled(nn.Module):
    """``input`` -> (``logits`` [B, classes] time-averaged, ``spike_counts`` [B, L] int64), and with
    ``probes`` each LIF layer's membrane and spikes at every step (named by :func:`probe_name`).

    ``input`` is ``[B, C, H, W]`` for static data or ``[T, B, C, H, W]`` for event frames.
    """

    def __init__(self, body: nn.Module, T: int, kind: str, probes: bool = False):
        super().__init__()
        self.body, self.T, self.kind, self.probes = body, T, kind, probes
        self.step_graph = fx.GraphModule(body, trace(body))
        once, fed = split_once_per_sample(self.step_graph, T) if kind == "static" else ([], [])
        self.computed_once: tuple[str, ...] = tuple(once)  # modules run once per sample, not T times
        self.constant_fed = {body.get_submodule(name) for name in fed}
        self.layer_names = SpikingNet(body).layer_names()

    def probe_names(self) -> list[str]:
        return [probe_name(layer, kind, t) for layer in self.layer_names for t in range(self.T) for kind in "us"]

    def run_steps(self, flat: torch.Tensor, make: Callable[[LIF], Mode]) -> tuple[torch.Tensor, list[Mode]]:
        """The step graph on ``flat`` with ``make(lif)`` driving each LIF layer: (its output, the modes)."""
        with neuron_mode(self.body, make) as modes:
            return self.step_graph(flat), modes

    @staticmethod
    def observed(modes: list[Unrolled]) -> tuple[torch.Tensor, ...]:
        """``spike_counts`` [B, L] int64, then the probes in the order of :meth:`probe_names`."""
        return (spike_counts(modes).to(torch.int64), *[t for m in modes for u, s in m.steps_seen for t in (u, s)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        flat = x if self.kind == "static" else x.flatten(0, 1)  # [T, B, ...] -> [T·B, ...]
        y, modes = self.run_steps(flat, lambda lif: Unrolled(self.T, lif in self.constant_fed, self.probes))
        return (y.unflatten(0, (self.T, -1)).mean(0), *self.observed(modes))  # logits [T·B, K] -> [B, K]


class OneStep(TimeUnrolled):
    """The streaming graph: ``(input, *states)`` -> (``logits`` and ``spike_counts`` of this step,
    the next states, and with ``probes`` each LIF layer's membrane and spikes at this step as step 0).

    ``input`` is one step's ``[B, C, H, W]``; a state is a LIF layer's potential after the previous
    step (``[B, *shape]``, zeros before the first), in spike-count column order. Each call takes one
    frame, as event input does, so nothing is computed once."""

    def __init__(self, body: nn.Module, probes: bool = False):
        super().__init__(body, 1, "event", probes)

    def forward(self, x: torch.Tensor, *states: torch.Tensor | float) -> tuple[torch.Tensor, ...]:
        incoming = iter(states)  # neuron_mode makes the modes in spike-count column order
        y, modes = self.run_steps(x, lambda _: Unrolled(1, False, self.probes, next(incoming)))
        counts, *probed = self.observed(modes)
        return (y, counts, *[m.v for m in modes], *probed)

    @torch.no_grad()
    def state_shapes(self, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        """Each LIF layer's potential per sample, from one step on a zero sample."""
        _, _, *states = self(torch.zeros(1, *input_shape), *[0.0] * len(self.layer_names))
        return [tuple(v.shape[1:]) for v in states[:len(self.layer_names)]]


def deployable(net: SpikingNet, T: int, kind: str, probes: bool = False) -> TimeUnrolled:
    """The eval-mode CPU float32 network with BatchNorm folded, ready to trace."""
    return TimeUnrolled(folded_body(net), T, kind, probes).eval()


def one_step(net: SpikingNet, probes: bool = False) -> OneStep:
    """The streaming graph's module: the same folded network, one step per call."""
    return OneStep(folded_body(net), probes).eval()


def folded_body(net: SpikingNet) -> nn.Module:
    return fold_batchnorm(net.to("cpu", torch.float32).eval().body)

