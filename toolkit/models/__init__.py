"""Model registry: ``build_model(name, ...)`` returns a :class:`~snnkit.spiking.SpikingNet`.

Every builder takes ``num_classes``, ``in_channels``, ``neuron`` and ``width`` (a multiplier on
channel counts, for tiny test models) and returns the flat body. Importing this package imports
every architecture module so they register themselves.

A name with a colon is a model of the user's own (``spikingjelly:sew_resnet18``,
``package.module:function``, ``path/to/file.py:function``; see :mod:`snnkit.conversion.names`), built
with ``kwargs`` and converted; its neurons and size come from the model, not from ``neuron`` and
``width``. A model read back from a checkpoint or a run's config imports user code only inside
:func:`naming` blocks that name it.
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import torch
from torch import nn

from ..conversion import convert
from ..conversion.names import build_user_model, is_external, is_user_code
from ..errors import CheckpointError, ConfigError
from ..neuron import NeuronParams
from ..registry import Registry
from ..spiking import SpikingNet

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
register_model = MODELS.register


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model: stored in checkpoints and ONNX metadata."""

    name: str
    num_classes: int
    in_channels: int
    neuron: NeuronParams = field(default_factory=NeuronParams)
    width: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"name": self.name, "num_classes": self.num_classes, "in_channels": self.in_channels,
                "neuron": self.neuron.as_dict(), "width": self.width, "kwargs": dict(self.kwargs)}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        return cls(name=d["name"], num_classes=int(d["num_classes"]), in_channels=int(d["in_channels"]),
                   neuron=NeuronParams(**d["neuron"]), width=float(d["width"]), kwargs=dict(d["kwargs"]))


_NAMED: ContextVar[frozenset[str]] = ContextVar("snnkit_named_models", default=frozenset())


@contextmanager
def naming(*names: Optional[str]) -> Iterator[None]:
    """Inside the block, models named ``names`` (the user's own act: ``--model``) may be imported
    when a checkpoint or a run's config names them."""
    token = _NAMED.set(_NAMED.get() | {n for n in names if n})
    try:
        yield
    finally:
        _NAMED.reset(token)


def require_named(name: str, source: str) -> None:
    """Refuse to import the user code ``name`` that ``source`` (data: a checkpoint, a config) names
    unless the user named it too."""
    if is_user_code(name) and name not in _NAMED.get():
        raise CheckpointError(f"{source} names the model {name}, code outside snnkit that a checkpoint must not run "
                              f"by itself; import it by naming it yourself: --model {name}")


def build_model(spec: ModelSpec) -> SpikingNet:
    if is_external(spec.name):
        return build_converted(spec)
    builder = MODELS.get(spec.name)
    unknown = sorted(set(spec.kwargs) - set(inspect.signature(builder).parameters))
    if unknown:
        raise ConfigError(f"model {spec.name} takes no keyword argument {unknown[0]}; model.kwargs are for "
                          "models of your own (package.module:function)")
    body = builder(num_classes=spec.num_classes, in_channels=spec.in_channels,
                   neuron=spec.neuron, width=spec.width, **spec.kwargs)
    return SpikingNet(body)


def build_converted(spec: ModelSpec) -> SpikingNet:
    if spec.width != 1.0:
        raise ConfigError(f"model.width scales snnkit's own models; {spec.name} takes its size from model.kwargs")
    return convert(build_user_model(spec.name, spec.kwargs))


def check_outputs(net: SpikingNet, spec: ModelSpec, input_shape: tuple[int, ...]) -> None:
    """A model of the user's own gives one output per class of the data."""
    with torch.no_grad():
        outputs = net(torch.zeros(1, 1, *input_shape)).logits.shape[-1]
    if outputs != spec.num_classes:
        raise ConfigError(f"{spec.name} gives {outputs} outputs per sample, the data has {spec.num_classes} "
                          f"classes; build it for {spec.num_classes} (e.g. model.kwargs.num_classes)")


MAX_SIDE = 512  # the largest square input tried when looking for the size a model needs


def runs_on(net: SpikingNet, shape: tuple[int, ...], device: torch.device | str) -> bool:
    """Whether ``net`` (in eval mode) takes one sample of ``shape`` at T = 1 without a shape error."""
    try:
        with torch.no_grad():
            net(torch.zeros(1, 1, *shape, device=device))
    except RuntimeError:
        return False
    return True


def check_input_fits(net: SpikingNet, spec: ModelSpec, input_shape: tuple[int, ...], dataset: str) -> None:
    """One forward of ``net`` (a CPU model, in eval mode: no state changes) at batch 1, T = 1, so that
    a model too deep for the input, or built for another size, fails at start-up, naming the size it
    needs (found by shape inference alone, on the meta device), not inside the first training step."""
    training = net.training
    fits = runs_on(net.eval(), input_shape, "cpu")
    if fits and is_external(spec.name):
        check_outputs(net, spec, input_shape)
    net.train(training)
    if fits:
        return
    with torch.device("meta"):
        shapes_only = build_model(spec).eval()
    c, *sides = input_shape
    smallest = next((s for s in range(1, MAX_SIDE + 1) if runs_on(shapes_only, (c, s, s), "meta")), None)
    given = "×".join(map(str, sides))
    if smallest is None:
        raise ConfigError(f"{spec.name} cannot run on {dataset}'s {given} inputs; choose another model.name")
    larger = runs_on(shapes_only, (c, 2 * smallest, 2 * smallest), "meta")
    need = f"at least {smallest}×{smallest}" if larger else f"{smallest}×{smallest}"
    raise ConfigError(f"{spec.name} needs inputs of {need}; {dataset} gives {given}: choose another model.name "
                      "or data.name")


from . import digits, imagenet_resnet, mnist, resnet, vgg  # noqa: E402,F401  (registration)
