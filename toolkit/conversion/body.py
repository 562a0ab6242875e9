"""A foreign ``nn.Module`` as a snnkit body: traced once with torch.fx in single-step mode (the
layers act on a flat batch ``[N, ...]``, as a snnkit body's do), every call checked against a type
table before anything runs, then rebuilt as a ``GraphModule`` of snnkit's own layers:

- each neuron becomes a :class:`~snnkit.spiking.LIF`, see :mod:`.neurons`;
- each stateless layer becomes its plain PyTorch class, holding the same tensors (SpikingJelly's
  ``layer.*`` wrappers are those classes plus a step mode); SpikingJelly's ``VotingLayer`` (the
  mean of each group of outputs) becomes a fixed, untrained ``nn.Linear`` that averages them;
  ``torch.flatten(x, 1)`` becomes an ``nn.Flatten`` layer;
- a BatchNorm fed only by a conv or linear layer is put in one ``nn.Sequential`` with it, where
  export folds it; :func:`to_original_state_dict` maps the state_dict keys back.

Between the layers the forward may add activations (residual sums, SEW's ADD) and flatten all but
the batch axis. Anything else is refused with the module's path and type: a product of activations
(SEW's AND and IAND, attention between spike tensors), whose rate is not the product of the rates
and which export's parity does not bound; a reshape across the batch; a tensor attribute read
directly; a layer called twice per step.
"""
from __future__ import annotations

import copy
import operator
from typing import Any, Callable, Optional

import torch
from torch import fx, nn

from ..errors import ConversionError
from ..spiking import LIF
from ..tracing import trace as fx_trace
from .neurons import neuron_table

ORIGINAL_NAMES = "snnkit_original_names"  # body attribute: converted module path -> the original's (None: added)

TORCH_STATELESS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
                   nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                   nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.Flatten, nn.Dropout,
                   nn.Identity)
FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
ADDS = {operator.add, torch.add}
PRODUCTS = {operator.mul, torch.mul, operator.sub, torch.sub, operator.truediv, torch.div}
FLATTENS = {torch.flatten}
PRODUCT_METHODS = {"mul", "sub", "div"}


def voting(upstream: nn.Linear, size: int) -> nn.Linear:
    """SpikingJelly's ``VotingLayer(size)`` reading ``upstream``'s features, the mean of each group of
    ``size`` consecutive ones, as a fixed linear layer (not trained)."""
    features = upstream.out_features
    if features % size:
        raise ConversionError(f"a VotingLayer of size {size} gets {features} features, not a whole number of groups")
    layer = nn.Linear(features, features // size, bias=False, dtype=upstream.weight.dtype,
                      device=upstream.weight.device)
    layer.weight.requires_grad_(False)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(features // size, dtype=layer.weight.dtype).repeat_interleave(size, dim=1) / size)
    return layer


def plain_torch(m: nn.Module) -> nn.Module:
    """``m`` as the first PyTorch class among its bases (a SpikingJelly wrapper adds only a step mode)."""
    torch_class = next(c for c in type(m).__mro__ if c in TORCH_STATELESS)
    m.__class__ = torch_class
    m.__dict__.pop("step_mode", None)
    return m


def sj_dropout(path: str, m: nn.Module) -> nn.Module:
    if m.p > 0:
        raise ConversionError(f"{path} ({type(m).__name__}) keeps one dropout mask for all T steps, a state "
                              "snnkit's layers do not have; set its p to 0 before converting")
    return nn.Identity()


def stateless_table() -> dict[type, Callable[[str, nn.Module], nn.Module]]:
    """Every stateless layer type snnkit converts, by exact type -> its replacement."""
    table: dict[type, Callable[[str, nn.Module], nn.Module]] = {t: lambda path, m: m for t in TORCH_STATELESS}
    try:
        from spikingjelly.activation_based import layer
    except ImportError:
        return table
    for name in ("Conv1d", "Conv2d", "Conv3d", "Linear", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d",
                 "MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d",
                 "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "Flatten"):
        table[getattr(layer, name)] = lambda path, m: plain_torch(m)
    table[layer.Dropout] = sj_dropout
    table[layer.VotingLayer] = lambda path, m: m  # replaced once its input size is known: see rebuild
    return table


class Tables:
    def __init__(self):
        self.neurons = neuron_table()
        self.stateless = stateless_table()

    def knows(self, m: nn.Module) -> bool:
        return type(m) in self.neurons or type(m) in self.stateless


def stateful_types() -> tuple[type, ...]:
    """The base classes of the layers that keep a state over time steps, in the installed libraries."""
    kinds: list[type] = []
    try:
        from spikingjelly.activation_based.base import MemoryModule
        kinds.append(MemoryModule)
    except ImportError:
        pass
    try:
        from snntorch._neurons.neurons import SpikingNeuron
        kinds.append(SpikingNeuron)
    except ImportError:
        pass
    return tuple(kinds)


def check_modules(model: nn.Module, tables: Tables) -> None:
    """Every leaf (a module without children, or a neuron) is in a table."""
    stateful = stateful_types()

    def walk(m: nn.Module, path: str) -> None:
        if tables.knows(m):
            return
        if isinstance(m, stateful):
            raise ConversionError(f"{path or 'the model'} ({type(m).__name__}) keeps a state over time steps and is "
                                  "not a neuron snnkit converts exactly (SpikingJelly LIFNode/IFNode, snnTorch "
                                  "Leaky); replace it")
        children = list(m.named_children())
        if not children:
            raise ConversionError(f"{path or 'the model'} ({type(m).__name__}) is not a layer snnkit converts "
                                  "exactly (spiking neurons: SpikingJelly LIFNode/IFNode, snnTorch Leaky; stateless "
                                  "conv, linear, BatchNorm, pooling, flatten, dropout); replace or remove it")
        for name, child in children:
            walk(child, f"{path}.{name}" if path else name)
    walk(model, "")


def autograd_state(model: nn.Module) -> dict[int, torch.Tensor]:
    """Each tensor a module holds that an autograd graph made (a neuron's potential left over from a
    training forward, in SpikingJelly's memories or snnTorch's buffers), by id -> a detached copy:
    ``deepcopy`` copies only graph leaves, and the converted network keeps no neuron state."""
    held = [v for m in model.modules() for attr in vars(m).values()
            for v in (attr.values() if isinstance(attr, dict) else [attr])]
    return {id(t): t.detach().clone() for t in held if isinstance(t, torch.Tensor) and t.grad_fn is not None}


def single_step(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose SpikingJelly layers are in single-step mode."""
    work = copy.deepcopy(model, autograd_state(model))
    try:
        from spikingjelly.activation_based import functional
    except ImportError:
        return work
    functional.set_step_mode(work, "s")
    return work


def trace(model: nn.Module, tables: Tables) -> fx.Graph:
    try:
        return fx_trace(model, tables.knows)
    except Exception as e:  # any failure of symbolic tracing: data-dependent control flow, etc.
        raise ConversionError(f"the forward of the model ({type(model).__name__}) cannot be traced with torch.fx "
                              f"({type(e).__name__}: {' '.join(str(e).split())[:200]}); snnkit converts models "
                              "whose forward does not branch on tensor values") from None


def where(node: fx.Node) -> str:
    """The module whose forward made ``node``, as 'path (Type)'."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "the model's forward"
    path, kind = list(stack.values())[-1]
    name = kind.__name__ if isinstance(kind, type) else str(kind).rsplit(".", 1)[-1]
    return f"{path or 'the model'} ({name})"


def flattens_features(node: fx.Node) -> bool:
    """``torch.flatten(x, 1)`` / ``x.flatten(1)``: all axes but the batch."""
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    return start == 1 and end == -1


def is_call(node: fx.Node, functions: set, methods: set[str]) -> bool:
    """``node`` calls one of ``functions``, or a Tensor method named in ``methods``."""
    return (node.op == "call_function" and node.target in functions) or (node.op == "call_method"
                                                                          and node.target in methods)


def check_node(node: fx.Node, calls: dict[str, int]) -> None:
    if node.op in ("placeholder", "output"):
        return
    if node.op == "call_module":
        calls[node.target] = calls.get(node.target, 0) + 1
        if calls[node.target] > 1:
            raise ConversionError(f"{node.target} is called more than once per step; snnkit's layers run once "
                                  "per step: give each call its own layer")
        return
    if is_call(node, ADDS, {"add"}):
        return
    if is_call(node, FLATTENS, {"flatten"}):
        if flattens_features(node):
            return
        raise ConversionError(f"{where(node)} flattens other than all axes after the batch; snnkit's layers act on "
                              "a flat batch: flatten from axis 1")
    if is_call(node, PRODUCTS, PRODUCT_METHODS):
        raise ConversionError(f"{where(node)} multiplies, subtracts or divides activations (as SEW's AND and IAND "
                              "do), which is not exact in the rate pass and has no parity bound in export; use "
                              "additions (SEW's cnf='ADD')")
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    what = "reads a tensor attribute directly" if node.op == "get_attr" else f"calls {name}"
    raise ConversionError(f"{where(node)} {what}, which snnkit does not convert exactly (between layers it takes "
                          "additions and flattening from axis 1); replace it")


def fold_pairs(graph: fx.Graph, modules: dict[str, nn.Module]) -> dict[str, str]:
    """Each BatchNorm fed only by a conv/linear becomes ``nn.Sequential(conv, bn)`` at the conv's
    path; returns {new module path: the original's} for the moved modules."""
    renamed: dict[str, str] = {}
    for bn_node in [n for n in graph.nodes if n.op == "call_module" and isinstance(modules[n.target], BATCHNORMS)]:
        src = bn_node.args[0]
        if not (isinstance(src, fx.Node) and src.op == "call_module" and isinstance(modules[src.target], FOLDABLE)
                and len(src.users) == 1):
            continue
        modules[src.target] = nn.Sequential(modules[src.target], modules.pop(bn_node.target))
        renamed.update({f"{src.target}.0": src.target, f"{src.target}.1": bn_node.target})
        bn_node.replace_all_uses_with(src)
        graph.erase_node(bn_node)
    return renamed


def upstream_linear(work: nn.Module, node: fx.Node) -> nn.Linear:
    """The nearest Linear layer upstream of ``node``, whose features reach it."""
    src = node.args[0]
    while isinstance(src, fx.Node) and not (src.op == "call_module" and isinstance(
            work.get_submodule(src.target), nn.Linear)):
        src = src.args[0] if src.args else None
    if src is None:
        raise ConversionError(f"{node.target} (VotingLayer) does not follow a Linear layer; snnkit converts a "
                              "VotingLayer that reads a Linear layer's neurons")
    return work.get_submodule(src.target)


def rebuild(graph: fx.Graph, work: nn.Module, tables: Tables) -> tuple[dict[str, nn.Module], dict[str, None]]:
    """Each called module's snnkit replacement by its path, and the paths of modules added (with
    no counterpart in the original's state_dict)."""
    from spikingjelly.activation_based.layer import VotingLayer

    modules: dict[str, nn.Module] = {}
    added: dict[str, None] = {}
    for node in [n for n in graph.nodes if n.op == "call_module"]:
        m = work.get_submodule(node.target)
        if type(m) in tables.neurons:
            modules[node.target] = LIF(tables.neurons[type(m)](node.target, m))
        elif isinstance(m, VotingLayer):
            modules[node.target] = voting(upstream_linear(work, node), m.voting_size)
            added[node.target] = None
        else:
            modules[node.target] = tables.stateless[type(m)](node.target, m)
    for node in [n for n in graph.nodes if is_call(n, FLATTENS, {"flatten"})]:
        name = next(f"{node.name}_{i}" if i else node.name for i in range(len(modules) + 1)
                    if (f"{node.name}_{i}" if i else node.name) not in modules)
        modules[name] = nn.Flatten()
        added[name] = None
        with graph.inserting_after(node):
            layer = graph.call_module(name, (node.args[0],))
        node.replace_all_uses_with(layer)
        graph.erase_node(node)
    return modules, added


def convert_body(model: nn.Module) -> fx.GraphModule:
    """The snnkit body computing ``model``'s spikes (see the module docstring); ``model`` is untouched."""
    tables = Tables()
    check_modules(model, tables)
    work = single_step(model)
    graph = trace(work, tables)
    calls: dict[str, int] = {}
    for node in graph.nodes:
        check_node(node, calls)
    modules, added = rebuild(graph, work, tables)
    if not any(isinstance(sub, LIF) for m in modules.values() for sub in m.modules()):
        raise ConversionError(f"the model ({type(model).__name__}) has no spiking neuron snnkit converts "
                              "(SpikingJelly LIFNode/IFNode, snnTorch Leaky); it is not a spiking network")
    renamed = {**fold_pairs(graph, modules), **added}
    body = fx.GraphModule(modules, graph, class_name=f"Converted{type(model).__name__}")
    setattr(body, ORIGINAL_NAMES, renamed)
    return body


def original_key(key: str, renamed: dict[str, Optional[str]]) -> Optional[str]:
    """A state_dict key of the converted body as the original model names it (None: a module the
    conversion added, such as a VotingLayer's fixed averaging)."""
    prefix, _, leaf = key.rpartition(".")
    if prefix in renamed and renamed[prefix] is None:
        return None
    return f"{renamed.get(prefix, prefix)}.{leaf}" if prefix else key


def to_original_state_dict(body: nn.Module, original: nn.Module) -> dict[str, Any]:
    """``original``'s state_dict with every tensor the converted ``body`` holds put back under its
    original key (the neurons' own constants, which snnkit keeps in NeuronParams, come from
    ``original``)."""
    renamed = getattr(body, ORIGINAL_NAMES, {})
    state = original.state_dict()
    for key, value in body.state_dict().items():
        name = original_key(key, renamed)
        if name is None:
            continue
        if name not in state:
            raise ConversionError(f"{name} is not in the original model's state_dict; give the model this network "
                                  "was converted from")
        state[name] = value.detach().clone()
    return state
