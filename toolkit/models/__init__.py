"""Model registry: ``build_model(name, ...)`` returns a :class:`~snnkit.spiking.SpikingNet`.

Every builder takes ``num_classes``, ``in_channels``, ``neuron`` and ``width`` (a multiplier on
channel counts, for tiny test models) and returns the flat body. Importing this package imports
every architecture module so they register themselves.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

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


def build_model(spec: ModelSpec) -> SpikingNet:
    body = MODELS.get(spec.name)(num_classes=spec.num_classes, in_channels=spec.in_channels,
                                 neuron=spec.neuron, width=spec.width, **spec.kwargs)
    return SpikingNet(body)


from . import digits, imagenet_resnet, mnist, resnet, vgg  # noqa: E402,F401  (registration)
