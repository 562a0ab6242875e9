"""The LIF layer and the scoped modes that drive it: snnkit's one way to change a layer at run time.

A model is a plain ``nn.Module`` *body* (Conv/BN/Linear/pooling and :class:`LIF`) acting on a flat
batch ``[N, ...]``. How a LIF layer treats its input is set for the length of a ``with`` block by
:func:`neuron_mode`, which installs one mode object per layer and removes it on exit: neuron state
lives in the mode, so it starts at zero in every block and can never leak between batches, or
between training and evaluation. :class:`SpikingNet` is the user-facing wrapper on ``[T, B, ...]``.

Every other run-time change of a layer goes through the same pattern, :func:`layer_modes`: AMP's
autocast of the body, the rate method's recorded and straight-through BatchNorm, OTTT's and SAF's
trace-driven conv/linear and SAF's accumulated BatchNorm. No code assigns ``module.forward``.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, NamedTuple, Optional

import torch
from torch import nn

from .neuron import NeuronParams, lif_multistep, lif_step
from .surrogate import heaviside


class LIF(nn.Module):
    """A layer of LIF neurons; its behaviour comes from the mode installed by :func:`neuron_mode`."""

    def __init__(self, neuron: NeuronParams):
        super().__init__()
        self.neuron = neuron
        self.surrogate = neuron.make_surrogate()
        self.layer_mode: Optional[Mode] = None  # read here; other modules get it by layer_modes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layer_mode is None:
            raise RuntimeError(
                "a LIF layer ran outside neuron_mode(); call the SpikingNet, not its body"
            )
        # The membrane integrates in at least fp32: under autocast a bf16/fp16 current would
        # otherwise round the potential before it meets the threshold.
        return self.layer_mode(self, x.to(torch.promote_types(x.dtype, torch.float32)))

    def __getstate__(self) -> dict:  # a copy or pickle taken inside a block is the plain layer
        return {**super().__getstate__(), "layer_mode": None}

    def extra_repr(self) -> str:
        p = self.neuron
        return (f"decay={p.decay}, v_threshold={p.v_threshold}, reset={p.reset}, "
                f"detach_reset={p.detach_reset}, surrogate={self.surrogate}")


class Mode:
    """Per-layer behaviour for one ``with neuron_mode(...)`` block; counts spikes per sample.

    A method that needs its own neuron behaviour (the rate method's spike and rate passes, SAF's
    accumulated neuron, OTTT's detached step) subclasses a mode; the LIF layer knows none of them."""

    def __init__(self):
        self.spike_counts: Optional[torch.Tensor] = None  # [B], summed over neurons and steps
        self.neurons_per_sample = 0
        self.steps = 0

    def count(self, s: torch.Tensor, steps: int) -> None:
        """``s`` is ``[steps, B, ...]``."""
        per_sample = s.detach().flatten(2).sum(dim=(0, 2))
        self.spike_counts = per_sample if self.spike_counts is None else self.spike_counts + per_sample
        self.neurons_per_sample = s[0, 0].numel()
        self.steps += steps

    def __call__(self, lif: LIF, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class MultiStep(Mode):
    """Input ``[T·B, ...]`` holding all T steps (time-major); the loop over T runs inside.

    With autograd on, the surrogate carries the gradient; where SpikingJelly's fused multi-step
    LIF applies it runs the loop, otherwise the reference loop does. Subclasses change
    :meth:`run`, the loop itself.
    """

    def __init__(self, T: int):
        super().__init__()
        self.T = T

    def __call__(self, lif: LIF, x: torch.Tensor) -> torch.Tensor:
        x_seq = x.unflatten(0, (self.T, -1))  # [T·B, ...] -> [T, B, ...]
        s_seq = self.run(lif, x_seq)
        self.count(s_seq, self.T)
        return s_seq.flatten(0, 1)

    def run(self, lif: LIF, x_seq: torch.Tensor) -> torch.Tensor:
        """The spikes ``[T, B, ...]`` of the layer on the currents ``x_seq``."""
        if torch.is_grad_enabled():
            return surrogate_multistep(x_seq, lif)
        return lif_multistep(x_seq, lif.neuron)


class SingleStep(Mode):
    """One step per call with batch ``[B, ...]``; the potential persists across calls. Subclasses
    change :meth:`step`, one step of the layer."""

    def __init__(self):
        super().__init__()
        self.v: torch.Tensor | float = 0.0

    def __call__(self, lif: LIF, x: torch.Tensor) -> torch.Tensor:
        s = self.step(lif, x)
        self.count(s.unsqueeze(0), 1)
        return s

    def step(self, lif: LIF, x: torch.Tensor) -> torch.Tensor:
        """The spikes of one step on current ``x``, advancing the potential."""
        spike_fn = lif.surrogate.spike if torch.is_grad_enabled() else heaviside
        s, self.v, _ = lif_step(self.v, x, lif.neuron, spike_fn)
        return s


def spikingjelly_applies(x_seq: torch.Tensor, p: NeuronParams) -> bool:
    """SpikingJelly's fused LIF serves BPTT on CUDA for the sigmoid surrogate, 0 < λ < 1 (1 < τ < ∞)
    and the soft or hard reset (it has no subtract_next). On CPU its loop measured slower than the
    reference loop, so the reference runs there."""
    return x_seq.is_cuda and p.surrogate == "sigmoid" and 0 < p.decay < 1 and p.reset in ("soft", "hard")


def spikingjelly_multistep(x_seq: torch.Tensor, p: NeuronParams) -> torch.Tensor:
    """SpikingJelly 2.x's multi-step LIF in this toolkit's convention (tau = 1/(1 − λ))."""
    from spikingjelly.activation_based import surrogate as sj_surrogate
    from spikingjelly.activation_based.functional.neuron import lif_multi_step

    spikes, _, _ = lif_multi_step(
        x_seq, torch.zeros_like(x_seq[0], dtype=torch.float32), 1.0 / (1.0 - p.decay),
        False, p.v_threshold, None if p.reset == "soft" else p.v_reset,
        sj_surrogate.Sigmoid(alpha=p.alpha), p.detach_reset,
    )
    return spikes


def surrogate_multistep(x_seq: torch.Tensor, lif: LIF) -> torch.Tensor:
    if spikingjelly_applies(x_seq, lif.neuron):
        return spikingjelly_multistep(x_seq, lif.neuron)
    return lif_multistep(x_seq, lif.neuron, lif.surrogate.spike)


def spiking_layers(module: nn.Module) -> list[LIF]:
    """The LIF layers of ``module`` in registration order (the order of spike-count columns)."""
    return [m for m in module.modules() if isinstance(m, LIF)]


class _Moded:
    """Put in front of a module's class for a :func:`layer_modes` block: its forward is the mode's.
    Copies and pickles of the module are of its own class, without the mode."""

    _base: type  # the module's own class

    def forward(self, *args, **kwargs):
        return self.layer_mode(self, *args, **kwargs)

    def __reduce_ex__(self, protocol):
        state = {k: v for k, v in self.__getstate__().items() if k != "layer_mode"}
        return _new_instance, (self._base,), state


def _new_instance(cls: type):
    return cls.__new__(cls)


_MODED: dict[type, type] = {}


def _moded(cls: type) -> type:
    if cls not in _MODED:
        _MODED[cls] = type(cls.__name__, (_Moded, cls), {"_base": cls, "__module__": cls.__module__})
    return _MODED[cls]


def plain_forward(module: nn.Module, *args, **kwargs):
    """``module``'s own forward, whatever mode is installed on it (for a mode that wraps it)."""
    return getattr(type(module), "_base", type(module)).forward(module, *args, **kwargs)


def has_mode(module: nn.Module) -> bool:
    """A :func:`layer_modes` block holds a mode on ``module`` now."""
    return getattr(module, "layer_mode", None) is not None


@contextmanager
def layer_modes(modes: dict[nn.Module, Callable]) -> Iterator[None]:
    """For the block, each module ``m`` computes ``modes[m](m, *inputs)`` instead of its forward; on
    exit, even on error, it is the plain module again. A LIF layer reads its mode itself; any other
    module has its class fronted by one whose forward is the mode, so its parameters, buffers,
    hooks and ``state_dict`` are untouched, and ``isinstance`` still holds. A copy or pickle taken
    inside the block is the plain module. Blocks on the same module cannot be nested."""
    if any(has_mode(m) for m in modes):
        raise RuntimeError("mode blocks on the same layers cannot be nested")
    for m, mode in modes.items():
        if not isinstance(m, LIF):
            m.__class__ = _moded(type(m))
        m.layer_mode = mode
    try:
        yield
    finally:
        for m in modes:
            if isinstance(m, LIF):
                m.layer_mode = None
            else:
                m.__class__ = type(m)._base
                del m.layer_mode


@contextmanager
def neuron_mode(module: nn.Module, make: Callable[[LIF], Mode]) -> Iterator[list[Mode]]:
    """Install ``make(layer)`` on every LIF layer of ``module`` for the block; yields the modes."""
    layers = spiking_layers(module)
    modes = [make(layer) for layer in layers]
    with layer_modes(dict(zip(layers, modes))):
        yield modes


def spike_counts(modes: list[Mode]) -> torch.Tensor:
    """``[B, L]``: spikes per sample in each layer, over all neurons and steps."""
    return torch.stack([m.spike_counts for m in modes], dim=1)


def firing_rate(modes: list[Mode]) -> float:
    """Mean firing rate over every neuron, step and sample of the block."""
    spikes = sum(float(m.spike_counts.sum()) for m in modes)
    slots = sum(m.neurons_per_sample * m.steps * m.spike_counts.numel() for m in modes)
    return spikes / max(slots, 1)


class SpikeOutput(NamedTuple):
    logits_seq: torch.Tensor  # [T, B, classes]
    spike_counts: torch.Tensor  # [B, L]

    @property
    def logits(self) -> torch.Tensor:
        """Time-averaged logits ``[B, classes]``."""
        return self.logits_seq.mean(0)


class SpikingNet(nn.Module):
    """Wraps a flat body; ``forward`` takes ``[T, B, ...]`` and runs the multi-step layout."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x_seq: torch.Tensor) -> SpikeOutput:
        logits_seq, modes = self.run_multistep(x_seq)
        return SpikeOutput(logits_seq, spike_counts(modes))

    def run_multistep(self, x_seq: torch.Tensor, mode: Callable[[int], MultiStep] = MultiStep
                      ) -> tuple[torch.Tensor, list[Mode]]:
        """Stateless layers on all T·B samples at once; returns ([T, B, classes], the layers' modes).
        Each LIF layer runs ``mode(T)`` (a method's own :class:`MultiStep`, e.g. a spike pass)."""
        T = x_seq.shape[0]
        with neuron_mode(self.body, lambda _: mode(T)) as modes:
            y = self.body(x_seq.flatten(0, 1))  # [T, B, ...] -> [T·B, ...]
        return y.unflatten(0, (T, -1)), modes

    def run_singlestep(self, x_seq: torch.Tensor, mode: Callable[[], SingleStep] = SingleStep
                       ) -> tuple[torch.Tensor, list[Mode]]:
        """A loop over t with batch B per call; returns ([T, B, classes], the layers' modes).
        Each LIF layer runs ``mode()``."""
        with neuron_mode(self.body, lambda _: mode()) as modes:
            y = torch.stack([self.body(x) for x in x_seq])
        return y, modes

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of its parameters, which loader batches are cast to."""
        return next(self.parameters()).dtype

    def layer_names(self) -> list[str]:
        names = {m: n for n, m in self.body.named_modules()}
        return [names[layer] for layer in spiking_layers(self.body)]
