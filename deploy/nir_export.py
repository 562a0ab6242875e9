"""``snnkit export --form nir``: the network as a NIR graph, for neuromorphic tool chains.

NIR (the Neuromorphic Intermediate Representation, package ``nir``) writes neurons as
continuous-time equations; its LIF is ``τ·dv/dt = (v_leak − v) + r·I``, firing when
``v > v_threshold`` and then setting ``v = v_reset``. snnkit's discrete LIF,
``u_t = λ·v_{t−1} + x_t``, is that equation stepped by forward Euler with the time step ``DT``:
``v ← v + (dt/τ)·(−v + r·I)`` gives λ = 1 − dt/τ and an input gain r·dt/τ, so

    τ = dt / (1 − λ),  r = τ / dt = 1 / (1 − λ),  v_leak = 0,  v_threshold = V_th,  v_reset = v_reset.

The time step is stated in the graph's metadata (``dt``); a consumer that discretises exactly
(λ = exp(−dt/τ)) instead needs τ = −dt / ln λ. NIR's reset is a hard reset, so a soft-reset model
(snnkit's default) or a subtract_next one is refused rather than approximated. The graph is the streaming form's step
graph (:class:`~snnkit.deploy.graph.OneStep`: BatchNorm folded into the convolutions, traced with
torch.fx, LIF layers as leaves), each node converted through a type table: NIR ``Conv2d`` /
``Affine`` with bias, average pooling as ``AvgPool2d`` (global pooling too, with the kernel the
input's size), a residual sum as two edges into one node (NIR sums a node's inputs); max pooling
has no NIR node and is refused. NIR shapes have no batch dimension.
"""
from __future__ import annotations

import io
import json
import operator
from functools import partial
from pathlib import Path
from typing import Callable, Optional

import nir
import numpy as np
import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from snnkit.errors import SnnkitError
from snnkit.files import atomic_write
from snnkit.spiking import LIF, SingleStep, neuron_mode

from .graph import one_step
from .source import Source
from .writer import ExportResult

DT = 1e-4  # seconds per step: the time step snnTorch's NIR importer assumes
PASS_THROUGH = (nn.Identity, nn.Dropout)
ADDS = (operator.add, torch.add)


class NirUnsupported(SnnkitError):
    pass


def as_array(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).numpy().copy()


def lif_node(m: LIF, shape: tuple[int, ...], name: str):
    p = m.neuron
    if p.reset == "soft":
        raise NirUnsupported("NIR's LIF resets to v_reset after a spike and cannot express snnkit's soft reset "
                             "(subtract V_th); train with `--set neuron.reset=hard` to export to NIR")
    if p.reset == "subtract_next":
        raise NirUnsupported("NIR's LIF resets to v_reset after a spike and cannot express snnkit's subtract_next "
                             "reset (snnTorch's subtract); use the hard reset (snnTorch's reset_mechanism='zero', "
                             "or `--set neuron.reset=hard`) to export to NIR")
    full = partial(np.full, shape, dtype=np.float32)
    if p.decay == 1.0:  # no leak: NIR's IF, dv/dt = r·I, stepped by forward Euler as v ← v + dt·r·I
        return nir.IF(r=full(1.0 / DT), v_threshold=full(p.v_threshold), v_reset=full(p.v_reset))
    tau = DT / (1.0 - p.decay)
    return nir.LIF(tau=full(tau), r=full(tau / DT), v_leak=full(0.0), v_threshold=full(p.v_threshold),
                   v_reset=full(p.v_reset))


def conv_node(m: nn.Conv2d, shape: tuple[int, ...], name: str):
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise NirUnsupported(f"layer {name} pads with {m.padding_mode!r}/{m.padding!r}; NIR's Conv2d pads with zeros")
    bias = as_array(m.bias) if m.bias is not None else np.zeros(m.out_channels, np.float32)
    return nir.Conv2d(input_shape=tuple(shape[1:]), weight=as_array(m.weight), stride=m.stride,
                      padding=m.padding, dilation=m.dilation, groups=m.groups, bias=bias)


def linear_node(m: nn.Linear, shape: tuple[int, ...], name: str):
    if m.bias is None:
        return nir.Linear(weight=as_array(m.weight))
    return nir.Affine(weight=as_array(m.weight), bias=as_array(m.bias))


def pair(v: int | tuple[int, int]) -> np.ndarray:
    return np.array(v if isinstance(v, tuple) else (v, v))


def avgpool_node(m: nn.AvgPool2d, shape: tuple[int, ...], name: str):
    if any(pair(m.padding)) or m.ceil_mode:
        raise NirUnsupported(f"layer {name} pools with padding or ceil_mode, which NIR's AvgPool2d does not state")
    return nir.AvgPool2d(kernel_size=pair(m.kernel_size), stride=pair(m.stride or m.kernel_size), padding=pair(0))


def adaptive_avgpool_node(m: nn.AdaptiveAvgPool2d, shape: tuple[int, ...], name: str):
    size = np.array(shape[1:])
    out = pair(m.output_size)
    if (size % out).any():
        raise NirUnsupported(f"layer {name} pools {tuple(size)} to {tuple(out)}, which is not one fixed window")
    return nir.AvgPool2d(kernel_size=size // out, stride=size // out, padding=np.array([0, 0]))


def flatten_node(m: nn.Flatten, shape: tuple[int, ...], name: str):
    start, end = (d - 1 if d > 0 else d for d in (m.start_dim, m.end_dim))  # NIR shapes have no batch axis
    return nir.Flatten(input_type={"input": np.array(shape)}, start_dim=start, end_dim=end)


NODES: dict[type, Callable] = {LIF: lif_node, nn.Conv2d: conv_node, nn.Linear: linear_node,
                               nn.AvgPool2d: avgpool_node, nn.AdaptiveAvgPool2d: adaptive_avgpool_node,
                               nn.Flatten: flatten_node}


def nir_graph(gm: fx.GraphModule, input_shape: tuple[int, ...], metadata: dict):
    """One step of the folded network (its fx graph) as a NIR graph; nodes are named after the
    modules (LIF nodes after the spiking layers, as in the spike counts)."""
    with torch.no_grad(), neuron_mode(gm, lambda _: SingleStep()):
        ShapeProp(gm).propagate(torch.zeros(1, *input_shape))
    nodes, edges = {"input": nir.Input(input_type={"input": np.array(input_shape)})}, []
    sums: dict[fx.Node, list[str]] = {}  # each fx value as the NIR nodes whose outputs add up to it
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            sums[n] = ["input"]
        elif n.op == "call_module" and isinstance(gm.get_submodule(n.target), PASS_THROUGH):
            sums[n] = sums[n.args[0]]
        elif n.op == "call_module" and type(gm.get_submodule(n.target)) in NODES:
            m = gm.get_submodule(n.target)
            shape = tuple(n.args[0].meta["tensor_meta"].shape[1:])
            nodes[n.target] = NODES[type(m)](m, shape, n.target)
            edges += [(s, n.target) for s in sums[n.args[0]]]
            sums[n] = [n.target]
        elif n.op == "call_function" and n.target in ADDS and not set(sums[n.args[0]]) & set(sums[n.args[1]]):
            sums[n] = sums[n.args[0]] + sums[n.args[1]]  # NIR adds a node's incoming edges
        elif n.op == "output":
            shape = tuple(n.args[0].meta["tensor_meta"].shape[1:])
            nodes["output"] = nir.Output(output_type={"output": np.array(shape)})
            edges += [(s, "output") for s in sums[n.args[0]]]
        else:
            what = (f"layer {n.target} ({type(gm.get_submodule(n.target)).__name__})" if n.op == "call_module"
                    else f"{n.target} at {n.name}")
            raise NirUnsupported(f"{what} has no NIR equivalent; NIR graphs hold conv, linear, average pooling, "
                                 "flatten and LIF nodes and sums of them")
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def export_nir(src: Source, out: Path, opset: Optional[int] = None, data_root: Optional[str] = None) -> ExportResult:
    meta = {**src.metadata("nir", None, (), out, f"snnkit's NIR writer, nir {nir.version}"), "dt": DT,
            "neuron_mapping": "tau = dt / (1 - decay), r = tau / dt, v_leak = 0 (forward Euler with step dt); "
                              "decay 1 is an IF node with r = 1 / dt",
            "readout": "the output node is the classifier's value at each step; the logits are its mean "
                       "over the T steps"}
    step = one_step(src.net)
    graph = nir_graph(step.step_graph, src.input_shape, {k: json.dumps(v) for k, v in meta.items()})
    buf = io.BytesIO()
    nir.write(buf, graph)
    nir.read(io.BytesIO(buf.getvalue()))  # what consumers do first: it must type-check
    atomic_write(out, buf.getvalue())
    return ExportResult(out, out.stat().st_size, len(graph.nodes), src.T, len(step.layer_names), None,
                        f"NIR {nir.version}, dt = {DT:g} s")
