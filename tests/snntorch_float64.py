"""snnTorch in float64, for gradients judged by the float64 rounding rule. snnTorch's surrogates
end their forward with ``.float()``, which is all that keeps its layers in float32: the same
surrogate with spikes in the membrane's dtype, its backward still snnTorch's own formula."""
from types import SimpleNamespace

import torch
from snntorch import surrogate
from torch import nn

FUNCTIONS = {"atan": (surrogate.ATan, "alpha"), "sigmoid": (surrogate.Sigmoid, "slope")}


def keeping_dtype(spike_grad):
    """``surrogate.atan(alpha)`` or ``surrogate.sigmoid(slope)`` with spikes in the input's dtype."""
    function, name = FUNCTIONS[spike_grad.__qualname__.split(".")[0]]
    free = spike_grad.__code__.co_freevars
    value = spike_grad.__closure__[free.index(name)].cell_contents

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, u):
            ctx.save_for_backward(u)
            return (u > 0).to(u.dtype)

        @staticmethod
        def backward(ctx, grad):
            return function.backward(SimpleNamespace(saved_tensors=ctx.saved_tensors, **{name: value}), grad)[0]

    return Spike.apply


def in_float64(model: nn.Module) -> nn.Module:
    """``model`` (changed in place) in float64, every Leaky's surrogate keeping that dtype."""
    for m in model.modules():
        if hasattr(m, "spike_grad") and m.spike_grad is not None:
            m.spike_grad = keeping_dtype(m.spike_grad)
    return model.double()
