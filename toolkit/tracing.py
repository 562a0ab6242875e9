"""The one torch.fx tracer of snnkit: it keeps LIF layers whole (a leaf, never traced into).

Deploy traces a body to count its costs and to unroll it over T (``snnkit.deploy.costs``,
``snnkit.deploy.graph``); conversion traces a foreign model with its own set of known layers as
the leaves (``snnkit.conversion.body``). A neutral module: it imports only the LIF layer.
"""
from __future__ import annotations

from typing import Callable, Optional

from torch import fx, nn

from .spiking import LIF


class LeafTracer(fx.Tracer):
    """Traces through every module except the leaves: those ``leaf`` accepts, or by default the
    LIF layers and the modules torch's tracer keeps whole (the ``torch.nn`` layers)."""

    def __init__(self, leaf: Optional[Callable[[nn.Module], bool]] = None):
        super().__init__()
        self.leaf = leaf

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if self.leaf is not None:
            return self.leaf(m)
        return isinstance(m, LIF) or super().is_leaf_module(m, qualname)


def trace(module: nn.Module, leaf: Optional[Callable[[nn.Module], bool]] = None) -> fx.Graph:
    """The fx graph of ``module``'s forward with :class:`LeafTracer`'s leaves."""
    return LeafTracer(leaf).trace(module)
