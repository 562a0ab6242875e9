"""Each foreign neuron as snnkit's LIF (rate_backprop.md §1: ``u_t = λ·v_{t−1} + x_t``, fire at
``u ≥ V_th``, soft or hard reset, ``v_0 = 0``), by exact type. Every mapping is exact in real
arithmetic; what cannot be mapped exactly is refused with the module's path and type.

SpikingJelly (its ``H[t]`` is snnkit's ``u_t``; it fires at ``H ≥ V_th``, as snnkit does):

- ``LIFNode(tau, decay_input=False)``: ``H = V − (V − V_reset)/τ + X``: λ = 1 − 1/τ;
- ``LIFNode(tau, decay_input=True)`` (its default): ``H = V + (X − (V − V_reset))/τ``, the same with
  the current ``X/τ``. snnkit's potential is then SpikingJelly's times τ (``u = τ·H`` takes ``X``
  as it is), so the threshold is ``τ·V_th`` and the surrogate's sharpness ``α/τ``: both surrogates
  are ``α·f(α·z)``, so ``∂s/∂X`` is unchanged and so are spikes and gradients;
- ``IFNode``: ``H = V + X``: λ = 1;
- ``v_reset=None`` is the soft reset; a value is the hard reset. SpikingJelly starts a hard-reset
  neuron at ``V = V_reset``; snnkit's potential is measured from ``V_reset`` (it starts at 0, resets
  to 0 and fires at ``V_th − V_reset``), and with that shift the ``V_reset/τ`` terms cancel:
  ``H − V_reset = λ·(V − V_reset) + X'`` (X' = X/τ or X);
- ``detach_reset`` and the surrogate (``Sigmoid(α)``, ``ATan(α)``) carry over.
- ``ParametricLIFNode`` learns τ, which snnkit's LIF holds fixed: refused.

snnTorch ``Leaky(beta, threshold)`` in an ``nn.Sequential`` (``init_hidden=True``), its reset
always detached, λ = β; it fires at ``U > V_th``, which for float32 potentials is ``U ≥ V_th⁺``
with ``V_th⁺`` the next float32 above ``V_th``, the threshold snnkit is given:

- ``reset_mechanism="zero"``: ``U_t = β·(1 − S_{t−1})·U_{t−1} + X_t`` is snnkit's hard reset to 0;
- ``reset_mechanism="subtract"`` (its default): ``U_t = β·U_{t−1} + X_t − V_th·S_{t−1}``, ``V_th``
  taken from the next step's charge after its decay, is snnkit's ``subtract_next`` with
  ``V_sub = V_th`` (not ``V_th⁺``), in snnTorch's order of operations.

Its surrogates are ``atan(α)`` (snnkit's atan) and ``sigmoid(slope)`` (snnkit's sigmoid with α = slope).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from ..neuron import NeuronParams
from ..errors import ConversionError


def refuse(path: str, m: nn.Module, why: str) -> ConversionError:
    return ConversionError(f"{path} ({type(m).__name__}) {why}")


# --- SpikingJelly ---------------------------------------------------------------------------------

def sj_surrogate(path: str, m: nn.Module) -> tuple[str, float]:
    from spikingjelly.activation_based import surrogate

    fn = m.surrogate_function
    names = {surrogate.Sigmoid: "sigmoid", surrogate.ATan: "atan"}
    if type(fn) not in names or not getattr(fn, "spiking", True):
        raise refuse(path, m, f"uses the surrogate {type(fn).__name__}; snnkit maps Sigmoid and ATan "
                              "(spiking=True): build the model with one of them")
    return names[type(fn)], float(fn.alpha)


def sj_common(path: str, m: nn.Module, decay: float, scale: float) -> NeuronParams:
    """``scale``: snnkit's potential over SpikingJelly's (τ where the input is divided by τ)."""
    surrogate, alpha = sj_surrogate(path, m)
    v_reset = m.v_reset
    threshold = float(m.v_threshold) - (0.0 if v_reset is None else float(v_reset))
    if threshold <= 0:
        raise refuse(path, m, f"fires at v_threshold={m.v_threshold}, not above v_reset={v_reset}; "
                              "snnkit needs V_th > V_reset")
    return NeuronParams(decay=decay, v_threshold=scale * threshold, reset="soft" if v_reset is None else "hard",
                        v_reset=0.0, detach_reset=bool(m.detach_reset), surrogate=surrogate, alpha=alpha / scale)


def sj_lif(path: str, m: nn.Module) -> NeuronParams:
    tau = float(m.tau)
    return sj_common(path, m, 1.0 - 1.0 / tau, tau if m.decay_input else 1.0)


def sj_if(path: str, m: nn.Module) -> NeuronParams:
    return sj_common(path, m, 1.0, 1.0)


def sj_plif(path: str, m: nn.Module) -> NeuronParams:
    raise refuse(path, m, "learns its time constant (τ = 1/sigmoid(w)), and snnkit's LIF has a fixed decay "
                          "that rate backprop does not differentiate; build the model with LIFNode(tau=...)")


# --- snnTorch -------------------------------------------------------------------------------------

def closure_value(fn: Callable, name: str) -> Optional[float]:
    free = getattr(getattr(fn, "__code__", None), "co_freevars", ())
    return float(fn.__closure__[free.index(name)].cell_contents) if name in free else None


def snntorch_surrogate(path: str, m: nn.Module) -> tuple[str, float]:
    """snnTorch's surrogates are closures ``atan(alpha)`` and ``sigmoid(slope)``: snnkit's ATan(α)
    and its sigmoid with α = slope."""
    fn = m.spike_grad
    kinds = {"atan.<locals>.inner": ("atan", "alpha"), "sigmoid.<locals>.inner": ("sigmoid", "slope")}
    kind = kinds.get(getattr(fn, "__qualname__", ""))
    value = closure_value(fn, kind[1]) if kind else None
    if value is None or getattr(fn, "__module__", "") != "snntorch.surrogate":
        raise refuse(path, m, "uses a surrogate snnkit does not map; give it spike_grad=surrogate.atan(...) "
                              "or surrogate.sigmoid(...)")
    return kind[0], value


def scalar(path: str, m: nn.Module, name: str) -> float:
    t = getattr(m, name)
    if isinstance(t, nn.Parameter) and t.requires_grad:
        raise refuse(path, m, f"learns its {name}, which snnkit's LIF holds fixed; build it with learn_{name}=False")
    if torch.as_tensor(t).numel() != 1:
        raise refuse(path, m, f"has one {name} per neuron; snnkit's LIF takes one per layer")
    return float(t)


SNNTORCH_RESETS = {"zero": "hard", "subtract": "subtract_next"}


def snntorch_leaky(path: str, m: nn.Module) -> NeuronParams:
    if m.reset_mechanism not in SNNTORCH_RESETS:
        raise refuse(path, m, f"resets by {m.reset_mechanism!r}, which snnkit does not map; use "
                              "reset_mechanism='subtract' or 'zero'")
    unsupported = [what for what, on in (("init_hidden=False (it must sit in an nn.Sequential)", not m.init_hidden),
                                         ("output=True", m.output), ("inhibition", m.inhibition),
                                         ("state_quant", bool(m.state_quant)), ("reset_delay=False", not m.reset_delay))
                   if on]
    if unsupported:
        raise refuse(path, m, f"is built with {unsupported[0]}, which snnkit does not map; build it without")
    if scalar(path, m, "graded_spikes_factor") != 1.0:
        raise refuse(path, m, "emits graded spikes; snnkit's spikes are 0 or 1: build it with graded_spikes_factor=1")
    beta = min(max(scalar(path, m, "beta"), 0.0), 1.0)  # snnTorch clamps β to [0, 1]
    threshold = scalar(path, m, "threshold")
    surrogate, alpha = snntorch_surrogate(path, m)
    strict = float(np.nextafter(np.float32(threshold), np.float32(math.inf)))  # U > V_th as U ≥ V_th⁺
    reset = SNNTORCH_RESETS[m.reset_mechanism]
    return NeuronParams(decay=beta, v_threshold=strict, reset=reset, v_reset=0.0,
                        v_subtract=threshold if reset == "subtract_next" else None, detach_reset=True,
                        surrogate=surrogate, alpha=alpha)


NeuronMap = Callable[[str, nn.Module], NeuronParams]


def neuron_table() -> dict[type, NeuronMap]:
    """The neuron types snnkit converts (of the libraries that are installed), by exact type."""
    table: dict[type, NeuronMap] = {}
    try:
        from spikingjelly.activation_based import neuron as sj
        table.update({sj.LIFNode: sj_lif, sj.IFNode: sj_if, sj.ParametricLIFNode: sj_plif})
    except ImportError:
        pass
    try:
        import snntorch
        table[snntorch.Leaky] = snntorch_leaky
    except ImportError:
        pass
    return table
