"""What each synapse costs, read off the network's own computation.

:func:`topology` traces the body with torch.fx (LIF layers as leaves) and labels every value it
computes *spikes*, *spike counts* or *analog*:

- a LIF layer emits spikes; reshaping, identity and dropout pass a value on as it is; max pooling
  selects one of its inputs, so spikes stay spikes;
- average pooling and addition of spikes or counts give counts;
- the input, the output of a layer with weights, and anything else are analog. An operation not
  listed here that receives spikes is logged and treated as analog (charged MACs: an overestimate).

A conv/linear layer fed spikes or counts costs one accumulate per real synapse per unit of its input.
With its weights replaced by ones, fan(p) = ∂Σy/∂x(p) counts the real synapses leaving input
position p (padding excluded, stride respected). Carried back through the parameter-free path in
units of spikes (average pooling as sum pooling), fan becomes, for every spike *source* (a LIF
layer, or a max pooling of spikes, which selects rather than sums), a map w(q): the accumulates one
spike at q causes in that layer. A run then only sums each source's output per position over steps
and samples (:meth:`Topology.tally`), and ops = Σ_q S(q)·w(q) exactly.
"""
from __future__ import annotations

import logging
import operator
import re
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.func import functional_call

from snnkit.errors import SnnkitError
from snnkit.spiking import LIF, SpikingNet
from snnkit.tracing import trace

log = logging.getLogger("snnkit.deploy")

SPIKES, COUNTS, ANALOG = "spikes", "spike counts", "analog"
RANK = {SPIKES: 0, COUNTS: 1, ANALOG: 2}  # a value mixing kinds takes the highest
SYNAPTIC = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def sum_pool(m: nn.AvgPool2d, x: torch.Tensor) -> torch.Tensor:
    """Average pooling in units of spikes: the sum over each window."""
    return F.avg_pool2d(x, m.kernel_size, m.stride, m.padding, m.ceil_mode, True, divisor_override=1)


def bins(n: int, out: int) -> torch.Tensor:
    """Window sizes of adaptive pooling from n to out: [⌊i·n/out⌋, ⌈(i+1)·n/out⌉)."""
    return torch.tensor([-(-(i + 1) * n // out) - i * n // out for i in range(out)], dtype=torch.float32)


def adaptive_sum_pool(m: nn.AdaptiveAvgPool2d, x: torch.Tensor) -> torch.Tensor:
    y = F.adaptive_avg_pool2d(x, m.output_size)
    return y * torch.outer(bins(x.shape[-2], y.shape[-2]), bins(x.shape[-1], y.shape[-1]))


def add(_, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a + b


# operations on spikes, keyed by module type, function, or method name; SUMS give their value in spikes
SUMS = {nn.AvgPool2d: sum_pool, nn.AdaptiveAvgPool2d: adaptive_sum_pool, operator.add: add, torch.add: add}
PASSES = {nn.Identity, nn.Flatten, nn.Dropout, torch.flatten, "flatten", "view", "reshape"}
SELECTS = {nn.MaxPool2d}


@dataclass(frozen=True)
class SpikingLayer:
    name: str  # module path in the body
    label: str  # "lif3 (2.0.residual.0.2)"
    neurons: int  # per sample


@dataclass(frozen=True)
class SynapticLayer:
    name: str
    label: str  # "conv3 (2.0.residual.0.0)"
    fed_by: str  # SPIKES, COUNTS or ANALOG
    sources: tuple[str, ...]  # labels of the spike sources whose spikes it accumulates
    synapses: int  # real synapses (padding excluded): one dense evaluation's multiply-accumulates


@dataclass
class Tally:
    """What one run put through the spike sources: per position, summed over steps and samples."""

    T: int
    spikes: dict[str, torch.Tensor] = field(default_factory=dict)  # source name -> float64 map
    rows: dict[str, int] = field(default_factory=dict)  # source name -> steps × samples seen

    def add(self, name: str, out: torch.Tensor) -> None:
        # out is [steps·B, ...] of small integers: a float32 sum over rows is exact below 2^24
        total = out.detach().sum(0).double().cpu()
        self.spikes[name] = self.spikes[name] + total if name in self.spikes else total
        self.rows[name] = self.rows.get(name, 0) + out.shape[0]

    @property
    def samples(self) -> int:
        """Every source runs once per step and sample."""
        return next(iter(self.rows.values())) // self.T


@dataclass(frozen=True)
class Topology:
    spiking: list[SpikingLayer]
    synaptic: list[SynapticLayer]
    # source module name -> {synaptic layer name: accumulates caused by one spike at each position}
    maps: dict[str, dict[str, torch.Tensor]]

    @property
    def layer_names(self) -> list[str]:
        """Spiking layers, in spike-count column order."""
        return [s.name for s in self.spiking]

    @property
    def neurons(self) -> list[int]:
        """Per sample, per spiking layer."""
        return [s.neurons for s in self.spiking]

    def as_dict(self) -> dict:
        return {"spiking": [asdict(s) for s in self.spiking], "synaptic": [asdict(s) for s in self.synaptic]}

    @contextmanager
    def tally(self, body: nn.Module, T: int, into: Optional[Tally] = None) -> Iterator[Tally]:
        """Sum what every spike source of ``body`` emits while the block runs it at ``T`` steps (into
        ``into``, which an earlier block started, if given)."""
        tally = into if into is not None else Tally(T)
        handles = [body.get_submodule(name).register_forward_hook(
            lambda _m, _i, out, name=name: tally.add(name, out)) for name in {*self.layer_names, *self.maps}]
        try:
            yield tally
        finally:
            for h in handles:
                h.remove()

    def accumulates(self, tally: Tally) -> dict[str, float]:
        """Accumulates per sample of every spike-fed synaptic layer: Σ_sources Σ_q S(q)·w(q) / samples."""
        ops = {s.name: 0.0 for s in self.synaptic if s.fed_by != ANALOG}
        for source, fed in self.maps.items():
            for layer, w in fed.items():
                ops[layer] += float((tally.spikes[source] * w).sum()) / tally.samples
        return ops


def op_key(module: nn.Module | None, node: fx.Node):
    """The key of ``node``'s operation in SUMS / PASSES / SELECTS."""
    return type(module) if module is not None else node.target


def call(body: nn.Module, node: fx.Node, args: tuple, kwargs: dict, example: torch.Tensor):
    """``node``'s own computation on ``args``."""
    if node.op == "placeholder":
        return example
    if node.op == "get_attr":
        return operator.attrgetter(node.target)(body)
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    target = body.get_submodule(node.target) if node.op == "call_module" else node.target
    return target(*args, **kwargs)


def labels(body: nn.Module) -> dict[str, str]:
    """Module path -> "conv3 (path)": the type's short name numbered in registration order."""
    seen: dict[str, int] = {}
    out = {}
    for name, m in body.named_modules():
        short = re.sub(r"\d+d$", "", type(m).__name__.lower())
        seen[short] = seen.get(short, 0) + 1
        out[name] = f"{short}{seen[short]} ({name})"
    return out


@torch.no_grad()
def trace_units(body: nn.Module, example: torch.Tensor):
    """Walk the fx graph of ``body`` on one sample for one step, in units of spikes.

    Returns (sources: name -> leaf tensor standing for its output, fed: [(name, module, input, kind)]
    for every synaptic layer, its input in units of spikes as a function of the sources)."""
    graph = trace(body)
    env: dict[fx.Node, object] = {}
    kind: dict[fx.Node, str] = {}
    sources: dict[str, torch.Tensor] = {}
    fed = []

    def source(name: str, like: torch.Tensor) -> torch.Tensor:
        if name in sources:
            raise SnnkitError(f"module {name} runs twice in one step; operations are counted per module, "
                              "so give each call its own module")
        sources[name] = torch.zeros_like(like).requires_grad_()
        return sources[name]

    for node in graph.nodes:
        if node.op == "output":
            break
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), env.__getitem__)
        module = body.get_submodule(node.target) if node.op == "call_module" else None
        ins = [kind[n] for n in node.all_input_nodes]
        k = max(ins, key=RANK.__getitem__, default=ANALOG)
        op = op_key(module, node)
        if isinstance(module, LIF):
            out, k = source(node.target, args[0]), SPIKES
        elif k != ANALOG and op in SELECTS:
            out = source(node.target, call(body, node, args, kwargs, example))
        elif k != ANALOG and op in SUMS and all(isinstance(a, fx.Node) for a in node.args):
            with torch.enable_grad():
                out, k = SUMS[op](module, *args), COUNTS
        elif k != ANALOG and op in PASSES:
            with torch.enable_grad():
                out = call(body, node, args, kwargs, example)
        else:
            if k != ANALOG and not (module is not None and list(module.parameters())):
                log.warning("%s: snnkit does not know how %s acts on spikes; the values after it are treated "
                            "as analog (charged multiply-accumulates)", node.name, getattr(op, "__name__", op))
            out, k = call(body, node, args, kwargs, example), ANALOG
        if isinstance(module, SYNAPTIC):
            fed.append((node.target, module, args[0], ins[0]))
        env[node], kind[node] = out, k
    return sources, fed


def fan(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Real synapses leaving each input position of ``m``: ∂Σy/∂x with every weight replaced by 1."""
    leaf = torch.zeros_like(x).requires_grad_()
    y = functional_call(m, {"weight": torch.ones_like(m.weight)}, (leaf,))
    return torch.autograd.grad(y.sum(), leaf)[0]


def topology(net: SpikingNet, input_shape: tuple[int, ...]) -> Topology:
    """The spiking and synaptic layers of ``net`` and the accumulate maps of its spike sources."""
    body, training = net.body, net.body.training
    label = labels(body)
    try:
        sources, fed = trace_units(body.eval(), torch.zeros(1, *input_shape))
    finally:
        body.train(training)
    maps: dict[str, dict[str, torch.Tensor]] = {name: {} for name in sources}
    synaptic = []
    with torch.enable_grad():
        for name, m, x, k in fed:
            f = fan(m, x)
            feeding = []
            if k != ANALOG:
                grads = torch.autograd.grad(x, list(sources.values()), f, retain_graph=True, allow_unused=True)
                for src, g in zip(sources, grads):
                    if g is not None:
                        maps[src][name] = g[0]
                        feeding.append(label[src])
            synaptic.append(SynapticLayer(name, label[name], k, tuple(feeding), int(f.sum())))
    spiking = [SpikingLayer(name, label[name], sources[name][0].numel()) for name in net.layer_names()]
    return Topology(spiking, synaptic, {src: layers for src, layers in maps.items() if layers})
